"""Snapshots into an rbd store on another Ceph cluster, written there directly with librbd (issue 16).

Two paths, chosen by :func:`fastsnap.plan.make_plan`:

``delta``  the disk is a clone of the base image, and the base image has a copy in the target store (one Glance
           image, so the same bytes): clone that copy on the target cluster under the new image id, then write
           into it only the extents the disk itself holds (``diff_iterate`` of the disk's point-in-time snapshot
           with ``include_parent=False``); extents that read as zeros (discards) become ``write_zeroes``.
``copy``   no usable base copy: create an image of the disk's size on the target cluster and write the disk
           snapshot's allocated extents (parent included) into it; all-zero pieces are skipped, so the image is
           thin on both ends.

Both then create ``snap`` on the target image and register ``rbd://<fsid>/<pool>/<id>/snap`` with Glance. The
paths' steps, roll forward and roll back are in :mod:`fastsnap.paths.remote`; this module holds what they share
with planning: the other clusters' connections, the base copy check and the transfer of extents.

Credentials: one oslo.config section per other cluster, named in ``[ceph] remote_clusters``, holding its fsid,
ceph.conf, user and keyring. fastsnap checks on connecting that the cluster's fsid is the configured one.
Least privilege on the other cluster: ``mon 'profile rbd' osd 'profile rbd pool=<Glance's pool>'``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import workflow as wf
from fastsnap.ceph import Cluster
from fastsnap.conf.ceph import OWN_SECTIONS, remote_cluster_opts
from fastsnap.errors import ConfigError, NotFound
from fastsnap.location import ImageSpec, RbdLocation
from fastsnap.states import Step

LOG = logging.getLogger(__name__)

SAMPLE = 64 << 10


@dataclass(frozen=True)
class RemoteConf:
    name: str
    fsid: str
    conf: str
    user: str
    keyring: str | None
    connect_timeout: int
    op_timeout: int


def remote_confs(conf: cfg.ConfigOpts) -> dict[str, RemoteConf]:
    """fsid -> credentials of each other cluster the configuration names. ConfigError for a broken section."""
    out: dict[str, RemoteConf] = {}
    for name in conf.ceph.remote_clusters:
        if name in OWN_SECTIONS:
            raise ConfigError(f"[ceph] remote_clusters names section [{name}], which is one of fastsnap's own")
        if name not in conf:
            conf.register_opts(remote_cluster_opts, group=name)
        g = conf[name]
        missing = [opt for opt in ("fsid", "conf") if not g[opt]]
        if missing:
            raise ConfigError(f"[ceph] remote_clusters names [{name}], which lacks {' and '.join(missing)}")
        rc = RemoteConf(name, g.fsid, g.conf, g.user, g.keyring, g.connect_timeout, g.op_timeout)
        if rc.fsid in out:
            raise ConfigError(f"sections [{out[rc.fsid].name}] and [{name}] name the same fsid {rc.fsid}")
        out[rc.fsid] = rc
    return out


class RemoteClusters:
    """Connections to the other clusters, opened on first use and checked against their configured fsid."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.confs = remote_confs(conf)
        self._open: dict[str, Cluster] = {}
        self._lock = threading.Lock()

    def fsids(self) -> frozenset[str]:
        return frozenset(self.confs)

    def get(self, fsid: str) -> Cluster:
        with self._lock:
            if fsid not in self._open:
                rc = self.confs.get(fsid)
                if rc is None:
                    raise ConfigError(f"fastsnap has no credentials for Ceph cluster {fsid} "
                                      f"(add a section to [ceph] remote_clusters)")
                cluster = Cluster(rc.conf, rc.user, rc.keyring, rc.connect_timeout, rc.op_timeout)
                if cluster.fsid != fsid:
                    cluster.close()
                    raise ConfigError(f"[{rc.name}] fsid = {fsid}, but {rc.conf} reaches cluster {cluster.fsid}")
                self._open[fsid] = cluster
            return self._open[fsid]

    def close(self) -> None:
        with self._lock:
            for cluster in self._open.values():
                cluster.close()
            self._open.clear()


# -- the base copy check (delta path) ----------------------------------------------------------------------


def check_base_copy(local: Cluster, parent: RbdLocation, remote: Cluster, copy: RbdLocation,
                    samples: int) -> tuple[str | None, int]:
    """Compare the base image on the disk's cluster (``parent``, the disk's clone parent) with its copy on the
    target cluster: both must exist with the same size, and ``samples`` blocks spread over the image must be
    the same bytes. Returns (None, bytes read from the disk's cluster) when they match, else (why not, ...).
    Glance calls both one image (one checksum); this checks that the RBD snapshots really hold it."""
    assert parent.pool and parent.snapshot and copy.pool and copy.snapshot
    read = 0
    try:
        with local.image(ImageSpec(parent.pool, parent.image), snapshot=parent.snapshot, read_only=True) as a, \
                remote.image(ImageSpec(copy.pool, copy.image), snapshot=copy.snapshot, read_only=True) as b:
            size_a, size_b = int(a.size()), int(b.size())
            if size_a != size_b:
                return f"the base image's copy {copy} has {size_b} bytes, its parent {parent} {size_a}", read
            last = max(0, size_a - SAMPLE)
            offsets = sorted({min(last, size_a * i // samples) // 4096 * 4096 for i in range(samples)})
            for off in offsets:
                block_a = a.read(off, SAMPLE)
                read += len(block_a)
                if block_a != b.read(off, SAMPLE):
                    return f"the base image's copy {copy} differs from {parent} at offset {off}", read
    except NotFound as exc:
        return f"the base image's copy cannot be opened: {exc}", read
    return None, read


# -- moving the bytes -----------------------------------------------------------------------------------


@dataclass
class TransferStats:
    size: int
    listed: int = 0             # bytes in the extents listed by diff_iterate
    bytes_read: int = 0         # read from the disk's cluster (the disk snapshot)
    bytes_written: int = 0      # data written to the target cluster
    bytes_zeroed: int = 0       # written as write_zeroes (delta: masks the parent)
    bytes_skipped: int = 0      # read as zeros and not written (copy: the new image reads zeros there anyway)
    check_bytes_read: int = 0   # delta: read from the disk's cluster to check the base copy
    chunks: int = 0
    peak_inflight: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _extents(image: Any, size: int, since: str | None, include_parent: bool,
             whole_object: bool) -> list[tuple[int, int, bool]]:
    """(offset, length, exists) runs of the opened snapshot's ``diff_iterate``, adjacent runs of one kind merged."""
    out: list[tuple[int, int, bool]] = []

    def cb(offset: int, length: int, exists: bool) -> int:
        if length:
            if out and out[-1][0] + out[-1][1] == offset and out[-1][2] == exists:
                out[-1] = (out[-1][0], out[-1][1] + length, exists)
            else:
                out.append((offset, length, exists))
        return 0

    image.diff_iterate(0, size, since, cb, include_parent=include_parent, whole_object=whole_object)
    return sorted((off, min(length, size - off), ex) for off, length, ex in out if off < size)


def own_extents(image: Any, size: int) -> list[tuple[int, int, bool]]:
    """(offset, length, exists) of what the opened snapshot holds itself (``include_parent=False``)."""
    return _extents(image, size, None, include_parent=False, whole_object=True)


def changed_extents(image: Any, size: int, since: str) -> list[tuple[int, int, bool]]:
    """(offset, length, exists) of what the opened snapshot changed since the disk's snapshot ``since``
    (incremental path): exact extents (``whole_object=False``), so a small rewrite reads and writes little."""
    return _extents(image, size, since, include_parent=True, whole_object=False)


def _split(extents: list[tuple[int, int, bool]], chunk: int) -> list[tuple[int, int, bool]]:
    pieces = []
    for off, length, exists in extents:
        end = off + length
        while off < end:
            n = min(chunk, end - off)
            pieces.append((off, n, exists))
            off += n
    return pieces


def transfer(src: Any, dst: Any, extents: list[tuple[int, int, bool]], *, mask_parent: bool, chunk: int,
             parallel: int, stats: TransferStats, progress: Callable[[int, int], None] | None = None) -> None:
    """Copy ``extents`` of ``src`` (an opened snapshot) to ``dst`` at the same offsets, ``parallel`` pieces of at
    most ``chunk`` bytes in flight (memory: parallel * chunk). A piece that does not exist, or reads as zeros, is
    written with ``write_zeroes`` when ``mask_parent`` (``dst`` is a clone whose parent has other bytes there)
    and skipped otherwise (``dst`` is new: it reads zeros there already). ``progress(done, total)`` counts bytes of
    ``extents`` copied, as the stream's does (the CLI's progress bar)."""
    pieces = _split(extents, chunk)
    stats.listed = sum(length for _, length, _ in extents)
    total = len(pieces)
    zeros = bytes(chunk)
    lock = threading.Lock()
    inflight = [0]

    def one(off: int, n: int, exists: bool) -> None:
        with lock:
            inflight[0] += n
            stats.peak_inflight = max(stats.peak_inflight, inflight[0])
        try:
            data = src.read(off, n) if exists else None
            if data is not None and len(data) < n:
                data += bytes(n - len(data))
            zero = data is None or data == zeros[:n]
            if zero:
                if mask_parent:
                    dst.write_zeroes(off, n)
            else:
                dst.write(data, off)
            with lock:
                stats.bytes_read += 0 if data is None else n
                if not zero:
                    stats.bytes_written += n
                elif mask_parent:
                    stats.bytes_zeroed += n
                else:
                    stats.bytes_skipped += n
                stats.chunks += 1
        finally:
            with lock:
                inflight[0] -= n

    done = done_bytes = 0
    half = False
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="fastsnap-copy") as pool:
        running: set[Future[None]] = set()
        sizes: dict[Future[None], int] = {}
        it = iter(pieces)
        try:
            while True:
                while len(running) < parallel:
                    piece = next(it, None)
                    if piece is None:
                        break
                    fut = pool.submit(one, *piece)
                    running.add(fut)
                    sizes[fut] = piece[1]
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    fut.result()  # raises the piece's error
                    done += 1
                    done_bytes += sizes.pop(fut)
                if progress is not None:
                    progress(done_bytes, stats.listed)
                if not half and done * 2 >= total:
                    half = True
                    wf.crash_point(f"{Step.REMOTE_WRITE}:mid")
        except BaseException:
            for fut in running:
                fut.cancel()
            raise


# -- making the target image (the paths themselves: fastsnap.paths.remote) -------------------------------


def create_target(cluster: Cluster, spec: ImageSpec, size: int) -> None:
    """The copy path's target: a new image of the disk's size (idempotent: an existing one of that size and no
    parent is taken as this snapshot's)."""
    cluster.create(spec, size)


def clone_target(cluster: Cluster, base: RbdLocation, spec: ImageSpec, size: int) -> None:
    """The delta and incremental paths' target: a clone of ``base`` (the base image's copy, or the previous
    backup) grown to the disk's size."""
    assert base.pool and base.snapshot
    cluster.clone(ImageSpec(base.pool, base.image), base.snapshot, spec)
    cluster.resize(spec, size)
