"""The operator's views, host- and cluster-wide and so for privileged callers only
(:func:`fastsnap.service.routes.identity.privileged_only`): the Prometheus metrics, the cluster's status, the
pending flattens, and the parked disks (listed, or reported by the Nova hook to wake the poller)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from oslo_log import log as logging
from prometheus_client import generate_latest

from fastsnap import status as st
from fastsnap.errors import FastsnapError
from fastsnap.service import metrics as m
from fastsnap.service.errors import error, from_exception
from fastsnap.service.routes.current import service
from fastsnap.service.routes.identity import privileged_only

LOG = logging.getLogger(__name__)

bp = Blueprint("operator", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    if (refused := privileged_only()) is not None:
        return refused
    svc = service()
    m.IN_FLIGHT.set(svc.runner.in_flight)
    try:  # the journal's part of the cluster-wide view, now (cheap); the rest is the flatten poller's
        m.publish_operations(st.operations(svc.fs.journal))
    except FastsnapError as exc:
        LOG.warning("metrics: the journal's operations could not be read (%s); the gauges keep their last "
                    "values", exc)
    return Response(generate_latest(m.REGISTRY), mimetype="text/plain; version=0.0.4")


@bp.get("/v1/status")
def cluster_status() -> Response:
    """The whole cluster (every host's operations, from the journal in RADOS): for privileged callers."""
    if (refused := privileged_only()) is not None:
        return refused
    try:
        status = service().fs.cluster_status()
    except FastsnapError as exc:
        return from_exception(exc)
    m.publish(status)
    return jsonify(status.to_dict())


@bp.get("/v1/flattens")
def pending_flattens() -> Response:
    """Clone-path snapshots whose flatten is pending, as journaled (read only: the flatten poller acts)."""
    if (refused := privileged_only()) is not None:
        return refused
    try:
        return jsonify({"flattens": [r.to_dict() for r in service().fs.flatten_pending()]})
    except FastsnapError as exc:
        return from_exception(exc)


@bp.get("/v1/parked")
def list_parked() -> Response:
    if (refused := privileged_only()) is not None:
        return refused
    try:
        return jsonify({"parked_disks": [p.to_dict() for p in service().fs.parked_disks(run=False)]})
    except FastsnapError as exc:
        return from_exception(exc)


@bp.post("/v1/parked")
def report_parked() -> Response:
    """The Nova hook moved a disk to the RBD trash: drain now. fastsnap finds parked disks itself (from Ceph:
    trash entries holding only fastsnap's snapshots, see fastsnap.parked); the report only wakes the poller."""
    if (refused := privileged_only()) is not None:
        return refused
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) and body.get(k)
                                             for k in ("pool", "name", "id")):
        return error(400, "body must be an object with strings pool, name and id", kind="bad_request")
    LOG.info("parked disk reported: %s/%s (id %s)", body["pool"], body["name"], body["id"])
    service().wake()
    resp = jsonify({"accepted": True})
    resp.status_code = 202
    return resp
