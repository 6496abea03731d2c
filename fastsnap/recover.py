"""``recover``: finish or undo the operations a dead process, or a lost host, left running.

Only operations nobody works on are touched, so recover is safe beside live snapshots on any host: on this host,
those whose host-local lock is free (their process is gone); of another host, those whose host's lease lapsed
(:mod:`fastsnap.rados_journal`). Each is acted on only under its cluster-wide claim and after reading its record
again, so every operation is finished or undone once, however many hosts recover at the same time.

Each is rolled forward when its result is complete (clone path: the clone has ``snap``; stream path: Glance holds
the data), else rolled back; a guest a killed process left frozen is thawed first. An operation
taken for a user is acted on through the Keystone trust journaled at snapshot time.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import journal as jr
from fastsnap import paths
from fastsnap import quiesce as qs
from fastsnap import reservation as rv
from fastsnap import workflow as wf
from fastsnap.auth import trust_session
from fastsnap.errors import CephError, FastsnapError, GlanceUnavailable, NotFound
from fastsnap.glance import Glance
from fastsnap.locks import Locks
from fastsnap.result import RecoverResult
from fastsnap.states import OpState, RecoverAction

LOG = logging.getLogger(__name__)


class Deps(Protocol):
    """What recover works with, and nothing more: the journal and the host locks (which operations are free to
    take), the configuration and fastsnap's Keystone session (to act through a user's trust), the hypervisor a
    guest was frozen on, and the workflow's context (the clusters and Glance as fastsnap).
    :class:`fastsnap.api.Fastsnap` is one; the unit tests hand in fakes."""

    conf: cfg.ConfigOpts
    journal: jr.Journal
    locks: Locks

    @property
    def session(self) -> ks_session.Session: ...

    def hypervisor(self, uri: str | None = None) -> qs.Hypervisor: ...

    def context(self, glance: Glance | None = None) -> wf.Context: ...


def recover_all(deps: Deps) -> list[RecoverResult]:
    """Roll every operation left running by a dead process (any host's) forward or back."""
    results: list[RecoverResult] = []
    ctx = deps.context()
    ops = deps.journal.ops
    me = ops.host
    ops.begin_check()  # holds this host's lease: no other host takes this host's operations meanwhile
    lapsed: dict[str, bool] = {}
    for op in deps.journal.list(OpState.RUNNING):
        if op.host != me:
            if op.host not in lapsed:
                lapsed[op.host] = not ops.lease_alive(op.host)
            if not lapsed[op.host]:
                continue  # its host lives: its operations are its own
        with deps.locks.try_operation(op.op_id) as free:
            if not free:
                continue  # a process of this host is working on it
            result = recover_one(deps, ctx, op)
            if result is not None:
                results.append(result)
    return results


def recover_one(deps: Deps, ctx: wf.Context, op: jr.Operation) -> RecoverResult | None:
    """Roll one interrupted operation forward or back, under its cluster-wide claim and as its record reads
    once claimed; None when another recover holds the claim or settled it meanwhile. Never raises: a failure is
    reported in the result (and the operation stays running for the next recover). The caller holds the
    operation's host-local lock."""
    try:
        with deps.journal.ops.claim(op.op_id) as won:
            if not won:
                LOG.info("operation %s: another recover is on it", op.op_id)
                return None
            fresh = deps.journal.get(op.op_id)
            if fresh is None or fresh.state != OpState.RUNNING:
                return None
            if fresh.host != deps.journal.ops.host:
                LOG.warning("operation %s of host %s, whose lease lapsed: taking it over", fresh.op_id,
                            fresh.host)
            return _recover(deps, ctx, fresh)
    except FastsnapError as exc:  # the journal itself (the claim, the record) could not be reached
        LOG.error("recovering %s failed: %s", op.op_id, exc)
        return RecoverResult(op.op_id, op.disk, RecoverAction.FAILED, error=str(exc))


def _recover(deps: Deps, ctx: wf.Context, op: jr.Operation) -> RecoverResult:
    forward_error = None
    try:
        thawed = wf.thaw_left(op, deps.journal, deps.hypervisor)
        trust_id = op.trust_id
        if trust_id:  # the image belongs to the user's project: act through the user's trust
            sess = trust_session(deps.conf, deps.session, trust_id)
            ctx = dataclasses.replace(ctx, glance=Glance.from_conf(deps.conf, sess))
        elif (op.acting_as or {}).get("mode") == "user":
            LOG.warning("operation %s was for a user but has no trust (%s): its image may be out of reach",
                        op.op_id, op.trust_error or "none recorded")
        if paths.complete(ctx, op):
            try:
                did = thawed + paths.roll_forward(ctx, op)
                deps.journal.finish(op, OpState.DONE)
                if trust_id:
                    rv.drop_trust(deps.journal, op, ctx.glance.session)
                return RecoverResult(op.op_id, op.disk, RecoverAction.ROLLED_FORWARD, did)
            except FastsnapError as exc:  # e.g. Glance refused the location: undo instead
                if _may_pass(exc):  # the result is complete: keep it for the next recover rather than undo it
                    LOG.warning("rolling %s forward failed (%s); left for the next recover", op.op_id, exc)
                    return RecoverResult(op.op_id, op.disk, RecoverAction.FAILED, thawed,
                                         error=f"roll forward failed, left for the next recover: {exc}")
                forward_error = str(exc)
                LOG.warning("rolling %s forward failed (%s); rolling back", op.op_id, exc)
        did = thawed + paths.roll_back(ctx, op)
        if forward_error:
            did.insert(0, f"roll forward failed: {forward_error}")
        deps.journal.finish(op, OpState.ROLLED_BACK, "rolled back by recover")
        if trust_id:
            rv.drop_trust(deps.journal, op, ctx.glance.session)
        return RecoverResult(op.op_id, op.disk, RecoverAction.ROLLED_BACK, did)
    except Exception as exc:  # one bad operation must not stop the others: report it, go on
        LOG.error("recovering %s failed: %s", op.op_id, wf.describe(exc))
        return RecoverResult(op.op_id, op.disk, RecoverAction.FAILED, error=wf.describe(exc))


def _may_pass(exc: FastsnapError) -> bool:
    """A roll forward failure that says nothing against the result: Glance unreachable, 5xx or slow, or a Ceph
    call that failed (other than "not there"). Undoing then would throw away a complete snapshot; a refusal
    (400/403/409), an image deleted meanwhile or one Glance killed does warrant the undo."""
    return isinstance(exc, GlanceUnavailable) or (isinstance(exc, CephError) and not isinstance(exc, NotFound))
