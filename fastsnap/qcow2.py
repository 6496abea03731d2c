"""A qcow2 image computed from an allocation map and streamed in one pass, in file order (issue 25).

Why: a stream into a non-rbd store sends the whole virtual disk as raw, holes as zeros; a qcow2 of the same
disk carries only its allocated clusters. Glance accepts a qcow2 body like any other, so the stream stays one
pass with no local file, as long as every table is known before the first data byte goes out: this module
computes the whole layout from the virtual size and the allocated extents (the stream path already lists them
with librbd's ``diff_iterate``), then yields the metadata, then the data clusters in guest order, reading each
one through a callable.

The file (qcow2 version 3, the layout of ``docs/interop/qcow2.txt`` in QEMU; compat 1.1, 64 KiB clusters,
16-bit refcounts, no backing file, compression, encryption, snapshots or header extensions)::

    cluster 0           header (104 bytes; the rest of the cluster is zero: the end of header extensions)
    L1 table            one 8-byte entry per 512 MiB of virtual disk (COPIED flag set: every refcount is 1)
    refcount table      8-byte offsets of the refcount blocks
    refcount blocks     16-bit refcounts, 32768 clusters (2 GiB of file) per block: 1 for every cluster in use
    L2 tables           one per 512 MiB of virtual disk holding any allocated cluster
    data clusters       the allocated clusters in guest order (data cluster k holds the k-th allocated one)

A cluster is allocated when any byte of it lies in an allocated extent: the extents are rounded out to whole
clusters (RBD extents from ``whole_object`` are whole objects, 4 MiB or more, so this reads nothing extra). An
allocated cluster that reads as zeros is sent all the same: its L2 entry was written before it was read (the
tables go first), and finding zeros would need a second pass over the data. Bytes past the virtual size in the
last cluster are zeros.

Memory: the allocation map as cluster ranges (one pair per extent), one table of 64 KiB at a time (the L1 table is
small: 16 KiB per TiB of virtual disk) and one cluster of data; the L2 tables of a big sparse disk are never held
together. What the ``read`` callable buffers is its own (the stream path's read-ahead, at most 16 MiB).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS                 # 64 KiB, QEMU's default
REFCOUNT_ORDER = 4                          # 16-bit refcounts, QEMU's default
REFCOUNT_BYTES = (1 << REFCOUNT_ORDER) // 8
L2_ENTRIES = CLUSTER // 8                   # 8192 entries: one L2 table maps 512 MiB
REFBLOCK_ENTRIES = CLUSTER // REFCOUNT_BYTES  # 32768 clusters per refcount block
MAGIC = b"QFI\xfb"
VERSION = 3
HEADER_LENGTH = 104                         # version 3 header without the optional compression type byte
COPIED = 1 << 63                            # L1/L2 entry flag: the cluster's refcount is exactly 1
OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00         # bits 9-55 of an L1/L2 entry: the host offset


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def cluster_ranges(size: int, extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The allocated clusters as sorted, merged ``(first, end)`` ranges of guest cluster numbers: every cluster
    with a byte of an extent (clipped to ``size``) in it."""
    ranges: list[tuple[int, int]] = []
    for off, length in sorted(extents):
        end = min(off + length, size)
        if length <= 0 or end <= off:
            continue
        first, last = off // CLUSTER, _ceil(end, CLUSTER)
        if ranges and ranges[-1][1] >= first:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
        else:
            ranges.append((first, last))
    return ranges


@dataclass(frozen=True)
class Layout:
    """Where everything lies in the qcow2 file of a disk of ``size`` bytes with ``ranges`` allocated (see the
    module doc). All offsets are in bytes, all counts in clusters."""

    size: int
    ranges: tuple[tuple[int, int], ...]     # allocated guest clusters, (first, end)
    l1_entries: int
    l1_offset: int
    l1_clusters: int
    refcount_table_offset: int
    refcount_table_clusters: int
    refcount_blocks_offset: int
    refcount_blocks: int
    l2_offset: int
    l2_tables: tuple[int, ...]              # indexes into L1 of the L2 tables present, ascending
    data_offset: int
    data_clusters: int
    total_clusters: int

    @classmethod
    def plan(cls, size: int, extents: Sequence[tuple[int, int]]) -> Layout:
        """The layout of a disk of ``size`` bytes whose allocated ``(offset, length)`` extents are ``extents``.
        QEMU takes virtual sizes in 512-byte sectors: any other size is refused (ValueError)."""
        if size <= 0 or size % 512:
            raise ValueError(f"a qcow2 image's virtual size must be a positive multiple of 512 bytes, not {size}")
        ranges = tuple(cluster_ranges(size, extents))
        data = sum(end - first for first, end in ranges)
        l1_entries = _ceil(_ceil(size, CLUSTER), L2_ENTRIES)
        l1_clusters = _ceil(l1_entries * 8, CLUSTER)
        l2_tables = tuple(sorted({i for first, end in ranges
                                  for i in range(first // L2_ENTRIES, _ceil(end, L2_ENTRIES))}))
        fixed = 1 + l1_clusters + len(l2_tables) + data
        blocks, table = 1, 1            # the refcount structures count themselves: grow them to a fixpoint
        while True:
            total = fixed + table + blocks
            need_blocks = _ceil(total, REFBLOCK_ENTRIES)
            need_table = _ceil(need_blocks * 8, CLUSTER)
            if need_blocks <= blocks and need_table <= table:
                break
            blocks, table = max(blocks, need_blocks), max(table, need_table)
        l1_offset = CLUSTER
        rt_offset = l1_offset + l1_clusters * CLUSTER
        rb_offset = rt_offset + table * CLUSTER
        l2_offset = rb_offset + blocks * CLUSTER
        data_offset = l2_offset + len(l2_tables) * CLUSTER
        return cls(size=size, ranges=ranges, l1_entries=l1_entries, l1_offset=l1_offset, l1_clusters=l1_clusters,
                   refcount_table_offset=rt_offset, refcount_table_clusters=table, refcount_blocks_offset=rb_offset,
                   refcount_blocks=blocks, l2_offset=l2_offset, l2_tables=l2_tables, data_offset=data_offset,
                   data_clusters=data, total_clusters=total)

    @property
    def file_size(self) -> int:
        """Bytes of the whole qcow2 file (what is sent)."""
        return self.total_clusters * CLUSTER

    @property
    def metadata_size(self) -> int:
        return self.data_offset

    @property
    def data_size(self) -> int:
        """Bytes of data clusters (the allocated clusters, whole)."""
        return self.data_clusters * CLUSTER

    def data_extents(self) -> list[tuple[int, int]]:
        """The guest byte ranges the data clusters hold, in file order, clipped to the virtual size (the last
        cluster of a size that is no multiple of 64 KiB is padded with zeros)."""
        return [(first * CLUSTER, min(end * CLUSTER, self.size) - first * CLUSTER) for first, end in self.ranges]

    # -- the metadata, one cluster (or table) at a time --------------------------------------------------------

    def header(self) -> bytes:
        fields = struct.pack(
            ">4sIQIIQIIQQIIQQQQII", MAGIC, VERSION,
            0, 0,                                           # no backing file
            CLUSTER_BITS, self.size,
            0,                                              # no encryption
            self.l1_entries, self.l1_offset,
            self.refcount_table_offset, self.refcount_table_clusters,
            0, 0,                                           # no internal snapshots
            0, 0, 0,                                        # incompatible, compatible, autoclear features
            REFCOUNT_ORDER, HEADER_LENGTH)
        assert len(fields) == HEADER_LENGTH
        return fields + bytes(CLUSTER - HEADER_LENGTH)      # then zeros: the end-of-extensions marker

    def l1_table(self) -> bytes:
        table = bytearray(self.l1_clusters * CLUSTER)
        for k, index in enumerate(self.l2_tables):
            struct.pack_into(">Q", table, index * 8, (self.l2_offset + k * CLUSTER) | COPIED)
        return bytes(table)

    def refcount_table(self) -> bytes:
        table = bytearray(self.refcount_table_clusters * CLUSTER)
        for b in range(self.refcount_blocks):
            struct.pack_into(">Q", table, b * 8, self.refcount_blocks_offset + b * CLUSTER)
        return bytes(table)

    def refcount_block(self, b: int) -> bytes:
        """Refcount block ``b``: 1 for each cluster of the file it covers, 0 past the end of the file."""
        used = max(0, min(REFBLOCK_ENTRIES, self.total_clusters - b * REFBLOCK_ENTRIES))
        return struct.pack(">H", 1) * used + bytes((REFBLOCK_ENTRIES - used) * REFCOUNT_BYTES)

    def l2_tables_in_order(self) -> Iterator[bytes]:
        """Each L2 table present, in file order: entry ``j`` of the table for L1 index ``i`` maps guest cluster
        ``i * 8192 + j`` to its data cluster (the k-th allocated cluster is data cluster k)."""
        rank = 0                    # data clusters before the current range
        r = 0                       # the current range
        ranges = self.ranges
        for index in self.l2_tables:
            lo, hi = index * L2_ENTRIES, (index + 1) * L2_ENTRIES
            table = bytearray(CLUSTER)
            while r < len(ranges) and ranges[r][1] <= lo:
                rank += ranges[r][1] - ranges[r][0]
                r += 1
            j, rank_j = r, rank
            while j < len(ranges) and ranges[j][0] < hi:
                first, end = ranges[j]
                for c in range(max(first, lo), min(end, hi)):
                    host = self.data_offset + (rank_j + c - first) * CLUSTER
                    struct.pack_into(">Q", table, (c - lo) * 8, host | COPIED)
                if end > hi:
                    break
                rank_j += end - first
                j += 1
            yield bytes(table)

    def metadata(self) -> Iterator[bytes]:
        """Every byte before the first data cluster, in file order, in pieces of at most one table."""
        yield self.header()
        yield self.l1_table()
        yield self.refcount_table()
        for b in range(self.refcount_blocks):
            yield self.refcount_block(b)
        yield from self.l2_tables_in_order()


Reader = Callable[[int, int], bytes]


def stream(layout: Layout, read: Reader) -> Iterator[bytes]:
    """The qcow2 file, in order: the metadata, then each allocated cluster read with ``read(offset, length)``
    (called in ascending guest offsets, one cluster at a time, exactly over :meth:`Layout.data_extents`). A
    short read (past the end of the disk) is padded with zeros; a long one is an error."""
    yield from layout.metadata()
    for off, length in layout.data_extents():
        end = off + length
        while off < end:
            n = min(CLUSTER, end - off)
            data = read(off, n)
            if len(data) > n:
                raise ValueError(f"read({off}, {n}) returned {len(data)} bytes")
            yield data if len(data) == CLUSTER else data + bytes(CLUSTER - len(data))
            off += n


class IterReader:
    """File-like ``read(n)`` over an iterator of byte strings (glanceclient reads the body with ``read``).
    Returns at most one piece per call (a short read, as the file protocol allows). ``progress`` is told
    (bytes handed out, ``total``) after each read."""

    def __init__(self, pieces: Iterator[bytes], total: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self._pieces = pieces
        self._buf = memoryview(b"")
        self.total = total
        self.done = 0
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._buf = memoryview(piece)
        if n is None or n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf = memoryview(b"")
        else:
            out = bytes(self._buf[:n])
            self._buf = self._buf[n:]
        self.done += len(out)
        if self.progress is not None:
            self.progress(self.done, self.total)
        return out
