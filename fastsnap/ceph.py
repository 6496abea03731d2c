"""Thin typed adapter over Debian's librados/librbd bindings.

Every mutating call is idempotent ("already exists" and "already gone" are success), so the workflow can
retry any step after a crash. Every call runs under the client timeouts set at connect time. No librbd/librados
exception leaves this module: each becomes a fastsnap error (CephNotFound for a missing pool, image or snapshot,
CephError) that names the call, so callers (``recover`` above all) can report one failed operation and go on with
the others.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
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

    @property
    def rados(self) -> Any:
        return self._rados

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

    def ioctx(self, pool: str) -> Any:
        if pool not in self._ioctx:
            try:
                self._ioctx[pool] = self._rados.open_ioctx(pool)
            except rados.ObjectNotFound as exc:
                raise CephNotFound(f"Ceph pool {pool!r} does not exist") from exc
            except Exception as exc:
                raise _wrap(f"opening pool {pool}", exc) from exc
        return self._ioctx[pool]

    @contextlib.contextmanager
    def claim(self, pool: str, what: str, holder: str, seconds: int) -> Iterator[bool]:
        """A cluster-wide claim: an exclusive RADOS lock (cls_lock) on the object ``fastsnap.claim.<what>`` in
        namespace ``fastsnap`` of ``pool``, for ``seconds`` and renewed every third of that while held, so a dead
        holder's claim (killed process, lost host) lapses within ``seconds``. Yields whether it was won (False:
        another process, on any host, holds it now); released and the object removed after."""
        ioctx = self._rados.open_ioctx(pool)
        ioctx.set_namespace(CLAIM_NAMESPACE)
        obj, cookie = f"fastsnap.claim.{what}", holder
        try:
            try:
                ioctx.lock_exclusive(obj, CLAIM_LOCK, cookie, desc=holder, duration=seconds)
            except (rados.ObjectBusy, rados.ObjectExists):
                yield False
                return
            except rados.Error as exc:
                raise _wrap(f"claiming {pool}/{obj}", exc) from exc
            done = threading.Event()

            def renew() -> None:
                while not done.wait(seconds / 3):
                    try:
                        ioctx.lock_exclusive(obj, CLAIM_LOCK, cookie, desc=holder, duration=seconds,
                                             flags=LOCK_FLAG_MAY_RENEW)
                    except rados.Error as exc:
                        LOG.warning("renewing the claim %s/%s failed: %s", pool, obj, exc)

            renewer = threading.Thread(target=renew, name=f"claim-{what}", daemon=True)
            renewer.start()
            try:
                yield True
            finally:
                done.set()
                renewer.join()
                with contextlib.suppress(rados.Error):
                    ioctx.unlock(obj, CLAIM_LOCK, cookie)
                    ioctx.remove_object(obj)
        finally:
            ioctx.close()

    @contextlib.contextmanager
    def image(self, spec: ImageSpec, snapshot: str | None = None, read_only: bool = False) -> Iterator[Any]:
        ioctx = self.ioctx(spec.pool)
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
            with self.image(spec, read_only=True):
                return True
        except NotFound:
            return False

    def describe(self, spec: ImageSpec) -> Described:
        """Size, RBD image id and clone parent of an image, read through one open (each open of an RBD image
        costs a round of OSD requests; planning and reserving a snapshot need all three)."""
        with self.image(spec, read_only=True) as img, ceph_call(f"reading {spec}"):
            return Described(int(img.size()), str(img.id()), _parent_of(img, spec))

    def parent(self, spec: ImageSpec) -> Parent | None:
        with self.image(spec, read_only=True) as img:
            return _parent_of(img, spec)

    def snapshots(self, spec: ImageSpec) -> list[str]:
        with self.image(spec, read_only=True) as img, ceph_call(f"listing the snapshots of {spec}"):
            return [s["name"] for s in img.list_snaps()]

    # -- idempotent mutations ---------------------------------------------------------------------------

    def create_snapshot(self, spec: ImageSpec, snap: str) -> None:
        with self.image(spec) as img:
            try:
                img.create_snap(snap)
            except rbd.ImageExists:
                LOG.debug("snapshot %s@%s already exists", spec, snap)
            except Exception as exc:
                raise _wrap(f"creating snapshot {spec}@{snap}", exc) from exc

    def remove_snapshot(self, spec: ImageSpec, snap: str) -> None:
        """Remove a snapshot; with clone v2 one that still has clones moves to the trash (purged later)."""
        try:
            with self.image(spec) as img, ceph_call(f"removing snapshot {spec}@{snap}"):
                img.remove_snap2(snap, rbd.RBD_SNAP_REMOVE_UNPROTECT)
        except NotFound:
            return  # the image is gone, so is its snapshot

    def clone(self, parent: ImageSpec, snap: str, child: ImageSpec) -> None:
        try:
            rbd.RBD().clone(self.ioctx(parent.pool), parent.name, snap, self.ioctx(child.pool), child.name,
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
            rbd.RBD().remove(self.ioctx(spec.pool), spec.name)
        except rbd.ImageNotFound:
            return
        except Exception as exc:
            raise _wrap(f"removing {spec}", exc) from exc

    def trash_snapshots(self, spec: ImageSpec) -> int:
        """Number of the image's snapshots waiting in the snapshot trash (clone v2 parents)."""
        with self.image(spec, read_only=True) as img, ceph_call(f"listing the snapshots of {spec}"):
            return sum(1 for s in img.list_snaps() if s.get("namespace") == TRASH_NAMESPACE)

    def list_images(self, pool: str) -> list[str]:
        io = self.ioctx(pool)
        with ceph_call(f"listing the images of pool {pool}"):
            return sorted(rbd.RBD().list(io))
