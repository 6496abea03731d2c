"""The error answers for what no handler answered itself: Flask's HTTP errors (unknown path, wrong method, body
too large) and any unexpected exception, in the service's one JSON error shape (:mod:`fastsnap.service.errors`),
never Flask's HTML page. App-wide, so an unknown path gets them too."""

from __future__ import annotations

from flask import Blueprint, Response
from oslo_log import log as logging
from werkzeug.exceptions import HTTPException

from fastsnap.service.errors import error

LOG = logging.getLogger(__name__)

bp = Blueprint("failures", __name__)


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    return error(exc.code or 500, exc.description or exc.name)


@bp.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    LOG.exception("unexpected error")
    return error(500, f"{type(exc).__name__}: {exc}")
