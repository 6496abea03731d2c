"""The journal: what each snapshot operation planned and which steps it began, and the service's jobs.

A step is recorded *before* it acts, and every name a step creates is derived from the operation id (the
Glance image id), so after a crash ``recover`` knows exactly what may exist and can roll forward or back with
idempotent calls. Embedded SQLite (WAL) in ``[journal] state_dir``; safe for several processes on one host.

One versioned schema (``pragma user_version``) holds both tables: ``operations`` (one per image id, written by
the CLI, the Python API and the service alike) and ``jobs`` (REST requests). A job references its operation by
image id; its final state is settled from the operation's. Older databases are migrated when opened.

An operation's record is typed (:class:`Operation`, whose docstring says what each field holds, who writes and
who reads it) and (de)serialised only by :meth:`Operation.to_record` / :meth:`Operation.from_record`.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.errors import Reserved
from fastsnap.states import JOB_FINAL_FAILED, REUSABLE, FlattenPolicy, FlattenState, JobState, OpState

LOG = logging.getLogger(__name__)


@dataclass
class FlattenInfo:
    """A clone-path snapshot's flatten, as journaled in the operation (:attr:`Operation.flatten`) and reported."""

    policy: FlattenPolicy
    why: str
    depth: int = 0
    state: FlattenState | None = None   # None until the policy acted
    task: str | None = None             # the Ceph mgr's task id
    error: str | None = None            # why the mgr could not take it / why it could not be checked

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> FlattenInfo | None:
        if not raw or "policy" not in raw:
            return None
        state = raw.get("state")
        return cls(policy=FlattenPolicy(raw["policy"]), why=str(raw.get("why", "")), depth=int(raw.get("depth", 0)),
                   state=FlattenState(state) if state else None, task=raw.get("task") or None,
                   error=raw.get("error"))

    def to_dict(self) -> dict[str, Any]:
        """As journaled: keys without a value are left out."""
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "task" and v == "")}


@dataclass
class QuiesceInfo:
    """The guest freeze around the disk snapshot, as journaled (:attr:`Operation.quiesce`)."""

    domain: str | None   # the libvirt domain
    uri: str | None      # the libvirt URI of its hypervisor
    frozen: bool         # True from just before the freeze until the thaw (or recover's thaw)

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> QuiesceInfo | None:
        if not raw:
            return None
        domain, uri = raw.get("domain"), raw.get("uri")
        return cls(domain=None if domain is None else str(domain), uri=None if uri is None else str(uri),
                   frozen=bool(raw.get("frozen")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Operation:
    """One snapshot operation: the journal record of what it planned and which steps it began.

    One record per Glance image id (``op_id``). :meth:`to_record` and :meth:`from_record` are the only
    (de)serialisation: a store keeps the dict ``to_record`` returns (the SQLite journal as JSON in
    ``operations.record``) and gives it back to ``from_record``. Records of older fastsnaps, which kept the
    fields listed below from ``reason`` on in a free-form ``extra`` dict, still load (see :meth:`from_record`).

    Fields (what it holds; written by → read by). "api" is :meth:`fastsnap.api.Fastsnap._snapshot`, which builds
    the operation after planning; ``reserve`` journals it before the first step acts.

    Identity and plan (api; never change afterwards):
      op_id                 the Glance image id; names the disk's temporary snapshot ``<disk>@fastsnap-<op_id>``
                            and the clone / target image ``<pool>/<op_id>`` → every reader
      disk                  ``pool/image`` of the instance disk → workflow (roll back / forward), parked (its
                            pool), routes (a second request for the image must name the same disk), results
      path                  clone | stream | delta | copy → workflow, crosscluster, recover, parked (clone only),
                            results, routes (adopted job)
      store                 the Glance store id → api (store cache invalidation), results, routes
      pool, fsid            the target pool and its cluster (None on the stream path) → workflow, crosscluster,
                            flatten, parked, results (the location URL)
      image_created         fastsnap created the Glance image (else it was given, e.g. by nova-api) → roll back
      delete_image_on_error the image is deleted by a roll back even when it was given → roll back

    Progress (the journal itself):
      state                 OpState: ``running`` from ``reserve``; ``finish`` sets done / failed / rolled_back →
                            ``reserve`` (only a REUSABLE holder gives the id up), recover (running ones),
                            flatten (done ones), service (job state), routes
      steps                 the steps begun, in order; ``begin`` records one before it acts → roll back / forward
      error                 why it failed (``finish``) → service (the job's error message)
      pid, host             the process that built it (diagnostics only)
      created_at, updated_at  seconds since the epoch; ``save`` / ``reserve`` stamp updated_at → ``list`` order

    What the steps need and report (api unless said; a default means "not recorded"):
      reason: str = ""      the plan's reason → results (SnapshotResult.reason), routes (adopted job's reason)
      acting_as: dict|None  who it is for, ``auth.Identity.to_dict()``: {"mode": "user"|"operator", "user_id",
                            "project_id", "roles"} → recover (a user's operation without a trust: warn),
                            routes (``project_id``: whether the caller may see the image), results
      size: int = 0         the disk's size in bytes at planning → crosscluster (target image size), results
      base_location: str|None  delta path: the ``rbd://`` URL of the base image's copy on the target cluster →
                            crosscluster (the target image's parent)
      check_bytes_read: int = 0  delta path: bytes read while planning to check the base copy → crosscluster
                            (TransferStats, so results' ``transfer``)
      disk_id: str|None     clone path: the disk's RBD image id → parked (a trashed disk is fastsnap's to purge
                            only when its id is one an operation recorded)
      flatten: FlattenInfo|None  clone path: api (policy, why, depth); workflow (sync: state done; background:
                            ``queue_flatten`` sets task, state queued/local, error); flatten.status (state done /
                            gone / queued / local, error) → api (the policy to run), workflow.roll_forward
                            (queue a background flatten that never acted), flatten.status, results
      quiesce: QuiesceInfo|None  workflow (``_snapshot_disk``: frozen=True just before the freeze, False after
                            the thaw) → recover (``thaw_left`` thaws a guest a killed process left frozen, then
                            records frozen=False)
      location_api: str|None  "v2.17" | "patch", the Glance API the location step used (workflow ``_register``)
                            → the active step (how to wait for the image)
      transfer: dict|None   delta / copy paths: ``TransferStats.to_dict()`` after the write (crosscluster) →
                            api (bytes_streamed, bytes_read and ``transfer`` of the result)
      trust_id: str|None    the Keystone trust for a user's operation, created before ``reserve``; None again
                            once ``Fastsnap.drop_trust`` deleted it (operation settled) → recover (acts through it)
      trust_error: str|None  why that trust could not be created → recover (the warning)
      result: dict|None     ``SnapshotResult.to_dict()`` of the finished snapshot, just before ``finish(done)``
                            → results (``SnapshotResult.of``: a repeated request, the service settling a job of
                            a CLI operation); absent after a roll forward, then rebuilt from the fields above
    """

    op_id: str
    disk: str
    path: str
    store: str
    pool: str | None
    fsid: str | None
    image_created: bool
    delete_image_on_error: bool
    state: OpState = OpState.RUNNING
    steps: list[str] = field(default_factory=list)
    error: str | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    reason: str = ""
    acting_as: dict[str, Any] | None = None
    size: int = 0
    base_location: str | None = None
    check_bytes_read: int = 0
    disk_id: str | None = None
    flatten: FlattenInfo | None = None
    quiesce: QuiesceInfo | None = None
    location_api: str | None = None
    transfer: dict[str, int] | None = None
    trust_id: str | None = None
    trust_error: str | None = None
    result: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.state = OpState(self.state)

    def began(self, step: str) -> bool:
        return step in self.steps

    def to_record(self) -> dict[str, Any]:
        """The journal record: a JSON-safe dict of every field, sharing nothing mutable with the operation."""
        return {
            "op_id": self.op_id, "disk": self.disk, "path": self.path, "store": self.store, "pool": self.pool,
            "fsid": self.fsid, "image_created": self.image_created,
            "delete_image_on_error": self.delete_image_on_error, "state": self.state.value,
            "steps": [str(s) for s in self.steps], "error": self.error, "pid": self.pid, "host": self.host,
            "created_at": self.created_at, "updated_at": self.updated_at, "reason": self.reason,
            "acting_as": copy.deepcopy(self.acting_as), "size": self.size, "base_location": self.base_location,
            "check_bytes_read": self.check_bytes_read, "disk_id": self.disk_id,
            "flatten": self.flatten.to_dict() if self.flatten else None,
            "quiesce": self.quiesce.to_dict() if self.quiesce else None,
            "location_api": self.location_api, "transfer": copy.deepcopy(self.transfer),
            "trust_id": self.trust_id, "trust_error": self.trust_error, "result": copy.deepcopy(self.result),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Operation:
        """The operation a journal record holds (one :meth:`to_record` wrote, or an older fastsnap's).

        Unknown top-level keys (a newer fastsnap's) are ignored. An older record's ``extra`` dict is read into
        the fields of the same names (a top-level key of the same name wins); a key in it that names no field
        is dropped with a warning: no fastsnap wrote one. Raises ValueError when a field that has no default is
        missing."""
        raw = copy.deepcopy(dict(record))
        extra = raw.pop("extra", None) or {}
        for key, value in extra.items():
            if key in _FROM_EXTRA:
                raw.setdefault(key, value)
            else:
                LOG.warning("journal record %s: dropping unknown extra key %r", raw.get("op_id"), key)
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise ValueError(f"journal record {raw.get('op_id')}: no {', '.join(missing)}")
        transfer, acting_as, result = raw.get("transfer"), raw.get("acting_as"), raw.get("result")
        return cls(
            op_id=str(raw["op_id"]), disk=str(raw["disk"]), path=str(raw["path"]), store=str(raw["store"]),
            pool=_opt_str(raw["pool"]), fsid=_opt_str(raw["fsid"]), image_created=bool(raw["image_created"]),
            delete_image_on_error=bool(raw["delete_image_on_error"]),
            state=OpState(raw.get("state", OpState.RUNNING)), steps=[str(s) for s in raw.get("steps") or []],
            error=_opt_str(raw.get("error")), pid=int(raw.get("pid", 0)), host=str(raw.get("host", "")),
            created_at=float(raw.get("created_at", 0.0)),
            updated_at=float(raw.get("updated_at", raw.get("created_at", 0.0))),
            reason=str(raw.get("reason") or ""), acting_as=None if acting_as is None else dict(acting_as),
            size=int(raw.get("size") or 0), base_location=_opt_str(raw.get("base_location")),
            check_bytes_read=int(raw.get("check_bytes_read") or 0), disk_id=_opt_str(raw.get("disk_id")),
            flatten=FlattenInfo.of(raw.get("flatten")), quiesce=QuiesceInfo.of(raw.get("quiesce")),
            location_api=_opt_str(raw.get("location_api")),
            transfer=None if transfer is None else {str(k): int(v) for k, v in transfer.items()},
            trust_id=_opt_str(raw.get("trust_id")), trust_error=_opt_str(raw.get("trust_error")),
            result=None if result is None else dict(result))


_REQUIRED = ("op_id", "disk", "path", "store", "pool", "fsid", "image_created", "delete_image_on_error")
# The fields an older fastsnap's record kept in its ``extra`` dict (under the same names).
_FROM_EXTRA = frozenset({"reason", "acting_as", "size", "base_location", "check_bytes_read", "disk_id", "flatten",
                         "quiesce", "location_api", "transfer", "trust_id", "trust_error", "result"})


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


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
    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)  # trust ids, who each snapshot was for: fastsnap's only
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "journal.sqlite")
        self._local = threading.local()
        with self._db() as db:
            Schema.ensure(db)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Journal:
        return cls(conf.journal.state_dir)

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

    def save(self, op: Operation) -> None:
        op.updated_at = time.time()
        rec = json.dumps(op.to_record(), sort_keys=True)
        with self._db() as db:
            db.execute("insert into operations(op_id, state, record, updated_at) values (?, ?, ?, ?) "
                       "on conflict(op_id) do update set state=excluded.state, record=excluded.record, "
                       "updated_at=excluded.updated_at", (op.op_id, op.state, rec, op.updated_at))

    def reserve(self, op: Operation) -> None:
        """Reserve ``op.op_id`` for ``op`` (ceph-csi's "reserve, then act"). Atomic: succeeds only when no
        operation holds the id, or the one that did was rolled back completely. Raises
        :class:`~fastsnap.errors.Reserved` naming the holder otherwise, so a second request for the same image can
        never act on (or undo) the first one's work."""
        op.updated_at = time.time()
        rec = json.dumps(op.to_record(), sort_keys=True)
        with self._db() as db:
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

    def begin(self, op: Operation, step: str) -> None:
        """Record that ``step`` is about to act (durably, before it does)."""
        if step not in op.steps:
            op.steps.append(step)
            self.save(op)

    def finish(self, op: Operation, state: OpState, error: str | None = None) -> None:
        op.state = state
        op.error = error
        self.save(op)

    def get(self, op_id: str) -> Operation | None:
        with self._db() as db:
            row = db.execute("select record from operations where op_id = ?", (op_id,)).fetchone()
        return Operation.from_record(json.loads(row[0])) if row else None

    def list(self, state: OpState | None = None) -> list[Operation]:
        with self._db() as db:
            if state:
                rows = db.execute("select record from operations where state = ? order by updated_at",
                                  (state,)).fetchall()
            else:
                rows = db.execute("select record from operations order by updated_at").fetchall()
        return [Operation.from_record(json.loads(r[0])) for r in rows]

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
