"""How the REST service renders errors: one JSON shape, the status from :func:`fastsnap.errors.http_status`."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from fastsnap.errors import http_status

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 413: "Request Entity Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
          500: "Internal Server Error", 503: "Service Unavailable"}


def error(code: int, message: str, headers: dict[str, str] | None = None, kind: str | None = None) -> Response:
    """An error answer; ``kind`` (e.g. ``unknown_store``) lets a program tell errors of one code apart."""
    body: dict[str, Any] = {"code": code, "title": TITLES.get(code, "Error"), "message": message}
    if kind:
        body["kind"] = kind
    resp = jsonify({"error": body})
    resp.status_code = code
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def from_exception(exc: BaseException, accepted: bool = False) -> Response:
    """The answer for a fastsnap error raised while a request was validated (``accepted``: by its job)."""
    return error(http_status(exc, accepted), str(exc), kind=getattr(exc, "kind", None))


def job_error(exc: BaseException, cancelled: bool) -> dict[str, Any]:
    """The ``error`` a failed or cancelled job records."""
    kind = "cancelled" if cancelled else getattr(exc, "kind", type(exc).__name__)
    return {"code": http_status(exc, accepted=True), "title": kind, "message": str(exc), "kind": kind}
