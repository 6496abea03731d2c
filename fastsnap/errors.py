"""Exceptions raised by fastsnap's public API.

Every error carries an ``exit_code``: 2 for bad input (nothing was created), 1 for everything else.
"""

from __future__ import annotations


class FastsnapError(Exception):
    """Base class of every error fastsnap raises on purpose."""

    exit_code = 1
    kind = "error"


class BadRequest(FastsnapError):
    """The request is invalid; it was rejected before anything was created."""

    exit_code = 2
    kind = "bad_request"


class UnknownStore(BadRequest):
    """A store id that Glance does not offer."""

    kind = "unknown_store"


class Conflict(BadRequest):
    """The request contradicts an earlier operation on the same image (e.g. another disk); nothing was done."""

    kind = "conflict"


class InvalidLocation(BadRequest, ValueError):
    """A string that is not a well-formed ``rbd://`` location."""

    kind = "invalid_location"


class ConfigError(FastsnapError):
    """fastsnap's configuration is inconsistent with what the services offer."""

    kind = "config"


class PlanError(FastsnapError):
    """No safe plan can be made from what the services told us (for now); retrying may help."""

    kind = "plan"


class CephError(FastsnapError):
    """A Ceph call failed or timed out."""

    kind = "ceph"


class CephNotFound(CephError):
    """A Ceph object (image, snapshot, pool) that is not there."""

    kind = "ceph_not_found"


class GlanceError(FastsnapError):
    """A Glance call failed or timed out."""

    kind = "glance"


class Forbidden(FastsnapError):
    """The caller may not do this (Glance answered 401/403)."""

    kind = "forbidden"


class QuiesceError(FastsnapError):
    """The guest could not be frozen (or thawed)."""

    kind = "quiesce"


class NoDomain(QuiesceError):
    """The libvirt domain does not exist (any more)."""

    kind = "no_domain"


class QuiesceRequired(BadRequest):
    """``os_require_quiesce=yes`` but the guest cannot be frozen; nothing was created."""

    kind = "quiesce_required"
