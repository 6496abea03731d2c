"""Every exception fastsnap raises on purpose, and the one map from error to CLI exit code and HTTP status.

Each class carries, named in its header (``class Busy(FastsnapError, http_status=429, kind="busy")``) or
inherited from its base:
  ``exit_code``    the CLI's: 2 for bad input (nothing was created), 1 for everything else;
  ``http_status``  the REST service's; for server-side failures see :func:`http_status`;
  ``kind``         a machine-readable cause (the ``kind`` of a REST error body, the label of the error metric).
Library exceptions (librbd, librados, glanceclient, keystoneauth1) are translated into these at the adapter that
calls the library (:mod:`fastsnap.ceph`, :mod:`fastsnap.glance`, :mod:`fastsnap.nova`); none leaves it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FastsnapError(Exception):
    """Base class of every error fastsnap raises on purpose."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    kind: ClassVar[str] = "error"

    def __init_subclass__(cls, *, kind: str | None = None, http_status: int | None = None,
                          exit_code: int | None = None, **kwargs: Any) -> None:
        """A subclass names its row of the table in its header (``class X(Base, kind=..., http_status=...)``);
        what it does not name, it inherits from its base."""
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind
        if http_status is not None:
            cls.http_status = http_status
        if exit_code is not None:
            cls.exit_code = exit_code


class BadRequest(FastsnapError, exit_code=2, http_status=400, kind="bad_request"):
    """The request is invalid; it was rejected before anything was created."""


class UnknownStore(BadRequest, kind="unknown_store"):
    """A store id that Glance does not offer."""


class Conflict(BadRequest, http_status=409, kind="conflict"):
    """The request contradicts an earlier operation on the same image (e.g. another disk); nothing was done."""


class Reserved(Conflict, kind="reserved"):
    """The journal refused to reserve an image id: another operation holds it (running, or done: its result must
    not be touched)."""


class InvalidLocation(BadRequest, ValueError, kind="invalid_location"):
    """A string that is not a well-formed ``rbd://`` location."""


class QuiesceRequired(BadRequest, kind="quiesce_required"):
    """``os_require_quiesce=yes`` but the guest cannot be frozen; nothing was created."""


class NotFound(FastsnapError, http_status=404, kind="not_found"):
    """A Glance image, RBD image, snapshot or pool that is not there. Internal callers catch this to mean "gone";
    where the missing thing was named by the caller, the API turns it into :class:`BadRequest` at its edge."""


class ConfigError(FastsnapError, kind="config"):
    """fastsnap's configuration is inconsistent with what the services offer."""


class PlanError(FastsnapError, http_status=503, kind="plan"):
    """No safe plan can be made from what the services told us (for now); retrying may help."""


class CephError(FastsnapError, http_status=503, kind="ceph"):
    """A Ceph call failed or timed out."""


class CephNotFound(NotFound, CephError, http_status=404, kind="ceph_not_found"):
    """A Ceph object (image, snapshot, pool) that is not there."""


class GlanceError(FastsnapError, http_status=503, kind="glance"):
    """A Glance call failed or timed out."""


class GlanceUnavailable(GlanceError):
    """Glance could not be reached, answered 5xx, or did not finish in time: the same call may succeed later.
    ``recover`` leaves a complete snapshot whose registration failed this way for its next run instead of undoing
    it."""


class GlanceNotFound(NotFound, GlanceError, http_status=404, kind="glance_not_found"):
    """Glance answered 404."""


class NovaError(FastsnapError, http_status=503, kind="nova"):
    """Nova could not be asked (unreachable, 5xx, no compute endpoint in the catalogue): the ownership check of a
    snapshot for a user cannot be made, so nothing is created; the same request may succeed later."""


class Forbidden(FastsnapError, http_status=403, kind="forbidden"):
    """The caller may not do this (Glance answered 401/403)."""


class QuiesceError(FastsnapError, kind="quiesce"):
    """The guest could not be frozen (or thawed)."""


class NoDomain(QuiesceError, kind="no_domain"):
    """The libvirt domain does not exist (any more)."""


class LeaseLapsed(CephError, kind="lease"):
    """This host's lease in the journal was not renewed in time: another host may be taking its operations over,
    so this one must not act on them."""


class Busy(FastsnapError, http_status=429, kind="busy"):
    """The host already runs its maximum number of snapshots."""


class Cancelled(FastsnapError, kind="cancelled"):
    """A REST job was cancelled (``DELETE /v1/snapshots/<id>``); what it made was rolled back."""


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
