"""The test guest's counter (ceph-test-env/lib/guest) as it is on a disk: the guest writes and fsyncs an increasing
counter, and ``read_counter`` finds it (and the guest's log) in an RBD image, snapshot or image file. What a
snapshot holds of it tells whether the snapshot is crash-consistent and what a guest booted from it resumes from.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from testkit.env import ROOT

GUEST_DIR = ROOT / "ceph-test-env/lib/guest"


def read_counter(spec: str, ceph_conf: str) -> dict[str, Any]:
    """The guest's counter on a disk: ``rbd:POOL/IMAGE[@SNAP]`` (the cluster of ``ceph_conf``, as client.admin) or
    an image file."""
    args = [str(GUEST_DIR / "read_counter"), "--json"]
    if spec.startswith("rbd:"):
        args += ["-c", ceph_conf, "--id", "admin"]
    out = subprocess.run([*args, spec], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, f"read_counter {spec}: {out.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def resumes_from(found: dict[str, Any]) -> int:
    """The value a guest booted from this disk continues from (as its /init decides: the counter file after
    journal recovery, else the last line of its log)."""
    if found.get("counter_recovered") is not None:
        return int(found["counter_recovered"])
    last = (found.get("last_log") or "").split()
    assert last and last[0].isdigit(), f"no counter on the disk: {found}"
    return int(last[0])
