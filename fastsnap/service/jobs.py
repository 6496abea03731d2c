"""Snapshot jobs of the REST service: persisted beside the journal, run on a bounded thread pool."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from oslo_log import log as logging

from fastsnap import journal as jr
from fastsnap.errors import FastsnapError

LOG = logging.getLogger(__name__)

PLANNING, RUNNING, REGISTERING, DONE, FAILED, CANCELLED = (
    "planning", "running", "registering", "done", "failed", "cancelled")
ACTIVE_STATES = (PLANNING, RUNNING, REGISTERING)
REGISTER_STEPS = ("location", "active", "flatten_queue")


class Cancelled(FastsnapError):
    kind = "cancelled"


@dataclass
class Job:
    id: str
    key: str | None
    request: dict[str, Any]
    state: str = PLANNING
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

    def view(self) -> dict[str, Any]:
        d = asdict(self)
        d["request"] = {k: v for k, v in self.request.items() if k != "user_token"}
        return d


_SCHEMA = """
create table if not exists jobs (
    id text primary key,
    key text unique,
    state text not null,
    record text not null,
    created_at real not null
);
"""


class JobStore:
    def __init__(self, journal: jr.Journal) -> None:
        self.path = journal.path
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            yield db
        finally:
            db.close()

    def insert(self, job: Job) -> Job:
        """Insert; when the idempotency key exists already, return the existing job instead."""
        with self._db() as db:
            try:
                db.execute("insert into jobs(id, key, state, record, created_at) values (?, ?, ?, ?, ?)",
                           (job.id, job.key, job.state, json.dumps(asdict(job)), job.created_at))
                return job
            except sqlite3.IntegrityError:
                row = db.execute("select record from jobs where key = ?", (job.key,)).fetchone()
        return Job(**json.loads(row[0]))

    def save(self, job: Job) -> None:
        job.updated_at = time.time()
        with self._db() as db:
            db.execute("update jobs set state = ?, record = ? where id = ?",
                       (job.state, json.dumps(asdict(job)), job.id))

    def get(self, job_id: str) -> Job | None:
        with self._db() as db:
            row = db.execute("select record from jobs where id = ?", (job_id,)).fetchone()
        return Job(**json.loads(row[0])) if row else None

    def by_key(self, key: str) -> Job | None:
        with self._db() as db:
            row = db.execute("select record from jobs where key = ?", (key,)).fetchone()
        return Job(**json.loads(row[0])) if row else None

    def list(self, state: str | None = None, limit: int = 200) -> list[Job]:
        q, args = "select record from jobs", []
        if state:
            q += " where state = ?"
            args.append(state)
        q += " order by created_at desc limit ?"
        with self._db() as db:
            rows = db.execute(q, (*args, limit)).fetchall()
        return [Job(**json.loads(r[0])) for r in rows]


class Runner:
    """Runs jobs on at most ``slots`` threads; refuses more (the caller answers 429)."""

    def __init__(self, store: JobStore, slots: int) -> None:
        self.store = store
        self.slots = slots
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="fastsnap-job")
        self._lock = threading.Lock()
        self._running: dict[str, Job] = {}
        self._cancel: set[str] = set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def try_reserve(self, job: Job) -> bool:
        with self._lock:
            if len(self._running) >= self.slots:
                return False
            self._running[job.id] = job
            return True

    def release(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.id, None)
            self._cancel.discard(job.id)

    def submit(self, job: Job, work: Callable[[Job], None]) -> None:
        def run() -> None:
            try:
                work(job)
            except Exception:  # work records its own errors; never lose the thread silently
                LOG.exception("job %s crashed", job.id)
            finally:
                self.release(job)

        self._pool.submit(run)

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            if job_id not in self._running:
                return False
            self._cancel.add(job_id)
            return True

    def cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancel

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def new_job(request: dict[str, Any], key: str | None, request_id: str | None) -> Job:
    return Job(id=str(uuid.uuid4()), key=key, request=request, request_id=request_id)
