"""``GET /v1/stores``: Glance's stores as fastsnap sees them (their pool and cluster, whether a snapshot there can
be a clone), read fresh; for any caller with an allowed role, since it names no project's data."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from fastsnap.errors import FastsnapError
from fastsnap.service.errors import from_exception
from fastsnap.service.routes.current import service

bp = Blueprint("stores", __name__)


@bp.get("/v1/stores")
def stores() -> Response:
    try:
        return jsonify({"stores": [s.to_dict() for s in service().fs.stores()]})
    except FastsnapError as exc:
        return from_exception(exc)
