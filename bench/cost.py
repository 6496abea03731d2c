"""What each clone-path snapshot costs the cloud (issue 17), and the CLI's peak memory.

For N clone-path snapshots at once (threads of one process sharing one warm ``Fastsnap`` client, as the service
runs its jobs), with Glance's ``do_secure_hash`` on and off:

- wall time (all N released together until the last returns) and each snapshot's own time;
- CPU-seconds of fastsnap (this process, plus children it waited for), Glance (gunicorn master + workers),
  Keystone (gunicorn master + workers) and cluster A's OSD, read from ``/proc/<pid>/stat`` before the
  snapshots and after the cluster went quiet again (Glance's background hashing included);
- the CPU floor: the sum of those CPU-seconds divided by the machine's cores, next to the wall time;
- the requests fastsnap made to Glance and Keystone, by kind (``testkit.reqcount``: every keystoneauth1 /
  glanceclient request of this process).

One ``fastsnap snapshot`` CLI run on the clone path is counted the same way (its requests through
``bench/_count/sitecustomize.py``). ``--memory`` measures the CLI's peak RSS (``wait4``'s ``ru_maxrss``, see
bench/launch.py) on the clone path and on streams of the given sizes.

    .venv/bin/python -m bench.cost [--n 1,8,16,32] [--hash off,on] [--disk 1:0.25] [--memory 1:0.5,2:1,4:2]
                                   [--out bench] [--label after]
    scripts/bench --only cost          (the same through bench.run, with its defaults)

Glance is reconfigured by running ``ceph-test-env/up`` with ``FASTSNAP_TEST_GLANCE_SECURE_HASH`` (it restarts
Glance when its configuration changed), and left with hashing on (the stack's default) at the end. The bench's
fastsnap config uses ``[snapshot] flatten = never`` unless ``--flatten`` says otherwise: the background
flatten (a ``ceph`` child per snapshot, then the mgr's copy) is a deferred cost of its own, not measured here.
Results: ``OUT/results/cost.json`` (one entry per ``--label``, kept across runs) and the ``cost`` section of
``OUT/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.lib import (
    BENCH_DIR,
    ROOT,
    Cleanup,
    Env,
    Started,
    arg_parser,
    at_once,
    connect,
    cpu_seconds,
    daemon_pids,
    fastsnap_argv,
    gib,
    log,
    make_disk,
    pair,
    sweep,
    table,
    trim_at_once,
    unique,
    wait_snaptrim,
)
from testkit.reqcount import Counter, services_from_env, total
from testkit.results import read_saved, results_dir, write_section
from testkit.stack import Stack

SECTION = "cost"
BASELINE = "before"                  # the code before issue 17
AFTERS = ("after", "after-patch")    # location_api = auto, location_api = patch


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = arg_parser(__doc__, prog="bench.cost")
    p.add_argument("--n", default="1,8,16,32", help="numbers of concurrent clone snapshots [1,8,16,32]")
    p.add_argument("--hash", default="off,on", help="Glance do_secure_hash settings to measure [off,on]")
    p.add_argument("--n-hashed", help="numbers of concurrent snapshots with hashing on (default: --n)")
    p.add_argument("--disk", default="1:0.25", help="VIRTUAL:WRITTEN GiB of each disk [1:0.25]")
    p.add_argument("--single-repeats", type=int, default=3, help="repeats of the N=1 measurement [3]")
    p.add_argument("--memory", default="1:0.5,2:1,4:2",
                   help="VIRTUAL:WRITTEN GiB of the streams whose CLI peak RSS is measured besides the clone ('': the "
                        "clone only; none: no memory measurement)")
    p.add_argument("--location-api", default="auto", choices=("auto", "locations", "patch"),
                   help="fastsnap's [glance] location_api; patch also turns on Glance's show_multiple_locations "
                        "for the run [auto]")
    p.add_argument("--flatten", default="never", help="[snapshot] flatten of the bench config [never]")
    p.add_argument("--label", default="current", help="name of this run in cost.json (e.g. before, after)")
    p.add_argument("--out", help="directory of RESULTS.md, cost.json in its results/ (scripts/bench: bench)")
    p.add_argument("--merge", action="store_true",
                   help="keep the parts of this label in cost.json that this run does not measure (the other hash "
                        "setting, the memory rows)")
    p.add_argument("--settle-timeout", type=float, default=600, help="seconds to wait for the cluster to go quiet")
    return p.parse_args(argv)


# -- processes and their CPU ----------------------------------------------------------------------------------


def stack_pids(run_dir: str) -> dict[str, list[int]]:
    """Glance and Keystone (gunicorn master + workers) and cluster A's OSDs."""
    return daemon_pids(run_dir, ("glance", "keystone"))


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_now(pids: dict[str, list[int]]) -> dict[str, float]:
    out = {k: cpu_seconds(v) for k, v in pids.items()}
    out["fastsnap"] = self_cpu()
    return out


def quiet(pids: dict[str, list[int]], timeout: float, rate: float = 0.05, window: float = 1.5) -> float:
    """Wait until Glance, Keystone and the OSD together use less than ``rate`` CPU-s per second over ``window``
    seconds (Glance's background hashing done); seconds waited."""
    t0 = time.monotonic()
    daemons = [p for k, v in pids.items() for p in v]
    last = cpu_seconds(daemons)
    while time.monotonic() - t0 < timeout:
        time.sleep(window)
        now = cpu_seconds(daemons)
        if now - last < rate * window:
            break
        last = now
    return time.monotonic() - t0


# -- Glance's configuration -------------------------------------------------------------------------------------


def set_secure_hash(on: bool, multiple_locations: bool = False) -> float:
    """Run ``ceph-test-env/up`` with Glance's do_secure_hash on or off and show_multiple_locations (for
    ``location_api = patch``) on or off (Glance restarts when its configuration changed)."""
    t0 = time.monotonic()
    env = {**os.environ, "FASTSNAP_TEST_GLANCE_SECURE_HASH": "True" if on else "False",
           "FASTSNAP_TEST_GLANCE_SHOW_MULTIPLE_LOCATIONS": "True" if multiple_locations else "False"}
    up = subprocess.run([os.path.join(ROOT, "ceph-test-env", "up")], env=env, capture_output=True, text=True,
                        check=False, timeout=900)
    if up.returncode != 0:
        raise RuntimeError(f"ceph-test-env/up failed: {up.stderr[-2000:]}")
    return time.monotonic() - t0


def glance_conf_hash(run_dir: str) -> str:
    with open(os.path.join(run_dir, "glance", "etc", "glance-api.conf")) as f:
        for line in f:
            if line.startswith("do_secure_hash"):
                return line.split("=", 1)[1].strip()
    return "True (default)"


# -- one measurement ------------------------------------------------------------------------------------------


def snapshots_at_once(fs: Any, disks: Sequence[str]) -> tuple[float, list[Any], list[float]]:
    """One clone snapshot per disk, in threads released together, all through ``fs``; (wall, results, times)."""
    from fastsnap import SnapshotRequest

    return at_once(lambda i: fs.snapshot(SnapshotRequest(disk=f"vms/{disks[i]}", name=unique("cost"), store="fast")),
                   len(disks))


def measure(stack: Stack, cleanup: Cleanup, fs: Any, counter: Counter, disks: Sequence[str], pids: dict[str, list[int]],
            settle_timeout: float) -> dict[str, Any]:
    n = len(disks)
    wait_snaptrim(stack)
    quiet(pids, settle_timeout)
    counter.reset()
    before = cpu_now(pids)
    load0 = os.getloadavg()[0]
    wall, results, times = snapshots_at_once(fs, disks)
    cpu_wall = {k: round(v - before[k], 3) for k, v in cpu_now(pids).items()}
    counts = counter.snapshot()
    settled = quiet(pids, settle_timeout)
    after = cpu_now(pids)
    cpu = {k: round(after[k] - before[k], 3) for k in after}
    cores = os.cpu_count() or 1
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    for r in ok:
        cleanup.image(r.image_id)
    hashed = 0
    for r in ok:  # after the CPU was read: these calls are the bench's, not fastsnap's
        img = stack.image(r.image_id) or {}
        hashed += 1 if img.get("os_hash_value") else 0
    for r in ok:
        cleanup.drop_image(r.image_id)
    floor = sum(cpu_wall.values()) / cores
    floor_settled = sum(cpu.values()) / cores
    row = {
        "n": n, "wall": round(wall, 3), "max_seconds": round(max(times), 3),
        "mean_seconds": round(sum(times) / n, 3), "failed": len(errors), "errors": errors[:3],
        "cpu_s": cpu, "cpu_s_in_wall": cpu_wall, "settle_s": round(settled, 1),
        "cpu_floor": round(floor, 3), "cpu_floor_settled": round(floor_settled, 3),
        "wall_over_floor": round(wall / floor, 2) if floor else None,
        "requests": counts, "glance_requests": total(counts, "glance"),
        "keystone_requests": total(counts, "keystone"),
        "glance_requests_per_snapshot": round(total(counts, "glance") / n, 2),
        "keystone_requests_per_snapshot": round(total(counts, "keystone") / n, 2),
        "per_snapshot_cpu_s": {k: round(v / n, 3) for k, v in cpu.items()},
        "hashed": hashed, "loadavg_start": round(load0, 2), "loadavg_end": round(os.getloadavg()[0], 2),
    }
    log(f"  N={n}: wall {wall:.2f}s, CPU {cpu}, floor {floor:.2f}s, Glance requests {row['glance_requests']} "
        f"({row['glance_requests_per_snapshot']}/snapshot), keystone {row['keystone_requests']}, "
        f"{len(errors)} failed, load {load0:.1f}")
    return row


def cli_clone(stack: Stack, cleanup: Cleanup, config: str, disk: str) -> dict[str, Any]:
    """One ``fastsnap snapshot`` CLI run on the clone path, its requests counted in the child."""
    count_file = os.path.join(stack.run_dir, f"bench-count-{os.getpid()}.json")
    env = {**os.environ, "FASTSNAP_BENCH_COUNT_FILE": count_file,
           "PYTHONPATH": os.pathsep.join([p for p in (os.environ.get("PYTHONPATH"), ROOT,
                                                      os.path.join(BENCH_DIR, "_count")) if p])}
    proc = Started(fastsnap_argv(config, "snapshot", "--disk", f"vms/{disk}", "--name", unique("costcli"),
                                 "--store", "fast", "--json"), env=env).wait()
    res = proc.json()
    cleanup.image(res["image_id"])
    with open(count_file) as f:
        counts = json.load(f)
    os.unlink(count_file)
    cleanup.drop_image(res["image_id"])
    return {"seconds": res["seconds"], "wall": round(proc.wall, 3), "max_rss": proc.max_rss,
            "cpu_s": round(proc.user_cpu + proc.sys_cpu, 3), "requests": counts,
            "glance_requests": total(counts, "glance"), "keystone_requests": total(counts, "keystone")}


def memory(stack: Stack, cleanup: Cleanup, config: str, sizes: str, clone_disk: str) -> list[dict[str, Any]]:
    """Peak RSS of ``fastsnap snapshot`` on the clone path and on streams into the file store."""
    rows: list[dict[str, Any]] = []
    todo: list[tuple[str, str, int, int]] = [("clone", clone_disk, 0, 0)]
    sizes_l = [x for x in sizes.split(",") if x]
    for s in sizes_l:
        virtual, written = pair(s)
        disk = cleanup.disk(unique(f"mem{written >> 20}m"))
        make_disk(stack, disk, virtual, written)
        todo.append(("stream", disk, virtual, written))
    for i, (path, disk, virtual, written) in enumerate(todo):
        # the largest stream also with glibc's default malloc parameters (FASTSNAP_DEFAULT_MALLOC), to compare
        for malloc in ("bounded", "glibc default") if path == "stream" and i == len(todo) - 1 else ("bounded",):
            wait_snaptrim(stack)
            store = "fast" if path == "clone" else "cheap"
            env = {**os.environ, "FASTSNAP_DEFAULT_MALLOC": "1"} if malloc != "bounded" else None
            proc = Started(fastsnap_argv(config, "snapshot", "--disk", f"vms/{disk}", "--name", unique("mem"),
                                         "--store", store, "--json"), env=env).wait()
            res = proc.json()
            cleanup.image(res["image_id"])
            cleanup.drop_image(res["image_id"])
            rows.append({"path": path, "virtual": virtual, "written": written, "max_rss": proc.max_rss,
                         "wall": round(proc.wall, 2), "cpu_s": round(proc.user_cpu + proc.sys_cpu, 2),
                         "malloc": malloc})
            log(f"  CLI {path} {gib(written)}/{gib(virtual)} ({malloc} malloc): peak RSS "
                f"{proc.max_rss / (1 << 20):.1f} MiB, {proc.wall:.1f}s, {proc.user_cpu + proc.sys_cpu:.2f} CPU-s")
        if path == "stream":
            cleanup.drop_disk(disk)
    return rows


# -- the run --------------------------------------------------------------------------------------------------


def run(a: argparse.Namespace) -> dict[str, Any]:
    from fastsnap import Fastsnap

    env = Env.load()
    config = env.bench_config(max_concurrent=64, flatten=a.flatten, location_api=a.location_api)
    stack = connect(env)
    cleanup = Cleanup(stack)
    counter = Counter(services_from_env(dict(os.environ))).install()
    trim_at_once(stack.admin_a)
    left = sweep(stack)
    if left:
        log(f"removed {left} leftovers of an earlier run")
    ns = [int(x) for x in a.n.split(",") if x]
    virtual, written = pair(a.disk)
    out: dict[str, Any] = {"label": a.label, "merge": a.merge, "location_api": a.location_api,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "args": vars(a), "cores": os.cpu_count(), "loadavg_start": os.getloadavg(),
                           "disk": {"virtual": virtual, "written": written}, "runs": []}
    try:
        disks = [cleanup.disk(unique(f"cost{i}")) for i in range(max(ns))]
        t0 = time.monotonic()
        for d in disks:
            make_disk(stack, d, virtual, written)
        log(f"{len(disks)} disks of {gib(written)}/{gib(virtual)} in {time.monotonic() - t0:.1f}s")
        for setting in [h.strip() for h in a.hash.split(",") if h.strip()]:
            took = set_secure_hash(setting == "on", a.location_api == "patch")
            log(f"Glance do_secure_hash = {glance_conf_hash(env.run_dir)} (up took {took:.1f}s)")
            pids = stack_pids(env.run_dir)
            fs = Fastsnap(config_file=config)
            fs.stores()  # connect to Ceph and Keystone now, not inside the measurement
            # warm Glance's workers (their first requests load code and validate fastsnap's token, their first
            # location task loads its own): two snapshots, not measured
            for _ in range(4):
                fs.glance.find(disks[0])
            _, warm, _ = snapshots_at_once(fs, disks[:2])
            for r in warm:
                if isinstance(r, BaseException):
                    raise RuntimeError(f"warm-up snapshot failed: {r}")
                cleanup.image(r.image_id)
                cleanup.drop_image(r.image_id)
            rows: list[dict[str, Any]] = []
            todo = [int(x) for x in a.n_hashed.split(",")] if a.n_hashed and setting == "on" else ns
            for n in todo:
                repeats = a.single_repeats if n == 1 else 1
                for rep in range(repeats):
                    row = measure(stack, cleanup, fs, counter, disks[rep:rep + n] if n == 1 else disks[:n], pids,
                                  a.settle_timeout)
                    row["repeat"] = rep
                    rows.append(row)
            cli = cli_clone(stack, cleanup, config, disks[0])
            log(f"  CLI clone: {cli['glance_requests']} Glance and {cli['keystone_requests']} Keystone requests, "
                f"{cli['wall']}s wall")
            fs.close()
            out["runs"].append({"secure_hash": setting == "on", "glance_conf": glance_conf_hash(env.run_dir),
                                "rows": rows, "cli": cli})
        if a.memory not in (None, "none"):
            out["memory"] = memory(stack, cleanup, config, a.memory, disks[0])
    finally:
        with contextlib.suppress(Exception):
            set_secure_hash(True)  # the stack's default
        cleanup.all()
        stack.shutdown()
        counter.uninstall()
    out["loadavg_end"] = os.getloadavg()
    return out


# -- report ---------------------------------------------------------------------------------------------------


def summary_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per N (N=1: the median repeat by wall time)."""
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in run["rows"]:
        by_n.setdefault(r["n"], []).append(r)
    out = []
    for n in sorted(by_n):
        rs = sorted(by_n[n], key=lambda r: r["wall"])
        out.append(rs[len(rs) // 2])
    return out


def _view(r: dict[str, Any]) -> dict[str, Any]:
    c = r["cpu_s"]
    return {"n": r["n"], "wall": r["wall"], "floor": r["cpu_floor_settled"],
            "ratio": round(r["wall"] / r["cpu_floor_settled"], 2) if r["cpu_floor_settled"] else None,
            "fastsnap": c["fastsnap"], "glance": c["glance"], "keystone": c["keystone"], "osd": c["osd"],
            "glance_per": round(c["glance"] / r["n"], 3), "greq": r["glance_requests_per_snapshot"],
            "kreq": r["keystone_requests_per_snapshot"], "mean": r["mean_seconds"], "load": r["loadavg_start"],
            "failed": r["failed"]}


COLS = (("n", "N"), ("wall", "wall s"), ("floor", "CPU floor s"), ("ratio", "wall / floor"),
        ("fastsnap", "fastsnap CPU s"), ("glance", "Glance CPU s"), ("keystone", "Keystone CPU s"),
        ("osd", "OSD CPU s"), ("glance_per", "Glance CPU s / snapshot"), ("greq", "Glance req / snapshot"),
        ("kreq", "Keystone req / snapshot"), ("mean", "mean snapshot s"), ("load", "load avg"),
        ("failed", "failed"))


def md_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLS) + " |", "|" + "---|" * len(COLS)]
    for r in rows:
        v = _view(r)
        lines.append("| " + " | ".join("-" if v[k] is None else str(v[k]) for k, _ in COLS) + " |")
    return "\n".join(lines)


def print_run(result: dict[str, Any]) -> None:
    for run in result["runs"]:
        print(f"\n{result['label']}: do_secure_hash = {run['secure_hash']}")
        print(table([_view(r) for r in summary_rows(run)], COLS))


def save(result: dict[str, Any], out_dir: str) -> None:
    path = os.path.join(results_dir(out_dir), "cost.json")
    saved: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
    old = saved.get(result["label"])
    if old and result.get("merge"):
        # a partial re-run (e.g. --hash off) replaces only what it measured
        measured = {r["secure_hash"] for r in result["runs"]}
        result["runs"] = sorted([r for r in old.get("runs", []) if r["secure_hash"] not in measured]
                                + result["runs"], key=lambda r: r["secure_hash"])
        if not result.get("memory") and old.get("memory"):
            result["memory"] = old["memory"]
        result["merged_with"] = [*old.get("merged_with", []), old.get("started")]
    saved[result["label"]] = result
    with open(path, "w") as f:
        json.dump(saved, f, indent=1, sort_keys=True, default=str)


def saved_section(out_dir: str) -> str:
    """The ``cost`` section of RESULTS.md, drawn from ``results/cost.json`` (empty when there is none)."""
    saved = read_saved(out_dir, "cost.json")
    return section(saved) if saved is not None else ""


def _kinds(counts: dict[str, dict[str, int]], n: int) -> str:
    parts = []
    for service in ("glance", "keystone"):
        for k, v in sorted(counts.get(service, {}).items(), key=lambda kv: -kv[1]):
            parts.append(f"{service} `{k}` {v / n:g}")
    return "; ".join(parts) or "none"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def section(saved: dict[str, Any]) -> str:
    known = (BASELINE, *AFTERS)
    labels = [x for x in known if x in saved] + [x for x in saved if x not in known]
    out = [f"<!-- {SECTION}:begin -->", "## What a clone snapshot costs (issue 17, `python -m bench.cost`)", ""]
    out.append("N clone-path snapshots at once: threads of one process sharing one warm `Fastsnap` client (as the "
               "service runs its jobs), each of its own disk, into the rbd store `fast`. CPU-seconds from "
               "`/proc/<pid>/stat` of this process (fastsnap, with its waited children), Glance's and Keystone's "
               "gunicorn processes and cluster A's OSD, from the release of the N snapshots until the cluster is "
               "quiet again (Glance's background hashing included). CPU floor = sum of those CPU-seconds / cores "
               "(2): the shortest wall time the work could take on this machine. Requests: every HTTP request of "
               "the process to Glance / Keystone (keystoneauth1 and glanceclient, retries included), by kind. "
               "N=1: the median of its repeats. `[snapshot] flatten = never` in the bench's config: the background "
               "flatten (a `ceph` child per snapshot, then the mgr's copy) is a deferred cost not counted here. "
               "Each row gives the load average at its start: on a busy machine prefer the CPU-seconds and "
               "request counts, which load distorts less than wall times. Labels: `before` = the code before issue "
               "17; `after` = `[glance] location_api = auto` (Glance's 2.17 location API); `after-patch` = "
               "`location_api = patch` with Glance's `show_multiple_locations = True`.")
    for label in labels:
        res = saved[label]
        d = res.get("disk", {})
        out += ["", f"### {label}: {res.get('started')} (disks {gib(d.get('written', 0))} written of "
                    f"{gib(d.get('virtual', 0))}, load average {res['loadavg_start'][0]:.1f} at start, "
                    f"{res['loadavg_end'][0]:.1f} at end)"]
        if res.get("location_api"):
            out += ["", f"fastsnap `[glance] location_api = {res['location_api']}`."]
        if res.get("merged_with"):
            out += ["", f"(Parts not re-measured at {res.get('started')} are from the run(s) of "
                        f"{', '.join(str(x) for x in res['merged_with'])}; each table names its load.)"]
        if res.get("note"):
            out += ["", res["note"]]
        for run in res["runs"]:
            out += ["", f"do_secure_hash = {run['secure_hash']}:", "", md_table(summary_rows(run))]
            one = summary_rows(run)[0]
            out += ["", f"Requests per snapshot at N=1: {_kinds(one['requests'], one['n'])}."]
            cli = run.get("cli")
            if cli:
                out += [f"One CLI clone snapshot (`fastsnap snapshot --json`): {cli['glance_requests']} Glance and "
                        f"{cli['keystone_requests']} Keystone requests ({_kinds(cli['requests'], 1)}); "
                        f"{cli['seconds']} s inside, {cli['wall']} s process wall, {cli['cpu_s']} CPU-s, peak RSS "
                        f"{_mib(cli['max_rss'])}."]
        if res.get("memory"):
            out += ["", "CLI peak RSS (`wait4` `ru_maxrss`; malloc: the CLI's bounded arenas and mmap threshold, or "
                    "glibc's defaults with `FASTSNAP_DEFAULT_MALLOC=1`):", "",
                    "| path | written / virtual | malloc | peak RSS | wall s | CPU s |", "|---|---|---|---|---|---|"]
            for m in res["memory"]:
                size = f"{gib(m['written'])} / {gib(m['virtual'])}" if m["path"] == "stream" else \
                    f"{gib(d.get('written', 0))} / {gib(d.get('virtual', 0))}"
                out.append(f"| {m['path']} | {size} | {m.get('malloc', 'glibc default')} | {_mib(m['max_rss'])} | "
                           f"{m['wall']} | {m['cpu_s']} |")
    out += ["", *targets(saved), f"<!-- {SECTION}:end -->", ""]
    return "\n".join(out)


def _row(saved: dict[str, Any], label: str, hashing: bool, n: int) -> dict[str, Any] | None:
    for run in saved.get(label, {}).get("runs", []):
        if run["secure_hash"] == hashing:
            for r in summary_rows(run):
                if r["n"] == n:
                    return r
    return None


def targets(saved: dict[str, Any]) -> list[str]:
    """The issue's targets, for each newest run ("after", "after-patch") against the baseline ("before")."""
    afters = [x for x in AFTERS if x in saved]
    if not afters:
        return []
    lines = ["### Targets (before = the code before issue 17, same machine, same day)", "",
             "| target | run | measured | met? |", "|---|---|---|---|"]

    def add(what: str, label: str, measured: str, met: bool | None) -> None:
        verdict = "-" if met is None else "**met**" if met else "**not met**"
        lines.append(f"| {what} | {label} | {measured} | {verdict} |")

    for label in afters:
        for hashing in (False, True):
            one = _row(saved, label, hashing, 1)
            if one:
                g = one["glance_requests_per_snapshot"]
                add(f"Glance requests per clone snapshot ≤ 6 (hash {'on' if hashing else 'off'})", label, f"{g:g}",
                    g <= 6)
        per = [r["cpu_s"]["glance"] / r["n"] for n in (1, 8, 16, 32)
               if (r := _row(saved, label, False, n)) is not None]
        if per:
            add("Glance CPU per clone snapshot ≤ 0.1 s, hashing off", label,
                ", ".join(f"{x:.3f}" for x in per) + " s (N = 1, 8, 16, 32)", max(per) <= 0.1)
        for n in (16, 32):
            r = _row(saved, label, False, n)
            b = _row(saved, BASELINE, False, n)
            if r:
                floor = r["cpu_floor_settled"]
                add(f"N={n}, hashing off: wall ≤ 1.3x the CPU floor", label,
                    f"{r['wall']:.2f} s vs floor {floor:.2f} s ({r['wall'] / floor:.2f}x)", r["wall"] <= 1.3 * floor)
            if r and b:
                add(f"N={n}, hashing off: wall ≤ half of before", label,
                    f"{r['wall']:.2f} s vs {b['wall']:.2f} s ({r['wall'] / b['wall']:.2f}x)",
                    r["wall"] <= 0.5 * b["wall"])
        r1, b1 = _row(saved, label, False, 1), _row(saved, BASELINE, False, 1)
        if r1 and b1:
            add("single clone snapshot no slower than before (hashing off)", label,
                f"{r1['mean_seconds']:.3f} s vs {b1['mean_seconds']:.3f} s",
                r1["mean_seconds"] <= b1["mean_seconds"] * 1.1)
        mem = saved[label].get("memory") or []
        if mem:
            peak = max(m["max_rss"] for m in mem if m.get("malloc", "bounded") == "bounded")
            add("CLI peak RSS ≤ 150 MiB on every path and size", label, f"max {_mib(peak)}", peak <= 150 << 20)
    return [*lines, ""]


def write(result: dict[str, Any], out_dir: str) -> None:
    save(result, out_dir)
    write_section(os.path.join(out_dir, "RESULTS.md"), SECTION, saved_section(out_dir))


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    result = run(a)
    print(json.dumps({"benchmark": "cost", **result}, indent=1, default=str))
    print_run(result)
    if a.out:
        write(result, a.out)
        log(f"wrote {a.out}/results/cost.json and the '{SECTION}' section of {a.out}/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
