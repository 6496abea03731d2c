"""fastsnap: fast snapshots of Ceph RBD instance disks into (multistore) Glance."""

from fastsnap.api import Fastsnap, SnapshotRequest, SnapshotResult, StoreView
from fastsnap.errors import (
    BadRequest,
    CephError,
    ConfigError,
    Conflict,
    FastsnapError,
    Forbidden,
    GlanceError,
    PlanError,
    UnknownStore,
)

__all__ = [
    "BadRequest", "CephError", "ConfigError", "Conflict", "Fastsnap", "FastsnapError", "Forbidden", "GlanceError",
    "PlanError", "SnapshotRequest", "SnapshotResult", "StoreView", "UnknownStore",
]
