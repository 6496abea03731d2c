"""``GET /openapi.json``: the served OpenAPI document (:mod:`fastsnap.service.openapi`, also the source of the
REST reference), so that a client can read what this service answers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from fastsnap.service.openapi import DOCUMENT

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(DOCUMENT)
