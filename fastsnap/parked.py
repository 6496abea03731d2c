"""Instance disks parked in the RBD trash while fastsnap snapshots still depend on them.

A clone-path snapshot leaves the disk with a trashed (clone v2) snapshot ``fastsnap-<image id>`` that the Glance
image's clone ``<pool>/<image id>`` reads through until it is flattened. The disk cannot be removed before that.
fastsnap's Nova hook therefore moves such a disk to the RBD trash when Nova deletes it (server delete, shelve
offload, rebuild): its name is free at once, its data stays as long as a clone needs it. This module finds those
parked disks, flattens their dependents first (in this process: ahead of the Ceph mgr's one-at-a-time queue),
and removes a disk from the trash once it has no snapshot left.

Only disks fastsnap can attribute to its own snapshots are touched, and they are attributed from Ceph alone, so
that any host drains what any host's snapshots hold (a server snapshotted on one host and deleted on another after
a migration): a trash entry in one of the pools looked at (Nova's ``[libvirt] images_rbd_pool`` and the disks'
pools the journal knows) moved to the trash by a user (source ``USER``) without a deferment (``rbd trash mv``
with no delay, what the hook does), whose snapshots are all trashed ``fastsnap-*`` snapshots. Its dependents are
what Ceph lists as the children of those snapshots (``list_children2``). The local journal adds the entries
Ceph alone cannot tell apart from anyone's: a disk the journal recorded (``disk_id``) that has no snapshot left
(its last clone was flattened by the mgr), and one whose image can no longer be opened, a removal from the trash
that was interrupted (a killed drain): the drain finishes those. Anything else in the trash is left alone.

Exactly one process, on any host, drains a given disk at a time: a cluster-wide claim
(:meth:`fastsnap.ceph.Cluster.claim`, a RADOS lock with an expiry) on ``drain.<pool>.<image id>``; another
drain meanwhile skips that disk.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from oslo_log import log as logging

from fastsnap import journal as jr
from fastsnap.ceph import TRASH_NAMESPACE, Cluster, SnapInfo, TrashEntry
from fastsnap.errors import BadRequest, CephError, NotFound
from fastsnap.location import SNAP_PREFIX, ImageSpec
from fastsnap.plan import SnapshotPath
from fastsnap.states import ParkedState
from fastsnap.view import AsDict

LOG = logging.getLogger(__name__)
CLAIM_SECONDS = 30   # a drain's claim on a disk lapses this long after its holder died (renewed while held)



@dataclass
class ParkedDisk(AsDict):
    pool: str
    id: str                       # RBD image id (trash entries are addressed by id)
    name: str                     # the name it had (<instance uuid>_disk)
    parked_at: str                # when it was moved to the trash
    snapshots: int                # snapshots left (trashed, each with clones)
    dependents: list[str] = field(default_factory=list)   # fastsnap clones still reading through it
    state: ParkedState = ParkedState.WAITING
    error: str | None = None


def _ops_by_disk_id(journal: jr.Journal) -> dict[tuple[str, str], list[jr.Entry]]:
    """Clone-path operations (every host's, from the journal's directory) by (disk pool, disk RBD image id)."""
    found: dict[tuple[str, str], list[jr.Entry]] = {}
    for op in journal.entries():
        disk_id = op.disk_id
        if op.path != SnapshotPath.CLONE or not disk_id:
            continue
        try:
            pool = ImageSpec.parse(op.disk).pool
        except BadRequest:
            continue
        found.setdefault((pool, str(disk_id)), []).append(op)
    return found


def _no_deferment(entry: TrashEntry) -> bool:
    end, start = entry.deferment_end_time, entry.deletion_time
    if end is not None and start is not None:
        return end <= start
    return False


def _only_fastsnap_snapshots(snaps: list[SnapInfo]) -> bool:
    for s in snaps:
        if s.namespace != TRASH_NAMESPACE or not (s.original_name or "").startswith(SNAP_PREFIX):
            return False
    return True


def find(cluster: Cluster, journal: jr.Journal, pools: tuple[str, ...] = ()) -> list[tuple[ParkedDisk,
                                                                                           list[ImageSpec]]]:
    """The parked disks fastsnap can attribute to its snapshots (from Ceph; the journal adds the ones Ceph cannot
    tell), in ``pools`` and the disks' pools the journal knows, with the clones that still depend on them."""
    by_id = _ops_by_disk_id(journal)
    result: list[tuple[ParkedDisk, list[ImageSpec]]] = []
    for pool in sorted(set(pools) | {p for p, _ in by_id}):
        try:
            entries = cluster.trash(pool)
        except NotFound:
            continue  # the pool is gone
        for entry in entries:
            known = bool(by_id.get((pool, entry.id)))
            if entry.source != "USER" or not _no_deferment(entry):
                continue
            parked = ParkedDisk(pool=pool, id=entry.id, name=entry.name, parked_at=str(entry.deletion_time),
                                snapshots=0)
            snaps = cluster.trash_snapshot_list(pool, parked.id)
            if snaps is None:
                # The trash entry outlived its image: a removal from the trash was interrupted after the image's
                # header went (librbd removes the data first, the trash entry last), e.g. a drain killed there.
                # Nothing can depend on it any more; the drain finishes the removal (of a disk it knows).
                if known:
                    parked.error = "its image is half removed (an interrupted removal): the drain finishes it"
                    result.append((parked, []))
                continue
            parked.snapshots = len(snaps)
            if not snaps and not known:
                continue  # anyone's; fastsnap's own ones without snapshots are known to the journal
            if not _only_fastsnap_snapshots(snaps):
                if known:
                    parked.state = ParkedState.BLOCKED
                    parked.error = "it has snapshots that are not fastsnap's: left alone"
                    result.append((parked, []))
                continue
            deps = cluster.trash_children(pool, parked.id, [s.id for s in snaps]) if snaps else []
            parked.dependents = [str(d) for d in deps]
            result.append((parked, deps))
    return result


def drain(cluster: Cluster, journal: jr.Journal, run: bool = True, pools: tuple[str, ...] = ()) -> list[ParkedDisk]:
    """With ``run``: flatten the dependents of each parked disk (in this process) and remove every parked disk
    without snapshots from the trash, each under a cluster-wide claim. Returns the parked disks as found (and what
    became of them)."""
    rows = []
    holder = f"{socket.gethostname()}:{os.getpid()}"
    for parked, deps in find(cluster, journal, pools):
        if run and parked.state != ParkedState.BLOCKED:
            with cluster.claim(parked.pool, f"drain.{parked.pool}.{parked.id}", holder, CLAIM_SECONDS) as won:
                if won:
                    _drain_one(cluster, parked, deps)
                else:
                    parked.error = "another fastsnap drains it now"
        rows.append(parked)
    return rows


def _drain_one(cluster: Cluster, parked: ParkedDisk, deps: list[ImageSpec]) -> None:
    """Flatten the dependents of one parked disk (claimed), then remove it from the trash if nothing is left."""
    try:
        for dep in deps:
            parked.state = ParkedState.FLATTENING
            LOG.info("flattening %s first: parked disk %s/%s (id %s) depends on it", dep, parked.pool,
                     parked.name, parked.id)
            cluster.flatten(dep)
        # None: half removed (see find): finish the removal
        snaps = cluster.trash_snapshot_list(parked.pool, parked.id) or []
        parked.snapshots = len(snaps)
        if not snaps:
            remove(cluster, parked.pool, parked.id)
            parked.state, parked.dependents = ParkedState.REMOVED, []
            LOG.info("removed parked disk %s/%s (id %s) from the RBD trash", parked.pool, parked.name,
                     parked.id)
        elif not _only_fastsnap_snapshots(snaps):
            parked.state, parked.error = ParkedState.BLOCKED, "it has snapshots that are not fastsnap's"
        else:
            parked.state = ParkedState.WAITING
    except CephError as exc:
        parked.error = str(exc)
        LOG.warning("parked disk %s/%s (id %s): %s", parked.pool, parked.name, parked.id, exc)


def remove(cluster: Cluster, pool: str, image_id: str) -> None:
    """Remove a parked disk from the trash (gone counts as success; not forced: it has no deferment)."""
    cluster.trash_remove(pool, image_id, force=False)
