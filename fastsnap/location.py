"""Names of RBD images: Glance's ``rbd://`` location URLs and fastsnap's ``pool/image`` disk specs.

glance_store writes ``rbd://<fsid>/<pool>/<image>/<snapshot>``, each component URL-quoted.  Images
uploaded by very old releases carry the legacy form ``rbd://<image>``, which names neither the cluster
nor the pool.  :class:`RbdLocation` parses both and writes the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from fastsnap.errors import BadRequest, InvalidLocation

SCHEME = "rbd://"
CLONE_SNAP = "snap"  # the snapshot of a clone that Glance's rbd store reads (rbd://<fsid>/<pool>/<image>/snap)
SNAP_PREFIX = "fastsnap-"  # fastsnap's point-in-time snapshot of a disk: <disk>@fastsnap-<image id>


# The source snapshot a disk keeps for incremental backups (issue 25): the point in time its newest backup into a
# store (the chain) holds, ``<disk>@fastsnap-backup-<store>-<image id>``; at most one per disk and store.
BACKUP_SNAP_PREFIX = "fastsnap-backup-"
_UUID_LEN = 36


def backup_snap_name(chain: str, image_id: str) -> str:
    """The source snapshot the disk keeps for backup ``image_id`` of chain (store) ``chain``."""
    return f"{BACKUP_SNAP_PREFIX}{chain}-{image_id}"


def backup_snap_image(name: str, chain: str) -> str | None:
    """The backup image id a kept source snapshot of ``chain`` names, or None when ``name`` is not one (another
    store's whose id starts the same way, any other snapshot)."""
    prefix = f"{BACKUP_SNAP_PREFIX}{chain}-"
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    if len(rest) != _UUID_LEN or rest.count("-") != 4:
        return None
    return rest


def temp_snap_name(op_id: str) -> str:
    """The name of the disk snapshot an operation takes (derived from its id: found again after a crash)."""
    return f"{SNAP_PREFIX}{op_id}"
_FORMS = "expected rbd://<fsid>/<pool>/<image>/<snapshot> or legacy rbd://<image>"


@dataclass(frozen=True)
class RbdLocation:
    """An RBD image (snapshot) as Glance records it in an image location.

    ``fsid``, ``pool`` and ``snapshot`` are all ``None`` for a legacy ``rbd://<image>`` location and
    all set otherwise.
    """

    fsid: str | None
    pool: str | None
    image: str
    snapshot: str | None

    def __post_init__(self) -> None:
        if not self.image:
            raise InvalidLocation("rbd location needs a non-empty image name")
        optional = (self.fsid, self.pool, self.snapshot)
        if any(part is None for part in optional) and any(part is not None for part in optional):
            raise InvalidLocation(
                f"rbd location needs fsid, pool and snapshot all set or all None, got {optional!r}"
            )
        if any(part == "" for part in optional):
            raise InvalidLocation(f"rbd location has an empty fsid, pool or snapshot: {optional!r}")

    @classmethod
    def parse(cls, url: str) -> RbdLocation:
        """Parse a Glance ``rbd://`` location URL; raise :class:`InvalidLocation` if it is not one."""
        if not url.startswith(SCHEME):
            raise InvalidLocation(f"{url!r} is not an rbd location: it does not start with {SCHEME!r}")
        parts = url[len(SCHEME):].split("/")
        if len(parts) not in (1, 4):
            raise InvalidLocation(f"rbd location {url!r} has {len(parts)} path components; {_FORMS}")
        if "" in parts:
            which = parts.index("") + 1
            raise InvalidLocation(f"rbd location {url!r}: path component {which} is empty; {_FORMS}")
        parts = [unquote(part) for part in parts]
        if len(parts) == 1:
            return cls(fsid=None, pool=None, image=parts[0], snapshot=None)
        fsid, pool, image, snapshot = parts
        return cls(fsid=fsid, pool=pool, image=image, snapshot=snapshot)

    @classmethod
    def for_image(cls, fsid: str, pool: str, image: str, snapshot: str = "snap") -> RbdLocation:
        """The location of ``snapshot`` of ``pool/image`` on cluster ``fsid``."""
        return cls(fsid=fsid, pool=pool, image=image, snapshot=snapshot)

    @property
    def url(self) -> str:
        """The URL Glance stores for this location; ``RbdLocation.parse(loc.url) == loc``."""
        if self.fsid is None or self.pool is None or self.snapshot is None:
            return SCHEME + quote(self.image, safe="")
        parts = (self.fsid, self.pool, self.image, self.snapshot)
        return SCHEME + "/".join(quote(part, safe="") for part in parts)

    def in_pool(self, fsid: str, pool: str) -> bool:
        """True when this location is in ``pool`` on the cluster ``fsid``."""
        return self.fsid == fsid and self.pool == pool

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class ImageSpec:
    """``pool/image`` on the local cluster (``pool/namespace/image`` is not supported)."""

    pool: str
    name: str

    @classmethod
    def parse(cls, spec: str) -> ImageSpec:
        parts = spec.split("/")
        if len(parts) != 2 or not all(parts) or any(c.isspace() or c == "@" for c in spec):
            raise BadRequest(f"invalid disk {spec!r}: expected POOL/IMAGE (e.g. vms/<instance-uuid>_disk)")
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.pool}/{self.name}"
