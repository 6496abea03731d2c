"""The snapshot workflow: small idempotent steps, each journaled before it acts, with roll back and forward.

Names are derived from the operation id (= the Glance image id):
  temporary snapshot on the disk   <disk>@fastsnap-<id>
  clone (clone path)               <store pool>/<id>, with snapshot ``snap``
so a retry or ``recover`` finds whatever a killed process left, and every undo is safe to repeat.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oslo_log import log as logging

from fastsnap import chain as ch
from fastsnap import flatten as fl
from fastsnap import journal as jr
from fastsnap import qcow2
from fastsnap import quiesce as qs
from fastsnap.ceph import Cluster
from fastsnap.errors import ConfigError, FastsnapError, GlanceError, NoDomain, NotFound
from fastsnap.glance import Glance
from fastsnap.journal import FlattenInfo, QuiesceInfo
from fastsnap.location import CLONE_SNAP, ImageSpec, RbdLocation, temp_snap_name
from fastsnap.plan import SnapshotPath
from fastsnap.states import FlattenPolicy, FlattenState, Step, StreamFormat
from fastsnap.stream import DataReader, SnapshotReader, StreamStats, allocated_extents

LOG = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3
# Delta and copy paths (fastsnap.crosscluster): written with librbd into an rbd store on another cluster.
REMOTE_PATHS = (SnapshotPath.DELTA, SnapshotPath.COPY, SnapshotPath.INCREMENTAL)


# Fault injection for tests only: tests/crashing_cli.py sets this to kill the process at a named point. Nothing in
# fastsnap sets it or reads any environment variable for it, so a production process never crashes on purpose.
CRASH_HOOK: Callable[[str], None] | None = None


def crash_point(point: str) -> None:
    """Named points: ``<step>`` right after the step is journaled and before it acts, ``<step>:after`` right
    after it acted, ``reserved`` between reserving the operation and its first step, ``upload:mid`` when half
    of the stream was handed to Glance."""
    if CRASH_HOOK is not None:
        CRASH_HOOK(point)


def _progress_hook(progress: Callable[[int, int], None] | None) -> Callable[[int, int], None] | None:
    """Adds the ``upload:mid`` crash point when a test hook is installed."""
    if CRASH_HOOK is None:
        return progress

    def hook(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        if done * 2 >= total:
            crash_point("upload:mid")

    return hook


@dataclass
class Freeze:
    """Freezing the guest around the disk snapshot: how (hypervisor, decision, bound) and what happened."""

    hypervisor: qs.Hypervisor | None
    decision: qs.Decision
    max_seconds: float
    outcome: qs.Outcome


@dataclass
class Context:
    cluster: Cluster
    glance: Glance
    journal: jr.Journal
    conf: Any = None  # oslo.config ConfigOpts (for the ceph CLI used to queue mgr tasks)
    on_step: Callable[[str], None] | None = None  # told before each step; may raise to cancel
    freeze: Freeze | None = None
    remote: Any = None  # fastsnap.crosscluster.RemoteClusters: the other clusters (delta and copy paths)
    step: str | None = None  # the step acting now (or the one that failed): ``op.steps`` may run ahead of it


def _snapshot_disk(ctx: Context, op: jr.Operation, disk: ImageSpec, snap: str) -> None:
    """The disk's point-in-time snapshot, with the guest frozen around it when the request asked for it. The
    freeze is journaled before it happens (``recover`` thaws a guest a killed process left frozen)."""
    fz = ctx.freeze
    if fz is None:
        ctx.cluster.create_snapshot(disk, snap)
        return
    uri = fz.hypervisor.uri if fz.hypervisor else None

    def journal_frozen(frozen: bool) -> None:
        op.quiesce = QuiesceInfo(domain=fz.decision.domain, uri=uri, frozen=frozen)
        ctx.journal.save(op)

    with qs.frozen(fz.hypervisor, fz.decision, fz.max_seconds, fz.outcome, lambda: journal_frozen(True),
                   lambda: journal_frozen(False)):
        if fz.decision.attempt:
            crash_point("frozen")
        ctx.cluster.create_snapshot(disk, snap)


def thaw_left(op: jr.Operation, journal: jr.Journal, hypervisor: Callable[[str], qs.Hypervisor]) -> list[str]:
    """Thaw a guest that a killed process left frozen (idempotent: thawing a running guest is a no-op)."""
    q = op.quiesce
    if q is None or not q.frozen:
        return []
    try:
        hypervisor(str(q.uri)).thaw(str(q.domain))
        did = f"thawed guest {q.domain}"
    except NoDomain:
        did = f"guest {q.domain} no longer exists: nothing to thaw"
    q.frozen = False
    journal.save(op)
    return [did]


@dataclass
class Outcome:
    location: str | None
    stats: StreamStats | None
    image: dict[str, object]


def _step(ctx: Context, op: jr.Operation, step: Step, act: Callable[[], None]) -> None:
    ctx.step = step
    if ctx.on_step is not None:
        ctx.on_step(step)
    ctx.journal.begin(op, step)
    crash_point(step)
    act()
    crash_point(f"{step}:after")


class _Background:
    """One call run in a thread beside the workflow's steps; ``join`` returns after it ended, ``result`` raises
    its error."""

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        self._fn = fn
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # handed to the workflow's thread by result()
            self._error = exc

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def run_clone(ctx: Context, op: jr.Operation, disk: ImageSpec, create_image: Callable[[], None],
              flatten_policy: FlattenPolicy = FlattenPolicy.NEVER, mgr_timeout: int = 10) -> Outcome:
    """The clone path. The Glance image is created (step ``image``, journaled first like every step) in a thread
    while the disk is snapshotted and cloned: the two do not depend on each other until the location is
    registered. The thread is always joined before the next step that needs it (``clone_snap``) and before a
    roll back, so roll back sees whatever it made.

    The steps are journaled a phase at a time, each phase in one write before its first step acts: making
    (image, disk snapshot, clone, flatten if synchronous, the disk snapshot's release), then registering (the
    clone's ``snap``, location, active, the flatten's queueing). Undo and roll forward ask Ceph and Glance what
    exists, so a step recorded ahead of its act costs nothing after a crash; two writes instead of eight keep the
    journal in RADOS off a snapshot's critical path (issue 23 point 8, ``bench/journal_cost.py``)."""
    assert op.pool is not None and op.fsid is not None
    snap = temp_snap_name(op.op_id)
    clone = ImageSpec(op.pool, op.op_id)
    url = RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url
    ctx.step = Step.IMAGE
    if ctx.on_step is not None:
        ctx.on_step(Step.IMAGE)
    sync = flatten_policy == FlattenPolicy.SYNC
    ctx.journal.begin(op, Step.IMAGE, Step.DISK_SNAP, Step.CLONE, *([Step.FLATTEN] if sync else []),
                      Step.DISK_SNAP_RELEASE)
    crash_point(Step.IMAGE)
    creating = _Background(create_image, f"fastsnap-image-{op.op_id[:8]}")
    creating.start()
    try:
        _step(ctx, op, Step.DISK_SNAP, lambda: _snapshot_disk(ctx, op, disk, snap))
        _step(ctx, op, Step.CLONE, lambda: ctx.cluster.clone(disk, snap, clone))
        if sync:
            _step(ctx, op, Step.FLATTEN, lambda: ctx.cluster.flatten(clone))
            info = op.flatten
            if info is not None:
                info.state = FlattenState.DONE
                op.flatten = info
        # Clone v2: the parent snapshot goes to the trash and is purged once the clone is flattened or removed.
        _step(ctx, op, Step.DISK_SNAP_RELEASE, lambda: ctx.cluster.remove_snapshot(disk, snap))
    finally:
        creating.join()
    creating.result()
    crash_point(f"{Step.IMAGE}:after")
    background = flatten_policy == FlattenPolicy.BACKGROUND
    ctx.journal.begin(op, Step.CLONE_SNAP, Step.LOCATION, Step.ACTIVE, *([Step.FLATTEN_QUEUE] if background else []))
    _step(ctx, op, Step.CLONE_SNAP, lambda: ctx.cluster.create_snapshot(clone, CLONE_SNAP))
    outcome = _register(ctx, op, url, fresh=True)
    if background:
        _step(ctx, op, Step.FLATTEN_QUEUE, lambda: queue_flatten(ctx, op, mgr_timeout))
    return outcome


def queue_flatten(ctx: Context, op: jr.Operation, mgr_timeout: int) -> None:
    """Hand the flatten to Ceph's mgr; "queued" only once the mgr accepted the task (the ``ceph`` child exited 0
    with a task id); otherwise "local" with the reason, left for an in-process flatten."""
    assert op.pool is not None
    info = op.flatten or FlattenInfo(FlattenPolicy.BACKGROUND, "queued by recover")
    try:
        info.task = fl.queue_background(ctx.cluster, ctx.conf, ImageSpec(op.pool, op.op_id), mgr_timeout,
                                        wait=True)
        info.state, info.error = FlattenState.QUEUED, None
    except FastsnapError as exc:
        LOG.warning("%s; flatten of %s/%s left for an in-process flatten", exc, op.pool, op.op_id)
        info.state, info.error = FlattenState.LOCAL, str(exc)
    op.flatten = info


def _register(ctx: Context, op: jr.Operation, url: str, fresh: bool = False) -> Outcome:
    """Register the clone's location and wait for the image to become active. ``fresh``: this process created
    (or found queued) the image in this run, so it is known to be queued; otherwise (roll forward) Glance is
    asked first, and a location is added only to a queued image."""
    image: dict[str, object] = {}

    def add() -> None:
        if not fresh and ctx.glance.get(op.op_id).get("status") != "queued":
            return
        api, active = ctx.glance.add_location(op.op_id, url)
        op.location_api = api
        if active is not None:  # the image PATCH answers with the image, activated
            image.update(active)

    _step(ctx, op, Step.LOCATION, add)

    def wait() -> None:
        if image.get("status") == "active":
            return
        image.update(ctx.glance.wait_status(op.op_id, "active", registered=op.location_api is not None))

    _step(ctx, op, Step.ACTIVE, wait)
    return Outcome(url, None, image)


class UploadBody:
    """What one upload attempt sends: the reader Glance reads, its length, and how much of it went out."""

    def __init__(self, img: Any, fmt: str, chunk: int, window: int,
                 progress: Callable[[int, int], None] | None) -> None:
        if fmt == StreamFormat.QCOW2:
            size = int(img.size())
            try:
                layout = qcow2.Layout.plan(size, allocated_extents(img, size))
            except ValueError as exc:
                raise FastsnapError(f"cannot stream this disk as qcow2: {exc}") from exc
            self.snapshot = SnapshotReader(img, chunk=chunk, window=window, extents=layout.data_extents(),
                                           holes=False)
            self.data: Any = qcow2.IterReader(qcow2.stream(layout, DataReader(self.snapshot)), layout.file_size,
                                              progress=progress)
            self.length = layout.file_size
        else:
            self.snapshot = SnapshotReader(img, chunk=chunk, window=window, progress=progress)
            self.data = self.snapshot
            self.length = self.snapshot.size

    @property
    def sent(self) -> int:
        return int(self.data.done) if isinstance(self.data, qcow2.IterReader) else self.snapshot.stats.bytes_done

    def stats(self) -> StreamStats:
        """The snapshot reader's figures, with ``bytes_done`` the bytes sent (the qcow2 file's, for qcow2)."""
        st = self.snapshot.stats
        st.bytes_done = self.sent
        return st


def run_stream(ctx: Context, op: jr.Operation, disk: ImageSpec, create_image: Callable[[], None],
               chunk: int, window: int, progress: Callable[[int, int], None] | None,
               fmt: str = StreamFormat.RAW) -> Outcome:
    """The stream path: the disk's snapshot streamed into Glance as ``fmt``: raw (the whole virtual disk) or
    qcow2 (the allocated clusters behind tables computed first, :mod:`fastsnap.qcow2`); no local file either
    way."""
    snap = temp_snap_name(op.op_id)
    stats: list[StreamStats] = []
    _step(ctx, op, Step.IMAGE, create_image)
    _step(ctx, op, Step.DISK_SNAP, lambda: _snapshot_disk(ctx, op, disk, snap))

    def upload() -> None:
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            with ctx.cluster.image(disk, snapshot=snap, read_only=True) as img:
                body = UploadBody(img, fmt, chunk, window, _progress_hook(progress))
                reader = body.snapshot
                try:
                    ctx.glance.upload(op.op_id, body.data, body.length, op.store)
                    if body.sent != body.length:
                        raise GlanceError(f"Glance stopped reading after {body.sent} of {body.length} bytes")
                    stats.append(body.stats())
                    return
                except GlanceError as exc:
                    # Glance puts an image whose upload failed back to 'queued': stream again from the same
                    # snapshot. Any other state (a Glance that died mid-upload leaves 'saving') is final.
                    img_now = ctx.glance.find(op.op_id)
                    status = img_now.get("status") if img_now else None
                    if attempt == UPLOAD_ATTEMPTS or status != "queued":
                        raise
                    LOG.warning("upload of %s failed (%s); image is queued again, retrying from the snapshot "
                                "(attempt %d of %d)", op.op_id, exc, attempt + 1, UPLOAD_ATTEMPTS)
                finally:
                    reader.close()

    _step(ctx, op, Step.UPLOAD, upload)
    image: dict[str, object] = {}

    def wait() -> None:
        image.update(ctx.glance.wait_status(op.op_id, "active"))

    _step(ctx, op, Step.ACTIVE, wait)
    _step(ctx, op, Step.DISK_SNAP_RELEASE, lambda: ctx.cluster.remove_snapshot(disk, snap))
    return Outcome(None, stats[0] if stats else None, image)


# -- undo ---------------------------------------------------------------------------------------------


def rollback(ctx: Context, op: jr.Operation) -> list[str]:
    """Remove whatever this operation may have created. Idempotent; returns what it did."""
    done: list[str] = []
    disk = ImageSpec.parse(op.disk)
    owned = op.image_created or op.delete_image_on_error
    # Deleting an image whose rbd location is registered also removes that RBD image (Glance owns it).
    if op.began(Step.IMAGE) and owned and ctx.glance.find(op.op_id) is not None:
        ctx.glance.delete(op.op_id)
        done.append(f"deleted Glance image {op.op_id}")
    done += _rollback_remote(ctx, op)
    if op.path == SnapshotPath.CLONE and op.began(Step.CLONE) and op.pool:
        clone = ImageSpec(op.pool, op.op_id)
        if ctx.cluster.exists(clone):
            ctx.cluster.remove_image(clone)
            done.append(f"removed clone {clone}")
    if op.began(Step.DISK_SNAP):
        snap = temp_snap_name(op.op_id)
        try:
            present = snap in ctx.cluster.snapshots(disk)
        except NotFound:
            present = False  # the disk itself is gone
        if present:
            ctx.cluster.remove_snapshot(disk, snap)
            done.append(f"removed snapshot {disk}@{snap}")
        if op.chain is not None and ch.drop_source(ctx.cluster, disk, op.chain, op.op_id):
            done.append(f"removed the source snapshot it kept on {disk}")
    return done


def roll_forward_possible(ctx: Context, op: jr.Operation) -> bool:
    """True when the result is complete and only needs registering / marking (clone, delta, copy paths)."""
    if op.path in REMOTE_PATHS:
        return _remote_complete(ctx, op)
    if op.path == SnapshotPath.CLONE and op.began(Step.CLONE_SNAP) and op.pool:
        clone = ImageSpec(op.pool, op.op_id)
        try:
            return CLONE_SNAP in ctx.cluster.snapshots(clone)
        except NotFound:
            return False
    if op.path == SnapshotPath.STREAM and op.began(Step.UPLOAD):
        img = ctx.glance.find(op.op_id)
        return img is not None and img.get("status") == "active"
    return False


def _rollback_remote(ctx: Context, op: jr.Operation) -> list[str]:
    """Delta and copy paths: remove the image this operation made on the target cluster (idempotent)."""
    if op.path not in REMOTE_PATHS or not op.began(Step.REMOTE_IMAGE) or not op.pool or not op.fsid:
        return []
    if ctx.remote is None:
        raise ConfigError(f"operation {op.op_id} made an image on cluster {op.fsid}, but fastsnap has no "
                          "credentials for it any more ([ceph] remote_clusters)")
    cluster = ctx.remote.get(op.fsid)
    spec = ImageSpec(op.pool, op.op_id)
    if not cluster.exists(spec):
        return []
    cluster.remove_image(spec)
    return [f"removed {spec} on cluster {op.fsid}"]


def _remote_complete(ctx: Context, op: jr.Operation) -> bool:
    """Delta and copy paths: the target image is complete (its ``snap`` exists), so roll forward."""
    if not op.began(Step.REMOTE_SNAP) or not op.pool or not op.fsid or ctx.remote is None:
        return False
    try:
        return CLONE_SNAP in ctx.remote.get(op.fsid).snapshots(ImageSpec(op.pool, op.op_id))
    except NotFound:
        return False


def roll_forward(ctx: Context, op: jr.Operation) -> list[str]:
    disk = ImageSpec.parse(op.disk)
    snap = temp_snap_name(op.op_id)
    done: list[str] = []
    if op.chain is not None and op.path in REMOTE_PATHS:
        return _roll_forward_chain(ctx, op, disk)
    if op.path in (SnapshotPath.CLONE, *REMOTE_PATHS):
        assert op.pool and op.fsid
        try:
            if snap in ctx.cluster.snapshots(disk):
                ctx.cluster.remove_snapshot(disk, snap)
                done.append(f"removed snapshot {disk}@{snap}")
        except NotFound:
            # The disk is no longer under its name: deleted while this process was dead. Its snapshot was
            # already in the RBD snapshot trash (the clone's `snap` exists, so the release step ran) and Nova's
            # hook parked the disk in the RBD trash: the clone still reads through it, and the parked disk is
            # drained (clone flattened, disk purged) once the image is registered.
            done.append(f"disk {disk} is gone (parked in the RBD trash): the clone reads through it")
        _register(ctx, op, RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url)
        done.append(f"registered rbd://.../{op.pool}/{op.op_id}/snap; image {op.op_id} active")
        flatten = op.flatten
        if flatten is not None and flatten.policy == FlattenPolicy.BACKGROUND and flatten.state is None:
            queue_flatten(ctx, op, ctx.conf.snapshot.mgr_timeout if ctx.conf else 10)
            done.append(f"flatten {op.flatten.state if op.flatten else None}")
    else:
        try:
            if snap in ctx.cluster.snapshots(disk):
                ctx.cluster.remove_snapshot(disk, snap)
                done.append(f"removed snapshot {disk}@{snap}")
        except NotFound:
            pass
        done.append(f"image {op.op_id} already active")
    return done


def _roll_forward_chain(ctx: Context, op: jr.Operation, disk: ImageSpec) -> list[str]:
    """A backup whose image on the target cluster is complete: register it, then keep the disk's snapshot as the
    chain's source snapshot and bound the chain's depth (as the workflow does after the image is active)."""
    assert op.pool and op.fsid and ctx.remote is not None
    remote = ctx.remote.get(op.fsid)
    spec = ImageSpec(op.pool, op.op_id)
    if op.remote_snap_id is None:  # killed between making ``snap`` and journaling the next step
        op.remote_snap_id = remote.snapshot_ids(spec).get(CLONE_SNAP)
    _register(ctx, op, RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url)
    done = [f"registered rbd://.../{op.pool}/{op.op_id}/snap; image {op.op_id} active"]
    done += ch.keep_source(ctx.cluster, disk, op)
    rc = ctx.remote.confs[op.fsid]
    try:
        done += ch.bound_depth(remote, ctx.conf, op, (rc.conf, rc.user, rc.keyring))
    except FastsnapError as exc:
        done.append(f"chain depth not bounded: {exc}")
    return done


def describe(exc: BaseException) -> str:
    if isinstance(exc, FastsnapError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
