"""Planning a snapshot: validate the request against Ceph and Glance and choose its path, creating nothing.

:func:`prepare` is what the facade and the service call; its :class:`Planned` carries everything the run needs
that planning learnt (the base image, the disk's size, the queued image, the caller's Glance and identity, and the
bytes read to check a base copy or a previous backup), so the run asks Glance and Keystone nothing again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from oslo_log import log as logging

from fastsnap import chain as ch
from fastsnap import crosscluster as xc
from fastsnap import journal as jr
from fastsnap import ownership as own
from fastsnap.auth import Identity
from fastsnap.caller import Caller
from fastsnap.errors import BadRequest, ConfigError, Conflict, NotFound, PlanError, UnknownStore
from fastsnap.glance import Glance
from fastsnap.host import Host
from fastsnap.location import ImageSpec, RbdLocation
from fastsnap.nova import Nova
from fastsnap.plan import BaseImage, Plan, PlanRequest, SnapshotPath, make_plan
from fastsnap.request import SnapshotRequest, validate_request
from fastsnap.states import REUSABLE, ImageType, StreamFormat

LOG = logging.getLogger(__name__)


@dataclass
class Planned:
    """A request validated and planned (by :func:`prepare`), to be taken soon by the same caller: the service
    plans when it accepts a request and hands this to the job, which then asks Glance nothing again.
    ``check_bytes_read``: bytes read from the disk's cluster while planning, to check the base image's copy
    (delta) or the previous backup (incremental); the run journals it with the transfer's figures."""

    plan: Plan
    base_raw: dict[str, Any] | None
    size: int
    queued: dict[str, Any] | None
    glance: Glance
    ident: Identity
    check_bytes_read: int = 0
    at: float = field(default_factory=time.monotonic)

    MAX_AGE = 30.0  # seconds; an older one is planned again

    def fresh(self) -> bool:
        return time.monotonic() - self.at < self.MAX_AGE


def check_owner(host: Host, req: SnapshotRequest, glance: Glance, ident: Identity) -> None:
    """A snapshot on behalf of a user is of a disk the user's project owns (:mod:`fastsnap.ownership`): the
    request names the server, Nova shows it to the user, and the disk is its root disk. Asks Nova as the
    user; creates nothing. Raises Forbidden, :class:`fastsnap.nova.ServerNotFound` or NovaError."""
    if ident.mode != "user":
        return
    server_id = own.require_server(req.disk, req.instance_uuid)
    server = Nova(host.conf, glance.session).server(server_id)
    own.check_root_disk(req.disk, server, host.conf.libvirt.images_rbd_pool)


def refuse_patch_without_locations(glance: Glance, base_image: dict[str, Any]) -> None:
    """A plan that registers a location, with ``[glance] location_api = patch`` against a Glance whose
    ``show_multiple_locations`` is off (the base image's view says so), cannot work: Glance refuses the PATCH.
    Refused while planning (nothing created), so the Nova hook declines to Nova's own snapshot with one WARNING
    line naming the setting, rather than the snapshot failing at registration."""
    if glance.hides_locations(base_image) and glance.registration_api() == "patch":
        raise ConfigError("Glance has show_multiple_locations = False, and fastsnap's [glance] location_api = "
                          f"{glance.location_api} registers locations with the image PATCH, which that Glance "
                          "refuses: set [glance] location_api = auto (the location API) or enable "
                          "show_multiple_locations in Glance")


def earlier(journal: jr.Journal, req: SnapshotRequest) -> jr.Operation | None:
    """The operation that holds ``req.image_id`` (running or done), if any. Raises Conflict when it is
    for another disk: one image id names one snapshot of one disk."""
    if req.image_id is None:
        return None
    op = journal.get(req.image_id)
    if op is None or op.state in REUSABLE:
        return None
    if op.disk != req.disk:
        raise Conflict(f"image {req.image_id} belongs to a snapshot of {op.disk} ({op.state}), "
                       f"not of {req.disk}")
    return op


def prepare(host: Host, req: SnapshotRequest, caller: Caller) -> Planned:
    """Validate and plan ``req`` for ``caller`` (creates nothing). For a user, the ownership check
    (:func:`check_owner`) comes first, before Ceph is asked anything about the disk, unless
    ``caller.verify_owner`` is off (a trusted caller that checked, with ``[service] verify_trusted_callers`` off).

    Store details come from fastsnap's own view (service role); the base image and a given image id are
    looked up as the caller, so a user can only use images they can see."""
    user_glance, ident = caller.resolve(host.conf, host.session, host.glance)
    disk = validate_request(req)
    if caller.verify_owner:  # first: before Ceph is asked anything about the disk
        check_owner(host, req, user_glance, ident)
    try:
        described = host.cluster.describe(disk)
    except NotFound as exc:  # the caller named it: bad input, nothing created
        raise BadRequest(str(exc)) from exc
    stores = host.store_catalogue()
    base: BaseImage | None = None
    base_raw: dict[str, Any] | None = None
    if req.base_image:
        try:
            base, base_raw = user_glance.base_image(req.base_image)
        except (BadRequest, NotFound) as exc:
            raise BadRequest(f"base image {req.base_image}: {exc}") from exc
    size, parent = described.size, described.parent
    fsid, snap = host.cluster.fsid, host.conf.snapshot
    preq = PlanRequest(disk_fsid=fsid, stores=stores, base_image=base, requested_store=req.store,
                       configured_store=snap.default_store, remote_fsids=host.remote.fsids(),
                       requested_format=req.format, configured_format=snap.stream_format,
                       backup=req.image_type == ImageType.BACKUP, backup_store=snap.backup_store,
                       disk_parent=RbdLocation.for_image(fsid, parent.pool, parent.image,
                                                         parent.snapshot).url if parent else None)
    try:
        plan = make_plan(preq)
    except (UnknownStore, PlanError) as exc:  # perhaps a cached catalogue is out of date: ask Glance again
        host.store_cache.invalidate(f"planning failed: {exc}")
        preq = dataclasses.replace(preq, stores=host.store_catalogue(fresh=True))
        plan = make_plan(preq)
    check_read = 0
    if plan.chain is not None:
        preq, plan, check_read = _plan_incremental(host, disk, preq, plan, user_glance)
    if plan.path is SnapshotPath.DELTA:
        # One Glance image, so the same bytes: check that the RBD snapshots really hold them before cloning.
        assert plan.base_location and preq.disk_parent and plan.fsid
        refused, read = xc.check_base_copy(host.cluster, RbdLocation.parse(preq.disk_parent),
                                           host.remote.get(plan.fsid), RbdLocation.parse(plan.base_location),
                                           snap.base_check_samples)
        check_read += read
        if refused:
            LOG.warning("base copy check failed: %s; copying instead", refused)
            plan = make_plan(dataclasses.replace(preq, delta_refused=refused))
    if plan.path is not SnapshotPath.STREAM and base_raw is not None:
        refuse_patch_without_locations(host.glance, base_raw)
    if plan.format == StreamFormat.QCOW2 and size % 512:
        raise BadRequest(f"disk {req.disk} is {size} bytes, no multiple of 512: it cannot be a qcow2 image's "
                         "virtual size; ask for format 'raw'")
    queued: dict[str, Any] | None = None
    if req.image_id and earlier(host.journal, req) is None:
        existing = user_glance.find(req.image_id)
        if existing is None:
            raise BadRequest(f"image {req.image_id} does not exist")
        if existing.get("status") != "queued":
            raise BadRequest(f"image {req.image_id} is {existing.get('status')}, not queued")
        queued = dict(existing)
    return Planned(plan, base_raw, size, queued, user_glance, ident, check_read)


def _plan_incremental(host: Host, disk: ImageSpec, preq: PlanRequest, plan: Plan,
                      user_glance: Glance) -> tuple[PlanRequest, Plan, int]:
    """A backup into an rbd store on another cluster: find the chain's previous backup (the disk's kept
    source snapshot, Glance's view of that backup) and check it before an incremental builds on it; plan
    again with what was found (:mod:`fastsnap.chain`). The int: bytes read to check it."""
    assert plan.chain is not None and plan.fsid is not None
    prev = ch.previous_backup(host.cluster, disk, plan.chain, host.glance, user_glance)
    if prev is None:
        return preq, plan, 0
    preq = dataclasses.replace(preq, previous=prev)
    plan = make_plan(preq)
    if plan.path is not SnapshotPath.INCREMENTAL:
        return preq, plan, 0
    assert plan.previous_location is not None and plan.fsid is not None
    refused, read = ch.check_previous(host.cluster, disk, prev, host.remote.get(plan.fsid),
                                      RbdLocation.parse(plan.previous_location), host.journal,
                                      host.conf.snapshot.base_check_samples)
    if refused:
        LOG.warning("previous backup check failed: %s; taking a full backup", refused)
        preq = dataclasses.replace(preq, incremental_refused=refused)
        plan = make_plan(preq)
    return preq, plan, read
