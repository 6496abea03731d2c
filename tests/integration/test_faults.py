"""Fault injection on the real stack: kill -9 at every step, services failing mid-way, concurrency.

Services are broken through ``stack.kill/restart/pause/unpause``, so this runs on the native stack and on the
containers alike (tests/containers has the faults only containers can make).

After each fault: no temporary snapshot left on the disk, no clone without a Glance image, no queued/saving
image left by the run, and every active image has the disk's bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from typing import Any

import pytest
import rbd

from fastsnap import journal as jr
from fastsnap.states import OpState
from testkit.env import ROOT
from testkit.stack import Stack
from tests.integration.conftest import Writer

# "reserved": between journaling the operation and its first step. Clone cells with the sync flatten policy
# ("flatten", before registering) run with [snapshot] flatten = sync; the others with the default (background).
CLONE_CELLS = ["reserved"] + [s + a for s in ("image", "disk_snap", "clone", "flatten", "disk_snap_release",
                                              "clone_snap", "location", "active", "flatten_queue")
                              for a in ("", ":after")]
STREAM_CELLS = ["reserved"] + [s + a for s in ("image", "disk_snap", "upload", "active", "disk_snap_release")
                               for a in ("", ":after")] + ["upload:mid"]
SYNC_FLATTEN_CELLS = {"flatten", "flatten:after"}


def _recover(stack: Stack) -> list[dict[str, Any]]:
    out = stack.fastsnap("recover", "--json")
    assert out.returncode == 0, out.stderr
    actions: list[dict[str, Any]] = json.loads(out.stdout)
    return actions


def _journal(stack: Stack) -> jr.Journal:
    return stack.journal()


def _assert_clean(stack: Stack, disk: str, want_sha: str, image_ids: list[str]) -> int:
    """Check the crash-safety rules for the given operations; returns how many ended active."""
    user_snaps = [n for n, ns in stack.snaps("vms", disk) if ns == 0]
    assert user_snaps == [], f"temporary snapshot left on {disk}: {user_snaps}"
    g = stack.glance("admin")
    active = 0
    clones = set(stack.rbd_images("images"))
    for image_id in image_ids:
        img = next(iter(g.images.list(filters={"id": image_id})), None)
        if img is None:
            assert image_id not in clones, f"clone images/{image_id} left without a Glance image"
            continue
        assert img["status"] == "active", f"image {image_id} left {img['status']}"
        assert stack.glance_sha256(image_id, "admin") == want_sha
        active += 1
        stack.snapshots.append(image_id)
    # Trash snapshots on the disk only for clones that still depend on it (background flattens may finish
    # meanwhile: read until the picture is stable).
    for _ in range(50):
        before = _children(stack, disk, image_ids, clones)
        trash = [n for n, ns in stack.snaps("vms", disk) if ns == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH]
        if before == _children(stack, disk, image_ids, clones):
            break
        time.sleep(0.2)
    assert len(trash) == before
    return active


def _children(stack: Stack, disk: str, image_ids: list[str], clones: set[str]) -> int:
    n = 0
    for image_id in image_ids:
        if image_id not in clones:
            continue
        # No parent (ImageNotFound): flattened.
        with stack.ioctx("images") as io, rbd.Image(io, image_id, read_only=True) as img, \
                contextlib.suppress(rbd.ImageNotFound):
            n += img.get_parent_image_spec()["image_name"] == disk
    return n


def _ops_for(stack: Stack, disk: str) -> list[jr.Operation]:
    return [op for op in _journal(stack).list() if op.disk == f"vms/{disk}"]


@pytest.mark.parametrize("path,cell", [("clone", c) for c in CLONE_CELLS] + [("stream", c) for c in STREAM_CELLS])
def test_kill_at_every_step_then_recover(stack: Stack, make_disk: Writer, bases: dict[str, str],
                                         path: str, cell: str) -> None:
    disk = make_disk(size=16 << 20, chunks=(0, 9 << 20))
    want = stack.disk_sha256("vms", disk)
    args = ["snapshot", "--disk", f"vms/{disk}", "--name", f"kill-{cell}", "--json"]
    args += ["--base-image", bases["fast"]] if path == "clone" else ["--store", "cheap"]
    env = {"FASTSNAP_TEST_CRASH_AT": cell}
    if cell in SYNC_FLATTEN_CELLS:
        env["OS_SNAPSHOT__FLATTEN"] = "sync"  # oslo.config reads OS_<GROUP>__<OPTION> from the environment
    out = stack.fastsnap(*args, env=env)
    assert out.returncode == -signal.SIGKILL, f"expected a kill at {cell}: {out.returncode} {out.stderr}"
    ops = _ops_for(stack, disk)
    assert len(ops) == 1 and ops[0].state == OpState.RUNNING
    op_id = ops[0].op_id
    actions = [a for a in _recover(stack) if a["op_id"] == op_id]
    assert len(actions) == 1 and actions[0]["action"] in ("rolled_forward", "rolled_back"), actions
    assert _journal(stack).get(op_id).state in (OpState.DONE, OpState.ROLLED_BACK)  # type: ignore[union-attr]
    active = _assert_clean(stack, disk, want, [op_id])
    assert active == (1 if actions[0]["action"] == "rolled_forward" else 0)
    # Forward exactly when the result was complete: the clone's 'snap' exists, or the stream finished.
    complete = {"clone": CLONE_CELLS.index("clone_snap:after"), "stream": STREAM_CELLS.index("upload:after")}
    cells = CLONE_CELLS if path == "clone" else STREAM_CELLS
    forward = cells.index(cell) >= complete[path] if cell != "upload:mid" else False  # half a stream: back
    assert (actions[0]["action"] == "rolled_forward") == forward, actions
    if cell in SYNC_FLATTEN_CELLS and forward is False:
        assert op_id not in stack.rbd_images("images")  # the half-flattened clone went with the rollback
    # Idempotent: a second recover finds nothing to do.
    assert [a for a in _recover(stack) if a["op_id"] == op_id] == []


def _start(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **stack.env})


def _wait_saving(stack: Stack, name: str, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    g = stack.glance()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for img in g.images.list(filters={"name": name}):
            if img["status"] == "saving":
                return str(img["id"])
        assert proc.poll() is None, f"fastsnap ended before the upload started: {proc.communicate()}"
        time.sleep(0.1)
    raise AssertionError("upload never started")


def _big_disk(make_disk: Writer) -> str:
    return make_disk(size=768 << 20, chunks=tuple(range(0, 768 << 20, 8 << 20)), chunk_len=4 << 20)


def test_glance_killed_and_restarted_during_stream(stack: Stack, make_disk: Writer) -> None:
    disk = _big_disk(make_disk)
    want = stack.disk_sha256("vms", disk)
    name = f"glance-dies-{uuid.uuid4().hex[:6]}"
    proc = _start(stack, "snapshot", "--disk", f"vms/{disk}", "--name", name, "--store", "cheap", "--json")
    image_id = _wait_saving(stack, name, proc)
    stack.kill("glance")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Glance" in err
    stack.restart("glance")
    _recover(stack)
    assert _assert_clean(stack, disk, want, [image_id]) == 0
    assert [op.state for op in _ops_for(stack, disk)] in ([OpState.FAILED], [OpState.ROLLED_BACK])


def test_osd_paused_during_stream(stack: Stack, make_disk: Writer) -> None:
    disk = _big_disk(make_disk)
    want = stack.disk_sha256("vms", disk)
    name = f"osd-pause-{uuid.uuid4().hex[:6]}"
    proc = _start(stack, "snapshot", "--disk", f"vms/{disk}", "--name", name, "--store", "cheap", "--json")
    _wait_saving(stack, name, proc)
    stack.pause("osd-a")
    try:
        time.sleep(5)
    finally:
        stack.unpause("osd-a")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    res = json.loads(out)
    assert _assert_clean(stack, disk, want, [res["image_id"]]) == 1


def test_keystone_down_at_start(stack: Stack, make_disk: Writer, bases: dict[str, str]) -> None:
    disk = make_disk(size=16 << 20)
    before = (stack.rbd_images("vms"), stack.rbd_images("images"), stack.snaps("vms", disk), stack.image_ids())
    stack.kill("keystone")
    try:
        out = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "no-keystone", "--base-image",
                             bases["fast"], "--json", timeout=300)
    finally:
        stack.restart("keystone")
    assert out.returncode == 1
    assert "Glance" in out.stderr and out.stdout == ""
    after = (stack.rbd_images("vms"), stack.rbd_images("images"), stack.snaps("vms", disk), stack.image_ids())
    assert after == before
    assert _ops_for(stack, disk) == []


def test_eight_concurrent_snapshots_of_four_disks(stack: Stack, make_disk: Writer, bases: dict[str, str]) -> None:
    disks = [make_disk(size=32 << 20, chunks=(0, 17 << 20)) for _ in range(4)]
    want = {d: stack.disk_sha256("vms", d) for d in disks}
    procs = []
    for d in disks:
        procs.append((d, _start(stack, "snapshot", "--disk", f"vms/{d}", "--name", "conc-clone",
                                "--base-image", bases["fast"], "--json")))
        procs.append((d, _start(stack, "snapshot", "--disk", f"vms/{d}", "--name", "conc-stream",
                                "--store", "cheap", "--json")))
    results: dict[str, list[str]] = {d: [] for d in disks}
    for d, p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        res = json.loads(out)
        results[d].append(res["image_id"])
    for d in disks:
        assert _assert_clean(stack, d, want[d], results[d]) == 2
