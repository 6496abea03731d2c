"""What fastsnap's API returns: snapshot results, store views, recover actions and flatten rows (all plain data
with ``to_dict`` for JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastsnap import journal as jr
from fastsnap.journal import FlattenInfo
from fastsnap.location import CLONE_SNAP, RbdLocation
from fastsnap.plan import SnapshotPath
from fastsnap.states import RecoverAction
from fastsnap.view import AsDict


@dataclass(frozen=True)
class SnapshotResult(AsDict):
    image_id: str
    path: str
    store: str
    pool: str | None
    location: str | None
    reason: str
    seconds: float
    size: int
    bytes_streamed: int
    bytes_read: int
    disk: str
    format: str = "raw"         # disk format of the image: raw, or qcow2 (stream path, fastsnap.qcow2)
    flatten: dict[str, Any] = field(default_factory=dict)   # clone path: policy, why, state, task
    acting_as: dict[str, Any] = field(default_factory=dict)  # {"mode": "user"|"operator", user/project ids}
    already_done: bool = False  # an earlier operation filled this image; it was returned, not touched
    quiesced: bool = False      # the guest's filesystems were frozen around the disk snapshot
    quiesce: dict[str, Any] = field(default_factory=dict)    # reason, domain, freeze_seconds
    rotated: list[str] = field(default_factory=list)         # backups: older backups deleted by the rotation
    # delta/copy paths: bytes read from the disk's cluster, written/zeroed/skipped on the target (TransferStats)
    transfer: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, op: jr.Operation, already_done: bool = False) -> SnapshotResult:
        """The result an operation recorded when it finished, or (rolled forward by ``recover``) what its
        journal entry says."""
        rec = op.result
        if rec:
            known = set(cls.__dataclass_fields__)
            return cls(**{**{k: v for k, v in rec.items() if k in known}, "already_done": already_done})
        location = (RbdLocation.for_image(op.fsid, op.pool, op.op_id, CLONE_SNAP).url
                    if op.path in (SnapshotPath.CLONE, SnapshotPath.DELTA, SnapshotPath.COPY, SnapshotPath.INCREMENTAL)
                    and op.fsid and op.pool
                    else None)
        return cls(image_id=op.op_id, path=op.path, store=op.store, pool=op.pool, location=location,
                   reason=op.reason, seconds=0.0, size=op.size, bytes_streamed=0, bytes_read=0, disk=op.disk,
                   format=op.format, flatten=op.flatten.to_dict() if op.flatten else {},
                   acting_as=dict(op.acting_as or {}),
                   already_done=already_done)


@dataclass(frozen=True)
class StoreView(AsDict):
    id: str
    type: str | None
    default: bool
    description: str
    pool: str | None
    fsid: str | None
    clone: bool            # this host can make copy-on-write clones into it


@dataclass(frozen=True)
class RecoverResult:
    """What ``recover`` did with one interrupted operation."""

    op_id: str
    disk: str
    action: RecoverAction
    did: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op_id": self.op_id, "disk": self.disk, "action": self.action}
        if self.action is RecoverAction.FAILED:
            d["error"] = self.error
        else:
            d["did"] = list(self.did)
        return d


@dataclass(frozen=True)
class FlattenRow:
    """One clone-path snapshot whose flatten was pending, as ``flatten-status`` reports it."""

    image_id: str
    disk: str
    pool: str
    info: FlattenInfo

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "disk": self.disk, "pool": self.pool, **self.info.to_dict()}
