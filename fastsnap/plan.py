"""Decide where a snapshot goes and how it gets there.

:func:`make_plan` is pure: it takes what Glance and Ceph reported (:class:`PlanRequest`) and returns a
:class:`Plan`, or raises.  The target store is, in order of precedence, the store requested explicitly,
the operator's ``[snapshot] default_store``, the base image's rbd store on the disk's cluster, and
Glance's default store.  The snapshot is a copy-on-write clone when the target is an rbd store on the
disk's cluster.  When the target is an rbd store on another cluster that fastsnap has credentials for
(``[ceph] remote_clusters``), it is written there directly with librbd: ``delta`` (a clone of the base
image's copy in that store plus the extents the instance wrote) when the disk is a clone of the base image and
the base image has a copy in the target store, else ``copy`` (the disk's allocated extents).  Everything else
is streamed through Glance.  An unknown fsid or store type never silently becomes a stream: it raises
:class:`PlanError`.

Backups (``type=backup``) go to ``[snapshot] backup_store`` when the request names no store (before
``default_store``).  A backup that would take the delta or copy path is ``incremental`` instead when the same
disk's previous backup into the same store is still there (:class:`PreviousBackup`: the disk keeps the source
snapshot that backup captured, and Glance still has it active at the location fastsnap wrote) and the integrity
check passed (``incremental_refused``): a clone of that backup on the target cluster plus what the disk changed
since.  Otherwise the delta or copy path, and the reason says why not incremental.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from fastsnap.errors import BadRequest, ConfigError, InvalidLocation, PlanError, UnknownStore
from fastsnap.location import CLONE_SNAP, RbdLocation
from fastsnap.states import StreamFormat

NO_BASE_IMAGE = "no base image (volume-backed or image deleted)"
_ROLE_NEEDED = (
    "Glance reveals store details (type, pool, fsid) only to the admin or service role; "
    "give fastsnap's Glance user that role"
)


class SnapshotPath(str, enum.Enum):  # noqa: UP042 - the API is specified as (str, Enum)
    """How the snapshot's bytes reach Glance."""

    CLONE = "clone"
    STREAM = "stream"
    DELTA = "delta"  # rbd store on another cluster, base image copied there: clone it + the instance's writes
    COPY = "copy"    # rbd store on another cluster, no usable base copy: the disk's allocated extents
    INCREMENTAL = "incremental"  # backup into an rbd store on another cluster: clone the previous backup + changes


@dataclass(frozen=True)
class StoreInfo:
    """One entry of Glance's store catalogue (``GET /v2/info/stores/detail``)."""

    id: str
    type: str | None  # "rbd", "file", ...; None when Glance did not reveal it (non-admin view)
    is_default: bool
    description: str = ""
    pool: str | None = None  # rbd only
    # rbd only; None = unknown (Glance could not reach the cluster), NEVER "other cluster"
    fsid: str | None = None


@dataclass(frozen=True)
class BaseImage:
    """The Glance image the instance was booted from, as far as Glance shows it."""

    id: str
    stores: tuple[str, ...]  # from the image's `stores` field (comma-joined in Glance; already split)
    locations: tuple[tuple[str, str | None], ...]  # (url, metadata.store or None); may be empty when hidden
    direct_url: str | None = None  # image's direct_url when Glance exposes it


@dataclass(frozen=True)
class PreviousBackup:
    """The same disk's previous backup into the target store, as found: the source snapshot the disk keeps for
    it (``fastsnap-backup-<store>-<image id>``) and what Glance shows of that backup."""

    image_id: str
    source_snap: str                      # the kept snapshot on the disk (the point in time the backup holds)
    status: str | None                    # the Glance image's status; None: Glance has no such image (deleted)
    # its rbd:// location URLs; None: Glance shows them only to fastsnap's own view, and the backup is a user's
    # (then the check on the target cluster, against the journaled snapshot id, stands for it)
    locations: tuple[str, ...] | None = ()


@dataclass(frozen=True)
class PlanRequest:
    """Everything :func:`make_plan` needs.  An empty store id counts as not given."""

    disk_fsid: str  # fsid of the Ceph cluster that holds the instance disk
    stores: tuple[StoreInfo, ...]  # Glance's store catalogue
    base_image: BaseImage | None = None  # None: volume-backed / no image_ref
    requested_store: str | None = None  # explicit per-request store
    configured_store: str | None = None  # operator's [snapshot] default_store
    remote_fsids: frozenset[str] = frozenset()  # other clusters fastsnap has credentials for
    disk_parent: str | None = None  # rbd:// URL of the disk's clone parent (on disk_fsid), None: not a clone
    delta_refused: str | None = None  # why a delta plan was refused after checking the base copy (I/O)
    requested_format: str | None = None  # the request's format (raw | qcow2), None: not given
    configured_format: str = StreamFormat.RAW  # the operator's [snapshot] stream_format
    backup: bool = False  # type=backup
    backup_store: str | None = None  # operator's [snapshot] backup_store
    previous: PreviousBackup | None = None  # backup: the chain's previous backup in the planned store, if any
    incremental_refused: str | None = None  # why the previous backup failed the integrity check (I/O)


@dataclass(frozen=True)
class Plan:
    """The decision: which path, into which store, and why."""

    path: SnapshotPath
    store: str  # target store id
    pool: str | None  # rbd pool of the target store when path is CLONE, else the store's pool or None
    fsid: str | None  # cluster of the target store (catalogue, or base image location evidence)
    reason: str  # human-readable
    base_location: str | None = None  # DELTA: rbd:// URL of the base image's copy in the target store
    format: str = StreamFormat.RAW  # disk format of the result: qcow2 only on the stream path
    previous: PreviousBackup | None = None  # INCREMENTAL: the backup cloned and the source snapshot diffed from
    previous_location: str | None = None  # INCREMENTAL: rbd:// URL of that backup's snapshot on the target
    chain: str | None = None  # backup into an rbd store on another cluster: keep a source snapshot for this store


# Store id -> fsids seen in the base image's rbd location URLs attributed to that store.
_Evidence = dict[str, set[str]]


def make_plan(req: PlanRequest) -> Plan:
    """Choose the target store and the path (clone or stream) for a snapshot; see the module doc."""
    if not req.stores:
        raise ConfigError("Glance reports no stores; check enabled_backends in glance-api's configuration")
    catalogue = {store.id: store for store in req.stores}
    candidates, evidence, copies = _base_image_stores(req.base_image, catalogue)

    notes = [] if req.base_image is not None else [NO_BASE_IMAGE]
    store, choice, from_base = _choose_store(req, catalogue, candidates, evidence)
    notes.append(choice)
    path, pool, fsid, why = _path_for(store, req.disk_fsid, evidence)
    base_location = None
    previous, previous_location, chain = None, None, None
    if path is SnapshotPath.STREAM and fsid is not None and fsid != req.disk_fsid and store.type == "rbd":
        path, why, base_location = _cross_cluster(req, store, fsid, copies.get(store.id, []))
        if req.backup and path in (SnapshotPath.DELTA, SnapshotPath.COPY):
            chain = store.id
            assert store.pool is not None
            not_incr, previous_location = _why_not_incremental(req, store, fsid)
            if not_incr is None:
                assert req.previous is not None
                previous, base_location = req.previous, None
                path = SnapshotPath.INCREMENTAL
                why = (f"store {store.id!r} is rbd pool {store.pool} on another cluster (fsid {fsid}); previous "
                       f"backup {previous.image_id} of this disk is there: incremental (clone it there, write only "
                       f"what the disk changed since {previous.source_snap})")
            else:
                why = f"not incremental: {not_incr}; {why}"
    reason = "; ".join(notes) + (": clone" if from_base else f"; {why}")
    fmt, note = _format_for(req, path, store.id)
    return Plan(path=path, store=store.id, pool=pool, fsid=fsid, reason=reason + note, base_location=base_location,
                format=fmt, previous=previous, previous_location=previous_location if previous else None,
                chain=chain)


def _format_for(req: PlanRequest, path: SnapshotPath, store: str) -> tuple[StreamFormat, str]:
    """The result's disk format and what the reason adds about it. The stream path makes the requested format,
    else the configured one; the other paths make RBD images, which are raw: a request for qcow2 there is bad
    input (nothing is created), the operator's qcow2 default is simply not theirs."""
    if path is SnapshotPath.STREAM:
        fmt = StreamFormat(req.requested_format or req.configured_format)
        return fmt, "; as qcow2 (only the allocated clusters are sent)" if fmt is StreamFormat.QCOW2 else ""
    if req.requested_format == StreamFormat.QCOW2:
        raise BadRequest(f"format 'qcow2' is made by the stream path only; this snapshot would take the "
                         f"{path.value} path into rbd store {store!r}, whose images are raw: ask for format 'raw', or "
                         f"name a store that is not rbd")
    if req.configured_format == StreamFormat.QCOW2:
        return StreamFormat.RAW, "; raw (an rbd store holds raw images; stream_format is for streams)"
    return StreamFormat.RAW, ""


def _why_not_incremental(req: PlanRequest, store: StoreInfo, fsid: str) -> tuple[str | None, str | None]:
    """(None, the previous backup's location) when a backup into ``store`` can be incremental, else (why not,
    None)."""
    prev = req.previous
    if prev is None:
        return f"no earlier backup of this disk into store {store.id!r} (no source snapshot kept for it)", None
    if prev.status is None:
        return f"the previous backup {prev.image_id} is gone", None
    if prev.status != "active":
        return f"the previous backup {prev.image_id} is {prev.status}, not active", None
    want = RbdLocation.for_image(fsid, str(store.pool), prev.image_id, CLONE_SNAP)
    if prev.locations is not None and want.url not in prev.locations:
        return (f"the previous backup {prev.image_id} is not at {want.url}, where fastsnap wrote it "
                f"(locations: {', '.join(prev.locations) or 'none'})"), None
    if req.incremental_refused:
        return req.incremental_refused, None
    return None, want.url


def _cross_cluster(
    req: PlanRequest, store: StoreInfo, fsid: str, copies: list[RbdLocation]
) -> tuple[SnapshotPath, str, str | None]:
    """(path, why, base copy URL) for an rbd ``store`` on the other cluster ``fsid``."""
    where = f"store {store.id!r} is rbd pool {store.pool} on another cluster (fsid {fsid}, disk on {req.disk_fsid})"
    if fsid not in req.remote_fsids:
        return SnapshotPath.STREAM, f"{where} and fastsnap has no credentials for it ([ceph] remote_clusters): " \
                                    "stream", None
    if store.pool is None:
        raise PlanError(f"Glance did not report the pool of rbd store {store.id!r}; cannot write into it")
    not_delta = _why_not_delta(req, store, fsid, copies)
    if not_delta is None:
        base = req.base_image
        assert base is not None
        copy = next(loc for loc in copies if loc.in_pool(fsid, store.pool) and loc.snapshot)
        why = (f"{where}; base image {base.id} has a copy there and the disk is a clone of it: delta "
               "(clone the copy, write only what the instance wrote)")
        return SnapshotPath.DELTA, why, copy.url
    return SnapshotPath.COPY, f"{where}; {not_delta}: copy (allocated extents only, written with librbd)", None


def _why_not_delta(req: PlanRequest, store: StoreInfo, fsid: str, copies: list[RbdLocation]) -> str | None:
    """None when the delta path applies, else why not."""
    base = req.base_image
    if base is None:
        return "no base image"
    assert store.pool is not None
    if not any(loc.in_pool(fsid, store.pool) and loc.snapshot for loc in copies):
        return f"base image {base.id} has no copy in store {store.id!r}"
    if req.disk_parent is None:
        return "the disk is not a clone"
    try:
        parent = RbdLocation.parse(req.disk_parent)
    except InvalidLocation:
        return f"the disk's parent {req.disk_parent!r} is not an rbd location"
    if parent.fsid != req.disk_fsid or parent.image != base.id or not _base_has(base, parent):
        return f"the disk is a clone of {parent.pool}/{parent.image}@{parent.snapshot}, not of base image {base.id}"
    if req.delta_refused:
        return req.delta_refused
    return None


def _base_has(base: BaseImage, parent: RbdLocation) -> bool:
    """True when ``parent`` is one of the base image's own locations (the same Glance image, so the same bytes)."""
    urls = [url for url, _ in base.locations] + ([base.direct_url] if base.direct_url else [])
    for url in urls:
        try:
            if RbdLocation.parse(url) == parent:
                return True
        except InvalidLocation:
            continue
    return False


def _choose_store(
    req: PlanRequest, catalogue: dict[str, StoreInfo], candidates: list[StoreInfo], evidence: _Evidence
) -> tuple[StoreInfo, str, bool]:
    """Return the target store, why it was chosen, and whether it is the base image's (clonable) store."""
    known = _ids(catalogue.values())
    requested, configured = req.requested_store, req.configured_store
    if requested:
        if requested not in catalogue:
            raise UnknownStore(f"Glance has no store {requested!r}; known stores: {known}")
        return catalogue[requested], f"store {requested!r} requested explicitly", False
    if req.backup and req.backup_store:
        if req.backup_store not in catalogue:
            raise ConfigError(f"[snapshot] backup_store = {req.backup_store!r} is not a Glance store; "
                              f"known stores: {known}")
        return catalogue[req.backup_store], f"backup into store {req.backup_store!r} from [snapshot] " \
                                            "backup_store", False
    if configured:
        if configured not in catalogue:
            raise ConfigError(
                f"[snapshot] default_store = {configured!r} is not a Glance store; known stores: {known}"
            )
        return catalogue[configured], f"store {configured!r} from [snapshot] default_store", False
    notes = []
    if req.base_image is not None:
        local, note = _base_image_target(req.base_image, req.disk_fsid, candidates, evidence)
        if local is not None:
            return local, note, True
        notes.append(note)
    default = _default_store(req.stores)
    notes.append(f"using Glance's default store {default.id!r}")
    return default, "; ".join(notes), False


def _base_image_target(
    image: BaseImage, disk_fsid: str, candidates: list[StoreInfo], evidence: _Evidence
) -> tuple[StoreInfo | None, str]:
    """The base image's rbd store on ``disk_fsid`` and why; or None and why none is usable."""
    remote: list[tuple[StoreInfo, str]] = []
    undecided: list[StoreInfo] = []
    for store in candidates:
        if store.type != "rbd":
            if store.type is None:
                undecided.append(store)
            continue
        fsid = _fsid_of(store, evidence)
        if fsid is None:
            undecided.append(store)
        elif fsid == disk_fsid:
            where = f"(rbd pool {store.pool}) on this cluster{_evidence_note(store)}"
            return store, f"base image {image.id} is in store {store.id!r} {where}"
        else:
            remote.append((store, fsid))
    for store in undecided:
        consequence = f"cannot tell whether base image {image.id} in it can be cloned"
        if store.type is None:
            raise PlanError(f"type of store {store.id!r} unknown; {consequence}; {_ROLE_NEEDED}")
        raise _unknown_fsid(store, evidence, consequence)
    if len(remote) == 1:
        store, fsid = remote[0]
        return None, f"base image {image.id} is in store {store.id!r} on another cluster (fsid {fsid})"
    if remote:
        ids = ", ".join(repr(store.id) for store, _ in remote)
        fsids = ", ".join(fsid for _, fsid in remote)
        return None, f"base image {image.id} is in stores {ids} on other clusters (fsid {fsids})"
    if candidates:
        return None, f"base image {image.id} is in no rbd store (stores: {_ids(candidates)})"
    return None, f"base image {image.id} shows no store Glance knows (locations hidden or stores removed)"


def _default_store(stores: Iterable[StoreInfo]) -> StoreInfo:
    """Glance's default store; exactly one store must be marked default."""
    defaults = [store for store in stores if store.is_default]
    if not defaults:
        raise ConfigError("Glance reports no default store; set default_backend in glance-api's config")
    if len(defaults) > 1:
        raise ConfigError(f"Glance reports several default stores: {_ids(defaults)}")
    return defaults[0]


def _path_for(
    store: StoreInfo, disk_fsid: str, evidence: _Evidence
) -> tuple[SnapshotPath, str | None, str | None, str]:
    """Return (path, pool, fsid, why) for snapshotting a disk on ``disk_fsid`` into ``store``."""
    if store.type is None:
        raise PlanError(f"type of store {store.id!r} unknown; cannot choose clone or stream; {_ROLE_NEEDED}")
    if store.type != "rbd":
        why = f"store {store.id!r} is a {store.type!r} store, not rbd: stream"
        return SnapshotPath.STREAM, store.pool, store.fsid, why
    fsid = _fsid_of(store, evidence)
    if fsid is None:
        raise _unknown_fsid(store, evidence, "cannot choose clone or stream")
    if fsid != disk_fsid:
        why = (
            f"store {store.id!r} is rbd pool {store.pool} on another cluster "
            f"(fsid {fsid}, disk on {disk_fsid}): stream"
        )
        return SnapshotPath.STREAM, store.pool, fsid, why
    if store.pool is None:
        raise PlanError(f"Glance did not report the pool of rbd store {store.id!r}; cannot clone into it")
    why = f"store {store.id!r} is rbd pool {store.pool} on this cluster{_evidence_note(store)}: clone"
    return SnapshotPath.CLONE, store.pool, fsid, why


def _base_image_stores(
    image: BaseImage | None, catalogue: dict[str, StoreInfo]
) -> tuple[list[StoreInfo], _Evidence, dict[str, list[RbdLocation]]]:
    """The catalogue stores holding ``image`` (locations first, then ``stores``) and the fsid evidence.

    A location's store is its ``metadata.store``, else the store its rbd URL points into (see
    :func:`_attribute`).  Non-rbd and unparsable URLs are skipped.  ``direct_url`` counts as one more
    location without metadata.  The third value maps a store to the base image's rbd locations in it.
    """
    if image is None:
        return [], {}, {}
    named = (*(store_id for _, store_id in image.locations if store_id), *image.stores)
    own = [catalogue[store_id] for store_id in named if store_id in catalogue]
    urls = list(image.locations)
    if image.direct_url and image.direct_url not in (url for url, _ in urls):
        urls.append((image.direct_url, None))
    order: list[str] = []
    evidence: _Evidence = {}
    copies: dict[str, list[RbdLocation]] = {}
    for url, store_id in urls:
        try:
            loc = RbdLocation.parse(url)
        except InvalidLocation:
            continue
        store = catalogue.get(store_id) if store_id else _attribute(loc, catalogue.values(), own)
        if store is None:
            continue
        order.append(store.id)
        copies.setdefault(store.id, []).append(loc)
        if loc.fsid is not None:
            evidence.setdefault(store.id, set()).add(loc.fsid)
    order.extend(store.id for store in own)
    return [catalogue[store_id] for store_id in dict.fromkeys(order)], evidence, copies


def _attribute(loc: RbdLocation, catalogue: Iterable[StoreInfo], own: list[StoreInfo]) -> StoreInfo | None:
    """The store an rbd location without ``metadata.store`` lives in, or None when it cannot be told.

    First the rbd store whose (fsid, pool) matches the URL (preferring one of the image's own stores);
    failing that, the image's only own rbd store of unknown fsid whose pool matches the URL's.
    """
    if loc.fsid is None:
        return None
    exact = [s for s in catalogue if s.type == "rbd" and s.fsid and s.pool and loc.in_pool(s.fsid, s.pool)]
    if exact:
        return next((store for store in exact if store in own), exact[0])
    unknown = [s for s in dict.fromkeys(own) if s.type == "rbd" and s.fsid is None and s.pool == loc.pool]
    return unknown[0] if len(unknown) == 1 else None


def _fsid_of(store: StoreInfo, evidence: _Evidence) -> str | None:
    """The store's fsid from the catalogue, else from the base image's URLs when they agree, else None."""
    if store.fsid is not None:
        return store.fsid
    seen = evidence.get(store.id, set())
    return next(iter(seen)) if len(seen) == 1 else None


def _evidence_note(store: StoreInfo) -> str:
    if store.fsid is not None:
        return ""
    return " (fsid taken from the base image's location URL; Glance could not report it)"


def _unknown_fsid(store: StoreInfo, evidence: _Evidence, consequence: str) -> PlanError:
    seen = evidence.get(store.id, set())
    if len(seen) > 1:
        detail = f"the base image's locations disagree: {', '.join(sorted(seen))}"
    else:
        detail = "Glance could not reach its Ceph cluster and no image location shows it"
    return PlanError(
        f"fsid of store {store.id!r} unknown ({detail}); {consequence}; "
        "retry when Glance can reach the cluster"
    )


def _ids(stores: Iterable[StoreInfo]) -> str:
    return ", ".join(repr(store.id) for store in stores)
