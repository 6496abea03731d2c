"""The journal in RADOS, beside the data: any host finishes, undoes or reports what any host began.

ceph-csi's ``internal/journal`` is the model: a directory object and one object per operation, omap values,
every key documented here, and an order of writes that a crash at any point leaves readable.

Where: pool ``[journal] pool`` (default ``[libvirt] images_rbd_pool``), namespace ``[journal] namespace``
(default ``fastsnap``; no RBD image lives in it). Caps: ``allow rwx pool=<pool> namespace=<namespace>``
(x: the lease and the claims are cls_lock calls). Every fastsnap of a cluster names the same pool and namespace.

Objects and their keys (values are JSON text):

``fastsnap.operation.<op_id>``   one operation (op_id: the Glance image id)
    omap ``record``               :meth:`fastsnap.journal.Operation.to_record`, the whole typed record; the
                                  authority on the operation (its state, its steps, its host, its trust id)
``fastsnap.operations``          the directory of operations (an index, to list them without reading each)
    omap ``<op_id>``              :class:`fastsnap.operation.Entry`: ``{"state", "host", "disk", "path",
                                  "disk_id", "flatten", "updated_at"}`` as of the record's last save but a
                                  step's (what listing, the flatten poller and the drain need without reading
                                  each record); it may lag the record by one write: readers of running entries
                                  trust the record and repair the entry
``fastsnap.hosts``               the hosts that ever held a lease
    omap ``<host>``               ``{"seen_at", "lease_seconds", "pid"}``: written when a process takes the lease
``fastsnap.host.<host>``         the host's lease: a shared cls_lock ``fastsnap.lease``, one locker per live
                                  fastsnap process of the host (cookie ``<pid>.<random>``), for
                                  ``[journal] lease_seconds`` and renewed every third of it. The lease lives while
                                  one locker does; cls_lock drops a locker whose time ran out
``fastsnap.claim.op.<op_id>``    while a recover (on any host) finishes or undoes the operation: an exclusive
                                  cls_lock ``fastsnap.claim``, renewed; removed after
``fastsnap.migrated``            omap ``<host>``: ``{"at", "operations"}``, the ids an older fastsnap's SQLite
                                  journal of that host held, carried over once (:mod:`fastsnap.journal`)

Order of writes:

- reserve: the record (created exclusively, or swapped over a rolled-back holder's record with an omap
  compare: atomic on the OSD, whichever host writes), then the directory entry. A crash between the two leaves a
  record that no directory lists; nothing acted yet (a step acts only after reserve returned) and a request for
  the same image id finds the record by its name.
- each step: the record (the step is in ``steps`` before it acts). A path may journal a phase of steps in one
  write, before the phase's first step acts (the clone path: two writes for eight steps,
  :meth:`fastsnap.paths.clone.Clone.run`): ``steps`` says what may have acted, never what did, and undo and roll
  forward ask Ceph and Glance what exists;
- finish: the record, then the directory entry.

Who may act on a running operation: the process that reserved it, while it lives; on its own host, ``recover``
once the process is gone (the host-local lock, :mod:`fastsnap.locks`); on any other host, ``recover`` once the
host's lease lapsed. A recover acts only under the operation's claim and after reading the record again, so each
operation is finished or undone exactly once however many hosts recover at the same time.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from oslo_log import log as logging

from fastsnap.ceph import Objects
from fastsnap.errors import FastsnapError, LeaseLapsed, Reserved
from fastsnap.operation import Entry, Operation
from fastsnap.states import REUSABLE, OpState

LOG = logging.getLogger(__name__)

DIRECTORY = "fastsnap.operations"
HOSTS = "fastsnap.hosts"
MIGRATED = "fastsnap.migrated"
LEASE_LOCK = "fastsnap.lease"
RECORD = "record"
CLAIM_SECONDS = 30


def op_object(op_id: str) -> str:
    return f"fastsnap.operation.{op_id}"


def host_object(host: str) -> str:
    return f"fastsnap.host.{host}"


@dataclass(frozen=True)
class HostView:
    """A host as the journal knows it (``fastsnap status``)."""

    host: str
    alive: bool
    seen_at: float


@dataclass(frozen=True)
class HostRecord:
    """The value of ``<host>`` in ``fastsnap.hosts``: written when a process of the host takes the lease. The JSON
    text is the fields in this order, as fastsnap always wrote them (``{"seen_at", "lease_seconds", "pid"}``)."""

    seen_at: float
    lease_seconds: int
    pid: int

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def seen_at_of(cls, text: str) -> float:
        """When the host was last seen (0.0 when the value names no time): all ``fastsnap status`` reads."""
        return float(json.loads(text).get("seen_at", 0.0))


@dataclass(frozen=True)
class MigrationRecord:
    """The value of ``<host>`` in ``fastsnap.migrated``: when the host's SQLite journal was carried over, and the
    ids it held (``{"at", "operations"}``, in this order)."""

    at: float
    operations: list[str]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MigrationRecord:
        raw = json.loads(text)
        return cls(float(raw["at"]), [str(i) for i in raw["operations"]])


class Lease:
    """This process's share of its host's lease (``fastsnap.host.<host>``): taken on first use, renewed by a
    daemon thread every third of ``seconds``, released on :meth:`release`."""

    def __init__(self, objects: Objects, host: str, seconds: int) -> None:
        self._objects, self.host, self.seconds = objects, host, seconds
        self.cookie = f"{os.getpid()}.{uuid.uuid4().hex[:12]}"
        self._renewed = 0.0   # monotonic time of the last successful take or renewal
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._taking: threading.Thread | None = None   # hold() running in the background (take_soon)
        self._taking_error: FastsnapError | None = None

    def take_soon(self) -> None:
        """Start taking the lease in the background (a snapshot asks this before it plans, so the lease's round
        trips overlap planning); :meth:`check` waits for it."""
        with self._lock:
            if self._thread is not None or self._taking is not None:
                return

            def take() -> None:
                try:
                    self.hold()
                except FastsnapError as exc:
                    self._taking_error = exc

            self._taking = threading.Thread(target=take, name="fastsnap-lease-take", daemon=True)
            self._taking.start()

    def hold(self) -> None:
        """Take the lease (once per process); raises CephError when the journal cannot be reached."""
        with self._lock:
            if self._thread is not None:
                return
            deadline = time.monotonic() + 10
            # a lock taken exclusively (another host's probe, an instant long) makes the shared one wait
            while not self._objects.lock(host_object(self.host), LEASE_LOCK, self.cookie, self.seconds,
                                         shared=True, desc=f"fastsnap {self.host} pid {os.getpid()}"):
                if time.monotonic() > deadline:
                    raise FastsnapError(f"the lease of host {self.host} is held exclusively; is another "
                                        f"fastsnap using [DEFAULT] host = {self.host}?")
                time.sleep(0.1)
            self._renewed = time.monotonic()
            self._thread = threading.Thread(target=self._renew, name="fastsnap-lease", daemon=True)
            self._thread.start()

    def _renew(self) -> None:
        try:  # who held a lease, for the cluster's view: off the snapshot's path
            self._objects.set(HOSTS, {self.host: HostRecord(time.time(), self.seconds, os.getpid()).to_json()})
        except FastsnapError as exc:
            LOG.warning("recording host %s in %s failed: %s", self.host, HOSTS, exc)
        while not self._done.wait(self.seconds / 3):
            try:
                self._objects.lock(host_object(self.host), LEASE_LOCK, self.cookie, self.seconds, shared=True,
                                   renew=True, desc=f"fastsnap {self.host} pid {os.getpid()}")
                self._renewed = time.monotonic()
            except FastsnapError as exc:
                LOG.warning("renewing the lease of host %s failed: %s", self.host, exc)

    def check(self) -> None:
        """Raise LeaseLapsed unless the lease was renewed within its time (a step must not act once another
        host may have taken the operation over)."""
        taking = self._taking
        if taking is not None and self._thread is None:
            taking.join()
            if self._taking_error is not None:
                error, self._taking_error, self._taking = self._taking_error, None, None
                raise error
        if self._thread is None:
            self.hold()
        elif time.monotonic() - self._renewed > self.seconds:
            raise LeaseLapsed(f"the lease of host {self.host} was not renewed for {self.seconds} s "
                              f"([journal] lease_seconds): another host may be recovering its operations")

    def release(self) -> None:
        taking = self._taking
        if taking is not None:  # a take in flight uses the connection about to close: let it end first
            taking.join()
        with self._lock:
            if self._thread is None:
                return
            self._done.set()
            self._thread.join()
            self._thread = None
            try:
                self._objects.unlock(host_object(self.host), LEASE_LOCK, self.cookie)
            except FastsnapError as exc:
                LOG.warning("releasing the lease of host %s: %s (it lapses on its own)", self.host, exc)


class RadosOperations:
    """The operations of the journal, in RADOS (layout: this module's docstring). Thread-safe."""

    def __init__(self, objects: Callable[[], Objects], host: str, lease_seconds: int) -> None:
        self._factory = objects
        self._objects: Objects | None = None
        self._pid = os.getpid()
        self.host = host
        self.lease_seconds = lease_seconds
        self._lease: Lease | None = None
        self._guard = threading.Lock()
        self._indexed: dict[str, Entry] = {}   # the directory entries this process wrote for running operations

    @property
    def objects(self) -> Objects:
        with self._guard:
            if self._objects is None or self._pid != os.getpid():  # a forked child opens its own
                self._objects, self._pid, self._lease = self._factory(), os.getpid(), None
            return self._objects

    @property
    def lease(self) -> Lease:
        objects = self.objects
        with self._guard:
            if self._lease is None:
                self._lease = Lease(objects, self.host, self.lease_seconds)
            return self._lease

    def close(self) -> None:
        with self._guard:
            lease, objects = self._lease, self._objects
            self._lease = self._objects = None
        if lease is not None and self._pid == os.getpid():
            lease.release()
        if objects is not None:
            objects.close()

    # -- records ---------------------------------------------------------------------------------------

    def _read(self, op_id: str) -> tuple[Operation, str] | None:
        got = self.objects.get(op_object(op_id), (RECORD,))
        if not got or RECORD not in got:
            return None
        return Operation.from_record(json.loads(got[RECORD])), got[RECORD]

    def _index(self, op: Operation, force: bool = True) -> None:
        entry = Entry.of(op)
        # A save whose entry says nothing new (but the time) writes only the record: one write, not two.
        seen = self._indexed.get(op.op_id)
        if not force and seen is not None and seen == dataclasses.replace(entry, updated_at=seen.updated_at):
            return
        self.objects.set(DIRECTORY, {op.op_id: json.dumps(entry.to_dict(), sort_keys=True)})
        with self._guard:
            if entry.state == OpState.RUNNING:
                self._indexed[op.op_id] = entry
            else:
                self._indexed.pop(op.op_id, None)

    def entries(self) -> builtins.list[Entry]:
        """The directory: every operation's entry, without reading the records."""
        return [Entry.from_dict(k, json.loads(v)) for k, v in self.objects.items(DIRECTORY).items()]

    def save(self, op: Operation, index: bool = True) -> None:
        op.updated_at = time.time()
        self.objects.set(op_object(op.op_id), {RECORD: json.dumps(op.to_record(), sort_keys=True)})
        if index:
            self._index(op, force=False)

    def reserve(self, op: Operation) -> None:
        """Reserve ``op.op_id`` for ``op`` across the cluster: succeeds only when no operation holds the id, or
        the one that did was rolled back completely. Raises Reserved naming the holder (and its host)."""
        self.lease.check()
        op.host = self.host
        held: tuple[Operation, str] | None = None
        for attempt in range(20):
            op.updated_at = time.time()
            text = json.dumps(op.to_record(), sort_keys=True)
            if attempt > 0:
                held = self._read(op.op_id)
            if held is None:  # the common case, first: one exclusive create, no read before it
                won = self.objects.create(op_object(op.op_id), {RECORD: text})
                if not won and attempt == 0:
                    continue  # there is a record: read it, then decide
            else:
                holder, raw = held
                if holder.state not in REUSABLE:
                    raise Reserved(f"image {holder.op_id} is reserved by an operation that is {holder.state} "
                                   f"(host {holder.host})")
                won = self.objects.cas(op_object(op.op_id), RECORD, raw, {RECORD: text})
            if won:
                self._index(op)
                return
        raise Reserved(f"image {op.op_id}: the journal record kept changing while reserving it")

    def begin_check(self) -> None:
        """Before a step acts: this host's lease still holds."""
        self.lease.check()

    def prepare(self) -> None:
        """A snapshot is coming: start taking this process's lease share now (in the background). A journal out of
        reach is reported by the reservation, before anything is created."""
        try:
            self.lease.take_soon()
        except FastsnapError as exc:
            LOG.debug("the journal cannot be reached yet: %s", exc)

    def get(self, op_id: str) -> Operation | None:
        held = self._read(op_id)
        return held[0] if held else None

    def list(self, state: OpState | None = None) -> list[Operation]:
        """Operations (optionally in ``state``), oldest change first: the directory's candidates, each read from
        its record (a directory entry that lags is repaired)."""
        out = []
        for entry in self.entries():
            if state is not None and entry.state != state and entry.state != OpState.RUNNING:
                continue  # a running entry may lag a finish: read its record
            op = self.get(entry.op_id)
            if op is None:
                continue
            if op.state != entry.state:
                self._index(op)
            if state is None or op.state == state:
                out.append(op)
        return sorted(out, key=lambda o: o.updated_at)

    def import_record(self, op: Operation) -> bool:
        """Carry an operation over from an older journal: create its record unless one exists (then it was
        carried already, or the id is held). Returns whether it was created."""
        created = self.objects.create(op_object(op.op_id), {RECORD: json.dumps(op.to_record(), sort_keys=True)})
        if created:
            self._index(op)
        return created

    def mark_migrated(self, host: str, op_ids: builtins.list[str]) -> None:
        self.objects.set(MIGRATED, {host: MigrationRecord(time.time(), list(op_ids)).to_json()})

    def migrated(self) -> dict[str, MigrationRecord]:
        return {h: MigrationRecord.from_json(v) for h, v in self.objects.items(MIGRATED).items()}

    # -- hosts and claims --------------------------------------------------------------------------------

    def lease_alive(self, host: str) -> bool:
        """Whether any fastsnap process of ``host`` holds its lease now."""
        if host == self.host and self._lease is not None and self._lease._thread is not None:
            return True
        return self.objects.lockers(host_object(host), LEASE_LOCK) > 0

    def hosts(self) -> builtins.list[HostView]:
        out = []
        for host, raw in sorted(self.objects.items(HOSTS).items()):
            seen = HostRecord.seen_at_of(raw)
            out.append(HostView(host, self.lease_alive(host), seen))
        return out

    @contextmanager
    def claim(self, op_id: str) -> Iterator[bool]:
        """The operation's cluster-wide claim, held while a recover acts on it (False: another holds it)."""
        with self.objects.claim(f"op.{op_id}", f"{self.host}:{os.getpid()}", CLAIM_SECONDS) as won:
            yield won
