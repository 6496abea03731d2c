"""A bounded-memory, sparse-aware file-like reader over an RBD snapshot.

Glance's client pulls the body with ``read(n)``. This reader walks the image in fixed, object-aligned chunks:
chunks with no allocated data (per ``diff_iterate`` of the snapshot, parent included) are produced as zeros
without touching the OSDs; allocated chunks are read with ``aio_read``, keeping at most ``window`` reads in
flight. Memory use is about ``window * chunk`` bytes, whatever the disk size.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastsnap.errors import CephError


@dataclass
class StreamStats:
    size: int
    allocated: int = 0          # bytes in allocated extents (upper bound of what is read from the OSDs)
    bytes_read: int = 0         # bytes actually read from Ceph
    bytes_zero: int = 0         # bytes produced as holes without reading
    bytes_done: int = 0         # bytes handed to the consumer
    extents: list[tuple[int, int]] = field(default_factory=list)


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
    return extents


class _Pending:
    __slots__ = ("data", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.data: bytes | None = None
        self.error: int = 0


class SnapshotReader:
    """File-like ``read(n)`` over an opened (read-only, at a snapshot) ``rbd.Image``."""

    def __init__(self, image: Any, chunk: int = 4 << 20, window: int = 8,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self._img = image
        self.size = int(image.size())
        obj = int(image.stat().get("obj_size", 4 << 20))
        self.chunk = max(obj, (chunk // obj) * obj)
        self.window = max(1, window)
        self.progress = progress
        self.stats = StreamStats(size=self.size)
        self.stats.extents = allocated_extents(image, self.size)
        self.stats.allocated = sum(length for _, length in self.stats.extents)
        self._starts = [o for o, _ in self.stats.extents]
        self._zero = bytes(self.chunk)
        self._next_submit = 0
        self._queue: collections.deque[tuple[int, int, _Pending | None]] = collections.deque()
        self._buf = memoryview(b"")
        self._closed = False

    # -- chunk planning --------------------------------------------------------------------------------

    def _has_data(self, off: int, length: int) -> bool:
        i = bisect.bisect_right(self._starts, off + length - 1) - 1
        if i < 0:
            return False
        start, ext_len = self.stats.extents[i]
        return start + ext_len > off

    def _submit(self) -> None:
        while len(self._queue) < self.window and self._next_submit < self.size:
            off = self._next_submit
            length = min(self.chunk, self.size - off)
            self._next_submit += length
            if not self._has_data(off, length):
                self._queue.append((off, length, None))
                continue
            pending = _Pending()

            def done(completion: Any, data: bytes, p: _Pending = pending) -> None:
                p.error = int(completion.get_return_value())
                p.data = data
                p.done.set()

            try:
                self._img.aio_read(off, length, done)
            except Exception as exc:
                raise CephError(f"reading disk at offset {off}: {exc}") from exc
            self._queue.append((off, length, pending))

    def _next_chunk(self) -> memoryview:
        self._submit()
        if not self._queue:
            return memoryview(b"")
        off, length, pending = self._queue.popleft()
        if pending is None:
            self.stats.bytes_zero += length
            data: bytes = self._zero if length == self.chunk else bytes(length)
        else:
            pending.done.wait()
            if pending.error < 0 or pending.data is None:
                raise CephError(f"reading disk at offset {off} failed (error {pending.error})")
            data = pending.data
            if len(data) < length:  # short read past the end of an object: the rest are zeros
                data = data + bytes(length - len(data))
            self.stats.bytes_read += length
        self._submit()
        return memoryview(data)

    # -- file protocol ---------------------------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        if self._closed:
            raise ValueError("read from a closed SnapshotReader")
        if not self._buf:
            self._buf = self._next_chunk()
            if not self._buf:
                return b""
        if n is None or n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf = memoryview(b"")
        else:
            out = bytes(self._buf[:n])
            self._buf = self._buf[n:]
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
        self._closed = True
