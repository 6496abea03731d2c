"""The journal: what each snapshot operation planned and which steps it began, and the service's jobs.

A step is recorded *before* it acts, and every name a step creates is derived from the operation id (the
Glance image id), so after a crash ``recover`` knows exactly what may exist and can roll forward or back with
idempotent calls.

Operations live in RADOS beside the data (:mod:`fastsnap.rados_journal`: the layout, every key and the order of
writes), so any host of the cluster can finish, undo or report what another began. What stays local, in SQLite
(WAL) in ``[journal] state_dir``, is the REST service's ``jobs`` table: a job is one host's service's view of a
request it accepted (see :class:`Journal`). One versioned schema (``pragma user_version``) holds it and the
``operations`` table an older fastsnap kept its operations in; :meth:`Journal.migrate` carries those into RADOS
once. A job references its operation by image id; its final state is settled from the operation's.

An operation's record is typed (:class:`Operation`, whose docstring says what each field holds, who writes and
who reads it) and (de)serialised only by :meth:`Operation.to_record` / :meth:`Operation.from_record`.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.ceph import Cluster
from fastsnap.errors import Reserved
from fastsnap.operation import Entry, FlattenInfo, Operation, QuiesceInfo
from fastsnap.rados_journal import RadosOperations
from fastsnap.states import JOB_FINAL_FAILED, REUSABLE, JobState, OpState

LOG = logging.getLogger(__name__)

__all__ = ["Entry", "FlattenInfo", "Job", "Journal", "Operation", "OperationStore", "QuiesceInfo", "SqliteOperations"]


@dataclass
class Job:
    """One REST request for a snapshot. ``image_id`` references the operation (``operations.op_id``) that acts
    for it; ``project_id`` is the project it belongs to (None: fastsnap's own, on the local socket)."""

    id: str
    key: str | None
    request: dict[str, Any]
    state: JobState = JobState.PLANNING
    image_id: str | None = None
    path: str | None = None
    store: str | None = None
    reason: str | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    project_id: str | None = None
    request_id: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.state = JobState(self.state)

    @classmethod
    def load(cls, record: str) -> Job:
        data = json.loads(record)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


SCHEMA_VERSION = 2
# Version 1 (before the jobs moved into the journal): operations only; the service added its own ``jobs`` table
# with a globally unique key and no project or image columns. Version 2: one schema for both.
_OPERATIONS = """
create table if not exists operations (
    op_id text primary key,
    state text not null,
    record text not null,
    updated_at real not null
);
create index if not exists operations_state on operations(state);
"""
_JOBS = """
create table if not exists jobs (
    id text primary key,
    key text,
    project text not null default '',
    image_id text,
    state text not null,
    record text not null,
    created_at real not null
);
create unique index if not exists jobs_key on jobs(project, key) where key is not null;
create index if not exists jobs_image on jobs(image_id);
create index if not exists jobs_state on jobs(state);
"""


class Schema:
    """Creates or migrates the journal database to :data:`SCHEMA_VERSION` (in one immediate transaction, so
    processes opening it at once migrate it once)."""

    @staticmethod
    def ensure(db: sqlite3.Connection) -> None:
        if db.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        db.execute("begin immediate")
        try:
            version = db.execute("pragma user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"journal schema {version} is newer than this fastsnap ({SCHEMA_VERSION})")
            if version < SCHEMA_VERSION:
                Schema._run(db, _OPERATIONS)  # idempotent
                cols = [r[1] for r in db.execute("pragma table_info(jobs)").fetchall()]
                if cols and "project" not in cols:  # the service's old table: carry its jobs over
                    db.execute("alter table jobs rename to jobs_v1")
                    Schema._create_jobs(db)
                    for jid, rec, created in db.execute(
                            "select id, record, created_at from jobs_v1").fetchall():
                        job = Job.load(rec)
                        db.execute("insert into jobs(id, key, project, image_id, state, record, created_at) "
                                   "values (?, ?, ?, ?, ?, ?, ?)",
                                   (jid, job.key, job.project_id or "", job.image_id, job.state, job.dump(),
                                    created))
                    db.execute("drop table jobs_v1")
                else:
                    Schema._create_jobs(db)
                db.execute(f"pragma user_version = {SCHEMA_VERSION}")
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise

    @staticmethod
    def _run(db: sqlite3.Connection, script: str) -> None:
        # statement by statement: executescript would commit the open transaction
        for stmt in script.split(";"):
            if stmt.strip():
                db.execute(stmt)

    @staticmethod
    def _create_jobs(db: sqlite3.Connection) -> None:
        Schema._run(db, _JOBS)


class Journal:
    """Operations (in RADOS, :mod:`fastsnap.rados_journal`, through :meth:`from_conf`) and the REST service's jobs
    (SQLite in ``state_dir``: a job is the view of one host's service on a request it accepted; its id, its
    progress and its result are that service's to serve, and everything recover needs is in the operation).

    ``Journal(state_dir)`` alone keeps the operations in the same SQLite file as an older fastsnap did: the
    source of the migration, and a store for unit tests of pure logic. A production fastsnap uses
    :meth:`from_conf`."""

    def __init__(self, state_dir: str, operations: OperationStore | None = None) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)  # trust ids, who each snapshot was for: fastsnap's only
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "journal.sqlite")
        self._local = threading.local()
        with self._db() as db:
            Schema.ensure(db)
        self.ops: OperationStore = operations or SqliteOperations(self)
        self._own: list[Any] = []   # a Ceph connection of the journal's own (from_conf without a cluster)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, cluster: Any = None) -> Journal:
        """The journal of this host: operations in RADOS (``[journal] pool``/``namespace``, through ``cluster()``,
        a callable returning the :class:`fastsnap.ceph.Cluster` to use, or a connection of its own), jobs in
        ``[journal] state_dir``. An older fastsnap's SQLite operations found there are carried into RADOS first,
        once (:meth:`migrate`)."""
        pool = conf.journal.pool or conf.libvirt.images_rbd_pool
        own: list[Cluster] = []

        def objects() -> Any:
            if cluster is not None:
                return cluster().objects(pool, conf.journal.namespace)
            if not own:
                own.append(Cluster.from_conf(conf))
            return own[0].objects(pool, conf.journal.namespace)

        ops = RadosOperations(objects, conf.host, conf.journal.lease_seconds)
        journal = cls(conf.journal.state_dir, ops)
        journal._own = own
        journal.migrate()
        return journal

    def close(self) -> None:
        """Release this process's lease and the journal's own Ceph connection, if any."""
        close = getattr(self.ops, "close", None)
        if close is not None:
            close()
        for c in self._own:
            c.close()
        self._own.clear()

    def migrate(self) -> list[str]:
        """Carry the operations of an older fastsnap's SQLite journal (this host's) into RADOS, exactly once: in
        one immediate SQLite transaction (processes of the host starting together migrate once), each record is
        created in RADOS only if no record of its id exists (a migration cut short by a crash and run again
        skips what it carried), marked as carried (``fastsnap.migrated``), then deleted from SQLite. Returns the
        ids carried now. The jobs stay where they are."""
        ops = self.ops
        if not isinstance(ops, RadosOperations):
            return []
        with self._db() as db:
            if not db.execute("select 1 from operations limit 1").fetchone():
                return []
            db.execute("begin immediate")
            try:
                rows = db.execute("select op_id, record from operations order by updated_at").fetchall()
                carried = []
                for op_id, rec in rows:
                    op = Operation.from_record(json.loads(rec))
                    op.host = ops.host  # this host's journal: its lease now covers them
                    if ops.import_record(op):
                        carried.append(op_id)
                ops.mark_migrated(ops.host, [r[0] for r in rows])
                db.execute("delete from operations")
                db.execute("commit")
            except BaseException:
                db.execute("rollback")
                raise
        LOG.info("carried %d operations of the SQLite journal %s into RADOS (%d were there already)",
                 len(carried), self.path, len(rows) - len(carried))
        return carried

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, kept open for the journal's life: opening one per write (and closing it,
        which checkpoints the WAL when it was the last) cost more than the write. A connection is never used
        across a fork (a child opens its own) and is dropped after an error, in case the error was the
        connection's."""
        local = self._local
        db: sqlite3.Connection | None = getattr(local, "db", None)
        if db is None or getattr(local, "pid", None) != os.getpid():
            db = self._connect()
            local.db, local.pid = db, os.getpid()
        try:
            yield db
        except sqlite3.Error:
            local.db = None
            with contextlib.suppress(sqlite3.Error):
                db.close()
            raise

    def _connect(self, timeout: float = 30) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        deadline = time.monotonic() + timeout
        while True:
            try:
                db.execute("pragma journal_mode=wal")
                break
            except sqlite3.OperationalError as exc:
                # Turning a database (one from an older fastsnap) to WAL needs it alone for a moment, and SQLite
                # answers "locked" at once instead of waiting (no busy handler): processes opening it together
                # try again. A WAL database stays WAL: the pragma then takes no lock.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.01)
        db.execute("pragma synchronous=full")
        return db

    # -- operations (the store: RADOS, or SQLite for the migration and unit tests) ---------------------

    def save(self, op: Operation) -> None:
        self.ops.save(op)

    def reserve(self, op: Operation) -> None:
        """Reserve ``op.op_id`` for ``op`` (ceph-csi's "reserve, then act"). Atomic: succeeds only when no
        operation holds the id, or the one that did was rolled back completely. Raises
        :class:`~fastsnap.errors.Reserved` naming the holder otherwise, so a second request for the same image can
        never act on (or undo) the first one's work."""
        self.ops.reserve(op)

    def begin(self, op: Operation, step: str, *then: str) -> None:
        """Record that ``step`` is about to act (durably, before it does), with the steps ``then`` that follow it
        at once: one write for a whole phase. A step recorded but cut short before it acted is what a crash
        leaves anyway, so undo and roll forward never trust ``steps`` alone: they ask Ceph and Glance what exists
        (:func:`fastsnap.paths.roll_back`). Each call checks this host's lease, written or not."""
        self.ops.begin_check()
        new = [s for s in (step, *then) if s not in op.steps]
        if new:
            op.steps.extend(new)
            self.ops.save(op, index=False)

    def finish(self, op: Operation, state: OpState, error: str | None = None) -> None:
        op.state = state
        op.error = error
        self.save(op)

    def get(self, op_id: str) -> Operation | None:
        return self.ops.get(op_id)

    def list(self, state: OpState | None = None) -> builtins.list[Operation]:
        return self.ops.list(state)

    def entries(self) -> builtins.list[Entry]:
        """Every operation's directory entry (:class:`Entry`), without reading the records."""
        return self.ops.entries()

    # -- jobs of the REST service -------------------------------------------------------------------------

    def insert_job(self, job: Job) -> Job:
        """Insert a job, atomically. Returns the job already standing for the same request instead when there
        is one: the same ``(project, key)``, or a job for the same image id that did not fail (one image id,
        one operation: a second job must never act on it)."""
        with self._db() as db:
            db.execute("begin immediate")
            try:
                row = None
                if job.key is not None:
                    row = db.execute("select record from jobs where project = ? and key = ?",
                                     (job.project_id or "", job.key)).fetchone()
                if row is None and job.image_id is not None:
                    row = db.execute(
                        "select record from jobs where image_id = ? and state not in (?, ?) "
                        "order by created_at desc limit 1", (job.image_id, *JOB_FINAL_FAILED)).fetchone()
                if row is not None:
                    db.execute("rollback")
                    return Job.load(row[0])
                db.execute("insert into jobs(id, key, project, image_id, state, record, created_at) "
                           "values (?, ?, ?, ?, ?, ?, ?)",
                           (job.id, job.key, job.project_id or "", job.image_id, job.state, job.dump(),
                            job.created_at))
                db.execute("commit")
                return job
            except BaseException:
                if db.in_transaction:
                    db.execute("rollback")
                raise

    def save_job(self, job: Job) -> None:
        job.updated_at = time.time()
        with self._db() as db:
            db.execute("update jobs set state = ?, image_id = ?, record = ? where id = ?",
                       (job.state, job.image_id, job.dump(), job.id))

    def get_job(self, job_id: str) -> Job | None:
        with self._db() as db:
            row = db.execute("select record from jobs where id = ?", (job_id,)).fetchone()
        return Job.load(row[0]) if row else None

    def job_by_key(self, project: str | None, key: str) -> Job | None:
        with self._db() as db:
            row = db.execute("select record from jobs where project = ? and key = ?",
                             (project or "", key)).fetchone()
        return Job.load(row[0]) if row else None

    def job_for_image(self, image_id: str) -> Job | None:
        """The newest job for an image id that did not fail (failed ones left the image id free again)."""
        with self._db() as db:
            row = db.execute("select record from jobs where image_id = ? and state not in (?, ?) "
                             "order by created_at desc limit 1", (image_id, *JOB_FINAL_FAILED)).fetchone()
        return Job.load(row[0]) if row else None

    def list_jobs(self, state: JobState | str | None = None, project: str | None = None, all_projects: bool = True,
                  limit: int = 200) -> builtins.list[Job]:
        """Jobs, newest first; only ``project``'s (None: fastsnap's own) unless ``all_projects``."""
        q, args = "select record from jobs where 1 = 1", []
        if state:
            q += " and state = ?"
            args.append(state)
        if not all_projects:
            q += " and project = ?"
            args.append(project or "")
        q += " order by created_at desc limit ?"
        with self._db() as db:
            rows = db.execute(q, (*args, limit)).fetchall()
        return [Job.load(r[0]) for r in rows]


class OperationStore(Protocol):
    """Where the operations live: :class:`fastsnap.rados_journal.RadosOperations`, or SQLite."""

    host: str

    def save(self, op: Operation, index: bool = True) -> None: ...
    def reserve(self, op: Operation) -> None: ...
    def begin_check(self) -> None: ...
    def prepare(self) -> None: ...
    def get(self, op_id: str) -> Operation | None: ...
    def list(self, state: OpState | None = None) -> builtins.list[Operation]: ...
    def entries(self) -> builtins.list[Entry]: ...
    def lease_alive(self, host: str) -> bool: ...
    def claim(self, op_id: str) -> contextlib.AbstractContextManager[bool]: ...


class SqliteOperations:
    """The operations in the journal's SQLite file, as an older fastsnap kept them (one host only): the source
    of :meth:`Journal.migrate`, and a store for unit tests of pure logic."""

    def __init__(self, journal: Journal) -> None:
        self._j = journal
        self.host = socket.gethostname()

    def save(self, op: Operation, index: bool = True) -> None:
        op.updated_at = time.time()
        rec = json.dumps(op.to_record(), sort_keys=True)
        with self._j._db() as db:
            db.execute("insert into operations(op_id, state, record, updated_at) values (?, ?, ?, ?) "
                       "on conflict(op_id) do update set state=excluded.state, record=excluded.record, "
                       "updated_at=excluded.updated_at", (op.op_id, op.state, rec, op.updated_at))

    def reserve(self, op: Operation) -> None:
        op.updated_at = time.time()
        rec = json.dumps(op.to_record(), sort_keys=True)
        with self._j._db() as db:
            db.execute("begin immediate")
            try:
                row = db.execute("select record from operations where op_id = ?", (op.op_id,)).fetchone()
                if row is not None:
                    held = Operation.from_record(json.loads(row[0]))
                    if held.state not in REUSABLE:
                        raise Reserved(f"image {held.op_id} is reserved by an operation that is {held.state}")
                    db.execute("delete from operations where op_id = ?", (op.op_id,))
                db.execute("insert into operations(op_id, state, record, updated_at) values (?, ?, ?, ?)",
                           (op.op_id, op.state, rec, op.updated_at))
                db.execute("commit")
            except BaseException:
                db.execute("rollback")
                raise

    def begin_check(self) -> None:
        return None

    def prepare(self) -> None:
        return None

    def get(self, op_id: str) -> Operation | None:
        with self._j._db() as db:
            row = db.execute("select record from operations where op_id = ?", (op_id,)).fetchone()
        return Operation.from_record(json.loads(row[0])) if row else None

    def list(self, state: OpState | None = None) -> builtins.list[Operation]:
        with self._j._db() as db:
            if state:
                rows = db.execute("select record from operations where state = ? order by updated_at",
                                  (state,)).fetchall()
            else:
                rows = db.execute("select record from operations order by updated_at").fetchall()
        return [Operation.from_record(json.loads(r[0])) for r in rows]

    def entries(self) -> builtins.list[Entry]:
        return [Entry.of(op) for op in self.list()]

    def lease_alive(self, host: str) -> bool:
        return host != self.host  # one host only: never touch another's

    @contextmanager
    def claim(self, op_id: str) -> Iterator[bool]:
        yield True  # the host-local operation lock is the only one
