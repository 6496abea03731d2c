"""What the journal in RADOS costs a clone-path snapshot (issue 23 point 8): the code before it against now.

"before" is an earlier revision (default ``aa9cdc5``, the SQLite journal), checked out in a git worktree; "after" is
this checkout (the journal in RADOS, :mod:`fastsnap.rados_journal`). Both run with this venv as
``python -P -m fastsnap.cli`` and ``PYTHONPATH=<their tree>`` (``-P``: the working directory is not put first on
``sys.path``, so each side imports its own tree's ``fastsnap``; checked once at the start), each with a
configuration of its own: its own ``[journal] state_dir``, and for "after" its own ``[journal] namespace``
(``t-bench-<random>``, whose objects are removed at the end), its own service port and log directory,
``[snapshot] flatten = never`` (the background flatten is a deferred cost, not the journal's) and
``max_concurrent = 32``. Measured, before and after interleaved (before, after, before, after, ...) so that
load from other work on the machine hits both alike, after one warm-up of each that is not counted:

- ``--singles`` single clone-path snapshots through the CLI (``fastsnap snapshot --disk vms/<disk> --name x
  --base-image <base> --json``; the process's wall time, and the ``seconds`` it reports itself);
- ``--singles`` single clone-path snapshots through each side's REST service (``fastsnap serve``): POST, then
  GET every 10 ms until the job is final; the time from the POST until then;
- ``--rounds`` rounds of ``--n`` snapshots at once through the service (one client thread each, released
  together, each POSTing then polling its job every 50 ms; one disk each): the wall time until the last is final.

The base image is ``$FASTSNAP_NOVA_IMAGE`` (the stack's guest image, in the rbd store ``fast``). Every snapshot's
Glance image is deleted right after its measurement, the disks at the end. Before each measurement the bench waits
(at most a few seconds) for the OSDs' snapshot trimming and for Glance, Keystone and the OSD to go quiet.

    .venv/bin/python -m bench.journal_cost [--before aa9cdc5] [--singles 15] [--rounds 3] [--n 32]
                                           [--disk 32:8] [--out bench] [--no-record]
    .venv/bin/python -m bench.journal_cost --redraw [--note TEXT]   # the section again from journal_cost.json

Writes ``OUT/results/journal_cost.json`` and the ``journal-cost`` section of ``OUT/RESULTS.md`` (replaced in place).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.cost import quiet, stack_pids
from bench.lib import (
    BENCH_DIR,
    ROOT,
    Cleanup,
    Env,
    MiB,
    Started,
    arg_parser,
    at_once,
    connect,
    log,
    make_disk,
    trim_at_once,
    unique,
    wait_snaptrim,
)
from testkit.cleanup import stop_process
from testkit.results import results_dir, write_section
from testkit.stack import Stack

SECTION = "journal-cost"
BEFORE_REV = "aa9cdc5"
SIDES = ("before", "after")
FINAL = ("done", "failed", "cancelled")
LIMIT_SINGLE_S = 0.050   # a single snapshot: at most 50 ms slower than before
LIMIT_MANY = 0.10        # N at once: within 10 % of before's wall time


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = arg_parser(__doc__, prog="bench.journal_cost")
    p.add_argument("--before", default=BEFORE_REV, help=f"the revision of 'before' [{BEFORE_REV}]")
    p.add_argument("--before-tree", help="an existing checkout of --before to use (default: a temporary git "
                                         "worktree, removed at the end)")
    p.add_argument("--singles", type=int, default=15, help="single snapshots each way, CLI and service [15]")
    p.add_argument("--rounds", type=int, default=3, help="rounds of --n snapshots at once, each way [3]")
    p.add_argument("--n", type=int, default=32, help="snapshots at once [32]")
    p.add_argument("--disk", default="32:8", help="VIRTUAL:WRITTEN MiB of each disk [32:8]")
    p.add_argument("--quiet-timeout", type=float, default=4.0,
                   help="at most this many seconds of waiting for the stack to go quiet before a measurement [4]")
    p.add_argument("--out", default=BENCH_DIR, help="directory of RESULTS.md (journal_cost.json: its results/) [bench]")
    p.add_argument("--no-record", action="store_true", help="print the figures; do not write OUT")
    p.add_argument("--redraw", action="store_true", help="measure nothing: write the section from OUT's JSON")
    p.add_argument("--note", help="with --redraw: the paragraph on what the figures mean (kept in the JSON)")
    return p.parse_args(argv)


# -- the two sides ------------------------------------------------------------------------------------------


@dataclass
class Side:
    label: str
    tree: str
    tmp: str
    conf: str
    namespace: str | None
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    imported: str = ""
    logf: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-P", "-m", "fastsnap.cli", "--config-file", self.conf, *args]

    @property
    def state_dir(self) -> str:
        return os.path.join(self.tmp, "state")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PROBE = ("import json, sys, fastsnap.cli, fastsnap.api, fastsnap.journal, fastsnap.service.server; "
         "print(json.dumps({k: m.__file__ for k, m in sys.modules.items() "
         "if k.split('.')[0] == 'fastsnap' and getattr(m, '__file__', None)}))")


def make_side(label: str, tree: str, env: Env, max_concurrent: int) -> Side:
    tmp = tempfile.mkdtemp(prefix=f"fastsnap-jcost-{label}-")
    port = free_port()
    ns = f"t-bench-{secrets.token_hex(6)}" if label == "after" else None
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(env.fastsnap_config)
    os.makedirs(os.path.join(tmp, "log"))
    journal = {"state_dir": os.path.join(tmp, "state")}
    if ns:
        journal["namespace"] = ns
    for sect, values in (("DEFAULT", {"log_dir": os.path.join(tmp, "log")}),
                         ("journal", journal),
                         ("service", {"bind_host": "127.0.0.1", "bind_port": str(port), "retry_after": "1"}),
                         ("snapshot", {"max_concurrent": str(max_concurrent), "flatten": "never"})):
        if sect != "DEFAULT" and not cp.has_section(sect):
            cp.add_section(sect)
        for k, v in values.items():
            cp.set(sect, k, v)
    conf = os.path.join(tmp, "fastsnap.conf")
    with open(conf, "w") as f:
        cp.write(f)
    child_env = {k: v for k, v in os.environ.items() if k != "FASTSNAP_CONFIG_FILE"}
    child_env["PYTHONPATH"] = tree
    side = Side(label, tree, tmp, conf, ns, port, child_env)
    # fastsnap is installed editable: a meta-path finder maps ``fastsnap.<module>`` to this checkout whenever the
    # tree on PYTHONPATH lacks that module, so check every module the CLI and the service load, not only fastsnap's.
    probe = subprocess.run([sys.executable, "-P", "-c", PROBE], env=child_env, capture_output=True, text=True,
                           check=True, cwd=ROOT)
    files = json.loads(probe.stdout)
    side.imported = files["fastsnap"]
    foreign = [f for f in files.values() if not os.path.realpath(f).startswith(os.path.realpath(tree) + os.sep)]
    if foreign:
        raise SystemExit(f"bench: {label} imports modules outside its tree {tree}: {foreign[:5]}")
    has_rados = os.path.exists(os.path.join(tree, "fastsnap", "rados_journal.py"))
    if has_rados != (label == "after"):
        raise SystemExit(f"bench: {label} ({tree}) has fastsnap/rados_journal.py: {has_rados}; wrong revision?")
    log(f"{label}: fastsnap from {side.imported} ({len(files)} modules, all in its tree), state {side.state_dir}, "
        f"namespace {ns}")
    return side


def start_service(side: Side) -> None:
    side.logf = open(os.path.join(side.tmp, "service.log"), "w")  # noqa: SIM115 - closed in stop_service
    side.proc = subprocess.Popen(side.argv("serve"), env=side.env, stdout=side.logf, stderr=subprocess.STDOUT)


def wait_service(side: Side, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if side.proc is not None and side.proc.poll() is not None:
            raise RuntimeError(f"{side.label} service exited {side.proc.returncode}: see {side.tmp}/service.log")
        with contextlib.suppress(requests.RequestException):
            requests.get(side.url + "/openapi.json", timeout=2)
            return
        time.sleep(0.2)
    raise RuntimeError(f"{side.label} service not up after {timeout}s")


def stop_service(side: Side) -> None:
    stop_process(side.proc, term_wait=60, kill_wait=10)
    if side.logf is not None:
        side.logf.close()
        side.logf = None


@contextlib.contextmanager
def before_tree(rev: str, given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="fastsnap-before-")
    os.rmdir(path)
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, rev], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path], check=False, capture_output=True)


def purge_namespace(stack: Stack, pool: str, ns: str) -> int:
    """Remove every object of the journal's namespace ``ns`` (the after side's, made for this run)."""
    io = stack.admin_a.open_ioctx(pool)
    try:
        io.set_namespace(ns)
        names = [o.key for o in io.list_objects()]
        for name in names:
            with contextlib.suppress(Exception):
                io.remove_object(name)
        left = sum(1 for _ in io.list_objects())
    finally:
        io.close()
    if left:
        log(f"namespace {pool}/{ns}: {left} objects could not be removed")
    return len(names)


def namespace_objects(stack: Stack, pool: str, ns: str) -> dict[str, int]:
    io = stack.admin_a.open_ioctx(pool)
    try:
        io.set_namespace(ns)
        kinds: dict[str, int] = {}
        for o in io.list_objects():
            kind = ".".join(o.key.split(".")[:2])
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds
    finally:
        io.close()


# -- measurements -------------------------------------------------------------------------------------------


@dataclass
class Bench:
    stack: Stack
    cleanup: Cleanup
    base: str
    pids: dict[str, list[int]]
    quiet_timeout: float
    token: str = ""
    load: list[tuple[float, float]] = field(default_factory=list)   # (seconds since start, 1-min load average)

    def settle(self, timeout: float | None = None) -> float:
        t0 = time.monotonic()
        wait_snaptrim(self.stack, timeout=60)
        quiet(self.pids, self.quiet_timeout if timeout is None else timeout, window=1.0)
        return time.monotonic() - t0

    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token}

    def drop(self, image_ids: Sequence[str]) -> None:
        for i in image_ids:
            self.cleanup.image(i)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.cleanup.drop_image, image_ids))

    def cli(self, side: Side, disk: str) -> dict[str, Any]:
        load0 = os.getloadavg()[0]
        proc = Started(side.argv("snapshot", "--disk", f"vms/{disk}", "--name", unique("jcost-cli"),
                                 "--base-image", self.base, "--json"), env=side.env).wait()
        res = proc.json()
        self.drop([res["image_id"]])
        if res.get("path") != "clone":
            raise RuntimeError(f"{side.label}: CLI snapshot took the {res.get('path')} path: {res.get('reason')}")
        return {"wall": round(proc.wall, 4), "seconds": res["seconds"], "cpu_s": round(proc.user_cpu + proc.sys_cpu, 3),
                "max_rss": proc.max_rss, "load": round(load0, 2)}

    def post_and_wait(self, side: Side, disk: str, poll: float) -> dict[str, Any]:
        t0 = time.monotonic()
        body = {"disk": f"vms/{disk}", "name": unique("jcost-svc"), "base_image": self.base}
        resp = requests.post(f"{side.url}/v1/snapshots", json=body, headers=self.headers(), timeout=120)
        answered = time.monotonic() - t0
        if resp.status_code != 202:
            raise RuntimeError(f"{side.label}: POST answered {resp.status_code}: {resp.text[:300]}")
        job = resp.json()
        while job.get("state") not in FINAL:
            time.sleep(poll)
            job = requests.get(f"{side.url}/v1/snapshots/{job['id']}", headers=self.headers(), timeout=120).json()
        done = time.monotonic() - t0
        if job.get("image_id"):
            self.cleanup.image(str(job["image_id"]))
        if job["state"] != "done" or job.get("path") != "clone":
            raise RuntimeError(f"{side.label}: job {job['id']} {job['state']} by {job.get('path')}: {job.get('error')}")
        return {"seconds": round(done, 4), "answer_s": round(answered, 4),
                "job_s": (job.get("result") or {}).get("seconds"), "image_id": str(job["image_id"])}

    def service(self, side: Side, disk: str) -> dict[str, Any]:
        load0 = os.getloadavg()[0]
        r = self.post_and_wait(side, disk, poll=0.01)
        self.drop([r.pop("image_id")])
        return {**r, "load": round(load0, 2)}

    def many(self, side: Side, disks: Sequence[str]) -> dict[str, Any]:
        load0 = os.getloadavg()[0]
        wall, results, _ = at_once(lambda i: self.post_and_wait(side, disks[i], poll=0.05), len(disks))
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        ok = [r for r in results if not isinstance(r, BaseException)]
        load1 = os.getloadavg()[0]
        self.drop([r["image_id"] for r in ok])
        if errors:
            raise RuntimeError(f"{side.label}: {len(errors)} of {len(disks)} snapshots failed: {errors[:3]}")
        return {"wall": round(wall, 3), "max_s": round(max(r["seconds"] for r in ok), 3),
                "median_s": round(statistics.median(r["seconds"] for r in ok), 3),
                "median_job_s": round(statistics.median(float(r["job_s"] or 0) for r in ok), 3),
                "load": round(load0, 2), "load_end": round(load1, 2)}


def sampler(bench: Bench, stop: threading.Event, t0: float) -> None:
    while not stop.is_set():
        bench.load.append((round(time.monotonic() - t0, 1), round(os.getloadavg()[0], 2)))
        stop.wait(5)


def interleaved(bench: Bench, what: str, reps: int, fn: Callable[[Side], dict[str, Any]],
                sides: Sequence[Side], settle: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """One warm-up of each side (not counted), then ``reps`` times before, after."""
    out: dict[str, list[dict[str, Any]]] = {s.label: [] for s in sides}
    for s in sides:
        bench.settle(settle)
        fn(s)
    for i in range(reps):
        for s in sides:
            waited = bench.settle(settle)
            r = fn(s)
            r["settle_s"] = round(waited, 2)
            out[s.label].append(r)
        log(f"  {what} {i + 1}/{reps}: " + ", ".join(
            f"{s.label} {out[s.label][-1].get('wall', out[s.label][-1].get('seconds'))}" for s in sides))
    return out


# -- figures ------------------------------------------------------------------------------------------------


def spread(xs: Sequence[float]) -> dict[str, float]:
    s = sorted(xs)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0]] * 3
    return {"median": round(statistics.median(s), 4), "p25": round(q[0], 4), "p75": round(q[2], 4),
            "min": round(s[0], 4), "max": round(s[-1], 4), "n": len(s)}


def compare(runs: dict[str, list[dict[str, Any]]], key: str) -> dict[str, Any]:
    b = [float(r[key]) for r in runs["before"]]
    a = [float(r[key]) for r in runs["after"]]
    sb, sa = spread(b), spread(a)
    return {"key": key, "before": sb, "after": sa,
            "diff_medians": round(sa["median"] - sb["median"], 4),
            "median_paired_diff": round(statistics.median(y - x for x, y in zip(b, a, strict=True)), 4),
            "ratio_medians": round(sa["median"] / sb["median"], 4) if sb["median"] else None}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    m = result["measured"]
    cli_wall = compare(m["cli"], "wall")
    cli_inside = compare(m["cli"], "seconds")
    svc = compare(m["service"], "seconds")
    many = compare(m["many"], "wall")
    return {
        "cli_wall": {**cli_wall, "limit": f"after - before <= {LIMIT_SINGLE_S * 1000:.0f} ms",
                     "met": cli_wall["diff_medians"] <= LIMIT_SINGLE_S},
        "cli_inside": cli_inside,
        "service_single": {**svc, "limit": f"after - before <= {LIMIT_SINGLE_S * 1000:.0f} ms",
                           "met": svc["diff_medians"] <= LIMIT_SINGLE_S},
        "many": {**many, "limit": f"after / before <= {1 + LIMIT_MANY:.2f}",
                 "met": many["ratio_medians"] is not None and many["ratio_medians"] <= 1 + LIMIT_MANY},
    }


def _ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def _cell(s: dict[str, float], unit: Callable[[float], str]) -> str:
    return (f"{unit(s['median'])} ({unit(s['p25'])}-{unit(s['p75'])}; {unit(s['min'])}-{unit(s['max'])}; "
            f"n={s['n']})")


def section(result: dict[str, Any]) -> str:
    s = result["summary"]
    f = result["facts"]
    loads = [x for _, x in f["load_samples"]]

    def sec(x: float) -> str:
        return f"{x:.2f} s"

    def delta(c: dict[str, Any]) -> str:
        return f"{c['diff_medians'] * 1000:+.0f} ms (paired {c['median_paired_diff'] * 1000:+.0f} ms)"

    def verdict(c: dict[str, Any]) -> str:
        return "**met**" if c.get("met") else "**not met**" if "met" in c else "-"

    rows = [("single, CLI: process wall", s["cli_wall"], _ms, delta(s["cli_wall"])),
            ("single, CLI: fastsnap's own `seconds`", s["cli_inside"], _ms, delta(s["cli_inside"])),
            ("single, service: POST until the job is done", s["service_single"], _ms, delta(s["service_single"])),
            (f"{f['n']} at once, service: wall until the last is done", s["many"], sec,
             f"{s['many']['diff_medians']:+.2f} s, x{s['many']['ratio_medians']:.3f}")]
    out = [f"<!-- {SECTION}:begin -->",
           "## The journal in RADOS against SQLite (issue 23 point 8, `python -m bench.journal_cost`)", "",
           f"{f['started']}, {f['cpus']} CPUs shared with other sessions. before = `{f['before_rev']}` (SQLite "
           f"journal, a git worktree), after = `{f['after_rev']}`{' + uncommitted changes' if f['after_dirty'] else ''}"
           f" (journal in RADOS, namespace `{f['namespace']}` of pool `{f['pool']}`, its own for the run); the same "
           "venv, each side's own `[journal] state_dir`, service and logs; `[snapshot] flatten = never`, Glance's "
           f"`do_secure_hash` as the stack has it. Clone path into store `fast` with `--base-image` = the stack's "
           f"guest image; disks of {f['disk_written_mib']} MiB written of {f['disk_virtual_mib']} MiB. Before and "
           f"after interleaved (before, after, before, ...) after one uncounted warm-up each: {f['singles']} single "
           f"snapshots each way through the CLI (`python -P -m fastsnap.cli snapshot ... --json`, a new process "
           f"each) and {f['singles']} through each side's service (POST, then GET every 10 ms), then "
           f"{f['rounds']} rounds of {f['n']} POSTs released at once (one disk each, each client polling its job "
           "every 50 ms). Cells: median (p25-p75; min-max; n). The difference is after - before of the medians, "
           "and the median of the paired differences (each after run against the before run just ahead of it).",
           "", "| measurement | before | after | after - before | requirement | met? |", "|---|---|---|---|---|---|"]
    for name, c, unit, d in rows:
        out.append(f"| {name} | {_cell(c['before'], unit)} | {_cell(c['after'], unit)} | {d} | "
                   f"{c.get('limit', '-')} | {verdict(c)} |")
    out += ["", f"Load average (1 min) during the run: {min(loads):.2f}-{max(loads):.2f}, median "
                f"{statistics.median(loads):.2f} ({len(loads)} samples, every 5 s); run time "
                f"{f['run_seconds'] / 60:.1f} min. The after side left {f['namespace_objects_total']} objects in its "
                f"namespace ({', '.join(f'{k}: {v}' for k, v in sorted(f['namespace_objects'].items()))}), all "
                "removed at the end."]
    if result.get("note"):
        out += ["", result["note"]]
    out += [f"<!-- {SECTION}:end -->", ""]
    return "\n".join(out)


def record(result: dict[str, Any], out_dir: str) -> None:
    with open(os.path.join(results_dir(out_dir), "journal_cost.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    write_section(os.path.join(out_dir, "RESULTS.md"), SECTION, section(result))


# -- the run --------------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=True).stdout.strip()


def run(a: argparse.Namespace) -> dict[str, Any]:
    env = Env.load()
    base = os.environ.get("FASTSNAP_NOVA_IMAGE")
    if not base:
        raise SystemExit("bench: FASTSNAP_NOVA_IMAGE (a base image in the rbd store 'fast') is not set")
    stack = connect(env)
    cleanup = Cleanup(stack)
    trim_at_once(stack.admin_a)
    img = stack.image(base) or {}
    if "fast" not in str(img.get("stores", "")).split(","):
        raise SystemExit(f"bench: base image {base} is not in store 'fast' (stores: {img.get('stores')})")
    virtual, written = (int(float(x) * MiB) for x in a.disk.split(":"))
    t_start = time.monotonic()
    facts: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
        "before_rev": git("rev-parse", "--short", a.before), "after_rev": git("rev-parse", "--short", "HEAD"),
        "after_dirty": bool(git("status", "--porcelain", "--", "fastsnap")),
        "after_changes": git("status", "--porcelain", "--", "fastsnap").splitlines(),
        "base_image": base, "singles": a.singles, "rounds": a.rounds, "n": a.n,
        "disk_virtual_mib": virtual // MiB, "disk_written_mib": written // MiB, "loadavg_start": os.getloadavg(),
    }
    result: dict[str, Any] = {"facts": facts, "measured": {}}
    sides: list[Side] = []
    stop = threading.Event()
    pool = "vms"
    try:
        with before_tree(a.before, a.before_tree) as tree:
            sides = [make_side("before", tree, env, max(a.n, 5)), make_side("after", ROOT, env, max(a.n, 5))]
            facts["imported"] = {s.label: s.imported for s in sides}
            after = sides[1]
            assert after.namespace
            facts["namespace"], facts["pool"] = after.namespace, pool
            single = cleanup.disk(unique("jcost-1"))
            make_disk(stack, single, virtual, written)
            disks = [cleanup.disk(unique(f"jcost-n{i}")) for i in range(a.n)]
            for d in disks:
                make_disk(stack, d, virtual, written)
            bench = Bench(stack, cleanup, base, stack_pids(env.run_dir), a.quiet_timeout, token=stack.token())
            threading.Thread(target=sampler, args=(bench, stop, t_start), daemon=True).start()
            try:
                for s in sides:
                    start_service(s)
                for s in sides:
                    wait_service(s)
                log(f"CLI, {a.singles} single snapshots each way")
                result["measured"]["cli"] = interleaved(bench, "CLI", a.singles, lambda s: bench.cli(s, single),
                                                        sides)
                log(f"service, {a.singles} single snapshots each way")
                result["measured"]["service"] = interleaved(bench, "service", a.singles,
                                                            lambda s: bench.service(s, single), sides)
                log(f"service, {a.rounds} rounds of {a.n} at once each way")
                result["measured"]["many"] = interleaved(bench, f"{a.n} at once", a.rounds,
                                                         lambda s: bench.many(s, disks), sides,
                                                         settle=max(a.quiet_timeout, 20))
            finally:
                for s in sides:
                    stop_service(s)
            before_db = os.path.join(sides[0].state_dir, "journal.sqlite")
            facts["before_sqlite_journal_bytes"] = os.path.getsize(before_db) if os.path.exists(before_db) else 0
            if not facts["before_sqlite_journal_bytes"]:
                raise RuntimeError(f"before wrote no SQLite journal at {before_db}: did it run the old code?")
            kinds = namespace_objects(stack, pool, after.namespace)
            facts["namespace_objects"], facts["namespace_objects_total"] = kinds, sum(kinds.values())
            if not kinds.get("fastsnap.operation"):
                raise RuntimeError(f"after wrote no operation into {pool}/{after.namespace}")
    finally:
        stop.set()
        cleanup.all()
        for s in sides:
            if s.namespace:
                n = purge_namespace(stack, pool, s.namespace)
                log(f"removed {n} objects of {pool}/{s.namespace}")
            shutil.rmtree(s.tmp, ignore_errors=True)
        stack.shutdown()
    facts["load_samples"] = bench.load
    facts["loadavg_end"] = os.getloadavg()
    facts["run_seconds"] = round(time.monotonic() - t_start, 1)
    result["summary"] = summarise(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    path = os.path.join(results_dir(a.out), "journal_cost.json")
    if a.redraw:
        with open(path) as f:
            result = json.load(f)
        if a.note is not None:
            result["note"] = a.note
        record(result, a.out)
        return 0
    result = run(a)
    print(json.dumps({"benchmark": "journal_cost", "summary": result["summary"], "facts": result["facts"]}, indent=1))
    if not a.no_record:
        record(result, a.out)
        log(f"wrote {a.out}/results/journal_cost.json and the '{SECTION}' section of {a.out}/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
