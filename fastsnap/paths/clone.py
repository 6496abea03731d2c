"""The clone path: the disk's snapshot cloned into the store's pool on the disk's cluster (copy-on-write, no data
moved), registered as ``rbd://<fsid>/<pool>/<id>/snap``; flattened now, later or never (:mod:`fastsnap.flatten`)."""

from __future__ import annotations

from collections.abc import Callable

from oslo_config import cfg

from fastsnap import flatten as fl
from fastsnap import journal as jr
from fastsnap import workflow as wf
from fastsnap.ceph import Cluster
from fastsnap.errors import NotFound
from fastsnap.location import CLONE_SNAP, ImageSpec, RbdLocation, temp_snap_name
from fastsnap.states import FlattenPolicy, FlattenState, Step


class Clone:
    """Clone path: record, run, complete, roll forward, roll back."""

    def record(self, cluster: Cluster, conf: cfg.ConfigOpts, op: jr.Operation) -> None:
        """The flatten policy for the clone's depth, and the RBD id of the disk it will depend on. Read now (not
        when planned: the service may have planned a while ago): one open for both."""
        now = cluster.describe(ImageSpec.parse(op.disk))
        up = now.parent
        depth = 1 + (0 if up is None else 1 + fl.depth(cluster, ImageSpec(up.pool, up.image)))
        policy, why = fl.policy_for(conf, op.store, depth)
        op.flatten = jr.FlattenInfo(policy, why, depth)
        # Which RBD image the clone depends on: a disk deleted before the flatten is parked in the RBD trash
        # (under this id) and purged by fastsnap only when its id is one fastsnap recorded (fastsnap.parked).
        op.disk_id = now.image_id

    def run(self, ctx: wf.Context, op: jr.Operation, disk: ImageSpec, create_image: Callable[[], None],
            progress: Callable[[int, int], None] | None = None) -> wf.Outcome:
        """The Glance image is created (step ``image``, journaled first like every step) in a thread while the
        disk is snapshotted and cloned: the two do not depend on each other until the location is registered. The
        thread is always joined before the next step that needs it (``clone_snap``) and before a roll back, so roll
        back sees whatever it made.

        The steps are journaled a phase at a time, each phase in one write before its first step acts: making
        (image, disk snapshot, clone, flatten if synchronous, the disk snapshot's release), then registering (the
        clone's ``snap``, location, active, the flatten's queueing). Undo and roll forward ask Ceph and Glance what
        exists, so a step recorded ahead of its act costs nothing after a crash; two writes instead of eight keep
        the journal in RADOS off a snapshot's critical path (issue 23 point 8, ``bench/journal_cost.py``).
        The flatten policy is the journaled one (``op.flatten``)."""
        assert op.pool is not None and op.fsid is not None and op.flatten is not None
        flatten_policy = op.flatten.policy
        mgr_timeout = ctx.conf.snapshot.mgr_timeout
        snap = temp_snap_name(op.op_id)
        clone = ImageSpec(op.pool, op.op_id)
        url = RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url
        ctx.step = Step.IMAGE
        if ctx.on_step is not None:
            ctx.on_step(Step.IMAGE)
        sync = flatten_policy == FlattenPolicy.SYNC
        ctx.journal.begin(op, Step.IMAGE, Step.DISK_SNAP, Step.CLONE, *([Step.FLATTEN] if sync else []),
                          Step.DISK_SNAP_RELEASE)
        wf.crash_point(Step.IMAGE)
        creating = wf.Background(create_image, f"fastsnap-image-{op.op_id[:8]}")
        creating.start()
        try:
            wf.step(ctx, op, Step.DISK_SNAP, lambda: wf.snapshot_disk(ctx, op, disk, snap))
            wf.step(ctx, op, Step.CLONE, lambda: ctx.cluster.clone(disk, snap, clone))
            if sync:
                wf.step(ctx, op, Step.FLATTEN, lambda: ctx.cluster.flatten(clone))
                info = op.flatten
                if info is not None:
                    info.state = FlattenState.DONE
                    op.flatten = info
            # Clone v2: the parent snapshot goes to the trash and is purged once the clone is flattened or removed.
            wf.step(ctx, op, Step.DISK_SNAP_RELEASE, lambda: ctx.cluster.remove_snapshot(disk, snap))
        finally:
            creating.join()
        creating.result()
        wf.crash_point(f"{Step.IMAGE}:after")
        background = flatten_policy == FlattenPolicy.BACKGROUND
        ctx.journal.begin(op, Step.CLONE_SNAP, Step.LOCATION, Step.ACTIVE,
                          *([Step.FLATTEN_QUEUE] if background else []))
        wf.step(ctx, op, Step.CLONE_SNAP, lambda: ctx.cluster.create_snapshot(clone, CLONE_SNAP))
        outcome = wf.register(ctx, op, url, fresh=True)
        if background:
            wf.step(ctx, op, Step.FLATTEN_QUEUE, lambda: wf.queue_flatten(ctx, op, mgr_timeout))
        return outcome

    def complete(self, ctx: wf.Context, op: jr.Operation) -> bool:
        """The clone has its ``snap``: only registering is left."""
        if not op.began(Step.CLONE_SNAP) or not op.pool:
            return False
        try:
            return CLONE_SNAP in ctx.cluster.snapshots(ImageSpec(op.pool, op.op_id))
        except NotFound:
            return False

    def roll_forward(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        assert op.pool and op.fsid
        # The disk no longer under its name: deleted while this process was dead. Its snapshot was already in the
        # RBD snapshot trash (the clone's `snap` exists, so the release step ran) and Nova's hook parked the disk
        # in the RBD trash: the clone still reads through it, and the parked disk is drained (clone flattened,
        # disk purged) once the image is registered.
        done = wf.release_disk_snap(ctx, op, "disk {disk} is gone (parked in the RBD trash): the clone reads "
                                             "through it")
        wf.register(ctx, op, RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url)
        done.append(f"registered rbd://.../{op.pool}/{op.op_id}/snap; image {op.op_id} active")
        flatten = op.flatten
        if flatten is not None and flatten.policy == FlattenPolicy.BACKGROUND and flatten.state is None:
            wf.queue_flatten(ctx, op, ctx.conf.snapshot.mgr_timeout if ctx.conf else 10)
            done.append(f"flatten {op.flatten.state if op.flatten else None}")
        return done

    def roll_back(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        """The Glance image, then the clone, then the disk's snapshot. Idempotent."""
        done = wf.undo_image(ctx, op)
        if op.began(Step.CLONE) and op.pool:
            clone = ImageSpec(op.pool, op.op_id)
            if ctx.cluster.exists(clone):
                ctx.cluster.remove_image(clone)
                done.append(f"removed clone {clone}")
        return done + wf.undo_disk_snap(ctx, op)
