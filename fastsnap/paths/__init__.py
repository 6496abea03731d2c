"""One home per path: each snapshot path is one class with what the workflow needs of it (record, run, complete,
roll forward, roll back), and :data:`PATHS` maps the plan's path to it: the run, ``recover`` and undo all look it
up there, never choose by ``if``.

- clone: :class:`fastsnap.paths.clone.Clone`, a copy-on-write clone on the disk's cluster;
- stream: :class:`fastsnap.paths.stream.Stream`, the disk's bytes uploaded through Glance;
- delta, copy, incremental: :class:`fastsnap.paths.remote.Delta`, :class:`~fastsnap.paths.remote.Copy` and
  :class:`~fastsnap.paths.remote.Incremental`, written with librbd into an rbd store on another cluster.

The steps they share (journaling a step, the disk's snapshot with the guest frozen, registering a location, the
undo of the image and of the disk's snapshot) are public in :mod:`fastsnap.workflow`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from oslo_config import cfg

from fastsnap import journal as jr
from fastsnap import workflow as wf
from fastsnap.ceph import Cluster
from fastsnap.location import ImageSpec
from fastsnap.paths.clone import Clone
from fastsnap.paths.remote import Copy, Delta, Incremental
from fastsnap.paths.stream import Stream
from fastsnap.plan import SnapshotPath


class Path(Protocol):
    """A snapshot path. Every method but ``run`` acts on a journaled operation only (``recover`` after a crash,
    or the run's own undo), asks Ceph and Glance what exists, and is safe to repeat."""

    def record(self, cluster: Cluster, conf: cfg.ConfigOpts, op: jr.Operation) -> None:
        """Add to the operation, before it is reserved, what this path needs journaled (most need nothing)."""
        ...

    def run(self, ctx: wf.Context, op: jr.Operation, disk: ImageSpec, create_image: Callable[[], None],
            progress: Callable[[int, int], None] | None = None) -> wf.Outcome:
        """Take the snapshot along this path, each step journaled before it acts; ``create_image`` makes (or
        fills) the Glance image, in the path's step ``image``."""
        ...

    def complete(self, ctx: wf.Context, op: jr.Operation) -> bool:
        """The result is whole: rolling forward (registering, marking) finishes it."""
        ...

    def roll_forward(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        """Finish a complete operation; returns what it did."""
        ...

    def roll_back(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        """Remove whatever the operation may have created; returns what it did."""
        ...


PATHS: dict[SnapshotPath, Path] = {
    SnapshotPath.CLONE: Clone(),
    SnapshotPath.STREAM: Stream(),
    SnapshotPath.DELTA: Delta(),
    SnapshotPath.COPY: Copy(),
    SnapshotPath.INCREMENTAL: Incremental(),
}


def of(op: jr.Operation) -> Path:
    """The path a journaled operation took."""
    return PATHS[SnapshotPath(op.path)]


def roll_back(ctx: wf.Context, op: jr.Operation) -> list[str]:
    """Remove whatever this operation may have created. Idempotent; returns what it did."""
    return of(op).roll_back(ctx, op)


def complete(ctx: wf.Context, op: jr.Operation) -> bool:
    """True when the result is complete and only needs registering / marking."""
    return of(op).complete(ctx, op)


def roll_forward(ctx: wf.Context, op: jr.Operation) -> list[str]:
    return of(op).roll_forward(ctx, op)
