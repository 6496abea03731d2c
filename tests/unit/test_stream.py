"""The sparse reader (``fastsnap.stream.SnapshotReader``) on random sparse images, without Ceph.

``InMemoryImage`` below stands in for the read interface of ``rbd.Image`` (``size``, ``stat``, ``diff_iterate``
with whole objects, ``aio_read`` completing on other threads, out of order) so that the reader's logic can be
driven through many shapes in a few seconds: the bytes handed out equal the image, exactly the allocated objects
are read (no read touches a hole), reads stay within the window and the in-flight budget, and errors surface as
``CephError``. That librbd itself behaves so is shown against the real stack (tests/integration/test_snapshot.py,
stream path; bench/ for the byte counts at size).
"""

from __future__ import annotations

import random
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastsnap.ceph import ReadDone
from fastsnap.errors import CephError
from fastsnap.paths.stream import UploadBody
from fastsnap.states import StreamFormat
from fastsnap.stream import DataReader, SnapshotReader, allocated_extents

OBJ = 64 << 10  # object size of the images below (small, so that many shapes run in seconds)


class InMemoryImage:
    """An in-memory stand-in for ``rbd.Image``'s read interface: holes are objects with no data, each
    ``aio_read`` completes on a timer thread after a random delay (so completions arrive out of order)."""

    def __init__(self, rng: random.Random, size: int, objects: set[int], fail_at: int | None = None) -> None:
        self._size = size
        self.objects = objects
        self.fail_at = fail_at  # offset of a read that completes with -EIO
        self.reads: list[tuple[int, int]] = []
        self.peak_reads_ahead = 0   # most data reads issued and not yet reached by the consumer
        self.peak_bytes_ahead = 0   # their bytes
        self.reader: SnapshotReader | None = None
        self._rng = rng
        self._timers: list[threading.Timer] = []
        content = bytearray(size)
        for o in objects:
            end = min(OBJ, size - o * OBJ)
            content[o * OBJ:o * OBJ + end] = rng.randbytes(end)
        self.content = bytes(content)

    def size(self) -> int:
        return self._size

    def stat(self) -> dict[str, int]:
        return {"obj_size": OBJ}

    def diff_iterate(self, offset: int, length: int, from_snapshot: str | None,
                     cb: Callable[[int, int, bool], int], include_parent: bool = True,
                     whole_object: bool = False) -> None:
        assert (offset, length, from_snapshot, include_parent, whole_object) == (0, self._size, None, True, True)
        for o in sorted(self.objects):
            cb(o * OBJ, min(OBJ, self._size - o * OBJ), True)

    def aio_read(self, offset: int, length: int, cb: Callable[[Any, bytes], None]) -> None:
        self.reads.append((offset, length))
        if self.reader is not None:  # what is held ahead of the consumer once this read is issued
            pos = self.reader.stats.bytes_done
            ahead = [(off, n) for off, n in self.reads if off + n > pos]
            self.peak_reads_ahead = max(self.peak_reads_ahead, len(ahead))
            self.peak_bytes_ahead = max(self.peak_bytes_ahead, sum(n for _, n in ahead))
        rc = -5 if offset == self.fail_at else 0
        data = self.content[offset:offset + length]
        t = threading.Timer(self._rng.random() * 0.002, lambda: cb(ReadDone(rc), data))
        self._timers.append(t)
        t.start()

    def join(self) -> None:
        for t in self._timers:
            t.join()


def _drain(reader: SnapshotReader, rng: random.Random, sizes: list[int]) -> bytes:
    out = bytearray()
    while True:
        b = reader.read(rng.choice(sizes))
        if not b:
            return bytes(out)
        out += b


@pytest.mark.parametrize("seed", range(24))
def test_random_sparse_images_read_back_exactly_and_only_their_data(seed: int) -> None:
    rng = random.Random(seed)
    n_obj = rng.randint(1, 48)
    size = n_obj * OBJ - rng.choice([0, 0, 1, 12345])          # the last object may be partial
    objects = set(rng.sample(range(n_obj), rng.randint(0, n_obj)))  # from all holes to fully allocated
    img = InMemoryImage(rng, size, objects)
    chunk = rng.choice([OBJ, 2 * OBJ, 3 * OBJ + 5, 8 * OBJ])    # rounded down to whole objects
    window = rng.randint(1, 8)
    max_inflight = rng.choice([OBJ, 4 * OBJ, 16 * OBJ])
    progress: list[tuple[int, int]] = []
    reader = SnapshotReader(img, chunk=chunk, window=window, max_inflight=max_inflight,
                            max_read=rng.choice([7777, OBJ, 1 << 20]), progress=lambda d, t: progress.append((d, t)))
    img.reader = reader
    try:
        out = _drain(reader, rng, [1, 4096, OBJ, 1 << 20, -1, 7777])
    finally:
        reader.close()
        img.join()

    assert out == img.content
    st = reader.stats
    assert st.bytes_done == size and st.bytes_read + st.bytes_zero == size
    assert st.allocated == sum(min(OBJ, size - o * OBJ) for o in objects)
    assert st.bytes_read == st.allocated  # holes are never read, data is read once
    touched = {o for off, n in img.reads for o in range(off // OBJ, (off + n + OBJ - 1) // OBJ)}
    assert touched == objects
    assert all(n <= reader.chunk and reader.chunk % OBJ == 0 for _, n in img.reads)
    assert sum(n for _, n in img.reads) == st.allocated and st.reads == len(img.reads)
    # Bounded memory: reads ahead of the consumer stay within the window and the byte budget, plus the piece
    # being handed out.
    assert img.peak_reads_ahead <= reader.window + 1
    assert img.peak_bytes_ahead <= reader.max_inflight + reader.chunk
    assert reader.max_inflight == max(reader.chunk, min(reader.chunk * reader.window, max_inflight))
    if size:
        assert progress[-1] == (size, size)
        assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_a_large_hole_is_produced_without_any_read() -> None:
    rng = random.Random(1)
    img = InMemoryImage(rng, 256 * OBJ, {0, 255})
    reader = SnapshotReader(img, chunk=4 * OBJ, window=4, max_read=OBJ)
    try:
        out = _drain(reader, rng, [OBJ])
    finally:
        reader.close()
        img.join()
    assert out == img.content
    assert img.reads == [(0, OBJ), (255 * OBJ, OBJ)]
    assert reader.stats.bytes_zero == 254 * OBJ


def test_a_short_read_is_completed_with_zeros() -> None:
    class Short(InMemoryImage):
        """Answers a read with its data up to the last non-zero byte only."""

        def aio_read(self, offset: int, length: int, cb: Callable[[Any, bytes], None]) -> None:
            self.reads.append((offset, length))
            data = self.content[offset:offset + length].rstrip(b"\0")
            cb(ReadDone(len(data)), data)

    rng = random.Random(5)
    img = Short(rng, 4 * OBJ, {1, 2})
    img.content = bytes(OBJ) + rng.randbytes(OBJ // 2) + bytes(OBJ + OBJ // 2) + bytes(OBJ)
    reader = SnapshotReader(img, chunk=OBJ, window=2)
    try:
        assert _drain(reader, rng, [OBJ]) == img.content
    finally:
        reader.close()
    assert reader.stats.bytes_read == 2 * OBJ


def test_a_failed_read_raises_ceph_error() -> None:
    rng = random.Random(2)
    img = InMemoryImage(rng, 8 * OBJ, set(range(8)), fail_at=4 * OBJ)
    reader = SnapshotReader(img, chunk=OBJ, window=2)
    try:
        with pytest.raises(CephError, match=f"offset {4 * OBJ}"):
            _drain(reader, rng, [OBJ])
        assert reader.stats.bytes_done == 4 * OBJ  # everything before the bad read was handed out
    finally:
        reader.close()
        img.join()


def test_a_refused_read_raises_ceph_error() -> None:
    class Refusing(InMemoryImage):
        def aio_read(self, offset: int, length: int, cb: Callable[[Any, bytes], None]) -> None:
            raise OSError("connection to the OSDs lost")

    reader = SnapshotReader(Refusing(random.Random(3), 2 * OBJ, {1}), chunk=OBJ)
    with pytest.raises(CephError, match="connection to the OSDs lost"):
        reader.read(OBJ)  # the hole is queued, and the read behind it is issued at once: refused
    reader.close()


def test_read_after_close_is_refused() -> None:
    reader = SnapshotReader(InMemoryImage(random.Random(4), OBJ, set()), chunk=OBJ)
    reader.close()
    with pytest.raises(ValueError):
        reader.read(1)


def test_allocated_extents_are_sorted_merged_and_clipped() -> None:
    class Extents:
        def diff_iterate(self, offset: int, length: int, from_snapshot: str | None,
                         cb: Callable[[int, int, bool], int], include_parent: bool = True,
                         whole_object: bool = False) -> None:
            for off, n, exists in [(8, 4, True), (0, 4, True), (4, 2, True), (20, 0, True), (14, 2, False),
                                   (10, 4, True), (24, 8, True), (40, 8, True)]:
                cb(off, n, exists)

    # (0,4)+(4,2) adjoin, (8,4) and (10,4) overlap, (24,8) is cut at the size, (40,8) is past it
    assert allocated_extents(Extents(), 28) == [(0, 6), (8, 6), (24, 4)]


@pytest.mark.parametrize("seed", range(4))
def test_qcow2_body_from_the_read_ahead_is_what_qemu_img_reads(seed: int, tmp_path: Path) -> None:
    """The stream path's qcow2 body (``paths.stream.UploadBody``): the layout from the allocated objects, the data
    through ``DataReader`` over a hole-less ``SnapshotReader``; qemu-img finds it sound and equal to the image."""
    rng = random.Random(seed)
    n_obj = rng.randint(1, 40)
    size = n_obj * OBJ - rng.choice([0, 512, 4096])
    img = InMemoryImage(rng, size, set(rng.sample(range(n_obj), rng.randint(0, n_obj))))
    body = UploadBody(img, StreamFormat.QCOW2, chunk=2 * OBJ, window=3, progress=None)
    out, raw = tmp_path / "x.qcow2", tmp_path / "x.raw"
    try:
        with open(out, "wb") as f:
            while piece := body.data.read(rng.choice([1, 4096, OBJ, 1 << 20])):
                f.write(piece)
    finally:
        body.snapshot.close()
        img.join()
    raw.write_bytes(img.content)
    assert body.sent == body.length == out.stat().st_size
    st = body.stats()
    assert st.bytes_read == st.allocated and st.bytes_zero == 0    # only allocated objects were read, once
    check = subprocess.run(["qemu-img", "check", "-f", "qcow2", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    cmp = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(out), str(raw)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_data_reader_refuses_reads_out_of_order() -> None:
    rng = random.Random(3)
    img = InMemoryImage(rng, 8 * OBJ, {1, 5})
    reader = SnapshotReader(img, chunk=OBJ, window=2, extents=[(OBJ, OBJ), (5 * OBJ, OBJ)], holes=False)
    data = DataReader(reader)
    try:
        assert data(OBJ, OBJ) == img.content[OBJ:2 * OBJ]
        with pytest.raises(CephError, match="out of order"):
            data(4 * OBJ, OBJ)
    finally:
        reader.close()
        img.join()
