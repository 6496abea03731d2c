"""Backup chains on another cluster (issue 25): what keeps incremental backups correct, short and leak-free.

A backup into an rbd store on another cluster starts or extends the disk's chain for that store (the chain is named
by the store id). Its pieces:

- The source snapshot the disk keeps, ``<disk>@fastsnap-backup-<store>-<image id>``: the point in time the chain's
  newest backup holds, the from-snapshot of the next incremental's ``diff_iterate``. At most one per disk and
  chain: once a backup is active its disk snapshot is renamed to that name and every other one of the chain is
  removed (:func:`keep_source`). It has no clones (its consumers are on the other cluster), so it never parks a
  disk: Nova's hook removes it with the disk (delete, shelve offload, rebuild).
- The integrity check before an incremental clones the previous backup (:func:`check_previous`): the target
  image's ``snap`` is the one fastsnap made (its RBD snapshot id as journaled), of the size of the source snapshot,
  and sampled blocks read the same on both clusters. When it fails, the backup is a full one and says why.
- The depth bound (:func:`bound_depth`): a backup deeper than ``[snapshot] clone_depth_soft`` is flattened by the
  target cluster's own mgr (``rbd task add flatten``); deeper than ``clone_depth_hard``, in this process before the
  step ends.
- The sweep of the target's RBD trash (:func:`sweep`): Glance's rbd driver moves a backup that newer backups still
  depend on (clone v2: ``rbd_default_clone_format = 2``) to the RBD trash instead of removing it, so rotation and
  mid-chain deletion work and every other backup stays readable; once nothing depends on it any more (its child
  was flattened or removed) fastsnap removes it from the trash. Only entries named after an operation the journal
  recorded as a chain backup into that cluster are touched.
- A source snapshot whose backup Glance no longer has (the chain's newest deleted) is removed by
  :func:`drop_stale_sources` (on ``fastsnap recover``).
"""

from __future__ import annotations

from collections.abc import Callable

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import flatten as fl
from fastsnap import journal as jr
from fastsnap.ceph import Cluster
from fastsnap.errors import BadRequest, FastsnapError, NotFound
from fastsnap.glance import Glance
from fastsnap.location import (
    BACKUP_SNAP_PREFIX,
    CLONE_SNAP,
    ImageSpec,
    RbdLocation,
    backup_snap_image,
    backup_snap_name,
    temp_snap_name,
)
from fastsnap.plan import PreviousBackup, SnapshotPath
from fastsnap.states import OpState

LOG = logging.getLogger(__name__)

SAMPLE = 64 << 10
SWEEP_ROUNDS = 64  # a chain removed from its newest end frees one ancestor a round


def kept_snapshots(cluster: Cluster, disk: ImageSpec, chain: str) -> list[tuple[str, str]]:
    """(snapshot, backup image id) of the source snapshots the disk keeps for ``chain``, oldest first."""
    ids = cluster.snapshot_ids(disk)
    found = [(snap_id, name, backup_snap_image(name, chain)) for name, snap_id in ids.items()]
    return [(name, image) for _, name, image in sorted(found) if image is not None]


def previous_backup(cluster: Cluster, disk: ImageSpec, chain: str, glance: Glance,
                    user_glance: Glance | None = None) -> PreviousBackup | None:
    """The chain's previous backup as the disk's newest kept source snapshot names it, with what Glance shows of
    it (None when the disk keeps no source snapshot for ``chain``): as fastsnap (``glance``, locations shown),
    else as the caller (``user_glance``: a user's private backup, whose locations Glance hides)."""
    kept = kept_snapshots(cluster, disk, chain)
    if not kept:
        return None
    snap, image_id = kept[-1]
    img = glance.find(image_id)
    if img is None and user_glance is not None and user_glance is not glance:
        img = user_glance.find(image_id)
        if img is not None:
            return PreviousBackup(image_id, snap, str(img.get("status")), None)
    if img is None:
        return PreviousBackup(image_id, snap, None)
    locations = tuple(str(loc.get("url")) for loc in img.get("locations") or () if loc.get("url"))
    direct = img.get("direct_url")
    if direct and direct not in locations:
        locations += (str(direct),)
    return PreviousBackup(image_id, snap, str(img.get("status")), locations)


def check_previous(local: Cluster, disk: ImageSpec, prev: PreviousBackup, remote: Cluster, location: RbdLocation,
                   journal: jr.Journal, samples: int) -> tuple[str | None, int]:
    """Whether the previous backup is what fastsnap wrote: (None, bytes read from the disk's cluster) when it
    is, else (why not, ...). Never build on a backup that changed."""
    assert location.pool and location.snapshot
    if remote.conf_get("rbd_default_clone_format") == "1":
        return ("fastsnap's client of cluster " + remote.fsid + " clones in format 1 (rbd_default_clone_format = 1): "
                "a backup newer ones depended on could not be deleted; set it to 2 (or auto)"), 0
    rec = journal.get(prev.image_id)
    if rec is None or rec.state != OpState.DONE or rec.remote_snap_id is None:
        return f"fastsnap's journal has no finished backup {prev.image_id} with its snapshot id", 0
    spec = ImageSpec(location.pool, location.image)
    try:
        snap_id = remote.snapshot_ids(spec).get(location.snapshot)
    except NotFound:
        return f"the previous backup's image {spec} is gone from cluster {remote.fsid}", 0
    if snap_id != rec.remote_snap_id:
        return (f"the previous backup's {spec}@{location.snapshot} is not the snapshot fastsnap made (id {snap_id}, "
                f"journaled {rec.remote_snap_id})"), 0
    read = 0
    try:
        with local.image(disk, snapshot=prev.source_snap, read_only=True) as a, \
                remote.image(spec, snapshot=location.snapshot, read_only=True) as b:
            size_a, size_b = int(a.size()), int(b.size())
            if size_a != size_b:
                return (f"the previous backup {prev.image_id} has {size_b} bytes, its source snapshot "
                        f"{disk}@{prev.source_snap} {size_a}"), read
            last = max(0, size_a - SAMPLE)
            offsets = sorted({min(last, size_a * i // max(1, samples)) // 4096 * 4096 for i in range(samples)})
            for off in offsets:
                block = a.read(off, SAMPLE)
                read += len(block)
                if block != b.read(off, SAMPLE):
                    return (f"the previous backup {prev.image_id} differs from its source snapshot "
                            f"{disk}@{prev.source_snap} at offset {off}"), read
    except NotFound as exc:
        return f"the previous backup cannot be compared with its source: {exc}", read
    return None, read


def keep_source(cluster: Cluster, disk: ImageSpec, op: jr.Operation) -> list[str]:
    """Make the operation's disk snapshot the chain's kept source snapshot and remove the chain's others.
    Idempotent (a roll forward repeats it)."""
    assert op.chain is not None
    temp, kept = temp_snap_name(op.op_id), backup_snap_name(op.chain, op.op_id)
    done: list[str] = []
    try:
        names = set(cluster.snapshot_ids(disk))
        if temp in names and kept not in names:
            cluster.rename_snapshot(disk, temp, kept)
            done.append(f"kept {disk}@{kept} as the source of the next incremental")
        elif temp in names:
            cluster.remove_snapshot(disk, temp)
        for name in sorted(names):
            image = backup_snap_image(name, op.chain)
            if image is not None and image != op.op_id:
                cluster.remove_snapshot(disk, name)
                done.append(f"removed the chain's previous source snapshot {disk}@{name}")
    except NotFound:
        done.append(f"disk {disk} is gone: no source snapshot kept")
    return done


def drop_source(cluster: Cluster, disk: ImageSpec, chain: str, image_id: str) -> bool:
    """Remove the kept source snapshot of backup ``image_id`` (rolled back, or its backup deleted)."""
    snap = backup_snap_name(chain, image_id)
    try:
        if snap not in cluster.snapshot_ids(disk):
            return False
    except NotFound:
        return False
    cluster.remove_snapshot(disk, snap)
    return True


def bound_depth(remote: Cluster, conf: cfg.ConfigOpts, op: jr.Operation,
                cli: tuple[str, str, str | None]) -> list[str]:
    """Keep the chain short: above ``clone_depth_soft`` the new backup is flattened by the target cluster's mgr
    (in this process when the mgr cannot take it), above ``clone_depth_hard`` in this process now. Records the
    depth and what was done in ``op.transfer`` (``chain_depth``; ``remote_flatten``: 0 none, 1 queued with the
    target's mgr, 2 flattened here)."""
    assert op.pool is not None
    spec = ImageSpec(op.pool, op.op_id)
    depth = fl.depth(remote, spec)
    soft, hard = conf.snapshot.clone_depth_soft, conf.snapshot.clone_depth_hard
    transfer = dict(op.transfer or {})
    transfer["chain_depth"] = depth
    how = 0
    if depth > hard:
        remote.flatten(spec)
        how = 2
    elif depth > soft:
        try:
            fl.queue_background(remote, conf, spec, conf.snapshot.mgr_timeout, wait=True, cli=cli)
            how = 1
        except FastsnapError as exc:
            LOG.warning("%s; flattening %s on cluster %s in this process", exc, spec, remote.fsid)
            remote.flatten(spec)
            how = 2
    transfer["remote_flatten"] = how
    op.transfer = transfer
    what = ("left as it is", "flatten queued with its mgr", "flattened")[how]
    return [f"chain depth {depth} on cluster {remote.fsid}: {what}"]


def sweep(remote: Cluster, pool: str, journal: jr.Journal) -> list[str]:
    """Remove from the target's RBD trash the backups Glance deleted while newer ones depended on them, once
    nothing does any more (no snapshot left: clone v2 drops a trashed parent snapshot with its last child).
    Returns the image ids removed."""
    removed: list[str] = []
    ours: dict[str, bool] = {}
    for _ in range(SWEEP_ROUNDS):
        progress = False
        for image_id, name, source in remote.trash_entries(pool):
            if source != "USER":
                continue
            if name not in ours:
                rec = journal.get(name)
                ours[name] = rec is not None and rec.chain is not None and rec.fsid == remote.fsid \
                    and rec.pool == pool
            if not ours[name]:
                continue
            left = remote.trash_snapshot_count(pool, image_id)
            if left:
                continue
            remote.trash_remove(pool, image_id)
            LOG.info("removed backup %s (rbd id %s) from the RBD trash of %s on cluster %s: nothing depends on it",
                     name, image_id, pool, remote.fsid)
            removed.append(name)
            progress = True
        if not progress:
            break
    return removed


# Paths whose backups keep a source snapshot on the disk (the plan's chain): incremental, and the delta or copy
# backup that starts a chain.
CHAIN_PATHS = (SnapshotPath.INCREMENTAL, SnapshotPath.DELTA, SnapshotPath.COPY)


def drop_stale_sources(cluster: Cluster, journal: jr.Journal, remote: Callable[[str], Cluster]) -> list[str]:
    """Remove the source snapshots kept for deleted backups (the chain's newest deleted by someone: the next
    backup would be a full one anyway), on the disks of finished backups into other clusters the journal knows.
    A backup is deleted when its image on the target cluster is gone from its name (Glance removed it, or moved
    it to the trash): Glance itself cannot tell fastsnap, which does not see a user's private images. Returns
    ``disk@snapshot`` of each removed."""
    disks = sorted({e.disk for e in journal.entries() if e.state == OpState.DONE and e.path in CHAIN_PATHS})
    removed: list[str] = []
    for name in disks:
        try:
            disk = ImageSpec.parse(name)
            snaps = list(cluster.snapshot_ids(disk))
        except (NotFound, BadRequest):
            continue  # the disk is gone (with its snapshots)
        for snap in snaps:
            if not snap.startswith(BACKUP_SNAP_PREFIX) or len(snap) < len(BACKUP_SNAP_PREFIX) + 38:
                continue
            image_id = snap[-36:]
            if backup_snap_image(snap, snap[len(BACKUP_SNAP_PREFIX):-37]) != image_id:
                continue
            rec = journal.get(image_id)
            if rec is None or rec.chain is None or not rec.fsid or not rec.pool or rec.state != OpState.DONE:
                continue  # not a finished backup fastsnap knows: leave it
            if not remote(rec.fsid).exists(ImageSpec(rec.pool, image_id)):
                cluster.remove_snapshot(disk, snap)
                LOG.info("removed %s@%s: its backup %s is gone", disk, snap, image_id)
                removed.append(f"{disk}@{snap}")
    return removed


def location_of(op: jr.Operation) -> str:
    assert op.fsid and op.pool
    return RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url
