"""fastsnap's Python API: the one place the CLI and the service call.

    from fastsnap import Caller, Fastsnap, SnapshotRequest
    with Fastsnap(config_file="/etc/fastsnap/fastsnap.conf") as fs:
        result = fs.snapshot(SnapshotRequest(disk="vms/<uuid>_disk", name="my snap", base_image="<id>"))
        theirs = fs.snapshot(SnapshotRequest(...), caller=Caller(user_token="<a user's token>"))

A facade: :class:`Fastsnap` builds the adapters (lazily) and the store cache, and hands them, as a
:class:`fastsnap.host.Host`, to the parts that do the work: :mod:`fastsnap.planning`, :mod:`fastsnap.running`
(with :mod:`fastsnap.reservation` and :mod:`fastsnap.paths`), :mod:`fastsnap.recover`, :mod:`fastsnap.flatten`,
:mod:`fastsnap.parked` and :mod:`fastsnap.status`. None of them imports this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import chain as ch
from fastsnap import conf as fsconf
from fastsnap import crosscluster as xc
from fastsnap import flatten as fl
from fastsnap import journal as jr
from fastsnap import parked
from fastsnap import planning as pl
from fastsnap import quiesce as qs
from fastsnap import recover as rc
from fastsnap import running as rn
from fastsnap import status as st
from fastsnap import workflow as wf
from fastsnap.caller import Caller
from fastsnap.ceph import Cluster
from fastsnap.errors import ConfigError, FastsnapError
from fastsnap.glance import Glance, session_from_conf
from fastsnap.locks import Locks
from fastsnap.plan import Plan, StoreInfo
from fastsnap.planning import Planned
from fastsnap.request import SnapshotRequest
from fastsnap.result import FlattenRow, RecoverResult, SnapshotResult, StoreView
from fastsnap.storecache import StoreCache, complete

LOG = logging.getLogger(__name__)


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

    def hypervisor(self, uri: str | None = None) -> qs.Hypervisor:
        """The local libvirt (``[libvirt] connection_uri``), or the one at ``uri`` (recover: as journaled)."""
        uri = uri or self.conf.libvirt.connection_uri
        if uri not in self._hypervisors:
            self._hypervisors[uri] = qs.Hypervisor(uri, self.conf.libvirt.agent_timeout)
        return self._hypervisors[uri]

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

    # -- snapshot (planning: fastsnap.planning; running and rollback: fastsnap.running) ----------------------

    def prepare(self, req: SnapshotRequest, caller: Caller | None = None) -> Planned:
        """Validate and plan ``req`` for ``caller`` (default: fastsnap itself); creates nothing. Hand the result to
        :meth:`snapshot` (``planned``) to take it without asking Glance and Keystone the same things again."""
        return pl.prepare(self, req, caller or Caller())

    def snapshot(self, req: SnapshotRequest, *, caller: Caller | None = None,
                 progress: Callable[[int, int], None] | None = None, wait: float | None = None,
                 on_plan: Callable[[Plan, str], None] | None = None,
                 on_step: Callable[[str], None] | None = None, planned: Planned | None = None) -> SnapshotResult:
        """Take the snapshot. For a ``caller`` with a user's credentials (:class:`fastsnap.caller.Caller`) it is
        taken on behalf of that user: the image belongs to the user's project, and the request must name the
        server whose root disk ``req.disk`` is (:func:`fastsnap.planning.check_owner`). ``wait``: seconds to wait
        for a free slot (None: as long as it takes, 0: fail at once with Busy). ``on_plan(plan, image_id)`` is
        told the plan before anything is created; ``on_step(step)`` before each step (raising there cancels and
        rolls back). ``planned``: what :meth:`prepare` gave, if it is still fresh."""
        hooks = rn.Hooks(progress=progress, on_plan=on_plan, on_step=on_step)
        return rn.snapshot(self, req, caller or Caller(), hooks, wait, planned)

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
        return st.gather(self.journal, self.parked_disks(run=False))
