"""Who calls, from the headers keystonemiddleware sets: the role check before every request (a token with one of
``[service] allowed_roles``), the caller's project and privilege, and the guard of the host- and cluster-wide views.

On the local unix socket there is no token: the socket's file mode is the guard, whoever may call is the host's
operator."""

from __future__ import annotations

from flask import Blueprint, Response, request

from fastsnap.service.accept import PRIVILEGED, Requester
from fastsnap.service.errors import error
from fastsnap.service.routes.current import service

bp = Blueprint("identity", __name__)


def roles() -> set[str]:
    return {r.strip() for r in request.headers.get("X-Roles", "").split(",") if r.strip()}


@bp.before_app_request
def check_role() -> Response | None:
    svc = service()
    if svc.local_only:
        return None
    if request.headers.get("X-Identity-Status") != "Confirmed":
        return error(401, "a valid Keystone token is required")
    allowed = set(svc.conf.service.allowed_roles)
    if not roles() & allowed:
        return error(403, f"one of the roles {sorted(allowed)} is required")
    return None


def caller() -> Requester:
    if service().local_only:  # the socket's file mode is the guard: whoever may call is the host's operator
        return Requester(project=None, privileged=True)
    return Requester(project=request.headers.get("X-Project-Id") or None,
                     privileged=bool(roles() & PRIVILEGED))


def privileged_only() -> Response | None:
    """Host- and cluster-wide views (every project's parked disks, the metrics, the cluster's status) are for
    service and admin callers."""
    if caller().privileged:
        return None
    return error(403, f"one of the roles {sorted(PRIVILEGED)} is required here")
