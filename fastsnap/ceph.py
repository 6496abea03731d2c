"""Thin typed adapter over Debian's librados/librbd bindings.

Every mutating call is idempotent ("already exists" and "already gone" are success), so the workflow can
retry any step after a crash. Every call runs under the client timeouts set at connect time. No librbd/librados
exception leaves this module: each becomes a fastsnap error (CephNotFound for a missing pool, image or snapshot,
CephError) that names the call, so callers (``recover`` above all) can report one failed operation and go on with
the others. No raw handle leaves it either: an open image is an :class:`Image` (its I/O, errors translated),
RADOS objects are :class:`Objects`, and what librbd lists comes back as typed records. This is the only module
that imports ``rbd`` or ``rados`` (tests/unit/test_structure.py checks it).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import rados
import rbd
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.errors import CephError, CephNotFound, FastsnapError, NotFound
from fastsnap.location import ImageSpec

LOG = logging.getLogger(__name__)

TRASH_NAMESPACE = getattr(rbd, "RBD_SNAP_NAMESPACE_TYPE_TRASH", 2)


@dataclass(frozen=True)
class Parent:
    pool: str
    image: str
    snapshot: str


@dataclass(frozen=True)
class Described:
    size: int
    image_id: str  # stable across renames and the trash; a re-created name gets a new one
    parent: Parent | None


@dataclass(frozen=True)
class TrashEntry:
    """An entry of a pool's RBD trash, as ``rbd trash ls`` shows it."""
    id: str                                         # the image id (trash entries are addressed by id)
    name: str                                       # the name the image had
    source: str                                     # USER, MIRRORING, MIGRATION, REMOVING
    deletion_time: datetime.datetime | None         # when it was moved to the trash
    deferment_end_time: datetime.datetime | None    # when it may be removed


@dataclass(frozen=True)
class SnapInfo:
    """A snapshot of an image, in any namespace (a trashed one keeps its original name)."""
    id: int
    name: str
    namespace: int | None
    original_name: str | None   # trash namespace: the name it had before it was removed


def _snap_info(s: dict[str, Any]) -> SnapInfo:
    ns = s.get("namespace")
    return SnapInfo(int(s["id"]), str(s.get("name")), None if ns is None else int(ns),
                    (s.get("trash") or {}).get("original_name"))


def _parent_of(img: Any, spec: ImageSpec) -> Parent | None:
    """The clone parent of an open RBD image (None for a flat one)."""
    try:
        info = img.get_parent_image_spec()
    except rbd.ImageNotFound:
        return None
    except rbd.Error as exc:
        raise _wrap(f"reading the parent of {spec}", exc) from exc
    return Parent(info["pool_name"], info["image_name"], info["snap_name"])


def _wrap(what: str, exc: Exception) -> CephError:
    if isinstance(exc, rbd.ImageNotFound | rados.ObjectNotFound):
        return CephNotFound(f"Ceph: {what} failed: not found ({exc})")
    if isinstance(exc, rbd.PermissionError | rados.PermissionError):
        return CephError(f"Ceph: {what} failed: permission denied (check client caps): {exc}")
    return CephError(f"Ceph: {what} failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def ceph_call(what: str) -> Iterator[None]:
    """Turns any librbd/librados exception raised inside into a fastsnap error naming ``what``."""
    try:
        yield
    except FastsnapError:
        raise
    except (rbd.Error, rados.Error) as exc:
        raise _wrap(what, exc) from exc


CLAIM_NAMESPACE = "fastsnap"   # RADOS namespace of fastsnap's own objects in a pool (no RBD image lives there)
CLAIM_LOCK = "fastsnap.claim"
LOCK_FLAG_MAY_RENEW = 1   # librados' LIBRADOS_LOCK_FLAG_MAY_RENEW: re-taking a lock one holds extends it


class Objects:
    """RADOS objects and their omap in one pool and namespace (the journal's store; see fastsnap.rados_journal).

    Values are text (JSON). Every call runs under the cluster's client timeouts and raises only fastsnap errors
    (CephNotFound, CephError) naming the call. ``cas`` and ``create`` are atomic on the OSD: a guarded write
    either lands whole or not at all, whichever host makes it."""

    def __init__(self, ioctx: Any, where: str) -> None:
        self._io = ioctx
        self.where = where

    def close(self) -> None:
        with contextlib.suppress(rados.Error):
            self._io.close()

    def get(self, obj: str, keys: tuple[str, ...]) -> dict[str, str] | None:
        """The values of ``keys`` in ``obj``'s omap (absent keys left out); None when the object does not exist."""
        try:
            with rados.ReadOpCtx() as op:
                it, _ = self._io.get_omap_vals_by_keys(op, keys)
                self._io.operate_read_op(op, obj)
                return {k: v.decode() for k, v in it}
        except rados.ObjectNotFound:
            return None
        except rados.Error as exc:
            raise _wrap(f"reading {self.where}/{obj}", exc) from exc

    def items(self, obj: str, prefix: str = "", page: int = 1000) -> dict[str, str]:
        """Every omap key of ``obj`` starting with ``prefix`` (read in pages); {} when the object is absent."""
        out: dict[str, str] = {}
        after = ""
        while True:
            try:
                with rados.ReadOpCtx() as op:
                    it, _ = self._io.get_omap_vals(op, after, prefix, page)
                    self._io.operate_read_op(op, obj)
                    got = [(k, v.decode()) for k, v in it]
            except rados.ObjectNotFound:
                return out
            except rados.Error as exc:
                raise _wrap(f"listing {self.where}/{obj}", exc) from exc
            out.update(got)
            if len(got) < page:
                return out
            after = got[-1][0]

    def set(self, obj: str, values: dict[str, str]) -> None:
        """Set omap keys (creating the object)."""
        self._write(obj, f"writing {self.where}/{obj}", values=values)

    def create(self, obj: str, values: dict[str, str]) -> bool:
        """Create ``obj`` with these omap values, only if it does not exist. Returns False when it did."""
        try:
            self._write(obj, f"creating {self.where}/{obj}", values=values, exclusive=True, raw=True)
            return True
        except rados.ObjectExists:
            return False
        except rados.Error as exc:
            raise _wrap(f"creating {self.where}/{obj}", exc) from exc

    def cas(self, obj: str, key: str, expected: str, values: dict[str, str]) -> bool:
        """Set ``values`` only if ``key`` still holds ``expected`` (compare and swap). False when it did not."""
        try:
            self._write(obj, f"updating {self.where}/{obj}", values=values, cmp=(key, expected), raw=True)
            return True
        except (rados.OSError, rados.Error) as exc:
            if getattr(exc, "errno", None) == errno.ECANCELED or "canceled" in str(exc).lower():
                return False
            raise _wrap(f"updating {self.where}/{obj}", exc) from exc

    def remove_keys(self, obj: str, keys: tuple[str, ...]) -> None:
        try:
            self._write(obj, f"removing keys of {self.where}/{obj}", remove=keys, raw=True)
        except rados.ObjectNotFound:
            return
        except rados.Error as exc:
            raise _wrap(f"removing keys of {self.where}/{obj}", exc) from exc

    def remove(self, obj: str) -> None:
        try:
            self._io.remove_object(obj)
        except rados.ObjectNotFound:
            return
        except rados.Error as exc:
            raise _wrap(f"removing {self.where}/{obj}", exc) from exc

    def _write(self, obj: str, what: str, values: dict[str, str] | None = None, exclusive: bool = False,
               cmp: tuple[str, str] | None = None, remove: tuple[str, ...] = (), raw: bool = False) -> None:
        try:
            with rados.WriteOpCtx() as op:
                if exclusive:
                    op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                if cmp is not None:
                    op.omap_cmp(cmp[0], cmp[1], rados.LIBRADOS_CMPXATTR_OP_EQ)
                if remove:
                    self._io.remove_omap_keys(op, remove)
                if values:
                    keys = tuple(values)
                    self._io.set_omap(op, keys, tuple(values[k].encode() for k in keys))
                self._io.operate_write_op(op, obj)
        except rados.Error as exc:
            if raw:
                raise
            raise _wrap(what, exc) from exc

    # -- locks (cls_lock): leases and claims -----------------------------------------------------------------

    def lock(self, obj: str, name: str, cookie: str, seconds: int, shared: bool = False, renew: bool = False,
             desc: str = "") -> bool:
        """Take (or, with ``renew``, extend) a cls_lock on ``obj`` for ``seconds``: shared (one locker per
        cookie, tag ``name``) or exclusive. False when another holder has it."""
        flags = LOCK_FLAG_MAY_RENEW if renew else 0
        try:
            if shared:
                self._io.lock_shared(obj, name, cookie, name, desc=desc, duration=seconds, flags=flags)
            else:
                self._io.lock_exclusive(obj, name, cookie, desc=desc, duration=seconds, flags=flags)
            return True
        except (rados.ObjectBusy, rados.ObjectExists):
            return False
        except rados.Error as exc:
            raise _wrap(f"locking {self.where}/{obj}", exc) from exc

    def unlock(self, obj: str, name: str, cookie: str) -> None:
        with contextlib.suppress(rados.ObjectNotFound):
            try:
                self._io.unlock(obj, name, cookie)
            except rados.Error as exc:
                raise _wrap(f"unlocking {self.where}/{obj}", exc) from exc

    def lockers(self, obj: str, name: str) -> int:
        """How many hold ``name`` on ``obj`` now (lapsed lockers are not counted: cls_lock trims them when it
        reads the lock). The binding has no list_lockers, so this calls cls_lock's ``get_info`` itself: the input
        is ``cls_lock_get_info_op`` (ENCODE_START(1, 1) and the lock's name), and the reply
        ``cls_lock_get_info_reply`` starts, after its own 6-byte ENCODE_START header, with the count of the
        ``lockers`` map."""
        raw = name.encode()
        body = struct.pack("<I", len(raw)) + raw
        arg = struct.pack("<BBI", 1, 1, len(body)) + body
        try:
            _, out = self._io.execute(obj, "lock", "get_info", arg, 65536)
        except rados.ObjectNotFound:
            return 0
        except rados.Error as exc:
            raise _wrap(f"reading the locks of {self.where}/{obj}", exc) from exc
        if len(out) < 10:
            raise CephError(f"Ceph: reading the locks of {self.where}/{obj}: short reply ({len(out)} bytes)")
        return int(struct.unpack_from("<I", out, 6)[0])


    @contextlib.contextmanager
    def claim(self, what: str, holder: str, seconds: int) -> Iterator[bool]:
        """A cluster-wide claim: an exclusive cls_lock on ``fastsnap.claim.<what>`` for ``seconds``, renewed every
        third of that while held, so a dead holder's claim (killed process, lost host) lapses within ``seconds``.
        Yields whether it was won (False: another process, on any host, holds it now); released and the object
        removed after."""
        obj = f"fastsnap.claim.{what}"
        if not self.lock(obj, CLAIM_LOCK, holder, seconds, desc=holder):
            yield False
            return
        done = threading.Event()

        def renew() -> None:
            while not done.wait(seconds / 3):
                try:
                    self.lock(obj, CLAIM_LOCK, holder, seconds, renew=True, desc=holder)
                except FastsnapError as exc:
                    LOG.warning("renewing the claim %s/%s failed: %s", self.where, obj, exc)

        renewer = threading.Thread(target=renew, name=f"claim-{what}", daemon=True)
        renewer.start()
        try:
            yield True
        finally:
            done.set()
            renewer.join()
            with contextlib.suppress(FastsnapError):
                self.unlock(obj, CLAIM_LOCK, holder)
                self.remove(obj)


class ReadDone:
    """What an ``aio_read`` callback receives: the read's return code (the completion itself stays here)."""

    def __init__(self, rc: int) -> None:
        self._rc = rc

    def get_return_value(self) -> int:
        return self._rc


class Image:
    """An open RBD image's I/O (the calls the paths make on it), each librbd error translated into a fastsnap
    error named like the open's (``an operation on <spec>[@<snapshot>]``), so no librbd handle or exception
    leaves this module. Obtained only from :meth:`Cluster.image`, valid inside its ``with``."""

    def __init__(self, img: Any, what: str) -> None:
        self._img = img
        self._what = what

    def size(self) -> int:
        with ceph_call(self._what):
            return int(self._img.size())

    def stat(self) -> dict[str, Any]:
        with ceph_call(self._what):
            return dict(self._img.stat())

    def read(self, offset: int, length: int) -> bytes:
        with ceph_call(self._what):
            return bytes(self._img.read(offset, length))

    def write(self, data: bytes, offset: int) -> None:
        with ceph_call(self._what):
            self._img.write(data, offset)

    def write_zeroes(self, offset: int, length: int) -> None:
        with ceph_call(self._what):
            self._img.write_zeroes(offset, length)

    def flush(self) -> None:
        with ceph_call(self._what):
            self._img.flush()

    def diff_iterate(self, offset: int, length: int, from_snapshot: str | None,
                     cb: Callable[[int, int, bool], int], include_parent: bool = True,
                     whole_object: bool = False) -> None:
        with ceph_call(self._what):
            self._img.diff_iterate(offset, length, from_snapshot, cb, include_parent=include_parent,
                                   whole_object=whole_object)

    def aio_read(self, offset: int, length: int, cb: Callable[[Any, bytes], None]) -> None:
        """Queue a read; ``cb(done, data)`` runs on librbd's thread, ``done.get_return_value()`` its return code.
        Raises CephError with librbd's own text when it refuses to queue it (the reader, fastsnap.stream, names
        the offset around it: its message stays what it was before this wrapper)."""
        def oncomplete(completion: Any, data: bytes) -> None:
            cb(ReadDone(int(completion.get_return_value())), data)

        try:
            self._img.aio_read(offset, length, oncomplete)
        except Exception as exc:
            raise CephError(str(exc)) from exc


class Cluster:
    """A connection to one Ceph cluster."""

    def __init__(self, conffile: str, user: str, keyring: str | None = None, connect_timeout: int = 15,
                 op_timeout: int = 60) -> None:
        conf: dict[str, str] = {
            "client_mount_timeout": str(connect_timeout),
            "rados_mon_op_timeout": str(op_timeout),
            "rados_osd_op_timeout": str(op_timeout),
        }
        if keyring:
            conf["keyring"] = keyring
        try:
            self._rados = rados.Rados(conffile=conffile, rados_id=user, conf=conf)
            self._rados.connect(timeout=connect_timeout)
        except Exception as exc:  # rados raises many types, all meaning "cannot reach the cluster"
            raise CephError(f"cannot connect to Ceph ({conffile}, client.{user}): {exc}") from exc
        self._ioctx: dict[str, Any] = {}
        with ceph_call("reading the cluster fsid"):
            self.fsid: str = self._rados.get_fsid()

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Cluster:
        c = conf.ceph
        return cls(c.conf, c.user, c.keyring, c.connect_timeout, c.op_timeout)

    def close(self) -> None:
        for io in self._ioctx.values():
            with contextlib.suppress(rbd.Error, rados.Error):
                io.close()
        self._ioctx.clear()
        with contextlib.suppress(rbd.Error, rados.Error):
            self._rados.shutdown()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pools and images --------------------------------------------------------------------------------

    def _ioctx_of(self, pool: str) -> Any:
        """The pool's raw ioctx (this module's own calls only), opened once per connection."""
        if pool not in self._ioctx:
            try:
                self._ioctx[pool] = self._rados.open_ioctx(pool)
            except rados.ObjectNotFound as exc:
                raise CephNotFound(f"Ceph pool {pool!r} does not exist") from exc
            except Exception as exc:
                raise _wrap(f"opening pool {pool}", exc) from exc
        return self._ioctx[pool]

    def objects(self, pool: str, namespace: str) -> Objects:
        """RADOS objects in ``pool``/``namespace`` (an ioctx of their own: its namespace is not the images')."""
        try:
            io = self._rados.open_ioctx(pool)
        except rados.ObjectNotFound as exc:
            raise CephNotFound(f"Ceph pool {pool!r} does not exist") from exc
        except Exception as exc:
            raise _wrap(f"opening pool {pool}", exc) from exc
        io.set_namespace(namespace)
        return Objects(io, f"{pool}/{namespace}")

    @contextlib.contextmanager
    def claim(self, pool: str, what: str, holder: str, seconds: int) -> Iterator[bool]:
        """A cluster-wide claim in namespace ``fastsnap`` of ``pool`` (see :meth:`Objects.claim`)."""
        objects = self.objects(pool, CLAIM_NAMESPACE)
        try:
            with objects.claim(what, holder, seconds) as won:
                yield won
        finally:
            objects.close()

    @contextlib.contextmanager
    def image(self, spec: ImageSpec, snapshot: str | None = None, read_only: bool = False) -> Iterator[Image]:
        """An open image (at ``snapshot``), its I/O behind :class:`Image` so no librbd handle or exception leaves
        this module."""
        with self._open(spec, snapshot, read_only) as img:
            yield Image(img, f"an operation on {spec}" + (f"@{snapshot}" if snapshot else ""))

    @contextlib.contextmanager
    def _open(self, spec: ImageSpec, snapshot: str | None = None, read_only: bool = False) -> Iterator[Any]:
        """The raw ``rbd.Image``, for this module's own calls."""
        ioctx = self._ioctx_of(spec.pool)
        try:
            img = rbd.Image(ioctx, spec.name, snapshot=snapshot, read_only=read_only)
        except rbd.ImageNotFound as exc:
            raise CephNotFound(f"RBD image {spec} does not exist") from exc
        except Exception as exc:
            raise _wrap(f"opening {spec}", exc) from exc
        try:
            with ceph_call(f"an operation on {spec}" + (f"@{snapshot}" if snapshot else "")):
                yield img
        finally:
            with contextlib.suppress(rbd.Error):
                img.close()

    def exists(self, spec: ImageSpec) -> bool:
        try:
            with self._open(spec, read_only=True):
                return True
        except NotFound:
            return False

    def describe(self, spec: ImageSpec) -> Described:
        """Size, RBD image id and clone parent of an image, read through one open (each open of an RBD image
        costs a round of OSD requests; planning and reserving a snapshot need all three)."""
        with self._open(spec, read_only=True) as img, ceph_call(f"reading {spec}"):
            return Described(int(img.size()), str(img.id()), _parent_of(img, spec))

    def parent(self, spec: ImageSpec) -> Parent | None:
        with self._open(spec, read_only=True) as img:
            return _parent_of(img, spec)

    def snapshots(self, spec: ImageSpec) -> list[str]:
        with self._open(spec, read_only=True) as img, ceph_call(f"listing the snapshots of {spec}"):
            return [s["name"] for s in img.list_snaps()]

    # -- idempotent mutations ---------------------------------------------------------------------------

    def create_snapshot(self, spec: ImageSpec, snap: str) -> None:
        with self._open(spec) as img:
            try:
                img.create_snap(snap)
            except rbd.ImageExists:
                LOG.debug("snapshot %s@%s already exists", spec, snap)
            except Exception as exc:
                raise _wrap(f"creating snapshot {spec}@{snap}", exc) from exc

    def remove_snapshot(self, spec: ImageSpec, snap: str) -> None:
        """Remove a snapshot; with clone v2 one that still has clones moves to the trash (purged later)."""
        try:
            with self._open(spec) as img, ceph_call(f"removing snapshot {spec}@{snap}"):
                img.remove_snap2(snap, rbd.RBD_SNAP_REMOVE_UNPROTECT)
        except NotFound:
            return  # the image is gone, so is its snapshot

    def clone(self, parent: ImageSpec, snap: str, child: ImageSpec) -> None:
        try:
            rbd.RBD().clone(self._ioctx_of(parent.pool), parent.name, snap, self._ioctx_of(child.pool), child.name,
                            features=None)
        except rbd.ImageExists:
            found = self.parent(child)
            if found != Parent(parent.pool, parent.name, snap):
                raise CephError(f"RBD image {child} exists and is not a clone of {parent}@{snap}") from None
        except rbd.ImageNotFound as exc:
            raise CephError(f"cannot clone {parent}@{snap}: snapshot not found") from exc
        except Exception as exc:
            raise _wrap(f"cloning {parent}@{snap} to {child}", exc) from exc

    def remove_image(self, spec: ImageSpec) -> None:
        """Remove an image and its snapshots. Already gone counts as success."""
        if not self.exists(spec):
            return
        for snap in self.snapshots(spec):
            self.remove_snapshot(spec, snap)
        try:
            rbd.RBD().remove(self._ioctx_of(spec.pool), spec.name)
        except rbd.ImageNotFound:
            return
        except Exception as exc:
            raise _wrap(f"removing {spec}", exc) from exc

    def trash_snapshots(self, spec: ImageSpec) -> int:
        """Number of the image's snapshots waiting in the snapshot trash (clone v2 parents)."""
        with self._open(spec, read_only=True) as img, ceph_call(f"listing the snapshots of {spec}"):
            return sum(1 for s in img.list_snaps() if s.get("namespace") == TRASH_NAMESPACE)

    def list_images(self, pool: str) -> list[str]:
        io = self._ioctx_of(pool)
        with ceph_call(f"listing the images of pool {pool}"):
            return sorted(rbd.RBD().list(io))

    # -- backup chains on a target cluster (incremental backups, fastsnap.chain) -----------------------------

    def conf_get(self, name: str) -> str:
        """This client's value of a Ceph option (e.g. ``rbd_default_clone_format``)."""
        with ceph_call(f"reading option {name}"):
            return str(self._rados.conf_get(name))

    def rename_snapshot(self, spec: ImageSpec, old: str, new: str) -> None:
        with self._open(spec) as img, ceph_call(f"renaming snapshot {spec}@{old} to {new}"):
            img.rename_snap(old, new)

    def snapshot_ids(self, spec: ImageSpec) -> dict[str, int]:
        """Name -> RBD snapshot id of the image's user snapshots (a re-created snapshot gets a new id)."""
        with self._open(spec, read_only=True) as img, ceph_call(f"listing the snapshots of {spec}"):
            return {str(s["name"]): int(s["id"]) for s in img.list_snaps()
                    if s.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER}

    def trash_entries(self, pool: str) -> list[tuple[str, str, str]]:
        """(image id, name, source) of each entry in the pool's RBD trash (the chain sweep's view of :meth:`trash`,
        with its own message)."""
        with ceph_call(f"listing the RBD trash of pool {pool}"):
            return [(e.id, e.name, e.source) for e in self._trash(pool)]

    def trash_snapshot_count(self, pool: str, image_id: str) -> int | None:
        """Snapshots (any namespace) of a trashed image; None when its image can no longer be opened."""
        try:
            img = rbd.Image(self._ioctx_of(pool), image_id=image_id, read_only=True)
        except rbd.ImageNotFound:
            return None
        except rbd.Error as exc:
            raise _wrap(f"opening trash entry {pool}/{image_id}", exc) from exc
        try:
            with ceph_call(f"listing the snapshots of trash entry {pool}/{image_id}"):
                return len(list(img.list_snaps()))
        finally:
            with contextlib.suppress(rbd.Error):
                img.close()

    def trash_remove(self, pool: str, image_id: str, force: bool = True) -> None:
        """Remove an entry from the RBD trash (gone counts as success); without ``force`` librbd refuses one whose
        deferment has not ended."""
        try:
            rbd.RBD().trash_remove(self._ioctx_of(pool), image_id, force=force)
        except rbd.ImageNotFound:
            return
        except Exception as exc:
            raise _wrap(f"removing {pool}/{image_id} from the RBD trash", exc) from exc

    def flatten(self, spec: ImageSpec) -> None:
        """Flatten in this process, blocking for a time that grows with the data (not a clone any more: nothing
        to do)."""
        with self._open(spec) as img:
            try:
                img.flatten()
            except rbd.InvalidArgument:
                return
            except Exception as exc:
                raise _wrap(f"flattening {spec}", exc) from exc

    # -- the adapter's door for the paths, parked disks and flatten (issue 26: no raw handle leaves) --------

    def create(self, spec: ImageSpec, size: int) -> None:
        """Create a flat image of ``size`` bytes. One already there counts as success when it is flat and of that
        size (a step repeated after a crash), else CephError."""
        try:
            rbd.RBD().create(self._ioctx_of(spec.pool), spec.name, size, old_format=False)
        except rbd.ImageExists:
            with self._open(spec, read_only=True) as img, ceph_call(f"an operation on {spec}"):
                if _parent_of(img, spec) is not None or int(img.size()) != size:
                    raise CephError(f"RBD image {spec} exists and is not the image this snapshot creates") from None
        except rbd.Error as exc:
            raise CephError(f"Ceph: creating {spec} on cluster {self.fsid} failed: {exc}") from exc

    def resize(self, spec: ImageSpec, size: int) -> None:
        """Make the image ``size`` bytes (already that size: nothing to do)."""
        with self._open(spec) as img, ceph_call(f"resizing {spec} to {size}"):
            if int(img.size()) != size:
                img.resize(size)

    def trash(self, pool: str) -> list[TrashEntry]:
        """The entries of the pool's RBD trash. CephNotFound when the pool does not exist."""
        try:
            return self._trash(pool)
        except rbd.Error as exc:
            raise CephError(f"listing the RBD trash of pool {pool} failed: {exc}") from exc

    def _trash(self, pool: str) -> list[TrashEntry]:
        """The pool's RBD trash; librbd's errors raised as they come (the callers above name them)."""
        io = self._ioctx_of(pool)

        def when(value: object) -> datetime.datetime | None:
            return value if isinstance(value, datetime.datetime) else None

        return [TrashEntry(str(e["id"]), str(e.get("name")), str(e.get("source")), when(e.get("deletion_time")),
                           when(e.get("deferment_end_time"))) for e in rbd.RBD().trash_list(io)]

    def trash_snapshot_list(self, pool: str, image_id: str) -> list[SnapInfo] | None:
        """Every snapshot (any namespace) of a trashed image; None when its image can no longer be opened (a
        removal from the trash interrupted after the image's header went)."""
        try:
            with rbd.Image(self._ioctx_of(pool), image_id=image_id, read_only=True) as img:
                return [_snap_info(s) for s in img.list_snaps()]
        except rbd.ImageNotFound:
            return None
        except rbd.Error as exc:
            raise CephError(f"reading trash entry {pool}/{image_id}: {exc}") from exc

    def trash_children(self, pool: str, image_id: str, snap_ids: list[int]) -> list[ImageSpec]:
        """The clones (not in the trash, in no RADOS namespace) that read through the snapshots ``snap_ids`` of
        the trashed image, as Ceph lists them."""
        deps: list[ImageSpec] = []
        with ceph_call(f"listing the clones of trash entry {pool}/{image_id}"), \
                rbd.Image(self._ioctx_of(pool), image_id=image_id, read_only=True) as img:
            for snap_id in snap_ids:
                img.set_snap_by_id(snap_id)
                for child in img.list_children2():
                    if not child.get("trash") and not child.get("pool_namespace"):
                        deps.append(ImageSpec(str(child["pool"]), str(child["image"])))
        return sorted(set(deps), key=str)

    def mon_command(self, command: dict[str, Any], timeout: int) -> tuple[int, bytes, str]:
        """A monitor command: (return code, output, status). CephError when librados cannot send it."""
        with ceph_call(f"the monitor command {command.get('prefix')!r}"):
            ret, out, status = self._rados.mon_command(json.dumps(command), b"", timeout=timeout)
        return int(ret), bytes(out), str(status)
