"""fastsnap.crosscluster without services: the credentials sections, and the transfer's rules (which pieces are
read, written, zeroed or skipped; memory bound) over an in-memory image. The real librbd paths are tested in
tests/integration/test_crosscluster.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fastsnap import conf as config
from fastsnap import crosscluster as xc
from fastsnap.errors import ConfigError

MiB = 1 << 20


def _conf(tmp_path: Path, text: str) -> xc.RemoteClusters:
    f = tmp_path / "f.conf"
    f.write_text(text)
    return xc.RemoteClusters(config.load(str(f)))


def test_no_remote_clusters_by_default(tmp_path: Path) -> None:
    assert _conf(tmp_path, "").fsids() == frozenset()


def test_sections_map_fsids(tmp_path: Path) -> None:
    rc = _conf(tmp_path, "[ceph]\nremote_clusters = b, c\n[b]\nfsid = fb\nconf = /b.conf\n"
                         "[c]\nfsid = fc\nconf = /c.conf\nuser = u\nkeyring = /k\n")
    assert rc.fsids() == frozenset({"fb", "fc"})
    assert rc.confs["fb"].user == "fastsnap" and rc.confs["fc"].keyring == "/k"


@pytest.mark.parametrize(("text", "phrase"), [
    ("[ceph]\nremote_clusters = b\n[b]\nconf = /b.conf\n", "[b]"),
    ("[ceph]\nremote_clusters = b, c\n[b]\nfsid = f\nconf = /b\n[c]\nfsid = f\nconf = /c\n", "same fsid f"),
    ("[ceph]\nremote_clusters = glance\n", "one of fastsnap's own"),
])
def test_broken_sections(tmp_path: Path, text: str, phrase: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _conf(tmp_path, text)
    assert phrase in str(exc.value)


def test_no_credentials_for_fsid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no credentials for Ceph cluster x"):
        _conf(tmp_path, "").get("x")


class Mem:
    """An image in memory, with the read/write/write_zeroes calls transfer() uses."""

    def __init__(self, data: bytearray, delay: float = 0.0) -> None:
        self.data = data
        self.delay = delay
        self.calls: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()

    def read(self, off: int, n: int, flags: int = 0) -> bytes:
        time.sleep(self.delay)
        with self.lock:
            self.calls.append(("read", off, n))
        return bytes(self.data[off:off + n])

    def write(self, data: bytes, off: int) -> None:
        with self.lock:
            self.calls.append(("write", off, len(data)))
            self.data[off:off + len(data)] = data

    def write_zeroes(self, off: int, n: int) -> None:
        with self.lock:
            self.calls.append(("zero", off, n))
            self.data[off:off + n] = bytes(n)


def _src() -> Mem:
    d = bytearray(16 * MiB)
    d[0:MiB] = b"a" * MiB          # data
    d[8 * MiB:9 * MiB] = b"b" * MiB  # data; 4-8 MiB is an allocated object of zeros (a discard)
    return Mem(d)


def test_copy_skips_zeros_and_holes() -> None:
    src, dst = _src(), Mem(bytearray(16 * MiB))
    stats = xc.TransferStats(size=16 * MiB)
    xc.transfer(src, dst, [(0, 12 * MiB, True)], mask_parent=False, chunk=4 * MiB, parallel=2, stats=stats)
    assert dst.data == src.data
    assert [c for c in dst.calls if c[0] != "write"] == []
    assert stats.bytes_read == 12 * MiB and stats.bytes_written == 8 * MiB and stats.bytes_skipped == 4 * MiB


def test_delta_zeroes_discards_and_missing_extents() -> None:
    src = _src()
    dst = Mem(bytearray(b"p" * 16 * MiB))  # a clone whose parent has other bytes everywhere
    stats = xc.TransferStats(size=16 * MiB)
    extents = [(0, 12 * MiB, True), (12 * MiB, 4 * MiB, False)]
    progress: list[tuple[int, int]] = []
    xc.transfer(src, dst, extents, mask_parent=True, chunk=4 * MiB, parallel=3, stats=stats,
                progress=lambda done, total: progress.append((done, total)))
    assert dst.data == src.data
    # in bytes of the extents, as the stream counts (the CLI's progress bar), rising to all of them
    assert progress[-1] == (16 * MiB, 16 * MiB) and [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert ("read", 12 * MiB, 4 * MiB) not in src.calls  # not existing: zeroed without reading
    assert stats.bytes_zeroed == 8 * MiB and stats.bytes_written == 8 * MiB and stats.bytes_read == 12 * MiB


def test_memory_is_bounded_by_parallel_chunks() -> None:
    src = Mem(bytearray(b"x" * 64 * MiB), delay=0.01)
    dst = Mem(bytearray(64 * MiB))
    stats = xc.TransferStats(size=64 * MiB)
    xc.transfer(src, dst, [(0, 64 * MiB, True)], mask_parent=False, chunk=2 * MiB, parallel=3, stats=stats)
    assert dst.data == src.data
    assert 2 * MiB <= stats.peak_inflight <= 3 * 2 * MiB


def test_a_failed_piece_fails_the_transfer() -> None:
    class Broken(Mem):
        def write(self, data: bytes, off: int) -> None:
            raise OSError("boom")

    with pytest.raises(OSError, match="boom"):
        xc.transfer(_src(), Broken(bytearray(16 * MiB)), [(0, 16 * MiB, True)], mask_parent=False,
                    chunk=4 * MiB, parallel=2, stats=xc.TransferStats(size=16 * MiB))
