"""Run the benchmarks on the local stack: every method on the same disks, in one run.

    python -m bench.run [--sizes 0.25,1,2,4,8] [--quick] [--only clone,stream,concurrency,profile] [--out DIR]

Prints each benchmark's JSON and table; with ``--out OUT`` also writes OUT/RESULTS.md, and results.json and
time_vs_size.png in OUT/results/ (``scripts/bench`` passes ``--out bench``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import cost
from bench import methods as m
from bench.lib import (
    Cleanup,
    Env,
    GiB,
    Row,
    Started,
    at_once,
    connect,
    daemon_cpu,
    emit,
    fastsnap_argv,
    gib,
    log,
    machine_facts,
    make_disk,
    obj_round,
    pair,
    sweep,
    table,
    trim_at_once,
    unique,
    wait_snaptrim,
)
from bench.profile_stream import profile_clone, profile_stream
from bench.report import write_all
from testkit.results import results_dir
from testkit.stack import Stack

ALL_PARTS = ("stream", "clone", "thin", "ratio", "concurrency", "profile")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", help="written GiB per disk, comma-separated (default 0.25,1,2,4,8; quick 0.25,1)")
    p.add_argument("--virtual-factor", type=float, default=2.0,
                   help="virtual size = written * factor (thin; data spread evenly, holes between) [2]")
    p.add_argument("--thin", default="64:1",
                   help="extra thin disk VIRTUAL:WRITTEN GiB for the clone family (quick: 64:0.25; '' for none)")
    p.add_argument("--thin-stream", action="store_true", help="also stream the thin disk (slow: whole virtual)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the fast clone-family measurements [3]")
    p.add_argument("--concurrency", default="1,8,32", help="numbers of concurrent clone snapshots [1,8,32]")
    p.add_argument("--concurrency-disk", default="0.25:0.0625",
                   help="VIRTUAL:WRITTEN GiB of each disk of the concurrency benchmark [0.25:0.0625]")
    p.add_argument("--profile-size", default="4:2", help="VIRTUAL:WRITTEN GiB of the profiled stream [4:2]")
    p.add_argument("--ratio-size", default="4:2",
                   help="VIRTUAL:WRITTEN GiB of the interleaved stream-vs-ceiling comparison [4:2]")
    p.add_argument("--ratio-repeats", type=int, default=3, help="alternations of stream and ceiling [3]")
    p.add_argument("--only", default=",".join(ALL_PARTS),
                   help=f"parts to run, of {','.join(ALL_PARTS)}; or 'cost' alone: bench.cost with its defaults "
                        "(what a clone snapshot costs, do_secure_hash on and off, CLI memory; see bench/cost.py)")
    p.add_argument("--flatten", help="[snapshot] flatten policy for the bench config (default: fastsnap's)")
    p.add_argument("--tmp-dir", default=None, help="local directory of Nova generic's temporary file")
    p.add_argument("--out", help="directory of RESULTS.md (results.json and time_vs_size.png: its results/)")
    p.add_argument("--merge", action="store_true",
                   help="keep the parts of an existing OUT/results/results.json that this run does not measure")
    p.add_argument("--quick", action="store_true", help="small sizes (<= 1 GiB written), 1 repeat: a few minutes")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes = a.sizes or "0.25,1"
        a.thin = "64:0.25" if a.thin == "64:1" else a.thin
        a.profile_size = "1:0.5" if a.profile_size == "4:2" else a.profile_size
        a.ratio_size = "1:0.5" if a.ratio_size == "4:2" else a.ratio_size
        a.ratio_repeats = min(a.ratio_repeats, 2)
        a.repeats = min(a.repeats, 2)
    a.sizes = a.sizes or "0.25,1,2,4,8"
    return a


# -- parts ---------------------------------------------------------------------------------------------------


def size_series(stack: Stack, cleanup: Cleanup, a: argparse.Namespace, config: str, fs: Any,
                parts: set[str]) -> list[Row]:
    rows: list[Row] = []
    disks: list[tuple[int, int, bool]] = [(obj_round(float(w) * GiB * a.virtual_factor), obj_round(float(w) * GiB),
                                           True) for w in a.sizes.split(",")]
    if a.thin and "thin" in parts:
        v, w = pair(a.thin)
        disks.append((v, w, a.thin_stream))
    tmp_dir = a.tmp_dir or os.path.join(stack.run_dir, "bench-tmp")
    for virtual, written, stream_it in disks:
        disk = cleanup.disk(unique(f"{written >> 20}m"))
        t0 = time.monotonic()
        make_disk(stack, disk, virtual, written)
        log(f"disk vms/{disk}: {gib(written)} written of {gib(virtual)} in {time.monotonic() - t0:.1f}s")
        here: list[Row] = []
        if "stream" in parts and stream_it:
            here += _measure([
                ("fastsnap-stream", functools.partial(m.fastsnap_stream, stack, cleanup, config, disk)),
                ("ceiling-export", functools.partial(m.ceiling, stack, cleanup, disk, zeros=False)),
                ("ceiling-zeros", functools.partial(m.ceiling, stack, cleanup, disk, zeros=True)),
                ("nova-generic", functools.partial(m.nova_generic, stack, cleanup, disk, tmp_dir))], stack)
        if "clone" in parts:
            here += _measure([
                ("floor", functools.partial(m.floor, stack, disk, a.repeats)),
                ("fastsnap-clone", functools.partial(m.fastsnap_clone_api, stack, cleanup, fs, disk, a.repeats)),
                ("fastsnap-clone-cli", functools.partial(m.fastsnap_clone_cli, stack, cleanup, config, disk)),
                ("nova-direct", functools.partial(m.nova_direct, stack, cleanup, disk))], stack)
        for r in here:
            r.written = written
        rows += here
        cleanup.drop_disk(disk)
    return rows


def _measure(todo: list[tuple[str, Callable[[], Row]]], stack: Stack) -> list[Row]:
    rows = []
    for name, fn in todo:
        waited = wait_snaptrim(stack)  # start each measurement on a quiet cluster
        log(f"  {name} ..." + (f" (waited {waited:.1f}s for snapshot trimming)" if waited > 1 else ""))
        rows.append(fn())
        log(f"  {name}: {rows[-1].seconds:.3f}s")
    return rows


def ratio(stack: Stack, cleanup: Cleanup, a: argparse.Namespace, config: str) -> list[Row]:
    """fastsnap stream and the rbd-export ceiling alternated on one disk: on a shared, loaded machine the
    best (least disturbed) of several runs compares the two paths more fairly than one run each."""
    virtual, written = pair(a.ratio_size)
    disk = cleanup.disk(unique("ratio"))
    make_disk(stack, disk, virtual, written)
    rows: list[Row] = []
    for i in range(a.ratio_repeats):
        for r in _measure([("fastsnap-stream", functools.partial(m.fastsnap_stream, stack, cleanup, config, disk)),
                           ("ceiling-export", functools.partial(m.ceiling, stack, cleanup, disk, zeros=False))],
                          stack):
            r.written = written
            r.extra["round"] = i
            rows.append(r)
            log(f"  ratio round {i}: {r.method} {r.seconds:.2f}s")
    cleanup.drop_disk(disk)
    return rows


def concurrency(stack: Stack, cleanup: Cleanup, a: argparse.Namespace, config: str) -> list[dict[str, Any]]:
    from fastsnap import Fastsnap

    ns = [int(x) for x in a.concurrency.split(",")]
    virtual, written = pair(a.concurrency_disk)
    disks = [cleanup.disk(unique(f"conc{i}")) for i in range(max(ns))]
    t0 = time.monotonic()
    for d in disks:
        make_disk(stack, d, virtual, written)
    log(f"{len(disks)} disks of {gib(written)}/{gib(virtual)} in {time.monotonic() - t0:.1f}s")
    out: list[dict[str, Any]] = []

    def settle_all(results: list[dict[str, Any]]) -> list[float]:
        waited = []
        for d in results:
            cleanup.image(d["image_id"])
            info = m.settle(stack, cleanup, d["image_id"], d)
            if "background_flatten_s" in info:
                waited.append(info["background_flatten_s"])
        return waited

    for n in ns:
        # N fastsnap CLI processes started together (one per instance snapshot, as a compute host would).
        wait_snaptrim(stack)
        log(f"  {n} concurrent CLI clone snapshots ...")
        cpu: dict[str, float]
        with daemon_cpu(stack.run_dir) as cpu:
            t0 = time.monotonic()
            started = [Started(fastsnap_argv(config, "snapshot", "--disk", f"vms/{d}", "--name", unique("conc"),
                                             "--store", "fast", "--json")) for d in disks[:n]]
            procs = [s.wait() for s in started]
            wall = time.monotonic() - t0
        results = [p.json() for p in procs if p.returncode == 0]
        failed = [p.stderr.strip().splitlines()[-1:] for p in procs if p.returncode != 0]
        settle_all(results)
        secs = [float(r["seconds"]) for r in results] or [0.0]
        out.append({"mode": "cli", "n": n, "wall": round(wall, 3), "max_seconds": max(secs),
                    "mean_seconds": round(sum(secs) / len(secs), 3), "failed": len(failed), "errors": failed[:3],
                    "max_rss": max(p.max_rss for p in procs), "paths": sorted({r["path"] for r in results})})
        out[-1]["cpu_s"] = cpu
        log(f"  cli n={n}: {wall:.2f}s")
        # N threads of one process, each with its own warm Fastsnap client (a long-running service).
        wait_snaptrim(stack)
        log(f"  {n} concurrent in-process clone snapshots ...")
        clients = [Fastsnap(config_file=config) for _ in range(n)]
        for c in clients:
            c.stores()  # connect to Ceph and Keystone now, not inside the measurement
        with daemon_cpu(stack.run_dir) as cpu:
            wall, results_t, times = _threads(clients, disks[:n])
        for c in clients:
            c.close()
        ok = [r for r in results_t if isinstance(r, dict)]
        errors = [f"{type(r).__name__}: {r}" for r in results_t if not isinstance(r, dict)]
        settle_all(ok)
        out.append({"mode": "in-process", "n": n, "wall": round(wall, 3), "max_seconds": round(max(times), 3),
                    "mean_seconds": round(sum(times) / n, 3), "errors": errors[:3], "failed": len(errors),
                    "cpu_s": cpu})
        log(f"  in-process n={n}: {wall:.2f}s ({len(errors)} failed)")
    for d in disks:
        cleanup.drop_disk(d)
    return out


def _threads(clients: list[Any], disks: list[str]) -> tuple[float, list[dict[str, Any] | BaseException],
                                                             list[float]]:
    """Run one clone snapshot per (client, disk) in threads released together; (wall, results, times)."""
    from fastsnap import SnapshotRequest

    return at_once(lambda i: clients[i].snapshot(SnapshotRequest(disk=f"vms/{disks[i]}", name=unique("conct"),
                                                                 store="fast")).to_dict(), len(clients))


def profile(stack: Stack, cleanup: Cleanup, a: argparse.Namespace, config: str, out_dir: str | None) -> dict[str, Any]:
    virtual, written = pair(a.profile_size)
    out = profile_stream(stack, cleanup, config, virtual, written, out_dir)
    out["clone"] = profile_clone(stack, cleanup, config, out_dir)
    return out


# -- main ----------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    parts = {p.strip() for p in a.only.split(",") if p.strip()}
    if parts == {"cost"}:  # its own JSON (results/cost.json) and RESULTS.md section
        return cost.main(["--out", a.out] if a.out else [])
    unknown = parts - set(ALL_PARTS)
    if unknown:
        raise SystemExit(f"bench: unknown parts {sorted(unknown)}")
    env = Env.load()
    config = env.bench_config(max_concurrent=64, flatten=a.flatten)
    stack = connect(env)
    cleanup = Cleanup(stack)
    trim_at_once(stack.admin_a)  # and each measurement waits until trimming is done
    left = sweep(stack)
    if left:
        log(f"removed {left} leftovers of an earlier run")
    facts = machine_facts(stack)
    started = time.time()
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "args": vars(a), "machine": facts}
    errors: list[str] = []
    result["errors"] = errors
    try:
        from fastsnap import Fastsnap

        fs = Fastsnap(config_file=config)
        fs.stores()  # warm: Ceph connection and Keystone token
        rows: list[Row] = []
        if parts & {"stream", "clone", "thin"}:
            rows = size_series(stack, cleanup, a, config, fs, parts)
            emit("sizes", {}, rows)
        fs.close()
        result["rows"] = [r.to_dict() for r in rows]
        if "ratio" in parts:
            try:
                rr = ratio(stack, cleanup, a, config)
                result["ratio"] = [r.to_dict() for r in rr]
                emit("ratio", {}, rr)
            except Exception as exc:
                errors.append(f"ratio: {type(exc).__name__}: {exc}")
                log(errors[-1])
        if "concurrency" in parts:
            try:
                conc = concurrency(stack, cleanup, a, config)
                result["concurrency"] = conc
                print(json.dumps({"benchmark": "concurrency", "rows": conc}, indent=1))
                print(table(conc, [("mode", "mode"), ("n", "N"), ("wall", "wall s"), ("max_seconds", "slowest s"),
                                   ("mean_seconds", "mean s")]))
            except Exception as exc:
                errors.append(f"concurrency: {type(exc).__name__}: {exc}")
                log(errors[-1])
        if "profile" in parts:
            try:
                result["profile"] = profile(stack, cleanup, a, config, results_dir(a.out) if a.out else None)
                print(json.dumps({"benchmark": "profile", **result["profile"]}, indent=1))
            except Exception as exc:
                errors.append(f"profile: {type(exc).__name__}: {exc}")
                log(errors[-1])
    finally:
        cleanup.all()
        stack.shutdown()
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["duration_s"] = round(time.time() - started, 1)
    if a.out:
        old_path = os.path.join(results_dir(a.out), "results.json")
        if a.merge and os.path.exists(old_path):
            with open(old_path) as f:
                old = json.load(f)
            for key in ("rows", "ratio", "concurrency", "profile"):
                if not result.get(key) and old.get(key):
                    result[key] = old[key]
            result["merged_from"] = old.get("started")

        write_all(result, a.out)
        log(f"wrote {a.out}/RESULTS.md, {a.out}/results/results.json and time_vs_size.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
