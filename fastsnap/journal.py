"""The operation journal: what each snapshot operation planned and which steps it began.

A step is recorded *before* it acts, and every name a step creates is derived from the operation id (the
Glance image id), so after a crash ``recover`` knows exactly what may exist and can roll forward or back with
idempotent calls. Embedded SQLite (WAL) in ``[journal] state_dir``; safe for several processes on one host.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg

journal_opts = [
    cfg.StrOpt("state_dir", default="/var/lib/fastsnap",
               help="Directory of fastsnap's journal (SQLite) and lock files. Must be local to the host."),
]

RUNNING = "running"
DONE = "done"
FAILED = "failed"          # rolled back after an error
ROLLED_BACK = "rolled_back"  # rolled back by recover
# States in which an image id may be reserved again: everything the earlier attempt made was undone.
REUSABLE = (FAILED, ROLLED_BACK)


class Reserved(Exception):
    """The image id is reserved by another operation (running, or done: its result must not be touched)."""

    def __init__(self, existing: Operation) -> None:
        super().__init__(f"image {existing.op_id} is reserved by an operation that is {existing.state}")
        self.existing = existing


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(journal_opts, group="journal")


@dataclass
class Operation:
    op_id: str                      # the Glance image id; also names the RBD clone and temporary snapshot
    disk: str                       # pool/image of the instance disk
    path: str                       # clone | stream
    store: str
    pool: str | None
    fsid: str | None
    image_created: bool             # fastsnap created the Glance image (else it was given, e.g. by nova-api)
    delete_image_on_error: bool
    state: str = RUNNING
    steps: list[str] = field(default_factory=list)
    error: str | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def began(self, step: str) -> bool:
        return step in self.steps


_SCHEMA = """
create table if not exists operations (
    op_id text primary key,
    state text not null,
    record text not null,
    updated_at real not null
);
create index if not exists operations_state on operations(state);
"""


class Journal:
    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "journal.sqlite")
        with self._db() as db:
            db.executescript(_SCHEMA)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Journal:
        return cls(conf.journal.state_dir)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=full")
            yield db
        finally:
            db.close()

    def save(self, op: Operation) -> None:
        op.updated_at = time.time()
        rec = json.dumps(op.__dict__, sort_keys=True)
        with self._db() as db:
            db.execute("insert into operations(op_id, state, record, updated_at) values (?, ?, ?, ?) "
                       "on conflict(op_id) do update set state=excluded.state, record=excluded.record, "
                       "updated_at=excluded.updated_at", (op.op_id, op.state, rec, op.updated_at))

    def reserve(self, op: Operation) -> None:
        """Reserve ``op.op_id`` for ``op`` (ceph-csi's "reserve, then act"). Atomic: succeeds only when no
        operation holds the id, or the one that did was rolled back completely. Raises :class:`Reserved` with
        the holder otherwise, so a second request for the same image can never act on (or undo) the first
        one's work."""
        op.updated_at = time.time()
        rec = json.dumps(op.__dict__, sort_keys=True)
        with self._db() as db:
            db.execute("begin immediate")
            try:
                row = db.execute("select record from operations where op_id = ?", (op.op_id,)).fetchone()
                if row is not None:
                    held = Operation(**json.loads(row[0]))
                    if held.state not in REUSABLE:
                        raise Reserved(held)
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

    def finish(self, op: Operation, state: str, error: str | None = None) -> None:
        op.state = state
        op.error = error
        self.save(op)

    def get(self, op_id: str) -> Operation | None:
        with self._db() as db:
            row = db.execute("select record from operations where op_id = ?", (op_id,)).fetchone()
        return Operation(**json.loads(row[0])) if row else None

    def list(self, state: str | None = None) -> list[Operation]:
        with self._db() as db:
            if state:
                rows = db.execute("select record from operations where state = ? order by updated_at",
                                  (state,)).fetchall()
            else:
                rows = db.execute("select record from operations order by updated_at").fetchall()
        return [Operation(**json.loads(r[0])) for r in rows]
