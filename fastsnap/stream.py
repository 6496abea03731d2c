"""A bounded-memory, sparse-aware file-like reader over an RBD snapshot.

Glance's client pulls the body with ``read(n)``. The reader lists the snapshot's allocated extents once
(``diff_iterate`` with ``whole_object``, parent included: RBD objects that hold data) and walks the image as a
sequence of pieces:

- **holes** (runs of objects with no data, of any length) are produced as zeros without any OSD operation;
- **data** extents are read with ``aio_read`` in reads of at most ``chunk`` bytes, covering only allocated
  objects (a chunk that is half hole is not read whole), keeping at most ``window`` reads and at most
  ``max_inflight`` bytes in flight.

Memory is about ``max(chunk, min(window * chunk, max_inflight))`` bytes of read buffers (librados holds a transient
second copy of a reply while it lands), whatever the disk size. The default byte cap (16 MiB) is still more than
keeps Glance busy: Glance ingests at ~150 MB/s on one core (it hashes md5 + sha512), while 4 MiB reads from the
OSDs complete in milliseconds; 16, 32 and 64 MiB in flight streamed equally fast in bench/ (the peak RSS was not).

``read(n)`` returns at most ``max_read`` (64 KiB) bytes, a short read as the file protocol allows:
python-glanceclient sends each ``read(1 MiB)`` result as one HTTP chunk, and gunicorn's chunked-body reader
(under Glance) copies its whole pending buffer on every 64 KiB read Glance makes, so 1 MiB chunks cost Glance
~20 % more CPU than 64 KiB ones (bench/: 20.8 vs 17.0 CPU seconds for 4 GiB). Glance's CPU is the bottleneck of
the stream path, so this is throughput. Holes are handed out from one shared, immutable zero buffer.

A qcow2 stream (:mod:`fastsnap.qcow2`) reads through the same read-ahead, without holes: the reader is given the
qcow2 layout's data extents (the allocated clusters) and :class:`DataReader` serves the generator's cluster reads
from it in order.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastsnap.errors import CephError

DEFAULT_MAX_INFLIGHT = 16 << 20
DEFAULT_MAX_READ = 64 << 10


@dataclass
class StreamStats:
    size: int
    allocated: int = 0          # bytes in allocated extents (upper bound of what is read from the OSDs)
    bytes_read: int = 0         # bytes actually read from Ceph
    bytes_zero: int = 0         # bytes produced as holes without reading
    bytes_done: int = 0         # bytes handed to the consumer
    extents: list[tuple[int, int]] = field(default_factory=list)
    reads: int = 0              # aio_read calls issued


def allocated_extents(image: Any, size: int) -> list[tuple[int, int]]:
    """Sorted, merged (offset, length) extents holding data in the opened snapshot, parents included."""
    extents: list[tuple[int, int]] = []

    def cb(offset: int, length: int, exists: bool) -> int:
        if exists and length:
            if extents and extents[-1][0] + extents[-1][1] == offset:
                extents[-1] = (extents[-1][0], extents[-1][1] + length)
            else:
                extents.append((offset, length))
        return 0

    image.diff_iterate(0, size, None, cb, include_parent=True, whole_object=True)
    extents.sort()
    merged: list[tuple[int, int]] = []
    for off, length in extents:
        end = min(off + length, size)
        if end <= off:
            continue
        if merged and merged[-1][0] + merged[-1][1] >= off:
            start = merged[-1][0]
            merged[-1] = (start, max(merged[-1][0] + merged[-1][1], end) - start)
        else:
            merged.append((off, end - off))
    return merged


class _Pending:
    __slots__ = ("data", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.data: bytes | None = None
        self.error: int = 0


def _pieces(size: int, extents: list[tuple[int, int]], chunk: int,
            holes: bool = True) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_data) covering [0, size) in order (without ``holes``: the data pieces only); data
    pieces are at most ``chunk`` long."""
    pos = 0
    for off, length in extents:
        if off > pos and holes:
            yield pos, off - pos, False
        end = off + length
        while off < end:
            n = min(chunk, end - off)
            yield off, n, True
            off += n
        pos = end
    if pos < size and holes:
        yield pos, size - pos, False


class SnapshotReader:
    """File-like ``read(n)`` over an opened (read-only, at a snapshot) ``rbd.Image``.

    ``extents`` (sorted, disjoint): read these instead of the allocated extents; ``holes=False``: hand out only
    the data, extent after extent (what :class:`DataReader` serves the qcow2 stream from)."""

    def __init__(self, image: Any, chunk: int = 4 << 20, window: int = 8,
                 progress: Callable[[int, int], None] | None = None,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, max_read: int = DEFAULT_MAX_READ,
                 extents: list[tuple[int, int]] | None = None, holes: bool = True) -> None:
        self._img = image
        self.size = int(image.size())
        obj = int(image.stat().get("obj_size", 4 << 20))
        self.chunk = max(obj, (chunk // obj) * obj)
        self.window = max(1, window)
        self.max_inflight = max(self.chunk, min(self.chunk * self.window, max_inflight))
        self.progress = progress
        self.max_read = max(1, max_read)
        self._zeros = bytes(self.max_read)
        self.stats = StreamStats(size=self.size)
        self.stats.extents = allocated_extents(image, self.size) if extents is None else list(extents)
        self.stats.allocated = sum(length for _, length in self.stats.extents)
        self._plan = _pieces(self.size, self.stats.extents, self.chunk, holes)
        self._ahead: tuple[int, int, bool] | None = None    # next piece of the plan, not yet queued
        self._queue: collections.deque[tuple[int, int, _Pending | None]] = collections.deque()
        self._inflight = 0          # bytes of data reads queued (submitted and not yet handed out)
        self._buf = memoryview(b"")  # current data piece
        self._buf_len = 0
        self._zero_left = 0          # bytes left of the current hole
        self._closed = False

    # -- read-ahead ----------------------------------------------------------------------------------------

    def _submit(self) -> None:
        """Queue pieces in order: holes freely, data reads within the window and the byte budget."""
        while True:
            if self._ahead is None:
                self._ahead = next(self._plan, None)
                if self._ahead is None:
                    return
            off, length, is_data = self._ahead
            if not is_data:
                self._queue.append((off, length, None))
                self._ahead = None
                continue
            reads = sum(1 for _, _, p in self._queue if p is not None)
            budget = self._inflight + self._buf_len + length
            if self._queue and (reads >= self.window or budget > self.max_inflight):
                return
            pending = _Pending()

            def done(completion: Any, data: bytes, p: _Pending = pending) -> None:
                p.error = int(completion.get_return_value())
                p.data = data
                p.done.set()

            try:
                self._img.aio_read(off, length, done)
            except Exception as exc:
                raise CephError(f"reading disk at offset {off}: {exc}") from exc
            self.stats.reads += 1
            self._inflight += length
            self._queue.append((off, length, pending))
            self._ahead = None

    def _next_piece(self) -> bool:
        """Make the next piece current; False at the end of the image."""
        self._buf = memoryview(b"")
        self._buf_len = 0
        self._submit()
        if not self._queue:
            return False
        off, length, pending = self._queue.popleft()
        if pending is None:
            self._zero_left = length
            self.stats.bytes_zero += length
        else:
            pending.done.wait()
            self._inflight -= length
            if pending.error < 0 or pending.data is None:
                raise CephError(f"reading disk at offset {off} failed (error {pending.error})")
            data = pending.data
            pending.data = None
            if len(data) < length:  # short read past the end of an object: the rest are zeros
                data = data + bytes(length - len(data))
            self.stats.bytes_read += length
            self._buf = memoryview(data)
            self._buf_len = length
        self._submit()
        return True

    # -- file protocol ---------------------------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``n < 0``: the rest of the current piece, at most ``chunk``); b"" at the end."""
        if self._closed:
            raise ValueError("read from a closed SnapshotReader")
        while not self._buf and not self._zero_left:
            if not self._next_piece():
                return b""
        if n is None or n < 0 or n > self.max_read:
            n = self.max_read
        if self._buf:
            if n >= len(self._buf):
                out = bytes(self._buf)
                self._buf = memoryview(b"")
                self._buf_len = 0
            else:
                out = bytes(self._buf[:n])
                self._buf = self._buf[n:]
        else:
            k = min(n, self._zero_left)
            out = self._zeros if k == len(self._zeros) else bytes(k)
            self._zero_left -= k
        self.stats.bytes_done += len(out)
        if self.progress is not None:
            self.progress(self.stats.bytes_done, self.size)
        return out

    def close(self) -> None:
        """Wait for reads in flight (their buffers belong to librbd until they complete)."""
        for _, _, pending in self._queue:
            if pending is not None:
                pending.done.wait(60)
        self._queue.clear()
        self._buf = memoryview(b"")
        self._closed = True


class DataReader:
    """``read(offset, length)`` over a :class:`SnapshotReader` without holes, for :func:`fastsnap.qcow2.stream`:
    the calls must come in the order of the reader's extents, covering them exactly (checked), so each is served
    from the reader's read-ahead."""

    def __init__(self, reader: SnapshotReader) -> None:
        self.reader = reader
        self._extents = iter(reader.stats.extents)
        self._pos = 0
        self._end = 0

    def __call__(self, offset: int, length: int) -> bytes:
        if self._pos == self._end:
            self._pos, n = next(self._extents, (self._end, 0))
            self._end = self._pos + n
        if offset != self._pos or offset + length > self._end:
            raise CephError(f"internal error: read of {length} bytes at {offset} out of order "
                            f"(next data at {self._pos}, up to {self._end})")
        parts = []
        want = length
        while want:
            piece = self.reader.read(want)
            if not piece:
                raise CephError(f"the disk ended {want} bytes early at offset {offset + length - want}")
            parts.append(piece)
            want -= len(piece)
        self._pos += length
        return parts[0] if len(parts) == 1 else b"".join(parts)
