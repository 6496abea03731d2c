"""fastsnap's Python API: the one place the CLI and the service call.

    from fastsnap import Fastsnap, SnapshotRequest
    with Fastsnap(config_file="/etc/fastsnap/fastsnap.conf") as fs:
        result = fs.snapshot(SnapshotRequest(disk="vms/<uuid>_disk", name="my snap", base_image="<id>"))
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import backup, parked
from fastsnap import chain as ch
from fastsnap import conf as fsconf
from fastsnap import crosscluster as xc
from fastsnap import flatten as fl
from fastsnap import journal as jr
from fastsnap import ownership as own
from fastsnap import quiesce as qs
from fastsnap import recover as rc
from fastsnap import status as st
from fastsnap import workflow as wf
from fastsnap.auth import Identity, create_trust, delete_trust, user_session
from fastsnap.ceph import Cluster
from fastsnap.errors import (
    BadRequest,
    CephError,
    ConfigError,
    Conflict,
    FastsnapError,
    LeaseLapsed,
    NotFound,
    PlanError,
    QuiesceRequired,
    Reserved,
    UnknownStore,
)
from fastsnap.glance import Glance, inheritable, session_from_conf
from fastsnap.location import ImageSpec, RbdLocation
from fastsnap.locks import Locks
from fastsnap.nova import Nova
from fastsnap.plan import BaseImage, Plan, PlanRequest, SnapshotPath, StoreInfo, make_plan
from fastsnap.request import SnapshotRequest, validate_request
from fastsnap.result import FlattenRow, RecoverResult, SnapshotResult, StoreView
from fastsnap.states import REUSABLE, ImageType, OpState, RecoverAction, Step, StreamFormat
from fastsnap.storecache import StoreCache, complete

LOG = logging.getLogger(__name__)


@dataclass
class Planned:
    """A request validated and planned (by :meth:`Fastsnap.prepare`), to be taken soon by the same caller: the
    service plans when it accepts a request and hands this to the job, which then asks Glance nothing again."""

    plan: Plan
    base_raw: dict[str, Any] | None
    size: int
    queued: dict[str, Any] | None
    glance: Glance
    ident: Identity
    at: float = field(default_factory=time.monotonic)

    MAX_AGE = 30.0  # seconds; an older one is planned again

    def fresh(self) -> bool:
        return time.monotonic() - self.at < self.MAX_AGE


def snapshot_properties(req: SnapshotRequest, base_raw: dict[str, Any] | None,
                        queued: dict[str, Any] | None = None) -> dict[str, Any]:
    """The properties fastsnap sets on the snapshot image.

    A new image inherits the base image's properties the way Nova copies them. A queued image made by the caller
    (``queued``: nova-api's, which already applied Nova's inheritance rules, ``non_inheritable_image_properties``
    and a ``min_disk`` of at least the flavor's root disk) keeps what it has: fastsnap adds only what it lacks, and
    the request's explicit properties."""
    props: dict[str, Any] = {}
    if base_raw and queued is None:
        props.update(inheritable(base_raw))
        for k in ("min_disk", "min_ram"):
            if base_raw.get(k):
                props[k] = int(base_raw[k])
    if base_raw:
        props["base_image_ref"] = base_raw["id"]
    props["image_type"] = str(req.image_type)
    if req.image_type == ImageType.BACKUP and req.backup_type:
        props["backup_type"] = req.backup_type
    if req.instance_uuid:
        props["instance_uuid"] = req.instance_uuid
    if queued is not None:
        props = {k: v for k, v in props.items() if queued.get(k) in (None, "")}
    props.update(req.properties)
    return props


def _identity_key(conf: cfg.ConfigOpts) -> str:
    """Which Glance, as whom: the key of the store cache's file (another configuration never reads it)."""
    vals = []
    for name in ("endpoint_override", "region_name", "auth_url", "username", "user_id", "project_name",
                 "project_id"):
        try:
            vals.append(str(getattr(conf.glance, name)))
        except cfg.NoSuchOptError:  # the auth plugin's options are registered when it is loaded
            vals.append("")
    return "|".join(vals)


class Fastsnap:
    """A fastsnap client for one compute host: one Ceph connection, one Glance client, one journal."""

    def __init__(self, conf: cfg.ConfigOpts | None = None, *, config_file: str | None = None,
                 session: ks_session.Session | None = None) -> None:
        self.conf = conf or fsconf.load(config_file)
        self._session = session
        self._cluster: Cluster | None = None
        self._glance: Glance | None = None
        self.journal = jr.Journal.from_conf(self.conf, lambda: self.cluster)
        self._store_cache: StoreCache | None = None
        self._stores_lock = threading.Lock()
        self.locks = Locks(self.conf.journal.state_dir)
        self._hypervisors: dict[str, qs.Hypervisor] = {}
        self._remote: xc.RemoteClusters | None = None
        self._tls = threading.local()  # per request: bytes read to check a base copy (delta path)

    # -- lazily built adapters ----------------------------------------------------------------------------

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = Cluster.from_conf(self.conf)
        return self._cluster

    @property
    def remote(self) -> xc.RemoteClusters:
        """The other Ceph clusters fastsnap has credentials for ([ceph] remote_clusters), connected on use."""
        if self._remote is None:
            self._remote = xc.RemoteClusters(self.conf)
        return self._remote

    @property
    def session(self) -> ks_session.Session:
        """fastsnap's own (service user) Keystone session."""
        if self._session is None:
            self._session = session_from_conf(self.conf)
        return self._session

    @property
    def glance(self) -> Glance:
        """Glance as fastsnap's service user (operator mode, store details)."""
        if self._glance is None:
            self._glance = Glance.from_conf(self.conf, self.session)
        return self._glance

    def glance_for(self, user_token: str | None = None, user_auth: Any = None) -> tuple[Glance, Identity]:
        """Glance on behalf of a user (user token + service token), or as fastsnap itself without one."""
        if user_token is None and user_auth is None:
            return self.glance, Identity("operator")
        sess, ident = user_session(self.session, user_token, user_auth)
        return Glance.from_conf(self.conf, sess), ident

    def check_owner(self, req: SnapshotRequest, glance: Glance, ident: Identity) -> None:
        """A snapshot on behalf of a user is of a disk the user's project owns (:mod:`fastsnap.ownership`): the
        request names the server, Nova shows it to the user, and the disk is its root disk. Asks Nova as the
        user; creates nothing. Raises Forbidden, :class:`fastsnap.nova.ServerNotFound` or NovaError."""
        if ident.mode != "user":
            return
        server_id = own.require_server(req.disk, req.instance_uuid)
        server = Nova(self.conf, glance.session).server(server_id)
        own.check_root_disk(req.disk, server, self.conf.libvirt.images_rbd_pool)

    def hypervisor(self, uri: str | None = None) -> qs.Hypervisor:
        """The local libvirt (``[libvirt] connection_uri``), or the one at ``uri`` (recover: as journaled)."""
        uri = uri or self.conf.libvirt.connection_uri
        if uri not in self._hypervisors:
            self._hypervisors[uri] = qs.Hypervisor(uri, self.conf.libvirt.agent_timeout)
        return self._hypervisors[uri]

    def _freeze_plan(self, req: SnapshotRequest, base_raw: dict[str, Any] | None) -> wf.Freeze:
        """Whether and how to freeze the guest; asks its agent now, so that a required quiesce that cannot be
        done fails before anything is created."""
        decision = qs.decide(req.quiesce_domain, base_raw if req.base_image else None, req.require_quiesce)
        hv = None
        if decision.attempt and decision.domain:
            try:
                hv = self.hypervisor()
                hv.ping(decision.domain)
            except FastsnapError as exc:
                if decision.required:
                    raise QuiesceRequired(f"quiesce is required but the guest cannot be frozen: {exc}") from None
                decision, hv = qs.Decision(False, False, decision.domain, str(exc)), None
        return wf.Freeze(hv, decision, self.conf.snapshot.max_freeze_seconds, qs.Outcome(False, decision.reason))

    def close(self) -> None:
        self.journal.close()  # this process's share of the host's lease, before the connection it uses
        for hv in self._hypervisors.values():
            hv.close()
        self._hypervisors.clear()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def __enter__(self) -> Fastsnap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def context(self, glance: Glance | None = None) -> wf.Context:
        """The workflow's context: this client's cluster and journal, Glance as ``glance`` (default: fastsnap)."""
        try:
            remote: xc.RemoteClusters | None = self.remote
        except ConfigError as exc:  # only operations on other clusters need it: recover the others anyway
            LOG.error("%s; snapshots into other clusters cannot be made or recovered", exc)
            remote = None
        return wf.Context(self.cluster, glance or self.glance, self.journal, self.conf, remote=remote)

    # -- stores -----------------------------------------------------------------------------------------

    @property
    def store_cache(self) -> StoreCache:
        if self._store_cache is None:
            _ = self.session  # loads the auth plugin, whose options name the identity
            self._store_cache = StoreCache(self.conf.journal.state_dir, _identity_key(self.conf),
                                           self.conf.glance.store_cache_seconds)
        return self._store_cache

    def store_catalogue(self, fresh: bool = False) -> tuple[StoreInfo, ...]:
        """Glance's stores as fastsnap's service user sees them, cached ``[glance] store_cache_seconds`` in
        memory and in the state directory (the rule: :mod:`fastsnap.storecache`). ``fresh``: ask Glance."""
        cache = self.store_cache
        stores = None if fresh else cache.get()
        if stores is not None:
            return stores
        with self._stores_lock:  # one request for every snapshot that found the cache stale at once
            stores = None if fresh else cache.get()
            if stores is None:
                stores = self.glance.stores()
                if complete(stores):
                    cache.put(stores)
        return stores

    def stores(self) -> list[StoreView]:
        fsid = self.cluster.fsid
        return [StoreView(s.id, s.type, s.is_default, s.description, s.pool, s.fsid,
                          clone=s.type == "rbd" and s.fsid == fsid and bool(s.pool))
                for s in self.store_catalogue(fresh=True)]

    # -- planning (validates everything before anything is created) --------------------------------------

    def plan(self, req: SnapshotRequest, glance: Glance | None = None) -> tuple[Plan, dict[str, Any] | None, int]:
        """Validate the request against Ceph and Glance and plan it; returns (plan, base image, disk size)."""
        plan, base_raw, size, _ = self._plan(req, glance)
        return plan, base_raw, size

    def _plan(self, req: SnapshotRequest, glance: Glance | None = None, owner: Identity | None = None
              ) -> tuple[Plan, dict[str, Any] | None, int, dict[str, Any] | None]:
        """Validate the request against Ceph and Glance and plan it. Creates nothing.

        Store details come from fastsnap's own view (service role); the base image and a given image id are
        looked up as ``glance`` (the caller), so a user can only use images they can see. With ``owner`` (the
        user a snapshot is for) the ownership check comes right after the request's own validation."""
        user_glance = glance or self.glance
        disk = validate_request(req)
        if owner is not None:  # first: before Ceph is asked anything about the disk
            self.check_owner(req, user_glance, owner)
        try:
            described = self.cluster.describe(disk)
        except NotFound as exc:  # the caller named it: bad input, nothing created
            raise BadRequest(str(exc)) from exc
        stores = self.store_catalogue()
        base: BaseImage | None = None
        base_raw: dict[str, Any] | None = None
        if req.base_image:
            try:
                base, base_raw = user_glance.base_image(req.base_image)
            except (BadRequest, NotFound) as exc:
                raise BadRequest(f"base image {req.base_image}: {exc}") from exc
        size, parent = described.size, described.parent
        self._tls.check_bytes_read = 0
        preq = PlanRequest(disk_fsid=self.cluster.fsid, stores=stores, base_image=base, requested_store=req.store,
                           configured_store=self.conf.snapshot.default_store, remote_fsids=self.remote.fsids(),
                           requested_format=req.format, configured_format=self.conf.snapshot.stream_format,
                           backup=req.image_type == ImageType.BACKUP, backup_store=self.conf.snapshot.backup_store,
                           disk_parent=RbdLocation.for_image(self.cluster.fsid, parent.pool, parent.image,
                                                             parent.snapshot).url if parent else None)
        try:
            plan = make_plan(preq)
        except (UnknownStore, PlanError) as exc:  # perhaps a cached catalogue is out of date: ask Glance again
            self.store_cache.invalidate(f"planning failed: {exc}")
            preq = dataclasses.replace(preq, stores=self.store_catalogue(fresh=True))
            plan = make_plan(preq)
        if plan.chain is not None:
            preq, plan = self._plan_incremental(disk, preq, plan, user_glance)
        if plan.path is SnapshotPath.DELTA:
            # One Glance image, so the same bytes: check that the RBD snapshots really hold them before cloning.
            assert plan.base_location and preq.disk_parent and plan.fsid
            refused, read = xc.check_base_copy(self.cluster, RbdLocation.parse(preq.disk_parent),
                                               self.remote.get(plan.fsid), RbdLocation.parse(plan.base_location),
                                               self.conf.snapshot.base_check_samples)
            self._tls.check_bytes_read += read
            if refused:
                LOG.warning("base copy check failed: %s; copying instead", refused)
                plan = make_plan(dataclasses.replace(preq, delta_refused=refused))
        if plan.format == StreamFormat.QCOW2 and size % 512:
            raise BadRequest(f"disk {req.disk} is {size} bytes, no multiple of 512: it cannot be a qcow2 image's "
                             "virtual size; ask for format 'raw'")
        if req.image_id and self.earlier(req) is None:
            existing = user_glance.find(req.image_id)
            if existing is None:
                raise BadRequest(f"image {req.image_id} does not exist")
            if existing.get("status") != "queued":
                raise BadRequest(f"image {req.image_id} is {existing.get('status')}, not queued")
            return plan, base_raw, size, dict(existing)
        return plan, base_raw, size, None

    def _plan_incremental(self, disk: ImageSpec, preq: PlanRequest, plan: Plan,
                          user_glance: Glance) -> tuple[PlanRequest, Plan]:
        """A backup into an rbd store on another cluster: find the chain's previous backup (the disk's kept
        source snapshot, Glance's view of that backup) and check it before an incremental builds on it; plan
        again with what was found (:mod:`fastsnap.chain`)."""
        assert plan.chain is not None and plan.fsid is not None
        prev = ch.previous_backup(self.cluster, disk, plan.chain, self.glance, user_glance)
        if prev is None:
            return preq, plan
        preq = dataclasses.replace(preq, previous=prev)
        plan = make_plan(preq)
        if plan.path is not SnapshotPath.INCREMENTAL:
            return preq, plan
        assert plan.previous_location is not None and plan.fsid is not None
        refused, read = ch.check_previous(self.cluster, disk, prev, self.remote.get(plan.fsid),
                                          RbdLocation.parse(plan.previous_location), self.journal,
                                          self.conf.snapshot.base_check_samples)
        self._tls.check_bytes_read += read
        if refused:
            LOG.warning("previous backup check failed: %s; taking a full backup", refused)
            preq = dataclasses.replace(preq, incremental_refused=refused)
            plan = make_plan(preq)
        return preq, plan

    def sweep_backups(self) -> list[str]:
        """Remove from the other clusters' RBD trash the backups Glance deleted while newer ones depended on them,
        once nothing does (:func:`fastsnap.chain.sweep`), in every rbd store on a cluster fastsnap has
        credentials for. Returns the image ids removed."""
        removed: list[str] = []
        remote = self.remote
        for store in self.store_catalogue():
            if store.type == "rbd" and store.pool and store.fsid and store.fsid in remote.fsids():
                removed += ch.sweep(remote.get(store.fsid), store.pool, self.journal)
        ch.drop_stale_sources(self.cluster, self.journal, remote.get)
        return removed

    # -- snapshot ---------------------------------------------------------------------------------------

    def earlier(self, req: SnapshotRequest) -> jr.Operation | None:
        """The operation that holds ``req.image_id`` (running or done), if any. Raises Conflict when it is
        for another disk: one image id names one snapshot of one disk."""
        if req.image_id is None:
            return None
        op = self.journal.get(req.image_id)
        if op is None or op.state in REUSABLE:
            return None
        if op.disk != req.disk:
            raise Conflict(f"image {req.image_id} belongs to a snapshot of {op.disk} ({op.state}), "
                           f"not of {req.disk}")
        return op

    def prepare(self, req: SnapshotRequest, user_token: str | None = None, user_auth: Any = None,
                acting: tuple[Glance, Identity] | None = None, *, verify_owner: bool = True) -> Planned:
        """Validate and plan ``req`` for the caller (creates nothing); hand the result to :meth:`snapshot`
        (``planned``) to take it without asking Glance and Keystone the same things again. ``acting``: the
        caller's Glance and identity, when :meth:`glance_for` already gave them. For a user, the ownership check
        (:meth:`check_owner`) comes first, before Ceph is asked anything about the disk; ``verify_owner=False``
        skips it (a trusted caller that checked, with ``[service] verify_trusted_callers`` off)."""
        glance, ident = acting or self.glance_for(user_token, user_auth)
        plan, base_raw, size, queued = self._plan(req, glance, ident if verify_owner else None)
        return Planned(plan, base_raw, size, queued, glance, ident)

    def snapshot(self, req: SnapshotRequest, progress: Callable[[int, int], None] | None = None,
                 wait: float | None = None, user_token: str | None = None, user_auth: Any = None,
                 on_plan: Callable[[Plan, str], None] | None = None,
                 on_step: Callable[[str], None] | None = None, planned: Planned | None = None, *,
                 verify_owner: bool = True) -> SnapshotResult:
        """Take the snapshot. With ``user_token`` (or a keystoneauth ``user_auth`` plugin) it is taken on behalf
        of that user: the image belongs to the user's project. ``wait``: seconds to wait for a free slot
        (None: as long as it takes, 0: fail at once with Busy). ``on_plan(plan, image_id)`` is told the plan
        before anything is created; ``on_step(step)`` before each step (raising there cancels and rolls back).
        A snapshot for a user must name the server whose root disk ``req.disk`` is (:meth:`check_owner`)."""
        validate_request(req)
        op_id = req.image_id or str(uuid.uuid4())
        # The image id names the operation: at most one acts on it, across threads and processes. A retry waits
        # here for a running one, then returns what it made (or first finishes what a dead one left).
        with self.locks.operation(op_id):
            op = self.earlier(req)
            if op is not None and op.state == OpState.RUNNING and op.host != self.journal.ops.host \
                    and self.journal.ops.lease_alive(op.host):
                raise Reserved(f"image {op.op_id} is being taken on host {op.host} (its lease lives)")
            if op is not None and op.state == OpState.RUNNING:  # its process (or its host) is gone
                LOG.info("image %s: an earlier operation was interrupted; recovering it first", req.image_id)
                action = rc.recover_one(self, self.context(), op)
                if action is None:
                    raise Reserved(f"image {req.image_id}: another host is recovering an earlier, interrupted "
                                   "operation on it; try again")
                if action.action is RecoverAction.FAILED:
                    raise FastsnapError(f"image {req.image_id}: an earlier, interrupted operation could not be "
                                        f"recovered: {action.error}")
                op = self.earlier(req)
            if op is not None:
                glance, _ = self.glance_for(user_token, user_auth)
                if glance.find(op.op_id) is None:  # gone since, or not the caller's to see
                    raise BadRequest(f"image {op.op_id} does not exist")
                LOG.info("image %s was already filled by an earlier operation on %s; returning its result",
                         op.op_id, op.disk)
                return SnapshotResult.of(op, already_done=True)
            return self._snapshot(req, op_id, progress, wait, user_token, user_auth, on_plan, on_step, planned,
                                  verify_owner)

    def _snapshot(self, req: SnapshotRequest, op_id: str, progress: Callable[[int, int], None] | None,
                  wait: float | None, user_token: str | None, user_auth: Any,
                  on_plan: Callable[[Plan, str], None] | None,
                  on_step: Callable[[str], None] | None, planned: Planned | None = None,
                  verify_owner: bool = True) -> SnapshotResult:
        t0 = time.monotonic()
        self.journal.ops.prepare()  # the host's lease, taken while we plan (reserve needs it)
        if planned is None or not planned.fresh():
            planned = self.prepare(req, user_token, user_auth, verify_owner=verify_owner)
        glance, ident = planned.glance, planned.ident
        plan, base_raw, size, queued = planned.plan, planned.base_raw, planned.size, planned.queued
        if on_plan is not None:
            on_plan(plan, op_id)
        props = snapshot_properties(req, base_raw, queued)
        freeze = self._freeze_plan(req, base_raw)
        op = jr.Operation(op_id=op_id, disk=req.disk, path=plan.path.value, store=plan.store, pool=plan.pool,
                          fsid=plan.fsid, image_created=req.image_id is None,
                          delete_image_on_error=req.image_id is None or not req.keep_image_on_error,
                          reason=plan.reason, acting_as=ident.to_dict(), size=size, format=plan.format)
        if plan.base_location:
            op.base_location = plan.base_location
            op.check_bytes_read = getattr(self._tls, "check_bytes_read", 0)
        if plan.chain is not None:
            op.chain = plan.chain
        if plan.previous is not None:  # incremental: the target image's parent is the previous backup
            op.base_location = plan.previous_location
            op.previous_backup, op.source_snap = plan.previous.image_id, plan.previous.source_snap
            op.check_bytes_read = getattr(self._tls, "check_bytes_read", 0)
        if plan.path is SnapshotPath.CLONE:
            # read now (not when planned: the service may have planned a while ago): one open for both
            now = self.cluster.describe(ImageSpec.parse(req.disk))
            up = now.parent
            depth = 1 + (0 if up is None else 1 + fl.depth(self.cluster, ImageSpec(up.pool, up.image)))
            policy, why = fl.policy_for(self.conf, plan.store, depth)
            op.flatten = jr.FlattenInfo(policy, why, depth)
            # Which RBD image the clone depends on: a disk deleted before the flatten is parked in the RBD trash
            # (under this id) and purged by fastsnap only when its id is one fastsnap recorded (fastsnap.parked).
            op.disk_id = now.image_id
        with self.locks.slot(self.conf.snapshot.max_concurrent, wait), self.locks.disk(req.disk):
            if ident.mode == "user" and self.conf.journal.trust_hours:
                # Lets recover act for the user after a crash (the image belongs to the user's project).
                try:
                    op.trust_id = create_trust(glance.session, self.session, ident, self.conf.journal.trust_hours)
                except FastsnapError as exc:
                    LOG.warning("snapshot %s: %s; after a crash, recover could not undo it", op_id, exc)
                    op.trust_error = str(exc)
            try:
                self.journal.reserve(op)
            except BaseException as exc:  # held (another host), or the journal unreachable: nothing was created
                self.drop_trust(op, glance.session, save=False)  # the record is the holder's, or none is ours
                if isinstance(exc, CephError):
                    raise CephError(f"the journal cannot be written, so nothing was created: {exc}") from exc
                raise
            wf.crash_point("reserved")
            LOG.info("snapshot %s of %s: %s", op_id, req.disk, plan.reason)
            try:
                outcome = self._run(op, req, plan, props, progress, glance, on_step, freeze, queued)
            finally:
                if op.state != OpState.RUNNING:  # rolled back completely: recover will not need the trust
                    self.drop_trust(op, glance.session)
            stats = outcome.stats
            moved = op.transfer or {}
            result = SnapshotResult(
                image_id=op_id, path=plan.path.value, store=plan.store, pool=plan.pool, location=outcome.location,
                reason=plan.reason, seconds=round(time.monotonic() - t0, 3), size=size,
                bytes_streamed=stats.bytes_done if stats else int(moved.get("bytes_written", 0)),
                bytes_read=stats.bytes_read if stats else int(moved.get("bytes_read", 0)),
                disk=req.disk, format=plan.format, flatten=op.flatten.to_dict() if op.flatten else {},
                acting_as=ident.to_dict(),
                quiesced=freeze.outcome.quiesced, quiesce=freeze.outcome.to_dict(), transfer=dict(moved))
            op.result = result.to_dict()
            trust_id, op.trust_id = op.trust_id, None  # dropped in the finish's write (no second one for it)
            self.journal.finish(op, OpState.DONE)
            self._delete_trust(op, glance.session, trust_id)
        if req.image_type == ImageType.BACKUP and req.rotation and req.instance_uuid and req.backup_type:
            rotated = backup.rotate(glance, op_id, req.instance_uuid, req.backup_type, req.rotation)
            result = dataclasses.replace(result, rotated=rotated)
        if op.chain is not None and op.fsid is not None and op.pool is not None:
            try:  # rotated backups that newer ones depended on, and older ones freed by a flatten
                ch.sweep(self.remote.get(op.fsid), op.pool, self.journal)
            except FastsnapError as exc:
                LOG.warning("sweeping the RBD trash of %s on cluster %s: %s", op.pool, op.fsid, exc)
        return result

    def drop_trust(self, op: jr.Operation, sess: ks_session.Session, save: bool = True) -> None:
        trust_id, op.trust_id = op.trust_id, None
        if not trust_id:
            return
        self._delete_trust(op, sess, trust_id)
        if save:
            self.journal.save(op)

    @staticmethod
    def _delete_trust(op: jr.Operation, sess: ks_session.Session, trust_id: str | None) -> None:
        """Delete a trust the record no longer names (a crash before this leaves it to expire on its own)."""
        if not trust_id:
            return
        try:
            delete_trust(sess, trust_id)
        except FastsnapError as exc:
            LOG.warning("snapshot %s: %s (it expires on its own)", op.op_id, exc)

    def _run(self, op: jr.Operation, req: SnapshotRequest, plan: Plan, props: dict[str, Any],
             progress: Callable[[int, int], None] | None, glance: Glance,
             on_step: Callable[[str], None] | None = None, freeze: wf.Freeze | None = None,
             queued: dict[str, Any] | None = None) -> wf.Outcome:
        ctx = self.context(glance)
        ctx.on_step = on_step
        ctx.freeze = freeze
        disk = ImageSpec.parse(req.disk)

        def create_image() -> None:
            if req.image_id is None:
                ctx.glance.create(op.op_id, req.name, props, disk_format=plan.format)
            else:  # the queued image the plan read: one PATCH
                ctx.glance.update_queued(op.op_id, queued or {}, {
                    "name": req.name, "disk_format": plan.format, "container_format": req.container_format, **props})

        try:
            if plan.path in wf.REMOTE_PATHS:
                snap = self.conf.snapshot
                outcome, _ = xc.run(ctx, op, disk, create_image, self.remote, snap.remote_chunk_size_mb << 20,
                                    snap.remote_parallel, progress)
            elif plan.path is SnapshotPath.CLONE:
                assert op.flatten is not None
                outcome = wf.run_clone(ctx, op, disk, create_image, op.flatten.policy,
                                       self.conf.snapshot.mgr_timeout)
            else:
                snap = self.conf.snapshot
                outcome = wf.run_stream(ctx, op, disk, create_image, snap.chunk_size_mb << 20, snap.read_ahead,
                                        progress, plan.format)
        except BaseException as exc:
            LOG.warning("snapshot %s failed at step %s: %s; rolling back", op.op_id, ctx.step or "-",
                        wf.describe(exc))
            if ctx.step == Step.LOCATION and isinstance(exc, FastsnapError):
                self.store_cache.invalidate(f"Glance refused the location in store {op.store}: {exc}")
            if isinstance(exc, LeaseLapsed):  # another host may be recovering it now: its claim decides
                LOG.error("snapshot %s: %s; left running for a recover", op.op_id, exc)
                raise
            try:
                undone = wf.rollback(ctx, op)
                LOG.info("rolled back %s: %s", op.op_id, "; ".join(undone) or "nothing to undo")
                self.journal.finish(op, OpState.FAILED, wf.describe(exc))
            except Exception as undo_exc:  # leave the operation 'running' for recover
                LOG.error("rollback of %s incomplete (%s); run 'fastsnap recover'", op.op_id,
                          wf.describe(undo_exc))
            raise
        return outcome

    # -- recover, background flatten, parked disks ----------------------------------------------------------

    def recover(self) -> list[RecoverResult]:
        """Finish or undo every operation left running by a dead process, then sweep the backups Glance
        deleted on other clusters that nothing depends on any more. Safe beside live snapshots."""
        results = rc.recover_all(self)
        try:
            self.sweep_backups()
        except FastsnapError as exc:
            LOG.warning("sweeping the other clusters' RBD trash failed: %s", exc)
        return results

    def parked_disks(self, run: bool = False) -> list[parked.ParkedDisk]:
        """Instance disks parked in the RBD trash (by the Nova hook) while fastsnap clones depend on them. With
        ``run``: flatten those clones first, in this process, and remove each disk without snapshots left.
        Attributed from Ceph (any host's snapshots) in Nova's pool and the pools the journal knows."""
        return parked.drain(self.cluster, self.journal, run=run, pools=(self.conf.libvirt.images_rbd_pool,))

    def flatten_status(self, run_local: bool = False) -> list[FlattenRow]:
        """Clone-path snapshots whose flatten was pending (see :func:`fastsnap.flatten.status`); with
        ``run_local`` the ones the Ceph mgr could not take are flattened in this process."""
        return fl.status(self.cluster, self.conf, self.journal, run_local)

    def flatten_pending(self) -> list[FlattenRow]:
        """Clone-path snapshots (every host's) whose flatten is pending, as journaled: read only, no Ceph call (what
        the REST service's ``GET /v1/flattens`` shows; :meth:`flatten_status` checks and acts)."""
        return fl.pending(self.journal)

    def cluster_status(self) -> st.ClusterStatus:
        """The whole cluster's operations in flight by host, lapsed hosts, unsettled operations (waiting for a
        recover), flatten backlog and parked disks (:mod:`fastsnap.status`). Changes nothing but what
        :meth:`flatten_status` does (pending flatten tasks are queued with the mgr again)."""
        return st.gather(self)
