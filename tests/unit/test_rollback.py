"""The decisions of undo and recover (``fastsnap.paths.roll_back``, ``paths.complete``, ``workflow.thaw_left``,
``fastsnap.recover``) taken from journal records, in order.

What is pure here is *which* undo steps a journal record calls for and in which order; each decision also asks
Ceph or Glance whether the thing is still there, so ``rollback`` cannot be called without a cluster and a Glance.
The ``Recording*`` classes below are **recording fakes for control flow only**: they keep a small model of what
exists and a log of the calls made, so that these tests can check the order (Glance image first, then the clone,
then the disk's temporary snapshot), that nothing is touched that the record does not name, that a second run does
nothing, and how ``recover`` chooses forward or back, falls back when forward fails, thaws first and goes on past
one failure. They prove nothing about Ceph or Glance: the same undo against the real stack is
tests/integration/test_faults.py (a kill at every step, then ``recover``) and tests/integration/test_recover.py.
The journal and the host locks are the real ones (under tmp_path).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest

from fastsnap import journal as jr
from fastsnap import paths
from fastsnap import recover as rc
from fastsnap import workflow as wf
from fastsnap.ceph import Cluster
from fastsnap.errors import CephError, CephNotFound, GlanceError, GlanceUnavailable, NoDomain
from fastsnap.glance import Glance
from fastsnap.location import CLONE_SNAP, ImageSpec, temp_snap_name
from fastsnap.locks import Locks
from fastsnap.result import RecoverResult
from fastsnap.states import CLONE_STEPS, OpState, RecoverAction, Step

OP = "img-1"
DISK = ImageSpec("vms", "disk")
CLONE = ImageSpec("images", OP)
TEMP = temp_snap_name(OP)


class RecordingCluster:
    """Control-flow fake of ``fastsnap.ceph.Cluster``: RBD images and their snapshots as a dict; calls logged."""

    def __init__(self, log: list[str], images: dict[str, set[str]]) -> None:
        self.log = log
        self.images = images  # "pool/name" -> snapshot names

    def exists(self, spec: ImageSpec) -> bool:
        self.log.append(f"exists {spec}")
        return str(spec) in self.images

    def snapshots(self, spec: ImageSpec) -> list[str]:
        self.log.append(f"snapshots {spec}")
        if str(spec) not in self.images:
            raise CephNotFound(f"RBD image {spec} does not exist")  # what Cluster.snapshots raises
        return sorted(self.images[str(spec)])

    def remove_image(self, spec: ImageSpec) -> None:
        self.log.append(f"remove_image {spec}")
        self.images.pop(str(spec), None)

    def remove_snapshot(self, spec: ImageSpec, snap: str) -> None:
        self.log.append(f"remove_snapshot {spec}@{snap}")
        self.images.get(str(spec), set()).discard(snap)


class RecordingGlance:
    """Control-flow fake of ``fastsnap.glance.Glance``: images and their status; calls logged. Like Glance,
    deleting an image whose rbd location is registered also removes that RBD image."""

    def __init__(self, log: list[str], images: dict[str, dict[str, Any]], cluster: RecordingCluster) -> None:
        self.log = log
        self.images = images
        self.cluster = cluster
        self.refuse_location = False
        self.location_errors: list[Exception] = []  # raised by the next add_location calls, one each

    def find(self, image_id: str) -> dict[str, Any] | None:
        self.log.append(f"find {image_id}")
        return self.images.get(image_id)

    def get(self, image_id: str) -> dict[str, Any]:
        self.log.append(f"get {image_id}")
        return self.images[image_id]

    def add_location(self, image_id: str, url: str) -> tuple[str, dict[str, Any] | None]:
        self.log.append(f"add_location {image_id} {url}")
        if self.location_errors:
            raise self.location_errors.pop(0)
        if self.refuse_location:
            raise GlanceError("Glance refused the location (403)")
        self.images[image_id].update(status="active", location=url.split("/", 3)[3].rsplit("/", 1)[0])
        return "v2.17", None

    def wait_status(self, image_id: str, want: str = "active", timeout: float | None = None,
                    registered: bool = False) -> dict[str, Any]:
        self.log.append(f"wait_status {image_id} {want}")
        assert self.images[image_id]["status"] == want
        return self.images[image_id]

    def delete(self, image_id: str) -> None:
        self.log.append(f"delete {image_id}")
        img = self.images.pop(image_id, None)
        if img and img.get("location"):
            self.cluster.images.pop(img["location"], None)


class World:
    def __init__(self, tmp_path: Path, rbd: dict[str, set[str]], glance: dict[str, dict[str, Any]]) -> None:
        self.log: list[str] = []
        self.cluster = RecordingCluster(self.log, rbd)
        self.glance = RecordingGlance(self.log, glance, self.cluster)
        self.journal = jr.Journal(str(tmp_path))
        self.ctx = wf.Context(cluster=cast(Cluster, self.cluster), glance=cast(Glance, self.glance),
                              journal=self.journal)

    def actions(self) -> list[str]:
        """The calls that changed something, in order."""
        return [c for c in self.log if c.split()[0] in ("delete", "remove_image", "remove_snapshot")]


def _op(path: str, steps: list[str], image_created: bool = True, keep: bool = False) -> jr.Operation:
    return jr.Operation(op_id=OP, disk=str(DISK), path=path, store="fast", pool="images", fsid="f",
                        image_created=image_created, delete_image_on_error=not keep, steps=steps)


def _clone_steps(upto: Step) -> list[str]:
    steps: list[str] = [s for s in CLONE_STEPS if s != Step.FLATTEN]
    return steps[:steps.index(upto) + 1]


def test_clone_path_is_undone_image_first_then_clone_then_disk_snapshot(tmp_path: Path) -> None:
    # killed after the clone: the image is queued (no location yet), the clone and the temporary snapshot exist
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): set()}, {OP: {"status": "queued"}})
    did = paths.roll_back(w.ctx, _op("clone", _clone_steps(Step.CLONE)))
    assert w.actions() == [f"delete {OP}", f"remove_image {CLONE}", f"remove_snapshot {DISK}@{TEMP}"]
    assert did == [f"deleted Glance image {OP}", f"removed clone {CLONE}", f"removed snapshot {DISK}@{TEMP}"]
    assert w.cluster.images == {str(DISK): set()} and w.glance.images == {}


def test_a_registered_clone_goes_with_its_glance_image(tmp_path: Path) -> None:
    # killed while waiting for 'active': Glance owns the clone through its location and removes it itself
    w = World(tmp_path, {str(DISK): set(), str(CLONE): {CLONE_SNAP}},
              {OP: {"status": "importing", "location": str(CLONE)}})
    did = paths.roll_back(w.ctx, _op("clone", _clone_steps(Step.ACTIVE)))
    assert w.actions() == [f"delete {OP}"]
    assert did == [f"deleted Glance image {OP}"]
    assert f"exists {CLONE}" in w.log and w.cluster.images == {str(DISK): set()}


def test_an_image_given_by_the_caller_is_kept_when_asked(tmp_path: Path) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): set()}, {OP: {"status": "queued"}})
    paths.roll_back(w.ctx, _op("clone", _clone_steps(Step.CLONE), image_created=False, keep=True))
    assert w.actions() == [f"remove_image {CLONE}", f"remove_snapshot {DISK}@{TEMP}"]
    assert OP in w.glance.images
    w = World(tmp_path, {}, {OP: {"status": "queued"}})  # given, but to be deleted on error (nova-api's way)
    paths.roll_back(w.ctx, _op("clone", [Step.IMAGE], image_created=False))
    assert w.actions() == [f"delete {OP}"]


def test_nothing_recorded_nothing_touched(tmp_path: Path) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): set()}, {OP: {"status": "queued"}})
    assert paths.roll_back(w.ctx, _op("clone", [])) == []
    assert w.log == []  # not even asked: the record says no step began


def test_only_what_began_is_looked_for(tmp_path: Path) -> None:
    # killed before the disk snapshot acted: only the image is undone; Ceph is not asked about anything
    w = World(tmp_path, {str(DISK): set()}, {OP: {"status": "queued"}})
    paths.roll_back(w.ctx, _op("clone", [Step.IMAGE]))
    assert w.log == [f"find {OP}", f"delete {OP}"]
    # the disk snapshot step began but did not act: looked for, not found, nothing removed
    w = World(tmp_path, {str(DISK): set()}, {OP: {"status": "queued"}})
    assert paths.roll_back(w.ctx, _op("clone", [Step.IMAGE, Step.DISK_SNAP])) == [f"deleted Glance image {OP}"]
    assert w.log == [f"find {OP}", f"delete {OP}", f"snapshots {DISK}"]


def test_stream_path_never_touches_a_clone(tmp_path: Path) -> None:
    # an RBD image named like the clone exists (e.g. of another operation's store): a stream never made one
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): set()}, {OP: {"status": "saving"}})
    paths.roll_back(w.ctx, _op("stream", [Step.IMAGE, Step.DISK_SNAP, Step.UPLOAD]))
    assert w.actions() == [f"delete {OP}", f"remove_snapshot {DISK}@{TEMP}"]
    assert not any(str(CLONE) in c for c in w.log)


def test_a_deleted_disk_does_not_stop_the_undo(tmp_path: Path) -> None:
    w = World(tmp_path, {str(CLONE): set()}, {OP: {"status": "queued"}})  # the disk itself is gone
    did = paths.roll_back(w.ctx, _op("clone", _clone_steps(Step.CLONE)))
    assert did == [f"deleted Glance image {OP}", f"removed clone {CLONE}"]


def test_rollback_twice_does_nothing_the_second_time(tmp_path: Path) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): {CLONE_SNAP}}, {OP: {"status": "queued"}})
    op = _op("clone", _clone_steps(Step.LOCATION))
    assert len(paths.roll_back(w.ctx, op)) == 3
    del w.log[:]
    assert paths.roll_back(w.ctx, op) == []
    assert w.actions() == []


@pytest.mark.parametrize(("steps", "clone_snaps", "expected"), [
    (_clone_steps(Step.CLONE_SNAP), {CLONE_SNAP}, True),   # complete: register it
    (_clone_steps(Step.ACTIVE), {CLONE_SNAP}, True),
    (_clone_steps(Step.CLONE_SNAP), set(), False),            # the snap step began but did not act
    (_clone_steps(Step.CLONE_SNAP), None, False),             # the clone is gone
    (_clone_steps(Step.DISK_SNAP_RELEASE), {CLONE_SNAP}, False),  # record says not yet: back, whatever exists
])
def test_clone_rolls_forward_only_when_the_record_and_the_clone_say_complete(
        tmp_path: Path, steps: list[str], clone_snaps: set[str] | None, expected: bool) -> None:
    rbd = {str(DISK): set[str]()} if clone_snaps is None else {str(DISK): set(), str(CLONE): clone_snaps}
    w = World(tmp_path, rbd, {OP: {"status": "queued"}})
    assert paths.complete(w.ctx, _op("clone", steps)) is expected
    assert w.actions() == []


@pytest.mark.parametrize(("steps", "status", "expected"), [
    ([Step.IMAGE, Step.DISK_SNAP, Step.UPLOAD], "active", True),       # Glance has it all: only the snapshot is left
    ([Step.IMAGE, Step.DISK_SNAP, Step.UPLOAD, Step.ACTIVE], "active", True),
    ([Step.IMAGE, Step.DISK_SNAP, Step.UPLOAD], "saving", False),
    ([Step.IMAGE, Step.DISK_SNAP, Step.UPLOAD], "queued", False),
    ([Step.IMAGE, Step.DISK_SNAP, Step.UPLOAD], None, False),           # image gone
    ([Step.IMAGE, Step.DISK_SNAP], "active", False),                 # not uploaded by this operation
])
def test_stream_rolls_forward_only_when_glance_has_the_whole_image(
        tmp_path: Path, steps: list[str], status: str | None, expected: bool) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}}, {} if status is None else {OP: {"status": status}})
    assert paths.complete(w.ctx, _op("stream", steps)) is expected
    assert w.actions() == []


class RecordingHypervisor:
    """Control-flow fake of ``fastsnap.quiesce.Hypervisor``: logs thaws; a domain may be gone."""

    def __init__(self, log: list[str], gone: bool = False) -> None:
        self.log, self.gone = log, gone

    def thaw(self, domain: str) -> None:
        self.log.append(f"thaw {domain}")
        if self.gone:
            raise NoDomain(f"no libvirt domain {domain!r}")


@pytest.mark.parametrize("gone", [False, True])
def test_a_guest_left_frozen_is_thawed_once(tmp_path: Path, gone: bool) -> None:
    log: list[str] = []
    j = jr.Journal(str(tmp_path))
    op = _op("clone", [Step.IMAGE, Step.DISK_SNAP])
    op.quiesce = jr.QuiesceInfo(domain="instance-1", uri="qemu:///system", frozen=True)
    j.reserve(op)
    uris: list[str] = []

    def hypervisor(uri: str) -> Any:
        uris.append(uri)
        return RecordingHypervisor(log, gone)

    did = wf.thaw_left(op, j, hypervisor)
    assert log == ["thaw instance-1"] and uris == ["qemu:///system"]
    assert did == (["guest instance-1 no longer exists: nothing to thaw"] if gone else ["thawed guest instance-1"])
    saved = j.get(OP)
    assert saved is not None and saved.quiesce is not None and saved.quiesce.frozen is False  # not thawed again
    assert wf.thaw_left(saved, j, hypervisor) == [] and log == ["thaw instance-1"]


# -- recover: forward or back, one operation at a time ---------------------------------------------------------

class RecoverHost:
    """What ``fastsnap.recover`` works with (its ``Deps``), over the recording fakes above, the
    real journal and the real host locks (no trusts: operations of fastsnap's own user)."""

    def __init__(self, world: World, tmp_path: Path) -> None:
        self.world = world
        self.journal = world.journal
        self.locks = Locks(str(tmp_path))
        self.thawed: list[str] = []
        self.conf: Any = None
        self.session: Any = None

    def context(self, glance: Glance | None = None) -> wf.Context:
        return self.world.ctx

    def hypervisor(self, uri: str | None = None) -> Any:
        return RecordingHypervisor(self.thawed)


def _recover(host: RecoverHost) -> dict[str, RecoverResult]:
    return {r.op_id: r for r in rc.recover_all(host)}


def _journaled(w: World, op: jr.Operation) -> jr.Operation:
    w.journal.reserve(op)
    return op


def test_recover_registers_a_complete_clone(tmp_path: Path) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): {CLONE_SNAP}}, {OP: {"status": "queued"}})
    _journaled(w, _op("clone", _clone_steps(Step.CLONE_SNAP)))
    res = _recover(RecoverHost(w, tmp_path))[OP]
    assert res.action is RecoverAction.ROLLED_FORWARD, res
    assert [c for c in w.log if c.split()[0] in ("remove_snapshot", "add_location", "wait_status")] == [
        f"remove_snapshot {DISK}@{TEMP}", f"add_location {OP} rbd://f/images/{OP}/snap", f"wait_status {OP} active"]
    got = w.journal.get(OP)
    assert got is not None and got.state is OpState.DONE and got.steps[-2:] == [Step.LOCATION, Step.ACTIVE]
    assert w.cluster.images[str(CLONE)] == {CLONE_SNAP}  # the result stays


def test_recover_undoes_what_it_cannot_finish(tmp_path: Path) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): {CLONE_SNAP}}, {OP: {"status": "queued"}})
    w.glance.refuse_location = True
    _journaled(w, _op("clone", _clone_steps(Step.CLONE_SNAP)))
    res = _recover(RecoverHost(w, tmp_path))[OP]
    assert res.action is RecoverAction.ROLLED_BACK
    assert res.did[0] == "roll forward failed: Glance refused the location (403)"
    assert w.actions()[-2:] == [f"delete {OP}", f"remove_image {CLONE}"]
    got = w.journal.get(OP)
    assert got is not None and got.state is OpState.ROLLED_BACK
    assert w.cluster.images == {str(DISK): set()} and w.glance.images == {}


@pytest.mark.parametrize("error", [GlanceUnavailable("Glance: adding location failed: HTTPServiceUnavailable"),
                                   CephError("Ceph: connecting failed: timed out")], ids=["glance_503", "ceph"])
def test_recover_keeps_a_complete_clone_when_registering_fails_for_now(tmp_path: Path, error: Exception) -> None:
    """A complete clone whose registration fails on something passing (Glance 5xx or unreachable, a Ceph error)
    is not undone: the operation stays running, and the next recover registers it."""
    w = World(tmp_path, {str(DISK): {TEMP}, str(CLONE): {CLONE_SNAP}}, {OP: {"status": "queued"}})
    w.glance.location_errors.append(error)
    _journaled(w, _op("clone", _clone_steps(Step.CLONE_SNAP)))
    host = RecoverHost(w, tmp_path)
    res = _recover(host)[OP]
    assert res.action is RecoverAction.FAILED and res.error is not None
    assert res.error.startswith("roll forward failed, left for the next recover: ") and str(error) in res.error
    assert not any(a.startswith(("delete", "remove_image")) for a in w.actions())
    got = w.journal.get(OP)
    assert got is not None and got.state is OpState.RUNNING
    assert w.cluster.images[str(CLONE)] == {CLONE_SNAP} and w.glance.images[OP]["status"] == "queued"
    res = _recover(host)[OP]
    assert res.action is RecoverAction.ROLLED_FORWARD, res
    got = w.journal.get(OP)
    assert got is not None and got.state is OpState.DONE and w.glance.images[OP]["status"] == "active"


def test_recover_thaws_first_reports_a_failure_and_goes_on(tmp_path: Path) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}}, {OP: {"status": "saving"}, "img-2": {"status": "queued"}})
    frozen = _op("stream", [Step.IMAGE, Step.DISK_SNAP])
    frozen.quiesce = jr.QuiesceInfo(domain="instance-1", uri="qemu:///system", frozen=True)
    _journaled(w, frozen)
    bad = jr.Operation(op_id="img-2", disk="vms/other", path="clone", store="fast", pool="images", fsid="f",
                       image_created=True, delete_image_on_error=True, steps=[Step.IMAGE, Step.DISK_SNAP])
    _journaled(w, bad)  # its disk listing fails with a Ceph error (not "gone"): it cannot be undone now

    def broken(spec: ImageSpec) -> list[str]:
        if spec == ImageSpec.parse("vms/other"):
            raise CephError("Ceph: listing the snapshots of vms/other failed: timed out")
        return RecordingCluster.snapshots(w.cluster, spec)

    w.cluster.snapshots = broken  # type: ignore[method-assign]
    host = RecoverHost(w, tmp_path)
    results = _recover(host)
    assert results[OP].action is RecoverAction.ROLLED_BACK
    assert results[OP].did[0] == "thawed guest instance-1" and host.thawed == ["thaw instance-1"]
    assert results["img-2"].action is RecoverAction.FAILED and "timed out" in str(results["img-2"].error)
    states = {o.op_id: o.state for o in w.journal.list()}
    assert states == {OP: OpState.ROLLED_BACK, "img-2": OpState.RUNNING}  # left for the next recover


def test_recover_leaves_an_operation_whose_process_is_alive(tmp_path: Path) -> None:
    w = World(tmp_path, {str(DISK): {TEMP}}, {OP: {"status": "queued"}})
    _journaled(w, _op("stream", [Step.IMAGE, Step.DISK_SNAP]))
    host = RecoverHost(w, tmp_path)
    with host.locks.operation(OP):  # held as a live snapshot holds it
        results: list[dict[str, RecoverResult]] = []
        t = threading.Thread(target=lambda: results.append(_recover(host)))
        t.start()
        t.join(30)
    assert results == [{}] and w.log == []
    got = w.journal.get(OP)
    assert got is not None and got.state is OpState.RUNNING
    assert _recover(host)[OP].action is RecoverAction.ROLLED_BACK  # once it is released
