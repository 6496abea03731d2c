"""Reserving a snapshot's operation in the journal, with the Keystone trust that lets ``recover`` act for the
user after a crash, and giving that trust back once the operation is settled."""

from __future__ import annotations

from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import journal as jr
from fastsnap import workflow as wf
from fastsnap.auth import Identity, create_trust, delete_trust
from fastsnap.errors import CephError, FastsnapError

LOG = logging.getLogger(__name__)


def reserve(conf: cfg.ConfigOpts, journal: jr.Journal, service: ks_session.Session, op: jr.Operation,
            user: ks_session.Session, ident: Identity) -> None:
    """Journal ``op`` as running (the host's lease held, the cluster-wide record taken). For a user, first a
    trust (``[journal] trust_hours``): the image belongs to the user's project, and recover acts through it.
    Nothing was created when this raises; a trust made for a reservation that failed is deleted again."""
    if ident.mode == "user" and conf.journal.trust_hours:
        try:
            op.trust_id = create_trust(user, service, ident, conf.journal.trust_hours)
        except FastsnapError as exc:
            LOG.warning("snapshot %s: %s; after a crash, recover could not undo it", op.op_id, exc)
            op.trust_error = str(exc)
    try:
        journal.reserve(op)
    except BaseException as exc:  # held (another host), or the journal unreachable: nothing was created
        drop_trust(journal, op, user, save=False)  # the record is the holder's, or none is ours
        if isinstance(exc, CephError):
            raise CephError(f"the journal cannot be written, so nothing was created: {exc}") from exc
        raise
    wf.crash_point("reserved")


def drop_trust(journal: jr.Journal, op: jr.Operation, sess: ks_session.Session, save: bool = True) -> None:
    """Delete the operation's trust (settled: recover will not need it) and, with ``save``, journal that."""
    trust_id, op.trust_id = op.trust_id, None
    if not trust_id:
        return
    delete(op, sess, trust_id)
    if save:
        journal.save(op)


def delete(op: jr.Operation, sess: ks_session.Session, trust_id: str | None) -> None:
    """Delete a trust the record no longer names (a crash before this leaves it to expire on its own)."""
    if not trust_id:
        return
    try:
        delete_trust(sess, trust_id)
    except FastsnapError as exc:
        LOG.warning("snapshot %s: %s (it expires on its own)", op.op_id, exc)
