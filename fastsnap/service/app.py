"""The REST service for compute hosts: a thin shell over :class:`fastsnap.api.Fastsnap`.

Over TCP every endpoint needs a Keystone token (keystonemiddleware auth_token) with one of
``[service] allowed_roles``; a local unix socket (``[service] unix_socket``) is protected by file permissions.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from keystonemiddleware import auth_token
from oslo_config import cfg
from oslo_log import log as logging
from oslo_middleware import request_id
from prometheus_client import generate_latest
from werkzeug.exceptions import HTTPException

from fastsnap import journal as jr
from fastsnap.api import Fastsnap, SnapshotRequest, validate_request
from fastsnap.errors import BadRequest, FastsnapError, Forbidden
from fastsnap.plan import Plan
from fastsnap.service import metrics as m
from fastsnap.service.jobs import (
    ACTIVE_STATES,
    CANCELLED,
    DONE,
    FAILED,
    REGISTER_STEPS,
    REGISTERING,
    RUNNING,
    Cancelled,
    Job,
    JobStore,
    Runner,
    new_job,
)
from fastsnap.service.openapi import DOCUMENT

LOG = logging.getLogger(__name__)

service_opts = [
    cfg.HostAddressOpt("bind_host", default="127.0.0.1", help="Address the REST service listens on."),
    cfg.PortOpt("bind_port", default=8787, help="TCP port of the REST service."),
    cfg.StrOpt("unix_socket",
               help="Serve on this unix socket instead of TCP, without Keystone auth (local-only mode: access "
                    "is controlled by the socket's file permissions, see unix_socket_mode)."),
    cfg.StrOpt("unix_socket_mode", default="0660", regex=r"^0?[0-7]{3}$",
               help="File mode of the unix socket, in octal (e.g. 0660: owner and group may call)."),
    cfg.ListOpt("allowed_roles", default=["service", "admin"],
                help="Keystone roles allowed to call the service. A caller with neither 'service' nor 'admin' "
                     "(if allowed here) snapshots on its own behalf."),
    cfg.IntOpt("retry_after", default=5, min=1, help="Retry-After seconds sent with 429 when the host is busy."),
    cfg.IntOpt("flatten_poll_interval", default=30, min=1,
               help="Seconds between checks of queued background flattens (and in-process fallbacks)."),
]

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
          503: "Service Unavailable"}
PRIVILEGED = {"service", "admin"}


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(service_opts, group="service")


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


class Service:
    """State shared by the request handlers: the Fastsnap client, the job store and runner."""

    def __init__(self, conf: cfg.ConfigOpts, local_only: bool = False) -> None:
        self.conf = conf
        self.local_only = local_only
        self.fs = Fastsnap(conf)
        self.jobs = JobStore(self.fs.journal)
        self.runner = Runner(self.jobs, conf.snapshot.max_concurrent)
        self._stop = threading.Event()
        self._wake = threading.Event()  # a parked disk was reported: drain now, not at the next poll

    # -- start-up -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what a previous process left, settle its jobs, start the flatten poller."""
        for action in self.fs.recover():
            LOG.info("recover: %s", action)
        for job in self.jobs.list():
            if job.state not in ACTIVE_STATES:
                continue
            op = self.fs.journal.get(job.image_id) if job.image_id else None
            if op is not None and op.state == jr.DONE:
                job.state = DONE
            else:
                job.state = FAILED
                job.error = {"code": 500, "title": "Interrupted",
                             "message": "the service stopped during this snapshot; it was rolled back"}
            self.jobs.save(job)
        threading.Thread(target=self._flatten_loop, name="fastsnap-flatten", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.runner.shutdown()

    def wake(self) -> None:
        self._wake.set()

    def _flatten_loop(self) -> None:
        first = True
        while not self._stop.is_set():
            # At start (a killed service's parked disks), every poll, and at once when the hook reports one.
            if not first:
                self._wake.wait(self.conf.service.flatten_poll_interval)
            first = False
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                parked = self.fs.parked_disks(run=True)  # their dependents first: ahead of the mgr's queue
                m.PARKED_DISKS.set(sum(1 for p in parked if p.get("state") != "removed"))
            except Exception:
                LOG.exception("draining parked disks failed")
            try:
                rows = self.fs.flatten_status(run_local=True)
                m.FLATTEN_BACKLOG.set(sum(1 for r in rows if r.get("state") in ("queued", "local")))
            except Exception:
                LOG.exception("flatten poll failed")

    # -- the job ----------------------------------------------------------------------------------------

    def run(self, job: Job, req: SnapshotRequest, auth: dict[str, Any]) -> None:
        t0 = time.monotonic()
        last = [0.0]
        m.IN_FLIGHT.inc()

        def on_plan(plan: Plan, image_id: str) -> None:
            job.path, job.store, job.reason, job.image_id = plan.path.value, plan.store, plan.reason, image_id
            job.state = RUNNING
            self.jobs.save(job)

        def on_step(step: str) -> None:
            if self.runner.cancelled(job.id):
                raise Cancelled(f"cancelled at step {step}")
            if step in REGISTER_STEPS and job.state != REGISTERING:
                job.state = REGISTERING
                self.jobs.save(job)

        def progress(done: int, total: int) -> None:
            if self.runner.cancelled(job.id):
                raise Cancelled("cancelled during the stream")
            job.bytes_done, job.bytes_total = done, total
            now = time.monotonic()
            if now - last[0] > 0.5 or done >= total:
                last[0] = now
                self.jobs.save(job)

        try:
            res = self.fs.snapshot(req, progress=progress, wait=0, on_plan=on_plan, on_step=on_step, **auth)
            job.result = res.to_dict()
            job.state = DONE
            job.bytes_done, job.bytes_total = res.bytes_streamed, res.size if res.path == "stream" else 0
            m.LATENCY.labels(res.path).observe(res.seconds)
            m.BYTES.inc(res.bytes_streamed)
            if res.path == "stream":
                m.FALLBACKS.labels(m.fallback_reason(res.reason)).inc()
            if req.image_type == "backup":
                job.result["rotated"] = self._rotate(job, req, res.image_id, auth)
        except BaseException as exc:
            cancelled = isinstance(exc, Cancelled) or self.runner.cancelled(job.id)
            job.state = CANCELLED if cancelled else FAILED
            kind = "cancelled" if cancelled else getattr(exc, "kind", type(exc).__name__)
            code = 400 if isinstance(exc, BadRequest) else 403 if isinstance(exc, Forbidden) else 500
            job.error = {"code": code, "title": kind, "message": str(exc), "kind": kind}
            m.ERRORS.labels(kind).inc()
            LOG.warning("job %s (request %s) %s: %s", job.id, job.request_id, job.state, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            m.IN_FLIGHT.dec()
            job.updated_at = time.time()
            self.jobs.save(job)
            LOG.info("job %s (request %s) %s in %.2fs", job.id, job.request_id, job.state, time.monotonic() - t0)

    def _rotate(self, job: Job, req: SnapshotRequest, new_id: str, auth: dict[str, Any]) -> list[str]:
        """Nova's createBackup rotation: keep the newest ``rotation`` backups of this instance and type."""
        rotation = int(job.request.get("rotation") or 0)
        if rotation < 1:
            return []
        g, _ = self.fs.glance_for(auth.get("user_token"), auth.get("user_auth"))
        new = g.get(new_id)
        filters = {"instance_uuid": req.instance_uuid, "image_type": "backup",
                   "backup_type": req.properties.get("backup_type"), "status": "active"}
        images = g.call("listing backups", lambda: list(g.client.images.list(filters=filters)))
        mine = [dict(i) for i in images if i.get("owner") == new.get("owner")]
        mine.sort(key=lambda i: (str(i.get("created_at")), i["id"] == new_id), reverse=True)
        deleted = []
        for old in mine[rotation:]:
            if old["id"] == new_id:
                continue
            g.delete(old["id"])
            deleted.append(old["id"])
        return deleted


def _request_from_body(body: Any) -> tuple[SnapshotRequest, dict[str, Any]]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    allowed = set(DOCUMENT["components"]["schemas"]["SnapshotRequest"]["properties"])
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    for f in ("disk", "name"):
        if not isinstance(body.get(f), str):
            raise BadRequest(f"'{f}' is required and must be a string")
    for f in ("base_image", "store", "image_id", "instance_uuid", "backup_type", "user_token", "container_format",
              "quiesce_domain"):
        if body.get(f) is not None and not isinstance(body[f], str):
            raise BadRequest(f"'{f}' must be a string")
    props = body.get("properties") or {}
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise BadRequest("'properties' must be an object of strings")
    kind = body.get("type") or "snapshot"
    if kind not in ("snapshot", "backup"):
        raise BadRequest("'type' must be snapshot or backup")
    rotation = body.get("rotation")
    if rotation is not None and (not isinstance(rotation, int) or isinstance(rotation, bool) or rotation < 1):
        raise BadRequest("'rotation' must be a positive integer")
    if kind == "backup":
        if not body.get("backup_type") or not body.get("instance_uuid"):
            raise BadRequest("a backup needs 'backup_type' and 'instance_uuid'")
        props = {**props, "backup_type": body["backup_type"]}
    keep = body.get("keep_image_on_error", False)
    if not isinstance(keep, bool):
        raise BadRequest("'keep_image_on_error' must be a boolean")
    req = SnapshotRequest(disk=body["disk"], name=body["name"], base_image=body.get("base_image"),
                          store=body.get("store"), image_id=body.get("image_id"), properties=props,
                          instance_uuid=body.get("instance_uuid"), image_type=kind, keep_image_on_error=keep,
                          container_format=body.get("container_format") or "bare",
                          quiesce_domain=body.get("quiesce_domain"))
    validate_request(req)
    return req, body


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

    @app.get("/metrics")
    def metrics() -> Response:
        m.IN_FLIGHT.set(svc.runner.in_flight)
        return Response(generate_latest(m.REGISTRY), mimetype="text/plain; version=0.0.4")

    @app.get("/v1/stores")
    def stores() -> Response:
        try:
            return jsonify({"stores": [s.to_dict() for s in svc.fs.stores()]})
        except FastsnapError as exc:
            return error(503, str(exc))

    @app.get("/v1/parked")
    def list_parked() -> Response:
        try:
            return jsonify({"parked_disks": svc.fs.parked_disks(run=False)})
        except FastsnapError as exc:
            return error(503, str(exc))

    @app.post("/v1/parked")
    def report_parked() -> Response:
        """The Nova hook moved a disk to the RBD trash: drain now. fastsnap finds parked disks itself (by the
        ids its journal recorded); the report only wakes the poller."""
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
        jobs = svc.jobs.list(request.args.get("state"))
        for f in ("disk", "image_id"):
            v = request.args.get(f)
            if v:
                jobs = [j for j in jobs if (j.request.get("disk") if f == "disk" else j.image_id) == v]
        return jsonify({"snapshots": [j.view() for j in jobs]})

    @app.get("/v1/snapshots/<job_id>")
    def get_job(job_id: str) -> Response:
        job = svc.jobs.get(job_id)
        if job is None:
            return error(404, f"no snapshot job {job_id}")
        return jsonify(job.view())

    @app.delete("/v1/snapshots/<job_id>")
    def cancel_job(job_id: str) -> Response:
        job = svc.jobs.get(job_id)
        if job is None:
            return error(404, f"no snapshot job {job_id}")
        if job.state not in ACTIVE_STATES or not svc.runner.cancel(job_id):
            return error(409, f"job {job_id} is {job.state}; only running jobs can be cancelled")
        resp = jsonify(job.view())
        resp.status_code = 202
        return resp

    @app.post("/v1/snapshots")
    def create() -> Response:
        if not request.is_json:
            return error(415, "send application/json")
        try:
            req, body = _request_from_body(request.get_json(silent=True))
        except BadRequest as exc:
            return error(400, str(exc), kind=exc.kind)
        key = request.headers.get("Idempotency-Key") or req.image_id
        if key:
            existing = svc.jobs.by_key(key)
            if existing is not None:
                return _job_response(existing, 200)
        auth: dict[str, Any] = {}
        if body.get("user_token"):
            if not roles() & PRIVILEGED and not svc.local_only:
                return error(403, "'user_token' is for trusted service callers (service or admin role)")
            auth["user_token"] = body["user_token"]
        elif not svc.local_only and not roles() & PRIVILEGED:
            auth["user_auth"] = request.environ.get("keystone.token_auth")
        try:  # validate and plan before accepting: bad input gets a 400 and nothing is created
            glance, _ = svc.fs.glance_for(auth.get("user_token"), auth.get("user_auth"))
            svc.fs.plan(req, glance)
        except BadRequest as exc:
            return error(400, str(exc), kind=exc.kind)
        except Forbidden as exc:
            return error(403, str(exc), kind=exc.kind)
        except FastsnapError as exc:
            return error(503, str(exc), kind=exc.kind)
        job = new_job(body, key, request.environ.get(request_id.ENV_REQUEST_ID))
        if not svc.runner.try_reserve(job):
            m.REJECTED.inc()
            return error(429, f"this host already runs {svc.runner.slots} snapshots",
                         {"Retry-After": str(svc.conf.service.retry_after)})
        stored = svc.jobs.insert(job)
        if stored.id != job.id:  # a concurrent request with the same key won
            svc.runner.release(job)
            return _job_response(stored, 200)
        svc.runner.submit(job, lambda j: svc.run(j, req, auth))
        return _job_response(job, 202)

    def _job_response(job: Job, code: int) -> Response:
        resp = jsonify(job.view())
        resp.status_code = code
        resp.headers["Location"] = f"/v1/snapshots/{job.id}"
        return resp

    return app


def wsgi_stack(svc: Service) -> Any:
    """The Flask app behind keystonemiddleware (unless local-only) and the request-id middleware."""
    app: Any = create_app(svc)
    if not svc.local_only:
        app = auth_token.AuthProtocol(app, {"oslo_config_project": "fastsnap",
                                            "oslo_config_config": svc.conf, "delay_auth_decision": True})
    return request_id.RequestId(app)


def build(config_file: str | None = None) -> tuple[Service, Any]:
    from fastsnap import config

    conf = config.load(config_file)
    if conf.log_dir:  # before logging.setup, which opens the file there
        os.makedirs(conf.log_dir, exist_ok=True)
    logging.setup(conf, "fastsnap")
    svc = Service(conf, local_only=bool(conf.service.unix_socket))
    svc.start()
    return svc, wsgi_stack(svc)


__all__ = ["Service", "build", "create_app", "register_opts", "service_opts", "wsgi_stack"]
