"""Profile fastsnap's stream path: where does the time go?

Runs one stream snapshot in this process under pyinstrument (main thread: glanceclient/requests pulling
``SnapshotReader.read``), and accounts CPU seconds per thread of this process (librados/librbd threads
included) and of Glance's and the OSD's processes over the same interval.

    python -m bench.profile_stream [--size VIRTUAL:WRITTEN] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bench.lib import Cleanup, Env, connect, daemon_cpu, gib, log, make_disk, pair, unique
from bench.methods import settle
from testkit.results import results_dir
from testkit.stack import Stack


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread name of this process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for t in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{t}/stat") as f:
            raw = f.read()
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def profile_stream(stack: Stack, cleanup: Cleanup, config: str, virtual: int, written: int,
                   out_dir: str | None) -> dict[str, Any]:
    from pyinstrument import Profiler

    from fastsnap import Fastsnap, SnapshotRequest

    disk = cleanup.disk(unique("prof"))
    make_disk(stack, disk, virtual, written)
    fs = Fastsnap(config_file=config)
    fs.stores()
    before_threads = thread_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    prof = Profiler(interval=0.002)
    with daemon_cpu(stack.run_dir) as cpu:
        t0 = time.monotonic()
        prof.start()
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name=unique("prof"), store="cheap")).to_dict()
        prof.stop()
        wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    after_threads = thread_cpu()
    fs.close()
    cleanup.image(res["image_id"])
    cleanup.drop_image(res["image_id"])
    cleanup.drop_disk(disk)
    by_thread: dict[str, float] = defaultdict(float)
    for name, v in after_threads.items():
        by_thread[name] += v - before_threads.get(name, 0.0)
    threads = {k: round(v, 2) for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v >= 0.01}
    text = prof.output_text(unicode=False, color=False, show_all=False)
    if out_dir:
        with open(os.path.join(out_dir, "profile_stream.txt"), "w") as f:
            f.write(f"# pyinstrument, main thread, stream of {gib(written)} written / {gib(virtual)} virtual\n")
            f.write(text)
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"disk": f"{gib(written)}/{gib(virtual)}", "wall": round(wall, 2), "mb_s": round(virtual / wall / 1e6, 1),
            "cpu_s": {"fastsnap": round(client, 2), **cpu}, "cpu_util": {
                "fastsnap": round(client / wall, 2), "glance": round(cpu.get("glance", 0) / wall, 2),
                "osd": round(cpu.get("osd", 0) / wall, 2)},
            "fastsnap_threads_cpu_s": threads, "bytes_read": res["bytes_read"],
            "top": _top(text)}


def profile_clone(stack: Stack, cleanup: Cleanup, config: str, out_dir: str | None) -> dict[str, Any]:
    """One clone-path snapshot (warm client) under pyinstrument: where do its seconds above the floor go?"""
    from pyinstrument import Profiler

    from fastsnap import Fastsnap, SnapshotRequest

    disk = cleanup.disk(unique("profc"))
    make_disk(stack, disk, 1 << 30, 64 << 20)
    fs = Fastsnap(config_file=config)
    fs.stores()
    prof = Profiler(interval=0.001)
    prof.start()
    t0 = time.monotonic()
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name=unique("profc"), store="fast")).to_dict()
    wall = time.monotonic() - t0
    prof.stop()
    fs.close()
    cleanup.image(res["image_id"])
    settle(stack, cleanup, res["image_id"], res)
    cleanup.drop_disk(disk)
    text = prof.output_text(unicode=False, color=False, show_all=False)
    if out_dir:
        with open(os.path.join(out_dir, "profile_clone.txt"), "w") as f:
            f.write("# pyinstrument, one clone-path snapshot, warm client (1 GiB virtual, 64 MiB written)\n")
            f.write(text)
    return {"wall": round(wall, 3), "top": _top(text, 60)}


def _top(text: str, n: int = 25) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[:n]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.profile_stream", description=__doc__)
    p.add_argument("--size", default="4:2", help="VIRTUAL:WRITTEN GiB [4:2]")
    p.add_argument("--out", help="bench directory: profile_stream.txt and profile_clone.txt go to its results/")
    a = p.parse_args(argv)
    env = Env.load()
    stack = connect(env)
    cleanup = Cleanup(stack)
    try:
        v, w = pair(a.size)
        out_dir = results_dir(a.out) if a.out else None
        out = profile_stream(stack, cleanup, env.bench_config(), v, w, out_dir)
        out["clone"] = profile_clone(stack, cleanup, env.bench_config(), out_dir)
    finally:
        cleanup.all()
        stack.shutdown()
    print(json.dumps(out, indent=1))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
