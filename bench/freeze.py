"""Freeze window of quiesced snapshots (issue 14): a real guest under libvirt (TCG) writing to its RBD disk,
N clone-path snapshots with ``quiesce_domain``, then N without, on the running test stack.

    .venv/bin/python -m bench.freeze [--runs 10] [--out bench]

Writes OUT/results/freeze.json and the "Freeze window" section of OUT/RESULTS.md (replaced in place)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from fastsnap import Fastsnap, SnapshotRequest
from testkit.env import read_env, run_dir
from testkit.guest import running_guest
from testkit.results import markers, results_dir, write_section

SECTION = "freeze"
BEGIN, END = markers(SECTION)


def _run(fs: Fastsnap, disk: str, domain: str | None) -> dict[str, Any]:
    t0 = time.monotonic()
    res = fs.snapshot(SnapshotRequest(disk=disk, name="freeze bench", store="fast", quiesce_domain=domain))
    wall = time.monotonic() - t0
    fs.glance.delete(res.image_id)
    return {"seconds": wall, "quiesced": res.quiesced, "freeze_seconds": res.quiesce.get("freeze_seconds")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default="bench")
    a = ap.parse_args()
    env = read_env(run_dir() / "env.sh")
    rows: dict[str, list[dict[str, Any]]] = {"quiesced": [], "unquiesced": []}
    with running_guest(env["CEPH_CONF"]) as g, Fastsnap(config_file=env["FASTSNAP_CONFIG_FILE"]) as fs:
        disk = f"vms/{g.disk}"
        _run(fs, disk, None)  # warm-up (connections, store catalogue)
        for _ in range(a.runs):
            rows["quiesced"].append(_run(fs, disk, g.name))
            rows["unquiesced"].append(_run(fs, disk, None))
        boot = g.boot_seconds
    windows = [r["freeze_seconds"] for r in rows["quiesced"]]
    assert all(r["quiesced"] for r in rows["quiesced"]), rows["quiesced"]
    summary = {
        "runs": a.runs, "guest_boot_seconds": round(boot, 2),
        "freeze_window_median": round(statistics.median(windows), 4), "freeze_window_max": round(max(windows), 4),
        "snapshot_quiesced_median": round(statistics.median(r["seconds"] for r in rows["quiesced"]), 3),
        "snapshot_unquiesced_median": round(statistics.median(r["seconds"] for r in rows["unquiesced"]), 3),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out = Path(a.out)
    saved = Path(results_dir(a.out)) / "freeze.json"
    saved.write_text(json.dumps({"summary": summary, "runs": rows}, indent=1) + "\n")
    section = f"""{BEGIN}
## Freeze window (quiesced snapshots, `python -m bench.freeze`, {summary['measured_at']})

A real guest (ceph-test-env/lib/guest, QEMU TCG, booted in {summary['guest_boot_seconds']} s) writing and
fsyncing a counter on its RBD disk; {a.runs} clone-path snapshots with `quiesce_domain` alternated with {a.runs}
without, in-process.
The freeze window is freeze → thaw as fastsnap measures it (libvirt `fsFreeze` → RBD snapshot → `fsThaw`).

| | median | max |
|---|---|---|
| freeze window | {summary['freeze_window_median'] * 1000:.0f} ms | {summary['freeze_window_max'] * 1000:.0f} ms |
| snapshot, quiesced | {summary['snapshot_quiesced_median']:.3f} s | |
| snapshot, not quiesced | {summary['snapshot_unquiesced_median']:.3f} s | |
{END}"""
    write_section(out / "RESULTS.md", SECTION, section)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
