"""The snapshot jobs: ``/v1/snapshots`` listed (the caller's project's, or every project's for a privileged
caller), one read or cancelled, and a new one requested. What a POST means (tenancy, idempotency, slots) is
decided in :mod:`fastsnap.service.accept`; these handlers only read the HTTP request and render the answer."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from oslo_middleware import request_id

from fastsnap.errors import BadRequest
from fastsnap.journal import Job
from fastsnap.request import from_body
from fastsnap.service.accept import Refused, Submission, accept, visible
from fastsnap.service.errors import error, from_exception
from fastsnap.service.jobs import view
from fastsnap.service.routes.current import service
from fastsnap.service.routes.identity import caller, roles
from fastsnap.states import JOB_ACTIVE

bp = Blueprint("snapshots", __name__)


@bp.get("/v1/snapshots")
def list_jobs() -> Response:
    svc, who = service(), caller()
    state = request.args.get("state")
    jobs = [svc.settle(j) for j in svc.journal.list_jobs(None, who.project, all_projects=who.privileged)]
    jobs = [j for j in jobs if not state or j.state == state]
    for f in ("disk", "image_id"):
        v = request.args.get(f)
        if v:
            jobs = [j for j in jobs if (j.request.get("disk") if f == "disk" else j.image_id) == v]
    return jsonify({"snapshots": [view(j) for j in jobs]})


def _visible_job(job_id: str) -> Job | None:
    svc = service()
    job = svc.journal.get_job(job_id)
    return svc.settle(job) if job is not None and visible(job, caller()) else None


@bp.get("/v1/snapshots/<job_id>")
def get_job(job_id: str) -> Response:
    job = _visible_job(job_id)
    if job is None:
        return error(404, f"no snapshot job {job_id}")
    return jsonify(view(job))


@bp.delete("/v1/snapshots/<job_id>")
def cancel_job(job_id: str) -> Response:
    job = _visible_job(job_id)
    if job is None:
        return error(404, f"no snapshot job {job_id}")
    if job.state not in JOB_ACTIVE or not service().runner.cancel(job_id):
        why = ("only running jobs can be cancelled" if job.state not in JOB_ACTIVE
               else "its operation runs in another process (the CLI) and cannot be cancelled here")
        return error(409, f"job {job_id} is {job.state}; {why}")
    resp = jsonify(view(job))
    resp.status_code = 202
    return resp


@bp.post("/v1/snapshots")
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
        accepted = accept(service(), sub)
    except Refused as refused:
        return error(refused.code, refused.message, refused.headers, kind=refused.kind)
    return _job_response(accepted.job, accepted.code)


def _job_response(job: Job, code: int) -> Response:
    resp = jsonify(view(job))
    resp.status_code = code
    resp.headers["Location"] = f"/v1/snapshots/{job.id}"
    return resp
