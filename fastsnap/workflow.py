"""The snapshot workflow's shared steps: small idempotent steps, each journaled before it acts, and the parts of
undo and roll forward that every path shares. Each path (its run, completeness, roll forward and roll back) lives
in :mod:`fastsnap.paths`.

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
from fastsnap import quiesce as qs
from fastsnap.ceph import Cluster
from fastsnap.errors import FastsnapError, NoDomain, NotFound
from fastsnap.glance import Glance
from fastsnap.journal import FlattenInfo, QuiesceInfo
from fastsnap.location import ImageSpec, temp_snap_name
from fastsnap.states import FlattenPolicy, FlattenState, Step
from fastsnap.stream import StreamStats

LOG = logging.getLogger(__name__)



# Fault injection for tests only: tests/crashing_cli.py sets this to kill the process at a named point. Nothing in
# fastsnap sets it or reads any environment variable for it, so a production process never crashes on purpose.
CRASH_HOOK: Callable[[str], None] | None = None


def crash_point(point: str) -> None:
    """Named points: ``<step>`` right after the step is journaled and before it acts, ``<step>:after`` right
    after it acted, ``reserved`` between reserving the operation and its first step, ``upload:mid`` when half
    of the stream was handed to Glance."""
    if CRASH_HOOK is not None:
        CRASH_HOOK(point)


def progress_hook(progress: Callable[[int, int], None] | None) -> Callable[[int, int], None] | None:
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


def snapshot_disk(ctx: Context, op: jr.Operation, disk: ImageSpec, snap: str) -> None:
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


def step(ctx: Context, op: jr.Operation, step: Step, act: Callable[[], None]) -> None:
    ctx.step = step
    if ctx.on_step is not None:
        ctx.on_step(step)
    ctx.journal.begin(op, step)
    crash_point(step)
    act()
    crash_point(f"{step}:after")


class Background:
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


def register(ctx: Context, op: jr.Operation, url: str, fresh: bool = False) -> Outcome:
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

    step(ctx, op, Step.LOCATION, add)

    def wait() -> None:
        if image.get("status") == "active":
            return
        image.update(ctx.glance.wait_status(op.op_id, "active", registered=op.location_api is not None))

    step(ctx, op, Step.ACTIVE, wait)
    return Outcome(url, None, image)


# -- undo ---------------------------------------------------------------------------------------------


def undo_image(ctx: Context, op: jr.Operation) -> list[str]:
    """The undo every path starts with: delete the Glance image the operation made or was told it may delete.
    Deleting an image whose rbd location is registered also removes that RBD image (Glance owns it)."""
    owned = op.image_created or op.delete_image_on_error
    if op.began(Step.IMAGE) and owned and ctx.glance.find(op.op_id) is not None:
        ctx.glance.delete(op.op_id)
        return [f"deleted Glance image {op.op_id}"]
    return []


def undo_disk_snap(ctx: Context, op: jr.Operation) -> list[str]:
    """The undo every path ends with: remove the disk's temporary snapshot (and a backup's kept source
    snapshot), when the disk still has them."""
    if not op.began(Step.DISK_SNAP):
        return []
    done: list[str] = []
    disk = ImageSpec.parse(op.disk)
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


def release_disk_snap(ctx: Context, op: jr.Operation, gone: str | None) -> list[str]:
    """Roll forward's first act: remove the disk's temporary snapshot if it is still there. ``gone``: what to
    report when the disk itself is gone (None: nothing), ``{disk}`` standing for the disk."""
    disk = ImageSpec.parse(op.disk)
    snap = temp_snap_name(op.op_id)
    try:
        if snap in ctx.cluster.snapshots(disk):
            ctx.cluster.remove_snapshot(disk, snap)
            return [f"removed snapshot {disk}@{snap}"]
    except NotFound:
        return [gone.format(disk=disk)] if gone else []
    return []


def describe(exc: BaseException) -> str:
    if isinstance(exc, FastsnapError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
