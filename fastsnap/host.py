"""What the snapshot machinery needs of the client it runs in, written down once: the adapters one
:class:`fastsnap.api.Fastsnap` builds (lazily) and shares between snapshots.

Planning (:mod:`fastsnap.planning`) and running (:mod:`fastsnap.running`) take a :class:`Host`; ``Fastsnap`` is
one, and a test can hand in another. Nothing here imports :mod:`fastsnap.api`, so the facade depends on its
parts and never the other way round.
"""

from __future__ import annotations

from typing import Protocol

from keystoneauth1 import session as ks_session
from oslo_config import cfg

from fastsnap import crosscluster as xc
from fastsnap import journal as jr
from fastsnap import quiesce as qs
from fastsnap import workflow as wf
from fastsnap.ceph import Cluster
from fastsnap.glance import Glance
from fastsnap.locks import Locks
from fastsnap.plan import StoreInfo
from fastsnap.storecache import StoreCache


class Host(Protocol):
    """The adapters of one client: its cluster, the other clusters, Keystone and Glance as fastsnap, the
    journal, the host locks, the store catalogue and the local hypervisor."""

    conf: cfg.ConfigOpts
    journal: jr.Journal
    locks: Locks

    @property
    def cluster(self) -> Cluster: ...

    @property
    def remote(self) -> xc.RemoteClusters: ...

    @property
    def session(self) -> ks_session.Session: ...

    @property
    def glance(self) -> Glance: ...

    @property
    def store_cache(self) -> StoreCache: ...

    def store_catalogue(self, fresh: bool = False) -> tuple[StoreInfo, ...]: ...

    def hypervisor(self, uri: str | None = None) -> qs.Hypervisor: ...

    def context(self, glance: Glance | None = None) -> wf.Context: ...
