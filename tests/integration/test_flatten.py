"""Flatten policies and clone-depth limits on the real stack (Ceph mgr task queue included)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import rbd

from fastsnap import Fastsnap, SnapshotRequest
from fastsnap import conf as fsconf
from fastsnap.rados_journal import RadosOperations
from testkit.env import ROOT
from testkit.stack import Stack
from tests.integration.conftest import Writer, stack_up


@pytest.fixture
def make_fs(stack: Stack) -> Iterator[Any]:
    made: list[Fastsnap] = []

    def make(**overrides: Any) -> Fastsnap:
        conf = fsconf.load(stack.config_file)
        for k, v in overrides.items():
            conf.set_override(k, v, "snapshot")
        fs = Fastsnap(conf)
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.close()


def _parent(stack: Stack, image_id: str) -> Any:
    with stack.ioctx("images") as io, rbd.Image(io, image_id, read_only=True) as img:
        try:
            return img.get_parent_image_spec()
        except rbd.ImageNotFound:
            return None


def _wait_flat(fs: Fastsnap, image_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = {r.image_id: r.to_dict() for r in fs.flatten_status()}
        if rows.get(image_id, {}).get("state") == "done":
            return rows[image_id]
        time.sleep(0.5)
    raise AssertionError(f"{image_id} not flattened within {timeout}s: {fs.flatten_status()}")


def test_background_flatten_frees_the_disk(stack: Stack, make_fs: Any, make_disk: Writer,
                                           bases: dict[str, str]) -> None:
    fs = make_fs()
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="bg", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    assert res.path == "clone"
    assert res.flatten["policy"] == "background" and res.flatten["state"] == "queued"
    row = _wait_flat(fs, res.image_id)
    assert row["state"] == "done"
    assert _parent(stack, res.image_id) is None
    assert stack.snaps("vms", disk) == []        # the trashed temporary snapshot was purged
    with stack.ioctx("vms") as io:
        rbd.RBD().remove(io, disk)               # the instance disk can be deleted now
    assert stack.glance_sha256(res.image_id) == want
    assert res.image_id not in {r.image_id for r in fs.flatten_status()}


def test_sync_flatten_before_registering(stack: Stack, make_fs: Any, make_disk: Writer,
                                         bases: dict[str, str]) -> None:
    fs = make_fs(flatten="sync")
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="sync", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    assert res.flatten["policy"] == "sync" and res.flatten["state"] == "done"
    assert _parent(stack, res.image_id) is None
    assert stack.snaps("vms", disk) == []
    assert stack.glance_sha256(res.image_id) == want


def test_never_keeps_the_parent(stack: Stack, make_fs: Any, make_disk: Writer, bases: dict[str, str]) -> None:
    fs = make_fs(flatten="never")
    disk = make_disk()
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="never", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    assert res.flatten["policy"] == "never" and "state" not in res.flatten
    assert _parent(stack, res.image_id)["image_name"] == disk
    assert [ns for _, ns in stack.snaps("vms", disk)] == [rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH]


def test_per_store_policy(stack: Stack, make_fs: Any, make_disk: Writer, bases: dict[str, str]) -> None:
    fs = make_fs(flatten="never", store_flatten={"fast": "sync"})
    disk = make_disk()
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="per-store", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    assert res.flatten["policy"] == "sync"
    assert _parent(stack, res.image_id) is None


def _clone_disk(stack: Stack, make_disk: Writer) -> str:
    """An instance disk that is itself a clone (like Nova's disks cloned from a Glance image): depth 1."""
    src = make_disk(size=16 << 20, chunks=(0,))
    name = f"{src}-child"
    with stack.ioctx("vms") as io:
        with rbd.Image(io, src) as img:
            img.create_snap("base")
        rbd.RBD().clone(io, src, "base", io, name)
        with rbd.Image(io, name) as img:
            img.write(os.urandom(4096), 8 << 20)
        with rbd.Image(io, src) as img:
            img.remove_snap("base")              # clone v2: into the trash
    return name


def test_clone_depth_limits(stack: Stack, make_fs: Any, make_disk: Writer, bases: dict[str, str]) -> None:
    disk = _clone_disk(stack, make_disk)
    try:
        soft = make_fs(flatten="never", clone_depth_soft=1, clone_depth_hard=5)
        res = soft.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="soft", base_image=bases["fast"]))
        stack.snapshots.append(res.image_id)
        assert res.flatten["depth"] == 2
        assert res.flatten["policy"] == "background" and "soft limit" in res.flatten["why"]
        hard = make_fs(flatten="never", clone_depth_soft=1, clone_depth_hard=1)
        res2 = hard.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="hard", base_image=bases["fast"]))
        stack.snapshots.append(res2.image_id)
        assert res2.flatten["policy"] == "sync" and "hard limit" in res2.flatten["why"]
        assert _parent(stack, res2.image_id) is None
        _wait_flat(soft, res.image_id)
    finally:
        stack.delete_snapshots()
        with stack.ioctx("vms") as io:
            rbd.RBD().remove(io, disk)


def test_mgr_stopped_falls_back_to_local_flatten(stack: Stack, make_fs: Any, make_disk: Writer,
                                                 bases: dict[str, str]) -> None:
    fs = make_fs(mgr_timeout=3)
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    mgr_pid = int((ROOT / "ceph-test-env/run/ceph-a/run/mgr.x.pid").read_text())
    os.kill(mgr_pid, signal.SIGKILL)
    # Tell the monitors now instead of waiting for the mgr beacon grace.
    subprocess.run(["ceph", "-c", stack.env["CEPH_CONF"], "mgr", "fail", "x"], check=True, capture_output=True)
    try:
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="no-mgr", base_image=bases["fast"]))
        stack.snapshots.append(res.image_id)
        assert res.flatten["state"] == "local" and "mgr" in res.flatten["error"]
        assert stack.glance().images.get(res.image_id)["status"] == "active"
        # Another host holding the operation's claim flattens it: this one leaves it alone.
        ops = fs.journal.ops
        assert isinstance(ops, RadosOperations)
        with ops.objects.claim(f"op.{res.image_id}", "another-host:1", 30) as held:
            assert held
            rows = {r.image_id: r.to_dict() for r in fs.flatten_status(run_local=True)}
            assert rows[res.image_id]["state"] == "local", rows[res.image_id]
            assert "another fastsnap" in rows[res.image_id]["error"]
            assert _parent(stack, res.image_id) is not None
        rows = {r.image_id: r.to_dict() for r in fs.flatten_status(run_local=True)}
        assert rows[res.image_id]["state"] == "done"
        assert _parent(stack, res.image_id) is None
        assert stack.glance_sha256(res.image_id) == want
    finally:
        stack_up()


def test_mgr_gone_but_not_yet_noticed_is_local_not_queued(stack: Stack, make_fs: Any, make_disk: Writer,
                                                           bases: dict[str, str]) -> None:
    """Issue 11 point 5: the mgr died and the monitors still list it (beacon grace): the flatten task is not
    accepted, so the state is "local" with the reason, never "queued"."""
    fs = make_fs(mgr_timeout=3)
    disk = make_disk()
    stack.kill("mgr-a")
    try:
        from fastsnap import flatten as fl

        assert fl.mgr_available(fs.cluster, 5)  # the monitors have not noticed yet
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="mgr-gone", base_image=bases["fast"]))
        stack.snapshots.append(res.image_id)
        assert res.flatten["state"] == "local", res.flatten
        assert "did not answer the flatten task" in res.flatten["error"] and "within 3s" in res.flatten["error"]
        assert "task" not in res.flatten
        assert stack.glance().images.get(res.image_id)["status"] == "active"
    finally:
        stack.restart("mgr-a")
    # With the mgr back, the pending flatten is handed over again and is accepted this time.
    rows = {r.image_id: r.to_dict() for r in fs.flatten_status()}
    assert rows[res.image_id]["state"] in ("queued", "done") and rows[res.image_id].get("task")
    _wait_flat(fs, res.image_id)
    assert _parent(stack, res.image_id) is None
