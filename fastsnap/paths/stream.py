"""The stream path: the disk's point-in-time snapshot streamed into Glance, which stores it in any store (the
fallback when no clone or remote write fits the plan)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import journal as jr
from fastsnap import qcow2
from fastsnap import workflow as wf
from fastsnap.ceph import Cluster
from fastsnap.errors import FastsnapError, GlanceError
from fastsnap.location import ImageSpec, temp_snap_name
from fastsnap.states import Step, StreamFormat
from fastsnap.stream import DataReader, SnapshotReader, StreamStats, allocated_extents

LOG = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3


class UploadBody:
    """What one upload attempt sends: the reader Glance reads, its length, and how much of it went out."""

    def __init__(self, img: Any, fmt: str, chunk: int, window: int,
                 progress: Callable[[int, int], None] | None) -> None:
        if fmt == StreamFormat.QCOW2:
            size = int(img.size())
            try:
                layout = qcow2.Layout.plan(size, allocated_extents(img, size))
            except ValueError as exc:
                raise FastsnapError(f"cannot stream this disk as qcow2: {exc}") from exc
            self.snapshot = SnapshotReader(img, chunk=chunk, window=window, extents=layout.data_extents(),
                                           holes=False)
            self.data: Any = qcow2.IterReader(qcow2.stream(layout, DataReader(self.snapshot)), layout.file_size,
                                              progress=progress)
            self.length = layout.file_size
        else:
            self.snapshot = SnapshotReader(img, chunk=chunk, window=window, progress=progress)
            self.data = self.snapshot
            self.length = self.snapshot.size

    @property
    def sent(self) -> int:
        return int(self.data.done) if isinstance(self.data, qcow2.IterReader) else self.snapshot.stats.bytes_done

    def stats(self) -> StreamStats:
        """The snapshot reader's figures, with ``bytes_done`` the bytes sent (the qcow2 file's, for qcow2)."""
        st = self.snapshot.stats
        st.bytes_done = self.sent
        return st


class Stream:
    """Stream path: run, complete, roll forward, roll back."""

    def record(self, cluster: Cluster, conf: cfg.ConfigOpts, op: jr.Operation) -> None:
        """Nothing beyond the plan's own fields."""

    def run(self, ctx: wf.Context, op: jr.Operation, disk: ImageSpec, create_image: Callable[[], None],
            progress: Callable[[int, int], None] | None = None) -> wf.Outcome:
        """The disk's snapshot streamed into Glance as the journaled format: raw (the whole virtual disk) or
        qcow2 (the allocated clusters behind tables computed first, :mod:`fastsnap.qcow2`); no local file either
        way. Chunk and read-ahead as configured (``[snapshot] chunk_size_mb``, ``read_ahead``)."""
        chunk, window = ctx.conf.snapshot.chunk_size_mb << 20, ctx.conf.snapshot.read_ahead
        fmt = op.format or StreamFormat.RAW
        snap = temp_snap_name(op.op_id)
        stats: list[StreamStats] = []
        wf.step(ctx, op, Step.IMAGE, create_image)
        wf.step(ctx, op, Step.DISK_SNAP, lambda: wf.snapshot_disk(ctx, op, disk, snap))

        def upload() -> None:
            for attempt in range(1, UPLOAD_ATTEMPTS + 1):
                with ctx.cluster.image(disk, snapshot=snap, read_only=True) as img:
                    body = UploadBody(img, fmt, chunk, window, wf.progress_hook(progress))
                    reader = body.snapshot
                    try:
                        ctx.glance.upload(op.op_id, body.data, body.length, op.store)
                        if body.sent != body.length:
                            raise GlanceError(f"Glance stopped reading after {body.sent} of {body.length} bytes")
                        stats.append(body.stats())
                        return
                    except GlanceError as exc:
                        # Glance puts an image whose upload failed back to 'queued': stream again from the same
                        # snapshot. Any other state (a Glance that died mid-upload leaves 'saving') is final.
                        img_now = ctx.glance.find(op.op_id)
                        status = img_now.get("status") if img_now else None
                        if attempt == UPLOAD_ATTEMPTS or status != "queued":
                            raise
                        LOG.warning("upload of %s failed (%s); image is queued again, retrying from the snapshot "
                                    "(attempt %d of %d)", op.op_id, exc, attempt + 1, UPLOAD_ATTEMPTS)
                    finally:
                        reader.close()

        wf.step(ctx, op, Step.UPLOAD, upload)
        image: dict[str, object] = {}

        def wait() -> None:
            image.update(ctx.glance.wait_status(op.op_id, "active"))

        wf.step(ctx, op, Step.ACTIVE, wait)
        wf.step(ctx, op, Step.DISK_SNAP_RELEASE, lambda: ctx.cluster.remove_snapshot(disk, snap))
        return wf.Outcome(None, stats[0] if stats else None, image)

    def complete(self, ctx: wf.Context, op: jr.Operation) -> bool:
        """Glance holds the whole image (it is active): only the disk's snapshot is left to remove."""
        if not op.began(Step.UPLOAD):
            return False
        img = ctx.glance.find(op.op_id)
        return img is not None and img.get("status") == "active"

    def roll_forward(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        return [*wf.release_disk_snap(ctx, op, None), f"image {op.op_id} already active"]

    def roll_back(self, ctx: wf.Context, op: jr.Operation) -> list[str]:
        """The Glance image (with what it holds), then the disk's snapshot. Idempotent."""
        return wf.undo_image(ctx, op) + wf.undo_disk_snap(ctx, op)
