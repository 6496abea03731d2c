"""``fastsnap status``: the cluster as the journal in RADOS shows it (issue 23 point 5).

Every host's operations are in one journal (:mod:`fastsnap.rados_journal`), so any host reports for all:

- operations in flight, by host: running operations whose host's lease lives (their process works on them);
- hosts whose lease lapsed: the hosts that ever held a lease (``fastsnap.hosts``) and none holds now, and a host
  of running operations that no lease record names. A host that only runs the CLI holds its lease only while a
  fastsnap process runs there, so an idle one shows here too: what needs a hand is an *unsettled* operation;
- unsettled operations: running operations whose host's lease lapsed, waiting for a ``recover`` (on any host);
- the flatten backlog: clone-path snapshots whose flatten is pending, as journaled (:func:`fastsnap.flatten.pending`);
- parked disks (:func:`fastsnap.parked.drain`, without draining).

:func:`build` is pure (plain inputs, a typed :class:`ClusterStatus`); :func:`gather` reads its inputs from the
journal and the parked disks it is given, and :func:`operations` only the journal's part (cheap: the directory,
the running records and one lease probe per host; what ``/metrics`` refreshes on each scrape).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastsnap import flatten as fl
from fastsnap.journal import Journal, Operation
from fastsnap.parked import ParkedDisk
from fastsnap.rados_journal import HostView, RadosOperations
from fastsnap.result import FlattenRow
from fastsnap.states import PENDING_FLATTEN, OpState, ParkedState
from fastsnap.view import AsDict


@dataclass(frozen=True)
class OperationView(AsDict):
    """A running operation as the status shows it."""

    op_id: str
    host: str
    disk: str
    path: str
    step: str | None        # the last step journaled: of the phase acting (or cut short), journaled in one write
    age: float              # seconds since it was reserved
    idle: float             # seconds since its record was last written

    @classmethod
    def of(cls, op: Operation, now: float) -> OperationView:
        return cls(op_id=op.op_id, host=op.host, disk=op.disk, path=op.path,
                   step=str(op.steps[-1]) if op.steps else None, age=round(max(0.0, now - op.created_at), 1),
                   idle=round(max(0.0, now - op.updated_at), 1))


@dataclass(frozen=True)
class HostStatus(AsDict):
    """One host: whether its lease lives, when it last took it, and its running operations."""

    host: str
    alive: bool
    seen_at: float | None   # when a process of it last took the lease (None: no lease record names it)
    in_flight: int          # running operations, the lease living
    unsettled: int          # running operations, the lease lapsed


@dataclass(frozen=True)
class ClusterStatus:
    """The whole cluster's snapshot operations, flatten backlog and parked disks, as of ``at``."""

    at: float
    hosts: list[HostStatus] = field(default_factory=list)
    in_flight: list[OperationView] = field(default_factory=list)
    unsettled: list[OperationView] = field(default_factory=list)
    flatten_backlog: int = 0
    parked_disks: list[ParkedDisk] = field(default_factory=list)

    @property
    def in_flight_by_host(self) -> dict[str, int]:
        """Running operations by host, for every host whose lease lives (0 when it runs none)."""
        return {h.host: h.in_flight for h in self.hosts if h.alive}

    @property
    def lapsed_hosts(self) -> list[HostStatus]:
        return [h for h in self.hosts if not h.alive]

    @property
    def parked_count(self) -> int:
        return parked_count(self.parked_disks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "hosts": [h.to_dict() for h in self.hosts],
            "in_flight": self.in_flight_by_host,
            "in_flight_operations": [o.to_dict() for o in self.in_flight],
            "lapsed_hosts": [h.host for h in self.lapsed_hosts],
            "unsettled": [o.to_dict() for o in self.unsettled],
            "flatten_backlog": self.flatten_backlog,
            "parked_count": self.parked_count,
            "parked_disks": [p.to_dict() for p in self.parked_disks],
        }


def flatten_backlog(rows: Iterable[FlattenRow]) -> int:
    """Clone-path snapshots whose flatten is still pending (queued with the mgr, or left to fastsnap)."""
    return sum(1 for r in rows if r.info.state in PENDING_FLATTEN)


def parked_count(rows: Iterable[ParkedDisk]) -> int:
    """Parked disks still in the trash (a drain's ``removed`` ones are gone)."""
    return sum(1 for p in rows if p.state != ParkedState.REMOVED)


def build(operations: Iterable[Operation], hosts: Iterable[HostView], flattens: Iterable[FlattenRow],
          parked: Sequence[ParkedDisk], now: float) -> ClusterStatus:
    """The status from plain inputs: ``operations`` (any states: the running ones count), the journal's host
    views (a host of running operations none of them names counts as lapsed), the flatten rows, the parked disks,
    and the time ``now`` (seconds since the epoch) ages are counted to."""
    running = [op for op in operations if op.state == OpState.RUNNING]
    views = {h.host: h for h in hosts}
    alive = {name: v.alive for name, v in views.items()}
    for op in running:
        alive.setdefault(op.host, False)
    in_flight = sorted((OperationView.of(op, now) for op in running if alive[op.host]),
                       key=lambda o: (o.host, -o.age, o.op_id))
    unsettled = sorted((OperationView.of(op, now) for op in running if not alive[op.host]),
                       key=lambda o: (-o.age, o.op_id))
    rows = []
    for name in sorted(alive):
        view = views.get(name)
        rows.append(HostStatus(host=name, alive=alive[name], seen_at=view.seen_at if view and view.seen_at else None,
                               in_flight=sum(1 for o in in_flight if o.host == name),
                               unsettled=sum(1 for o in unsettled if o.host == name)))
    return ClusterStatus(at=now, hosts=rows, in_flight=in_flight, unsettled=unsettled,
                         flatten_backlog=flatten_backlog(flattens), parked_disks=list(parked))


def _journal_inputs(journal: Journal) -> tuple[list[Operation], list[HostView]]:
    """The running operations, then every host's lease: the hosts of the lease records, and a host of running
    operations none names, probed as recover would (so an operation shows unsettled when recover would take it)."""
    running = journal.list(OpState.RUNNING)
    store = journal.ops
    views = store.hosts() if isinstance(store, RadosOperations) else []
    named = {v.host for v in views}
    views += [HostView(h, store.lease_alive(h), 0.0) for h in sorted({op.host for op in running} - named)]
    return running, views


def operations(journal: Journal, now: float | None = None) -> ClusterStatus:
    """The journal's part only (operations and hosts; no flatten backlog, no parked disks): cheap."""
    running, views = _journal_inputs(journal)
    return build(running, views, (), (), time.time() if now is None else now)


def gather(journal: Journal, parked: Sequence[ParkedDisk], now: float | None = None) -> ClusterStatus:
    """The whole status, read only: the pending flattens as journaled (:func:`fastsnap.flatten.pending`; the
    flatten poller and ``flatten-status`` are what act on them); ``parked``: the parked disks, listed (not
    drained) by the caller."""
    running, views = _journal_inputs(journal)
    flattens = fl.pending(journal)
    return build(running, views, flattens, parked, time.time() if now is None else now)
