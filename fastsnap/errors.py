"""Every exception fastsnap raises on purpose, and the one map from error to CLI exit code and HTTP status.

Each class carries:
  ``exit_code``    the CLI's: 2 for bad input (nothing was created), 1 for everything else;
  ``http_status``  the REST service's; for server-side failures see :func:`http_status`;
  ``kind``         a machine-readable cause (the ``kind`` of a REST error body, the label of the error metric).
Library exceptions (librbd, librados, glanceclient, keystoneauth1) are translated into these at the adapter that
calls the library (:mod:`fastsnap.ceph`, :mod:`fastsnap.glance`, :mod:`fastsnap.nova`); none leaves it.
"""

from __future__ import annotations


class FastsnapError(Exception):
    """Base class of every error fastsnap raises on purpose."""

    exit_code = 1
    http_status = 500
    kind = "error"


class BadRequest(FastsnapError):
    """The request is invalid; it was rejected before anything was created."""

    exit_code = 2
    http_status = 400
    kind = "bad_request"


class UnknownStore(BadRequest):
    """A store id that Glance does not offer."""

    kind = "unknown_store"


class Conflict(BadRequest):
    """The request contradicts an earlier operation on the same image (e.g. another disk); nothing was done."""

    http_status = 409
    kind = "conflict"


class Reserved(Conflict):
    """The journal refused to reserve an image id: another operation holds it (running, or done: its result must
    not be touched)."""

    kind = "reserved"


class InvalidLocation(BadRequest, ValueError):
    """A string that is not a well-formed ``rbd://`` location."""

    kind = "invalid_location"


class QuiesceRequired(BadRequest):
    """``os_require_quiesce=yes`` but the guest cannot be frozen; nothing was created."""

    kind = "quiesce_required"


class NotFound(FastsnapError):
    """A Glance image, RBD image, snapshot or pool that is not there. Internal callers catch this to mean "gone";
    where the missing thing was named by the caller, the API turns it into :class:`BadRequest` at its edge."""

    http_status = 404
    kind = "not_found"


class ConfigError(FastsnapError):
    """fastsnap's configuration is inconsistent with what the services offer."""

    kind = "config"


class PlanError(FastsnapError):
    """No safe plan can be made from what the services told us (for now); retrying may help."""

    http_status = 503
    kind = "plan"


class CephError(FastsnapError):
    """A Ceph call failed or timed out."""

    http_status = 503
    kind = "ceph"


class CephNotFound(NotFound, CephError):
    """A Ceph object (image, snapshot, pool) that is not there."""

    http_status = 404
    kind = "ceph_not_found"


class GlanceError(FastsnapError):
    """A Glance call failed or timed out."""

    http_status = 503
    kind = "glance"


class GlanceUnavailable(GlanceError):
    """Glance could not be reached, answered 5xx, or did not finish in time: the same call may succeed later.
    ``recover`` leaves a complete snapshot whose registration failed this way for its next run instead of undoing
    it."""


class GlanceNotFound(NotFound, GlanceError):
    """Glance answered 404."""

    http_status = 404
    kind = "glance_not_found"


class NovaError(FastsnapError):
    """Nova could not be asked (unreachable, 5xx, no compute endpoint in the catalogue): the ownership check of a
    snapshot for a user cannot be made, so nothing is created; the same request may succeed later."""

    http_status = 503
    kind = "nova"


class Forbidden(FastsnapError):
    """The caller may not do this (Glance answered 401/403)."""

    http_status = 403
    kind = "forbidden"


class QuiesceError(FastsnapError):
    """The guest could not be frozen (or thawed)."""

    kind = "quiesce"


class NoDomain(QuiesceError):
    """The libvirt domain does not exist (any more)."""

    kind = "no_domain"


class LeaseLapsed(CephError):
    """This host's lease in the journal was not renewed in time: another host may be taking its operations over,
    so this one must not act on them."""

    kind = "lease"


class Busy(FastsnapError):
    """The host already runs its maximum number of snapshots."""

    http_status = 429
    kind = "busy"


class Cancelled(FastsnapError):
    """A REST job was cancelled (``DELETE /v1/snapshots/<id>``); what it made was rolled back."""

    kind = "cancelled"


def http_status(exc: BaseException, accepted: bool) -> int:
    """The HTTP status of an error: the class's client status (4xx) as it is; a server-side failure is 503 while
    a request is being validated (nothing was created: retry later) and 500 once its job was accepted."""
    status = exc.http_status if isinstance(exc, FastsnapError) else 500
    if status < 500:
        return status
    return 500 if accepted else 503


def exit_code(exc: BaseException) -> int:
    """The CLI's exit code for an error."""
    return exc.exit_code if isinstance(exc, FastsnapError) else 1
