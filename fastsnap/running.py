"""Running a snapshot: one operation per image id, planned (:mod:`fastsnap.planning`), reserved
(:mod:`fastsnap.reservation`), run along its path (:mod:`fastsnap.paths`) and, when a step fails, rolled back.

:func:`snapshot` is what :meth:`fastsnap.api.Fastsnap.snapshot` does: it holds the image id's lock, answers a
retry with what an earlier operation made (finishing first what a dead one left), and otherwise takes it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oslo_log import log as logging

from fastsnap import backup
from fastsnap import chain as ch
from fastsnap import journal as jr
from fastsnap import planning as pl
from fastsnap import quiesce as qs
from fastsnap import recover as rc
from fastsnap import reservation as rv
from fastsnap import workflow as wf
from fastsnap.caller import Caller
from fastsnap.errors import BadRequest, FastsnapError, LeaseLapsed, QuiesceRequired, Reserved
from fastsnap.host import Host
from fastsnap.inheritance import inheritable
from fastsnap.location import ImageSpec
from fastsnap.paths import PATHS
from fastsnap.plan import Plan
from fastsnap.request import SnapshotRequest, validate_request
from fastsnap.result import SnapshotResult
from fastsnap.states import ImageType, OpState, RecoverAction, Step

LOG = logging.getLogger(__name__)


@dataclass
class Hooks:
    """What the caller is told while a snapshot runs: ``progress(done, total)`` of the bytes moved,
    ``on_plan(plan, image_id)`` before anything is created, ``on_step(step)`` before each step (raising there
    cancels and rolls back)."""

    progress: Callable[[int, int], None] | None = None
    on_plan: Callable[[Plan, str], None] | None = None
    on_step: Callable[[str], None] | None = None


def snapshot_properties(req: SnapshotRequest, base_raw: dict[str, Any] | None,
                        queued: dict[str, Any] | None = None) -> dict[str, Any]:
    """The properties fastsnap sets on the snapshot image.

    A new image inherits the base image's properties the way Nova copies them. A queued image made by the caller
    (``queued``: nova-api's, which already applied Nova's inheritance rules, ``non_inheritable_image_properties``
    and a ``min_disk`` of at least the flavor's root disk) keeps what it has: fastsnap adds only what it lacks, and
    the request's explicit properties."""
    props: dict[str, Any] = {}
    if base_raw and queued is None:
        props.update(inheritable(base_raw))
        for k in ("min_disk", "min_ram"):
            if base_raw.get(k):
                props[k] = int(base_raw[k])
    if base_raw:
        props["base_image_ref"] = base_raw["id"]
    props["image_type"] = str(req.image_type)
    if req.image_type == ImageType.BACKUP and req.backup_type:
        props["backup_type"] = req.backup_type
    if req.instance_uuid:
        props["instance_uuid"] = req.instance_uuid
    if queued is not None:
        props = {k: v for k, v in props.items() if queued.get(k) in (None, "")}
    props.update(req.properties)
    return props


def snapshot(host: Host, req: SnapshotRequest, caller: Caller, hooks: Hooks, wait: float | None,
             planned: pl.Planned | None) -> SnapshotResult:
    """Take the snapshot (see :meth:`fastsnap.api.Fastsnap.snapshot`)."""
    validate_request(req)
    op_id = req.image_id or str(uuid.uuid4())
    # The image id names the operation: at most one acts on it, across threads and processes. A retry waits
    # here for a running one, then returns what it made (or first finishes what a dead one left).
    with host.locks.operation(op_id):
        op = pl.earlier(host.journal, req)
        if op is not None and op.state == OpState.RUNNING and op.host != host.journal.ops.host \
                and host.journal.ops.lease_alive(op.host):
            raise Reserved(f"image {op.op_id} is being taken on host {op.host} (its lease lives)")
        if op is not None and op.state == OpState.RUNNING:  # its process (or its host) is gone
            LOG.info("image %s: an earlier operation was interrupted; recovering it first", req.image_id)
            action = rc.recover_one(host, host.context(), op)
            if action is None:
                raise Reserved(f"image {req.image_id}: another host is recovering an earlier, interrupted "
                               "operation on it; try again")
            if action.action is RecoverAction.FAILED:
                raise FastsnapError(f"image {req.image_id}: an earlier, interrupted operation could not be "
                                    f"recovered: {action.error}")
            op = pl.earlier(host.journal, req)
        if op is not None:
            glance, _ = caller.resolve(host.conf, host.session, host.glance)
            if glance.find(op.op_id) is None:  # gone since, or not the caller's to see
                raise BadRequest(f"image {op.op_id} does not exist")
            LOG.info("image %s was already filled by an earlier operation on %s; returning its result",
                     op.op_id, op.disk)
            return SnapshotResult.of(op, already_done=True)
        return take(host, req, op_id, caller, hooks, wait, planned)


def freeze_plan(host: Host, req: SnapshotRequest, base_raw: dict[str, Any] | None) -> wf.Freeze:
    """Whether and how to freeze the guest; asks its agent now, so that a required quiesce that cannot be
    done fails before anything is created."""
    decision = qs.decide(req.quiesce_domain, base_raw if req.base_image else None, req.require_quiesce)
    hv = None
    if decision.attempt and decision.domain:
        try:
            hv = host.hypervisor()
            hv.ping(decision.domain)
        except FastsnapError as exc:
            if decision.required:
                raise QuiesceRequired(f"quiesce is required but the guest cannot be frozen: {exc}") from None
            decision, hv = qs.Decision(False, False, decision.domain, str(exc)), None
    return wf.Freeze(hv, decision, host.conf.snapshot.max_freeze_seconds, qs.Outcome(False, decision.reason))


def operation(host: Host, req: SnapshotRequest, op_id: str, planned: pl.Planned) -> jr.Operation:
    """The journal record of the snapshot ``planned``, with what its path needs: the base and the bytes read to
    check it (delta, incremental), the chain, and what the path itself records (:meth:`fastsnap.paths.Path.record`:
    the clone's flatten policy and the disk's RBD id)."""
    plan = planned.plan
    op = jr.Operation(op_id=op_id, disk=req.disk, path=plan.path.value, store=plan.store, pool=plan.pool,
                      fsid=plan.fsid, image_created=req.image_id is None,
                      delete_image_on_error=req.image_id is None or not req.keep_image_on_error,
                      reason=plan.reason, acting_as=planned.ident.to_dict(), size=planned.size, format=plan.format)
    if plan.base_location:
        op.base_location = plan.base_location
        op.check_bytes_read = planned.check_bytes_read
    if plan.chain is not None:
        op.chain = plan.chain
    if plan.previous is not None:  # incremental: the target image's parent is the previous backup
        op.base_location = plan.previous_location
        op.previous_backup, op.source_snap = plan.previous.image_id, plan.previous.source_snap
        op.check_bytes_read = planned.check_bytes_read
    PATHS[plan.path].record(host.cluster, host.conf, op)
    return op


def take(host: Host, req: SnapshotRequest, op_id: str, caller: Caller, hooks: Hooks, wait: float | None,
         planned: pl.Planned | None) -> SnapshotResult:
    """Plan (unless ``planned`` is fresh), reserve, run, journal the result; then the backup's rotation and the
    sweep of the target's RBD trash."""
    t0 = time.monotonic()
    host.journal.ops.prepare()  # the host's lease, taken while we plan (reserve needs it)
    if planned is None or not planned.fresh():
        planned = pl.prepare(host, req, caller)
    glance, ident, plan = planned.glance, planned.ident, planned.plan
    if hooks.on_plan is not None:
        hooks.on_plan(plan, op_id)
    props = snapshot_properties(req, planned.base_raw, planned.queued)
    freeze = freeze_plan(host, req, planned.base_raw)
    op = operation(host, req, op_id, planned)
    with host.locks.slot(host.conf.snapshot.max_concurrent, wait), host.locks.disk(req.disk):
        rv.reserve(host.conf, host.journal, host.session, op, glance.session, ident)
        LOG.info("snapshot %s of %s: %s", op_id, req.disk, plan.reason)
        ctx = host.context(glance)
        ctx.on_step, ctx.freeze = hooks.on_step, freeze
        try:
            outcome = run(host, ctx, op, req, plan, props, planned.queued, hooks.progress)
        finally:
            if op.state != OpState.RUNNING:  # rolled back completely: recover will not need the trust
                rv.drop_trust(host.journal, op, glance.session)
        stats = outcome.stats
        moved = op.transfer or {}
        result = SnapshotResult(
            image_id=op_id, path=plan.path.value, store=plan.store, pool=plan.pool, location=outcome.location,
            reason=plan.reason, seconds=round(time.monotonic() - t0, 3), size=planned.size,
            bytes_streamed=stats.bytes_done if stats else int(moved.get("bytes_written", 0)),
            bytes_read=stats.bytes_read if stats else int(moved.get("bytes_read", 0)),
            disk=req.disk, format=plan.format, flatten=op.flatten.to_dict() if op.flatten else {},
            acting_as=ident.to_dict(),
            quiesced=freeze.outcome.quiesced, quiesce=freeze.outcome.to_dict(), transfer=dict(moved))
        op.result = result.to_dict()
        trust_id, op.trust_id = op.trust_id, None  # dropped in the finish's write (no second one for it)
        host.journal.finish(op, OpState.DONE)
        rv.delete(op, glance.session, trust_id)
    if req.image_type == ImageType.BACKUP and req.rotation and req.instance_uuid and req.backup_type:
        rotated = backup.rotate(glance, op_id, req.instance_uuid, req.backup_type, req.rotation)
        result = dataclasses.replace(result, rotated=rotated)
    if op.chain is not None and op.fsid is not None and op.pool is not None:
        try:  # rotated backups that newer ones depended on, and older ones freed by a flatten
            ch.sweep(host.remote.get(op.fsid), op.pool, host.journal)
        except FastsnapError as exc:
            LOG.warning("sweeping the RBD trash of %s on cluster %s: %s", op.pool, op.fsid, exc)
    return result


def run(host: Host, ctx: wf.Context, op: jr.Operation, req: SnapshotRequest, plan: Plan, props: dict[str, Any],
        queued: dict[str, Any] | None, progress: Callable[[int, int], None] | None) -> wf.Outcome:
    """Run the plan's path (:data:`fastsnap.paths.PATHS`); when a step fails, roll back along the same path and
    journal the failure (or, when the undo itself fails, leave the operation running for ``recover``)."""

    def create_image() -> None:
        if req.image_id is None:
            ctx.glance.create(op.op_id, req.name, props, disk_format=plan.format)
        else:  # the queued image the plan read: one PATCH
            ctx.glance.update_queued(op.op_id, queued or {}, {
                "name": req.name, "disk_format": plan.format, "container_format": req.container_format, **props})

    path = PATHS[plan.path]
    try:
        return path.run(ctx, op, ImageSpec.parse(req.disk), create_image, progress)
    except BaseException as exc:
        LOG.warning("snapshot %s failed at step %s: %s; rolling back", op.op_id, ctx.step or "-",
                    wf.describe(exc))
        if ctx.step == Step.LOCATION and isinstance(exc, FastsnapError):
            host.store_cache.invalidate(f"Glance refused the location in store {op.store}: {exc}")
        if isinstance(exc, LeaseLapsed):  # another host may be recovering it now: its claim decides
            LOG.error("snapshot %s: %s; left running for a recover", op.op_id, exc)
            raise
        try:
            undone = path.roll_back(ctx, op)
            LOG.info("rolled back %s: %s", op.op_id, "; ".join(undone) or "nothing to undo")
            host.journal.finish(op, OpState.FAILED, wf.describe(exc))
        except Exception as undo_exc:  # leave the operation 'running' for recover
            LOG.error("rollback of %s incomplete (%s); run 'fastsnap recover'", op.op_id,
                      wf.describe(undo_exc))
        raise
