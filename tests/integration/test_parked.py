"""Parked disks on the real stack, without Nova: a disk moved to the RBD trash the way fastsnap's Nova hook does
(`rbd trash mv`, no delay) while a fastsnap clone depends on it is shown by ``parked_disks`` and drained (clone
flattened, disk removed from the trash); trash entries fastsnap cannot attribute to its own operations are left
alone. The Nova side is in test_lifecycle.py."""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rbd

from fastsnap import Fastsnap, SnapshotRequest
from fastsnap import conf as fsconf
from testkit.stack import Stack, journal_section
from tests.integration.conftest import Writer

pytestmark = pytest.mark.stack


@pytest.fixture
def fs(stack: Stack) -> Iterator[Fastsnap]:
    conf = fsconf.load(stack.config_file)
    conf.set_override("flatten", "never", "snapshot")
    f = Fastsnap(conf)
    yield f
    f.close()


def _trash_ids(stack: Stack) -> set[str]:
    with stack.ioctx("vms") as io:
        return {str(t["id"]) for t in rbd.RBD().trash_list(io)}


def _park(stack: Stack, name: str, delay: int = 0) -> str:
    with stack.ioctx("vms") as io:
        with rbd.Image(io, name, read_only=True) as img:
            image_id = str(img.id())
        rbd.RBD().trash_move(io, name, delay)
    return image_id


def _purge(stack: Stack, image_id: str) -> None:
    with stack.ioctx("vms") as io, contextlib.suppress(rbd.ImageNotFound):
        rbd.RBD().trash_remove(io, image_id, force=True)


def _parent(stack: Stack, image_id: str) -> Any:
    with stack.ioctx("images") as io, rbd.Image(io, image_id, read_only=True) as img:
        try:
            return img.get_parent_image_spec()
        except rbd.ImageNotFound:
            return None


def test_parked_disk_is_drained_and_others_are_left_alone(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                                          bases: dict[str, str]) -> None:
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="parked", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    assert res.path == "clone" and res.flatten["policy"] == "never"
    assert fs.journal.get(res.image_id).disk_id  # type: ignore[union-attr]
    # Not fastsnap's: a disk it never snapshotted, and one of its disks trashed with a deferment (an operator's).
    stranger = make_disk()
    deferred_disk = make_disk()
    res2 = fs.snapshot(SnapshotRequest(disk=f"vms/{deferred_disk}", name="deferred", base_image=bases["fast"]))
    stack.snapshots.append(res2.image_id)
    parked_id = _park(stack, disk)
    stranger_id = _park(stack, stranger)
    deferred_id = _park(stack, deferred_disk, delay=3600)
    try:
        rows = fs.parked_disks()
        assert [(r.id, r.name, r.state, r.dependents) for r in rows] == [
            (parked_id, disk, "waiting", [f"images/{res.image_id}"])], rows
        assert _parent(stack, res.image_id) is not None
        # The clone still reads through the trashed disk.
        assert stack.glance_sha256(res.image_id) == want

        drained = fs.parked_disks(run=True)
        assert [(r.id, r.state) for r in drained] == [(parked_id, "removed")], drained
        assert _parent(stack, res.image_id) is None
        assert parked_id not in _trash_ids(stack)
        assert {stranger_id, deferred_id} <= _trash_ids(stack)
        assert stack.glance_sha256(res.image_id) == want
        assert fs.parked_disks() == []
    finally:
        stack.delete_snapshots()  # the deferred disk's clone goes, so its trashed snapshot is purged
        for image_id in (stranger_id, deferred_id, parked_id):
            _purge(stack, image_id)


def test_cli_flatten_status_reports_parked_disks(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                                 bases: dict[str, str], tmp_path: Path) -> None:
    disk = make_disk()
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="parked-cli", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    conf = str(tmp_path / "fastsnap.conf")
    with open(stack.config_file) as f, open(conf, "w") as conf_file:
        conf_file.write(f.read() + "\n[snapshot]\nflatten = never\n")
    parked_id = _park(stack, disk)
    try:
        out = stack.fastsnap("--config-file", conf, "flatten-status", "--json")
        assert out.returncode == 0, out.stderr
        parked = json.loads(out.stdout)["parked_disks"]
        assert [(p["id"], p["state"]) for p in parked] == [(parked_id, "waiting")]
        datetime.datetime.fromisoformat(parked[0]["parked_at"])
        out = stack.fastsnap("--config-file", conf, "flatten-status", "--run")
        assert out.returncode == 0, out.stderr
        assert "parked disks" in out.stdout and "removed" in out.stdout, out.stdout
        assert parked_id not in _trash_ids(stack)
    finally:
        _purge(stack, parked_id)


def test_interrupted_removal_of_a_parked_disk_is_finished(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                                          bases: dict[str, str]) -> None:
    """A drain killed inside librbd's removal from the trash (after the data objects and the header went, before
    the trash entry did) leaves an entry whose image cannot be opened: the next drain finishes the removal
    instead of skipping the entry for ever."""
    disk = make_disk()
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="parked-half", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    parked_id = _park(stack, disk)
    try:
        with stack.ioctx("images") as io, rbd.Image(io, res.image_id) as img:
            img.flatten()  # the disk's trashed snapshot is purged: nothing depends on the disk any more
        # What librbd's removal had done when it was killed: data objects, object map and header gone.
        with stack.ioctx("vms") as io:
            mine = [o.key for o in io.list_objects() if parked_id in o.key and not o.key.startswith("rbd_id.")]
            assert f"rbd_header.{parked_id}" in mine, mine
            for key in mine:
                io.remove_object(key)
        rows = fs.parked_disks()
        assert [(r.id, r.state, r.dependents) for r in rows] == [(parked_id, "waiting", [])], rows
        assert "half removed" in (rows[0].error or "")
        drained = fs.parked_disks(run=True)
        assert [(r.id, r.state) for r in drained] == [(parked_id, "removed")], drained
        assert parked_id not in _trash_ids(stack)
        with stack.ioctx("vms") as io:
            left = [o.key for o in io.list_objects() if parked_id in o.key]
        assert left == [], f"objects of the removed disk left: {left}"
    finally:
        _purge(stack, parked_id)


def test_disk_parked_on_another_host_is_drained_there(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                                      bases: dict[str, str], tmp_path: Path) -> None:
    """Issue 23's finding: host A takes a clone snapshot and is lost; the server, migrated to host B meanwhile, is
    deleted there and B's hook parks the disk. B's fastsnap (a journal of its own that never saw A's snapshot)
    attributes the trash entry from Ceph alone and drains it. While another process holds the drain's
    cluster-wide claim on that disk, B leaves it alone."""
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="parked-elsewhere", base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    conf_b = tmp_path / "host-b.conf"
    conf_b.write_text(Path(stack.config_file).read_text().replace("[journal]\n", "[journal_unused]\n")
                      + journal_section(tmp_path / "host-b-state", host="host-b")
                      + "[snapshot]\nflatten = never\n")
    parked_id = _park(stack, disk)
    host_b = Fastsnap(config_file=str(conf_b))
    try:
        assert host_b.journal.list() == []
        rows = host_b.parked_disks()
        assert [(r.id, r.name, r.state, r.dependents) for r in rows] == [
            (parked_id, disk, "waiting", [f"images/{res.image_id}"])], rows
        with fs.cluster.claim("vms", f"drain.vms.{parked_id}", "host-a:1", 60) as won:
            assert won
            busy = host_b.parked_disks(run=True)
            assert [(r.id, r.state, r.error) for r in busy] == [
                (parked_id, "waiting", "another fastsnap drains it now")], busy
            assert parked_id in _trash_ids(stack) and _parent(stack, res.image_id) is not None
        drained = host_b.parked_disks(run=True)
        assert [(r.id, r.state) for r in drained] == [(parked_id, "removed")], drained
        assert parked_id not in _trash_ids(stack)
        assert _parent(stack, res.image_id) is None
        assert stack.glance_sha256(res.image_id) == want
        with stack.ioctx("vms") as io:
            io.set_namespace("fastsnap")
            claims = [o.key for o in io.list_objects() if o.key.startswith("fastsnap.claim.")]
            assert claims == []  # the claim's object went with it (the journal's objects live beside it)
    finally:
        host_b.close()
        _purge(stack, parked_id)
