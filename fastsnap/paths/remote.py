"""The paths into an rbd store on another Ceph cluster, written there directly with librbd
(:mod:`fastsnap.crosscluster` moves the bytes; :mod:`fastsnap.chain` keeps backup chains):

``delta``        clone the base image's copy on the target cluster, write only the extents the disk holds itself;
``copy``         a new image of the disk's size, written with the disk snapshot's allocated extents;
``incremental``  clone the chain's previous backup, write only what changed since its source snapshot.

Each then creates ``snap`` on the target image and registers ``rbd://<fsid>/<pool>/<id>/snap``; a backup then
keeps its disk snapshot as the chain's source snapshot and bounds the chain's depth. Roll back removes the target
image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import chain as ch
from fastsnap import crosscluster as xc
from fastsnap import journal as jr
from fastsnap import workflow as wf
from fastsnap.ceph import Cluster
from fastsnap.errors import ConfigError, FastsnapError, NotFound
from fastsnap.location import CLONE_SNAP, ImageSpec, RbdLocation, temp_snap_name
from fastsnap.states import Step
from fastsnap.stream import allocated_extents

LOG = logging.getLogger(__name__)

Extents = list[tuple[int, int, bool]]


def _remotes(ctx: wf.Context, op: jr.Operation) -> xc.RemoteClusters:
    if ctx.remote is None:
        raise ConfigError(f"operation {op.op_id} made an image on cluster {op.fsid}, but fastsnap has no "
                          "credentials for it any more ([ceph] remote_clusters)")
    remotes: xc.RemoteClusters = ctx.remote
    return remotes


class Remote:
    """What the three share: run, complete, roll forward and roll back; a path says how its target image is made
    (:meth:`make_target`), which extents it writes (:meth:`extents`) and whether absent ones mask a parent."""

    mask_parent = False

    def record(self, cluster: Cluster, conf: cfg.ConfigOpts, op: jr.Operation) -> None:
        """Nothing beyond the plan's own fields."""

    def make_target(self, target: Cluster, op: jr.Operation, spec: ImageSpec) -> None:
        raise NotImplementedError

    def extents(self, src: Any, op: jr.Operation) -> Extents:
        raise NotImplementedError

    def run(self, ctx: wf.Context, op: jr.Operation, disk: ImageSpec, create_image: Callable[[], None],
            progress: Callable[[int, int], None] | None = None) -> wf.Outcome:
        """Into ``op.pool`` on cluster ``op.fsid``, in pieces of ``[snapshot] remote_chunk_size_mb``,
        ``remote_parallel`` at once."""
        assert op.pool is not None and op.fsid is not None
        remote = _remotes(ctx, op)
        target = remote.get(op.fsid)
        chunk, parallel = ctx.conf.snapshot.remote_chunk_size_mb << 20, ctx.conf.snapshot.remote_parallel
        snap = temp_snap_name(op.op_id)
        spec = ImageSpec(op.pool, op.op_id)
        url = RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url
        stats = xc.TransferStats(size=op.size, check_bytes_read=op.check_bytes_read)
        wf.step(ctx, op, Step.IMAGE, create_image)
        wf.step(ctx, op, Step.DISK_SNAP, lambda: wf.snapshot_disk(ctx, op, disk, snap))
        wf.step(ctx, op, Step.REMOTE_IMAGE, lambda: self.make_target(target, op, spec))

        def write() -> None:
            with ctx.cluster.image(disk, snapshot=snap, read_only=True) as src, target.image(spec) as dst:
                obj = int(src.stat().get("obj_size", 4 << 20))
                step = max(obj, chunk // obj * obj)
                xc.transfer(src, dst, self.extents(src, op), mask_parent=self.mask_parent, chunk=step,
                            parallel=parallel, stats=stats, progress=progress)
                dst.flush()

        wf.step(ctx, op, Step.REMOTE_WRITE, write)
        op.transfer = stats.to_dict()
        if op.chain is None:  # a backup keeps it as the chain's source snapshot (below) instead
            wf.step(ctx, op, Step.DISK_SNAP_RELEASE, lambda: ctx.cluster.remove_snapshot(disk, snap))

        def remote_snap() -> None:
            target.create_snapshot(spec, CLONE_SNAP)
            op.remote_snap_id = target.snapshot_ids(spec).get(CLONE_SNAP)

        wf.step(ctx, op, Step.REMOTE_SNAP, remote_snap)
        outcome = wf.register(ctx, op, url)
        if op.chain is not None:
            finish_chain(ctx, op, disk, remote)
        return outcome

    def complete(self, ctx: wf.Context, op: jr.Operation) -> bool:
        """The target image is complete (its ``snap`` exists): only registering is left."""
        if not op.began(Step.REMOTE_SNAP) or not op.pool or not op.fsid or ctx.remote is None:
            return False
        try:
            return CLONE_SNAP in ctx.remote.get(op.fsid).snapshots(ImageSpec(op.pool, op.op_id))
        except NotFound:
            return False

    def roll_forward(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        if op.chain is not None:
            return _roll_forward_chain(ctx, op, ImageSpec.parse(op.disk))
        assert op.pool and op.fsid
        done = wf.release_disk_snap(ctx, op, "disk {disk} is gone (parked in the RBD trash): the clone reads "
                                             "through it")
        wf.register(ctx, op, RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url)
        done.append(f"registered rbd://.../{op.pool}/{op.op_id}/snap; image {op.op_id} active")
        return done

    def roll_back(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        """The Glance image, then the image on the target cluster, then the disk's snapshot. Idempotent."""
        return wf.undo_image(ctx, op) + _remove_target(ctx, op) + wf.undo_disk_snap(ctx, op)


class Delta(Remote):
    """Clone of the base image's copy (checked while planning), written with the disk's own extents; absent or
    zero ones are written as zeros to mask the parent."""

    mask_parent = True

    def make_target(self, target: Cluster, op: jr.Operation, spec: ImageSpec) -> None:
        assert op.base_location is not None
        xc.clone_target(target, RbdLocation.parse(op.base_location), spec, op.size)

    def extents(self, src: Any, op: jr.Operation) -> Extents:
        return xc.own_extents(src, op.size)


class Incremental(Delta):
    """Clone of the chain's previous backup (checked while planning), written with what changed since its source
    snapshot."""

    def extents(self, src: Any, op: jr.Operation) -> Extents:
        assert op.source_snap is not None
        return xc.changed_extents(src, op.size, op.source_snap)


class Copy(Remote):
    """A new image, written with the disk snapshot's allocated extents (parent included); zeros are skipped."""

    def make_target(self, target: Cluster, op: jr.Operation, spec: ImageSpec) -> None:
        xc.create_target(target, spec, op.size)

    def extents(self, src: Any, op: jr.Operation) -> Extents:
        return [(off, n, True) for off, n in allocated_extents(src, op.size)]


def _remove_target(ctx: wf.Context, op: jr.Operation) -> list[str]:
    """Remove the image this operation made on the target cluster (idempotent)."""
    if not op.began(Step.REMOTE_IMAGE) or not op.pool or not op.fsid:
        return []
    cluster = _remotes(ctx, op).get(op.fsid)
    spec = ImageSpec(op.pool, op.op_id)
    if not cluster.exists(spec):
        return []
    cluster.remove_image(spec)
    return [f"removed {spec} on cluster {op.fsid}"]


def finish_chain(ctx: wf.Context, op: jr.Operation, disk: ImageSpec, remote: xc.RemoteClusters) -> list[str]:
    """A backup that is active: keep its disk snapshot as the chain's source snapshot, bound the chain's depth on
    the target cluster. Neither undoes the backup when it fails (logged: the next backup is then a full one, or
    the chain one longer); both are steps, so a recover after a kill repeats them."""
    assert op.fsid is not None
    done: list[str] = []

    def keep() -> None:
        done.extend(ch.keep_source(ctx.cluster, disk, op))

    def flatten() -> None:
        rc = remote.confs[str(op.fsid)]
        done.extend(ch.bound_depth(remote.get(str(op.fsid)), ctx.conf, op, (rc.conf, rc.user, rc.keyring)))

    for step, act in ((Step.KEEP_SNAP, keep), (Step.REMOTE_FLATTEN, flatten)):
        try:
            wf.step(ctx, op, step, act)
        except FastsnapError as exc:
            LOG.warning("backup %s: %s failed: %s", op.op_id, step, exc)
            done.append(f"{step} failed: {exc}")
    return done


def _roll_forward_chain(ctx: wf.Context, op: jr.Operation, disk: ImageSpec) -> list[str]:
    """A backup whose image on the target cluster is complete: register it, then keep the disk's snapshot as the
    chain's source snapshot and bound the chain's depth (as the run does after the image is active)."""
    assert op.pool and op.fsid and ctx.remote is not None
    remote = ctx.remote.get(op.fsid)
    spec = ImageSpec(op.pool, op.op_id)
    if op.remote_snap_id is None:  # killed between making ``snap`` and journaling the next step
        op.remote_snap_id = remote.snapshot_ids(spec).get(CLONE_SNAP)
    wf.register(ctx, op, RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url)
    done = [f"registered rbd://.../{op.pool}/{op.op_id}/snap; image {op.op_id} active"]
    done += ch.keep_source(ctx.cluster, disk, op)
    rc = ctx.remote.confs[op.fsid]
    try:
        done += ch.bound_depth(remote, ctx.conf, op, (rc.conf, rc.user, rc.keyring))
    except FastsnapError as exc:
        done.append(f"chain depth not bounded: {exc}")
    return done
