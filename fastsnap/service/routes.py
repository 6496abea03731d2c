"""The REST service's routes (Flask): a thin shell over :class:`fastsnap.service.service.Service`."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from oslo_log import log as logging
from oslo_middleware import request_id
from prometheus_client import generate_latest
from werkzeug.exceptions import HTTPException

from fastsnap import status as st
from fastsnap.errors import BadRequest, FastsnapError
from fastsnap.journal import Job
from fastsnap.request import from_body
from fastsnap.service import metrics as m
from fastsnap.service.accept import PRIVILEGED, Refused, Requester, Submission, accept, visible
from fastsnap.service.errors import error, from_exception
from fastsnap.service.jobs import view
from fastsnap.service.openapi import DOCUMENT
from fastsnap.service.service import Service
from fastsnap.states import JOB_ACTIVE

LOG = logging.getLogger(__name__)


def create_app(svc: Service) -> Flask:
    app = Flask("fastsnap")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20

    def roles() -> set[str]:
        return {r.strip() for r in request.headers.get("X-Roles", "").split(",") if r.strip()}

    @app.before_request
    def check_role() -> Response | None:
        if svc.local_only:
            return None
        if request.headers.get("X-Identity-Status") != "Confirmed":
            return error(401, "a valid Keystone token is required")
        allowed = set(svc.conf.service.allowed_roles)
        if not roles() & allowed:
            return error(403, f"one of the roles {sorted(allowed)} is required")
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        LOG.exception("unexpected error")
        return error(500, f"{type(exc).__name__}: {exc}")

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(DOCUMENT)

    def privileged_only() -> Response | None:
        """Host- and cluster-wide views (every project's parked disks, the metrics, the cluster's status) are for
        service and admin callers."""
        if caller().privileged:
            return None
        return error(403, f"one of the roles {sorted(PRIVILEGED)} is required here")

    @app.get("/metrics")
    def metrics() -> Response:
        if (refused := privileged_only()) is not None:
            return refused
        m.IN_FLIGHT.set(svc.runner.in_flight)
        try:  # the journal's part of the cluster-wide view, now (cheap); the rest is the flatten poller's
            m.publish_operations(st.operations(svc.fs.journal))
        except FastsnapError as exc:
            LOG.warning("metrics: the journal's operations could not be read (%s); the gauges keep their last "
                        "values", exc)
        return Response(generate_latest(m.REGISTRY), mimetype="text/plain; version=0.0.4")

    @app.get("/v1/status")
    def cluster_status() -> Response:
        """The whole cluster (every host's operations, from the journal in RADOS): for privileged callers."""
        if (refused := privileged_only()) is not None:
            return refused
        try:
            status = svc.fs.cluster_status()
        except FastsnapError as exc:
            return from_exception(exc)
        m.publish(status)
        return jsonify(status.to_dict())

    @app.get("/v1/flattens")
    def pending_flattens() -> Response:
        """Clone-path snapshots whose flatten is pending, as journaled (read only: the flatten poller acts)."""
        if (refused := privileged_only()) is not None:
            return refused
        try:
            return jsonify({"flattens": [r.to_dict() for r in svc.fs.flatten_pending()]})
        except FastsnapError as exc:
            return from_exception(exc)

    @app.get("/v1/stores")
    def stores() -> Response:
        try:
            return jsonify({"stores": [s.to_dict() for s in svc.fs.stores()]})
        except FastsnapError as exc:
            return from_exception(exc)

    def caller() -> Requester:
        if svc.local_only:  # the socket's file mode is the guard: whoever may call is the host's operator
            return Requester(project=None, privileged=True)
        return Requester(project=request.headers.get("X-Project-Id") or None,
                         privileged=bool(roles() & PRIVILEGED))

    @app.get("/v1/parked")
    def list_parked() -> Response:
        if (refused := privileged_only()) is not None:
            return refused
        try:
            return jsonify({"parked_disks": [p.to_dict() for p in svc.fs.parked_disks(run=False)]})
        except FastsnapError as exc:
            return from_exception(exc)

    @app.post("/v1/parked")
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
        svc.wake()
        resp = jsonify({"accepted": True})
        resp.status_code = 202
        return resp

    @app.get("/v1/snapshots")
    def list_jobs() -> Response:
        who = caller()
        state = request.args.get("state")
        jobs = [svc.settle(j) for j in svc.journal.list_jobs(None, who.project, all_projects=who.privileged)]
        jobs = [j for j in jobs if not state or j.state == state]
        for f in ("disk", "image_id"):
            v = request.args.get(f)
            if v:
                jobs = [j for j in jobs if (j.request.get("disk") if f == "disk" else j.image_id) == v]
        return jsonify({"snapshots": [view(j) for j in jobs]})

    def _visible_job(job_id: str) -> Job | None:
        job = svc.journal.get_job(job_id)
        return svc.settle(job) if job is not None and visible(job, caller()) else None

    @app.get("/v1/snapshots/<job_id>")
    def get_job(job_id: str) -> Response:
        job = _visible_job(job_id)
        if job is None:
            return error(404, f"no snapshot job {job_id}")
        return jsonify(view(job))

    @app.delete("/v1/snapshots/<job_id>")
    def cancel_job(job_id: str) -> Response:
        job = _visible_job(job_id)
        if job is None:
            return error(404, f"no snapshot job {job_id}")
        if job.state not in JOB_ACTIVE or not svc.runner.cancel(job_id):
            why = ("only running jobs can be cancelled" if job.state not in JOB_ACTIVE
                   else "its operation runs in another process (the CLI) and cannot be cancelled here")
            return error(409, f"job {job_id} is {job.state}; {why}")
        resp = jsonify(view(job))
        resp.status_code = 202
        return resp

    @app.post("/v1/snapshots")
    def create() -> Response:
        if not request.is_json:
            return error(415, "send application/json")
        try:
            req, body = from_body(request.get_json(silent=True))
        except BadRequest as exc:
            return from_exception(exc)
        key = request.headers.get("Idempotency-Key")
        if key is not None and (not key or len(key) > 255 or not key.isprintable()):
            return error(400, "Idempotency-Key must be 1 to 255 printable characters")
        sub = Submission(req, body, key or req.image_id, request.environ.get(request_id.ENV_REQUEST_ID), caller(),
                         frozenset(roles()), request.environ.get("keystone.token_auth"))
        try:
            accepted = accept(svc, sub)
        except Refused as refused:
            return error(refused.code, refused.message, refused.headers, kind=refused.kind)
        return _job_response(accepted.job, accepted.code)

    def _job_response(job: Job, code: int) -> Response:
        resp = jsonify(view(job))
        resp.status_code = code
        resp.headers["Location"] = f"/v1/snapshots/{job.id}"
        return resp

    return app


