"""Named states shared by the workflow, the journal, the service and the tests.

Every enum is a :class:`enum.StrEnum`: members compare equal to (and serialise as) their values, so the journal's
JSON records and the REST answers are unchanged while the code never restates a bare string.
"""

from __future__ import annotations

import enum


class OpState(enum.StrEnum):
    """An operation (one image id) in the journal."""

    RUNNING = "running"          # acting, or left by a dead process for ``recover``
    DONE = "done"
    FAILED = "failed"            # rolled back after an error
    ROLLED_BACK = "rolled_back"  # rolled back by ``recover``


# States in which an image id may be reserved again: everything the earlier attempt made was undone.
REUSABLE = (OpState.FAILED, OpState.ROLLED_BACK)


class JobState(enum.StrEnum):
    """A REST job (the service's view of one request)."""

    PLANNING = "planning"
    RUNNING = "running"
    REGISTERING = "registering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_ACTIVE = (JobState.PLANNING, JobState.RUNNING, JobState.REGISTERING)
JOB_FINAL_FAILED = (JobState.FAILED, JobState.CANCELLED)


class Step(enum.StrEnum):
    """Workflow steps, each journaled before it acts."""

    IMAGE = "image"                          # create (or fill) the Glance image
    DISK_SNAP = "disk_snap"                  # the disk's point-in-time snapshot
    CLONE = "clone"                          # clone path: copy-on-write clone into the store's pool
    FLATTEN = "flatten"                      # sync policy: before registering
    DISK_SNAP_RELEASE = "disk_snap_release"  # remove (clone path: trash) the disk's snapshot
    CLONE_SNAP = "clone_snap"                # the clone's ``snap``
    LOCATION = "location"                    # register the rbd:// location
    UPLOAD = "upload"                        # stream path: the data into Glance
    ACTIVE = "active"                        # wait for Glance to activate the image
    FLATTEN_QUEUE = "flatten_queue"          # background policy: hand the flatten to the Ceph mgr
    REMOTE_IMAGE = "remote_image"            # delta: clone the base's copy on the target cluster; copy: create
    REMOTE_WRITE = "remote_write"            # delta/copy: write the disk's extents into it
    REMOTE_SNAP = "remote_snap"              # delta/copy: its ``snap``
    KEEP_SNAP = "keep_snap"                  # backup into another cluster: the disk's snapshot becomes the kept
                                             # source snapshot of the chain (the previous one is removed)
    REMOTE_FLATTEN = "remote_flatten"        # chain deeper than clone_depth_soft: flatten task on the target's mgr


CLONE_STEPS = (Step.IMAGE, Step.DISK_SNAP, Step.CLONE, Step.FLATTEN, Step.DISK_SNAP_RELEASE, Step.CLONE_SNAP,
               Step.LOCATION, Step.ACTIVE, Step.FLATTEN_QUEUE)
STREAM_STEPS = (Step.IMAGE, Step.DISK_SNAP, Step.UPLOAD, Step.ACTIVE, Step.DISK_SNAP_RELEASE)
REMOTE_STEPS = (Step.IMAGE, Step.DISK_SNAP, Step.REMOTE_IMAGE, Step.REMOTE_WRITE, Step.DISK_SNAP_RELEASE,
                Step.REMOTE_SNAP, Step.LOCATION, Step.ACTIVE)
# Backups into an rbd store on another cluster (incremental, and the delta or copy backup that starts a chain):
# the disk's snapshot is kept as the chain's source snapshot instead of released.
CHAIN_STEPS = (Step.IMAGE, Step.DISK_SNAP, Step.REMOTE_IMAGE, Step.REMOTE_WRITE, Step.REMOTE_SNAP, Step.LOCATION,
               Step.ACTIVE, Step.KEEP_SNAP, Step.REMOTE_FLATTEN)
# Steps during which a REST job shows as ``registering``.
REGISTER_STEPS = (Step.LOCATION, Step.ACTIVE, Step.FLATTEN_QUEUE)


class FlattenPolicy(enum.StrEnum):
    """When a clone-path snapshot is flattened (``[snapshot] flatten``)."""

    NEVER = "never"
    BACKGROUND = "background"
    SYNC = "sync"


class FlattenState(enum.StrEnum):
    """Where a clone-path snapshot's flatten stands."""

    QUEUED = "queued"   # the Ceph mgr accepted the task
    LOCAL = "local"     # the mgr could not take it: flattened in-process later
    DONE = "done"       # the clone has no parent any more
    GONE = "gone"       # the clone was deleted (with its image)


PENDING_FLATTEN = (FlattenState.QUEUED, FlattenState.LOCAL)


class ParkedState(enum.StrEnum):
    """An instance disk parked in the RBD trash (see :mod:`fastsnap.parked`)."""

    WAITING = "waiting"
    FLATTENING = "flattening"
    REMOVED = "removed"
    BLOCKED = "blocked"


class RecoverAction(enum.StrEnum):
    """What ``recover`` did with one interrupted operation."""

    ROLLED_FORWARD = "rolled_forward"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class ImageType(enum.StrEnum):
    """Nova's ``image_type`` of the result."""

    SNAPSHOT = "snapshot"
    BACKUP = "backup"


class StreamFormat(enum.StrEnum):
    """Disk format of an image the stream path makes (``[snapshot] stream_format``, a request's ``format``).
    The clone, delta and copy paths make RBD images, which are raw."""

    RAW = "raw"      # the whole virtual disk, holes as zeros
    QCOW2 = "qcow2"  # only the allocated clusters (fastsnap.qcow2)
