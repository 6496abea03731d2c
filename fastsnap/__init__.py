"""fastsnap: fast snapshots of Ceph RBD instance disks into (multistore) Glance.

The public names are loaded on first use, so that ``import fastsnap.plan`` (or any pure module) works on a
machine without the Ceph bindings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastsnap.api import Fastsnap
    from fastsnap.caller import Caller
    from fastsnap.errors import (
        BadRequest,
        CephError,
        ConfigError,
        Conflict,
        FastsnapError,
        Forbidden,
        GlanceError,
        NotFound,
        PlanError,
        UnknownStore,
    )
    from fastsnap.request import SnapshotRequest
    from fastsnap.result import SnapshotResult, StoreView

_WHERE = {
    "Fastsnap": "fastsnap.api", "Caller": "fastsnap.caller", "SnapshotRequest": "fastsnap.request",
    "SnapshotResult": "fastsnap.result", "StoreView": "fastsnap.result",
    **{name: "fastsnap.errors" for name in ("BadRequest", "CephError", "ConfigError", "Conflict", "FastsnapError",
                                            "Forbidden", "GlanceError", "NotFound", "PlanError", "UnknownStore")},
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fastsnap' has no attribute {name!r}")


__all__ = [
    "BadRequest", "Caller", "CephError", "ConfigError", "Conflict", "Fastsnap", "FastsnapError", "Forbidden",
    "GlanceError", "NotFound", "PlanError", "SnapshotRequest", "SnapshotResult", "StoreView", "UnknownStore",
]
