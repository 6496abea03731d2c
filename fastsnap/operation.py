"""The operation record (:class:`Operation`): typed, documented field by field, (de)serialised in one place.

The stores (:mod:`fastsnap.rados_journal`, and the SQLite one of :mod:`fastsnap.journal`) keep what
:meth:`Operation.to_record` returns and give it back to :meth:`Operation.from_record`.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from oslo_log import log as logging

from fastsnap.states import FlattenPolicy, FlattenState, OpState
from fastsnap.view import AsDict

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
class QuiesceInfo(AsDict):
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


@dataclass
class Operation:
    """One snapshot operation: the journal record of what it planned and which steps it began.

    One record per Glance image id (``op_id``). :meth:`to_record` and :meth:`from_record` are the only
    (de)serialisation: a store keeps the dict ``to_record`` returns (the RADOS journal as JSON in the omap key
    ``record`` of ``fastsnap.operation.<op_id>``; an older SQLite journal in ``operations.record``) and gives it
    back to ``from_record``. Records of older fastsnaps, which kept the
    fields listed below from ``reason`` on in a free-form ``extra`` dict, still load (see :meth:`from_record`).

    Fields (what it holds; written by → read by). "api" is :func:`fastsnap.running.operation`, which builds
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
      host                  the ``[DEFAULT] host`` that reserved it (``reserve`` sets it; a migration sets the
                            migrating host) → recover (whose lease covers it), status (operations by host)
      pid                   the process that built it (diagnostics only)
      created_at, updated_at  seconds since the epoch; ``save`` / ``reserve`` stamp updated_at → ``list`` order

    What the steps need and report (api unless said; a default means "not recorded"):
      reason: str = ""      the plan's reason → results (SnapshotResult.reason), routes (adopted job's reason)
      acting_as: dict|None  who it is for, ``auth.Identity.to_dict()``: {"mode": "user"|"operator", "user_id",
                            "project_id", "roles"} → recover (a user's operation without a trust: warn),
                            routes (``project_id``: whether the caller may see the image), results
      size: int = 0         the disk's size in bytes at planning → crosscluster (target image size), results
      format: str = "raw"   the disk format of the result (the plan's: qcow2 only on the stream path) → workflow
                            (what the stream sends), results
      base_location: str|None  delta path: the ``rbd://`` URL of the base image's copy on the target cluster →
                            crosscluster (the target image's parent)
      check_bytes_read: int = 0  delta, incremental: bytes read while planning (``Planned``) to check the base
                            → paths.remote (TransferStats, so results' ``transfer``)
      disk_id: str|None     clone path: the disk's RBD image id → parked (a trashed disk is fastsnap's to purge
                            only when its id is one an operation recorded)
      flatten: FlattenInfo|None  clone path: paths.clone (``record``: policy, why, depth; ``run``, sync: state
                            done; background: ``queue_flatten`` sets task, state queued/local, error);
                            flatten.status (state done / gone / queued / local, error) → paths.clone (the policy
                            to run, and roll_forward: queue a background flatten that never acted),
                            flatten.status, results
      quiesce: QuiesceInfo|None  workflow (``snapshot_disk``: frozen=True just before the freeze, False after
                            the thaw) → recover (``thaw_left`` thaws a guest a killed process left frozen, then
                            records frozen=False)
      location_api: str|None  "v2.17" | "patch", the Glance API the location step used (workflow ``register``)
                            → the active step (how to wait for the image)
      transfer: dict|None   delta / copy paths: ``TransferStats.to_dict()`` after the write (crosscluster) →
                            api (bytes_streamed, bytes_read and ``transfer`` of the result)
      trust_id: str|None    the Keystone trust for a user's operation, created before ``reserve``; None again
                            once ``reservation.drop_trust`` deleted it (operation settled) → recover (acts through it)
      trust_error: str|None  why that trust could not be created → recover (the warning)
      chain: str|None       a backup into an rbd store on another cluster: the store whose chain it extends; the
                            disk keeps ``fastsnap-backup-<chain>-<op_id>`` once it is active → crosscluster
                            (keep the source snapshot), workflow (roll back / forward), chain (sweep)
      previous_backup: str|None  incremental path: the backup image cloned on the target cluster → crosscluster
      source_snap: str|None  incremental path: the kept snapshot on the disk the changes are read from →
                            crosscluster (diff_iterate's from-snapshot)
      remote_snap_id: int|None  backup chain: the RBD snapshot id of the target image's ``snap`` after it was made
                            → api (the next incremental's integrity check: a re-created ``snap`` has another id)
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
    format: str = "raw"
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
    chain: str | None = None
    previous_backup: str | None = None
    source_snap: str | None = None
    remote_snap_id: int | None = None

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
            "acting_as": copy.deepcopy(self.acting_as), "size": self.size, "format": self.format,
            "base_location": self.base_location,
            "check_bytes_read": self.check_bytes_read, "disk_id": self.disk_id,
            "flatten": self.flatten.to_dict() if self.flatten else None,
            "quiesce": self.quiesce.to_dict() if self.quiesce else None,
            "location_api": self.location_api, "transfer": copy.deepcopy(self.transfer),
            "trust_id": self.trust_id, "trust_error": self.trust_error, "result": copy.deepcopy(self.result),
            "chain": self.chain, "previous_backup": self.previous_backup, "source_snap": self.source_snap,
            "remote_snap_id": self.remote_snap_id,
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
            size=int(raw.get("size") or 0), format=str(raw.get("format") or "raw"),
            base_location=_opt_str(raw.get("base_location")),
            check_bytes_read=int(raw.get("check_bytes_read") or 0), disk_id=_opt_str(raw.get("disk_id")),
            flatten=FlattenInfo.of(raw.get("flatten")), quiesce=QuiesceInfo.of(raw.get("quiesce")),
            location_api=_opt_str(raw.get("location_api")),
            transfer=None if transfer is None else {str(k): int(v) for k, v in transfer.items()},
            trust_id=_opt_str(raw.get("trust_id")), trust_error=_opt_str(raw.get("trust_error")),
            result=None if result is None else dict(result), chain=_opt_str(raw.get("chain")),
            previous_backup=_opt_str(raw.get("previous_backup")), source_snap=_opt_str(raw.get("source_snap")),
            remote_snap_id=None if raw.get("remote_snap_id") is None else int(raw["remote_snap_id"]))


_REQUIRED = ("op_id", "disk", "path", "store", "pool", "fsid", "image_created", "delete_image_on_error")
# The fields an older fastsnap's record kept in its ``extra`` dict (under the same names).
_FROM_EXTRA = frozenset({"reason", "acting_as", "size", "base_location", "check_bytes_read", "disk_id", "flatten",
                         "quiesce", "location_api", "transfer", "trust_id", "trust_error", "result"})


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Entry:
    """An operation's entry in the journal's directory: what listing needs without reading each record (who runs
    it, where its flatten stands, which disk it depends on). Written with the record on every change of these;
    it may lag the record by one write (the record is the authority)."""

    op_id: str
    state: OpState
    host: str
    disk: str
    path: str
    disk_id: str | None
    flatten: str | None   # the FlattenState value, None before the policy acted or off the clone path
    updated_at: float

    @classmethod
    def of(cls, op: Operation) -> Entry:
        return cls(op.op_id, op.state, op.host, op.disk, op.path, op.disk_id,
                   op.flatten.state.value if op.flatten and op.flatten.state else None, op.updated_at)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        del d["op_id"]  # the directory's key
        return d

    @classmethod
    def from_dict(cls, op_id: str, raw: Mapping[str, Any]) -> Entry:
        return cls(op_id, OpState(raw.get("state", OpState.RUNNING)), str(raw.get("host", "")),
                   str(raw.get("disk", "")), str(raw.get("path", "")), _opt_str(raw.get("disk_id")),
                   _opt_str(raw.get("flatten")), float(raw.get("updated_at", 0.0)))
