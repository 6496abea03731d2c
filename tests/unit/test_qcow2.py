"""The qcow2 layout (``fastsnap.qcow2``) checked by QEMU's own tool.

A sparse raw file with a few extents of random data stands in for the RBD snapshot; the generator reads it
through a callable, its output is written to a file, and ``qemu-img check`` (no corruption, no leak),
``qemu-img compare -f qcow2 -F raw`` (same content) and ``qemu-img map`` (exactly the allocated clusters hold
data) judge the result. qemu-img is a real tool checking pure logic; it is one of the packages scripts/test installs
before the unit tests (qemu-utils), so a missing one fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from fastsnap import qcow2
from fastsnap.qcow2 import CLUSTER, L2_ENTRIES, REFBLOCK_ENTRIES, IterReader, Layout, cluster_ranges

MiB = 1 << 20
GiB = 1 << 30



def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)


def _write_sparse(path: Path, size: int, extents: list[tuple[int, int]], rng: random.Random) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in extents:
            f.seek(off)
            f.write(rng.randbytes(min(length, size - off)))


def _stream_to(raw: Path, out: Path, size: int, extents: list[tuple[int, int]]) -> Layout:
    layout = Layout.plan(size, extents)
    with open(raw, "rb") as src, open(out, "wb") as dst:
        calls: list[tuple[int, int]] = []

        def read(off: int, n: int) -> bytes:
            calls.append((off, n))
            src.seek(off)
            return src.read(n)

        body = IterReader(qcow2.stream(layout, read), layout.file_size)
        while piece := body.read(1 << 20):
            dst.write(piece)
    assert out.stat().st_size == layout.file_size == body.done
    assert [off for off, _ in calls] == sorted(off for off, _ in calls)   # in guest order, each once
    assert sum(n for _, n in calls) == sum(n for _, n in layout.data_extents())
    return layout


SHAPES = {
    "scattered": (64 * MiB, [(0, MiB), (5 * MiB, 4 * MiB), (40 * MiB, MiB)]),
    "unaligned extents": (16 * MiB, [(1000, 10), (CLUSTER + 5, 3 * CLUSTER), (8 * MiB - 1, 2)]),
    "size not a multiple of clusters": (10 * MiB + 512, [(10 * MiB - CLUSTER, CLUSTER + 512)]),
    "nothing allocated": (32 * MiB, []),
    "all allocated": (8 * MiB, [(0, 8 * MiB)]),
    # three L2 tables, one of them (the middle, 512 MiB-1 GiB) absent; an extent crossing an L2 boundary
    "across L2 tables": (3 * GiB // 2, [(0, CLUSTER), (GiB + 511 * MiB, 2 * MiB), (3 * GiB // 2 - MiB, MiB)]),
    # a big sparse disk: its L1 table takes several clusters
    "big sparse": (5 << 40, [(4 << 40, 4 * MiB), (MiB, MiB)]),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_qemu_img_accepts_the_stream(tmp_path: Path, shape: str) -> None:
    size, extents = SHAPES[shape]
    rng = random.Random(shape)
    raw, out = tmp_path / "disk.raw", tmp_path / "disk.qcow2"
    _write_sparse(raw, size, extents, rng)
    layout = _stream_to(raw, out, size, extents)

    check = _qemu_img("check", "--output=json", "-f", "qcow2", str(out))
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0 and report.get("check-errors", 0) == 0
    assert report["image-end-offset"] == layout.file_size

    info = json.loads(_qemu_img("info", "--output=json", "-f", "qcow2", str(out)).stdout)
    assert info["virtual-size"] == size and info["cluster-size"] == CLUSTER
    assert info["format-specific"]["data"]["compat"] == "1.1"

    cmp = _qemu_img("compare", "-f", "qcow2", "-F", "raw", str(out), str(raw))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr

    mapped = json.loads(_qemu_img("map", "--output=json", "-f", "qcow2", str(out)).stdout)
    data = [(m["start"], m["length"]) for m in mapped if m["data"]]
    want = [(first * CLUSTER, min(end * CLUSTER, size) - first * CLUSTER) for first, end in layout.ranges]
    assert _merge(data) == want


def _merge(extents: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in sorted(extents):
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


def test_bytes_sent_are_allocated_clusters_plus_metadata() -> None:
    """What the bench's target counts: a 1 GiB disk with 256 MiB allocated in 4 MiB objects."""
    extents = [(i * 16 * MiB, 4 * MiB) for i in range(64)]
    layout = Layout.plan(GiB, extents)
    assert layout.data_size == 256 * MiB
    # header, L1, refcount table, one refcount block, two L2 tables
    assert layout.metadata_size == 6 * CLUSTER
    assert layout.file_size == 256 * MiB + 6 * CLUSTER


def test_cluster_ranges_round_out_and_merge() -> None:
    assert cluster_ranges(10 * CLUSTER, [(CLUSTER - 1, 2), (2 * CLUSTER, CLUSTER), (9 * CLUSTER, 5 * CLUSTER)]) \
        == [(0, 3), (9, 10)]
    assert cluster_ranges(CLUSTER, [(0, 0), (CLUSTER, 10)]) == []


def test_refcount_structures_grow_with_the_file() -> None:
    """A file past 2 GiB needs a second refcount block; past 8192 blocks (16 TiB) a second table cluster.
    Only the arithmetic is checked here (no data is read)."""
    small = Layout.plan(GiB, [(0, GiB)])
    assert (small.refcount_blocks, small.refcount_table_clusters) == (1, 1)
    big = Layout.plan(5 * GiB, [(0, 5 * GiB)])
    assert big.refcount_blocks == -(-big.total_clusters // REFBLOCK_ENTRIES) == 3
    huge = Layout.plan(17 << 40, [(0, 17 << 40)])
    assert huge.refcount_blocks * 8 > CLUSTER and huge.refcount_table_clusters == 2
    for layout in (small, big, huge):
        assert layout.refcount_blocks * REFBLOCK_ENTRIES >= layout.total_clusters
        assert layout.total_clusters == (1 + layout.l1_clusters + layout.refcount_table_clusters
                                         + layout.refcount_blocks + len(layout.l2_tables) + layout.data_clusters)
    assert len(huge.l2_tables) == -(-(17 << 40) // (L2_ENTRIES * CLUSTER))


def test_memory_is_one_table_at_a_time() -> None:
    """Every piece the generator yields is at most one cluster, except the L1 and refcount tables (a few
    clusters for disks of many TiB)."""
    layout = Layout.plan(64 * GiB, [(i * GiB, 4 * MiB) for i in range(64)])
    sizes = [len(p) for p in layout.metadata()]
    assert max(sizes) == CLUSTER and sum(sizes) == layout.metadata_size
    assert len(sizes) == 3 + layout.refcount_blocks + 64


def test_bad_sizes_are_refused() -> None:
    for size in (0, -512, 1000):
        with pytest.raises(ValueError, match="multiple of 512"):
            Layout.plan(size, [])


def test_a_long_read_is_an_error() -> None:
    layout = Layout.plan(MiB, [(0, CLUSTER)])
    gen = qcow2.stream(layout, lambda off, n: bytes(n + 1))
    with pytest.raises(ValueError, match="returned"):
        list(gen)


def test_iter_reader_short_reads_and_progress() -> None:
    seen: list[tuple[int, int]] = []
    r = IterReader(iter([b"abc", b"", b"defg"]), 7, progress=lambda d, t: seen.append((d, t)))
    assert [r.read(2), r.read(10), r.read(-1), r.read(1)] == [b"ab", b"c", b"defg", b""]
    assert seen == [(2, 7), (3, 7), (7, 7)]
