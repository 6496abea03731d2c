"""The REST service for compute hosts: a thin shell over :class:`fastsnap.api.Fastsnap`.

Over TCP every endpoint needs a Keystone token (keystonemiddleware auth_token) with one of
``[service] allowed_roles``; a local unix socket (``[service] unix_socket``) is protected by file permissions.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from keystonemiddleware import auth_token
from oslo_config import cfg
from oslo_log import log as logging
from oslo_middleware import request_id
from prometheus_client import generate_latest
from werkzeug.exceptions import HTTPException

from fastsnap import journal as jr
from fastsnap.api import Fastsnap, Planned, SnapshotRequest, SnapshotResult, check_text, validate_request
from fastsnap.errors import BadRequest, Conflict, FastsnapError, Forbidden
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
    Runner,
    new_job,
    view,
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
    cfg.IntOpt("backlog", default=256, min=5,
               help="Connections the kernel queues for the service before it accepts them (listen backlog). "
                    "cheroot's default (5) resets connections in a burst of concurrent requests."),
    cfg.IntOpt("retry_after", default=5, min=1, help="Retry-After seconds sent with 429 when the host is busy."),
    cfg.IntOpt("flatten_poll_interval", default=30, min=1,
               help="Seconds between checks of queued background flattens (and in-process fallbacks)."),
]

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 413: "Request Entity Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
          500: "Internal Server Error",
          503: "Service Unavailable"}
PRIVILEGED = {"service", "admin"}


@dataclass(frozen=True)
class Caller:
    """Who calls: the project of the caller's token, and whether it may see every project's jobs."""

    project: str | None
    privileged: bool


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
        self.journal = self.fs.journal
        self.runner = Runner(conf.snapshot.max_concurrent)
        self._stop = threading.Event()
        self._wake = threading.Event()  # a parked disk was reported: drain now, not at the next poll

    # -- start-up -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what a previous process left, settle its jobs from their operations, start the flatten
        poller."""
        for action in self.fs.recover():
            LOG.info("recover: %s", action)
        for job in self.journal.list_jobs(limit=1 << 30):
            if job.state in ACTIVE_STATES:
                self.settle(job, at_start=True)
        threading.Thread(target=self._flatten_loop, name="fastsnap-flatten", daemon=True).start()

    def settle(self, job: Job, at_start: bool = False) -> Job:
        """Bring a job that no thread of this process runs up to date with its operation in the journal (a job
        a killed service left, or one standing for an operation the CLI or the Python API runs)."""
        if job.state not in ACTIVE_STATES or (not at_start and self.runner.running(job.id)):
            return job
        if not at_start:  # read again: a thread of ours may have finished it since it was read
            fresh = self.journal.get_job(job.id)
            if fresh is None or fresh.state not in ACTIVE_STATES:
                return fresh or job
            job = fresh
        op = self.journal.get(job.image_id) if job.image_id else None
        if op is not None and op.state == jr.DONE:
            res = SnapshotResult.of(op)
            job.state, job.result, job.error = DONE, res.to_dict(), None
            job.path, job.store, job.reason = res.path, res.store, res.reason
        elif op is not None and op.state in jr.REUSABLE:
            job.state = FAILED
            job.error = {"code": 500, "title": "Interrupted" if at_start else "failed",
                         "message": ("the service stopped during this snapshot; it was rolled back" if at_start
                                     else f"the operation failed and was rolled back: {op.error}")}
        elif op is None and at_start:
            job.state = FAILED
            job.error = {"code": 500, "title": "Interrupted",
                         "message": "the service stopped before this snapshot began; nothing was created"}
        else:
            return job  # still running (in another process, or left for the next recover)
        self.journal.save_job(job)
        return job

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

    def run(self, job: Job, req: SnapshotRequest, auth: dict[str, Any], planned: Planned | None = None) -> None:
        """Take the snapshot of an accepted job; ``planned``: what the request's validation planned (not asked
        of Glance and Keystone again)."""
        t0 = time.monotonic()
        last = [0.0]
        m.IN_FLIGHT.inc()

        def on_plan(plan: Plan, image_id: str) -> None:
            job.path, job.store, job.reason, job.image_id = plan.path.value, plan.store, plan.reason, image_id
            job.state = RUNNING
            self.journal.save_job(job)

        def on_step(step: str) -> None:
            if self.runner.cancelled(job.id):
                raise Cancelled(f"cancelled at step {step}")
            if step in REGISTER_STEPS and job.state != REGISTERING:
                job.state = REGISTERING
                self.journal.save_job(job)

        def progress(done: int, total: int) -> None:
            if self.runner.cancelled(job.id):
                raise Cancelled("cancelled during the stream")
            job.bytes_done, job.bytes_total = done, total
            now = time.monotonic()
            if now - last[0] > 0.5 or done >= total:
                last[0] = now
                self.journal.save_job(job)

        try:
            res = self.fs.snapshot(req, progress=progress, wait=0, on_plan=on_plan, on_step=on_step,
                                   planned=planned, **auth)
            job.result = res.to_dict()
            job.state = DONE
            job.bytes_done, job.bytes_total = res.bytes_streamed, res.size if res.path == "stream" else 0
            m.LATENCY.labels(res.path).observe(res.seconds)
            m.BYTES.inc(res.bytes_streamed)
            m.QUIESCE.labels("quiesced" if res.quiesced else "crash_consistent").inc()
            if res.quiesce.get("freeze_seconds") is not None:
                m.FREEZE.observe(res.quiesce["freeze_seconds"])
            if res.path == "stream":
                m.FALLBACKS.labels(m.fallback_reason(res.reason)).inc()
            if req.image_type == "backup":
                job.result["rotated"] = self._rotate(job, req, res.image_id, auth)
        except BaseException as exc:
            cancelled = isinstance(exc, Cancelled) or self.runner.cancelled(job.id)
            job.state = CANCELLED if cancelled else FAILED
            kind = "cancelled" if cancelled else getattr(exc, "kind", type(exc).__name__)
            code = (409 if isinstance(exc, Conflict) else 400 if isinstance(exc, BadRequest)
                    else 403 if isinstance(exc, Forbidden) else 500)
            job.error = {"code": code, "title": kind, "message": str(exc), "kind": kind}
            m.ERRORS.labels(kind).inc()
            LOG.warning("job %s (request %s) %s: %s", job.id, job.request_id, job.state, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            m.IN_FLIGHT.dec()
            job.updated_at = time.time()
            self.journal.save_job(job)
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
        raise BadRequest(f"unknown field(s): {', '.join(repr(u)[:80] for u in sorted(unknown))}")
    for f in ("disk", "name"):
        if not isinstance(body.get(f), str):
            raise BadRequest(f"'{f}' is required and must be a string")
    for f in ("base_image", "store", "image_id", "instance_uuid", "backup_type", "user_token", "container_format",
              "quiesce_domain"):
        if body.get(f) is not None and not isinstance(body[f], str):
            raise BadRequest(f"'{f}' must be a string")
    props = body.get("properties")
    props = {} if props is None else props
    if not isinstance(props, dict):
        raise BadRequest(f"'properties' must be an object of strings, not {type(props).__name__}")
    for k, v in props.items():
        if not isinstance(v, str):
            raise BadRequest(f"property {k!r} must be a string, not {type(v).__name__}")
    kind = body.get("type") or "snapshot"
    if kind not in ("snapshot", "backup"):
        raise BadRequest("'type' must be snapshot or backup")
    rotation = body.get("rotation")
    if rotation is not None and (not isinstance(rotation, int) or isinstance(rotation, bool) or rotation < 1):
        raise BadRequest("'rotation' must be a positive integer")
    if kind == "backup":
        if not body.get("backup_type") or not body.get("instance_uuid"):
            raise BadRequest("a backup needs 'backup_type' and 'instance_uuid'")
        check_text("backup type", body["backup_type"])
        props = {**props, "backup_type": body["backup_type"]}
    keep = body.get("keep_image_on_error", False)
    if not isinstance(keep, bool):
        raise BadRequest("'keep_image_on_error' must be a boolean")
    require_quiesce = body.get("require_quiesce")
    if require_quiesce is not None and not isinstance(require_quiesce, bool):
        raise BadRequest("'require_quiesce' must be a boolean or null")
    req = SnapshotRequest(disk=body["disk"], name=body["name"], base_image=body.get("base_image"),
                          store=body.get("store"), image_id=body.get("image_id"), properties=props,
                          instance_uuid=body.get("instance_uuid"), image_type=kind, keep_image_on_error=keep,
                          container_format=body.get("container_format") or "bare",
                          quiesce_domain=body.get("quiesce_domain"), require_quiesce=require_quiesce)
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

    def caller() -> Caller:
        if svc.local_only:  # the socket's file mode is the guard: whoever may call is the host's operator
            return Caller(project=None, privileged=True)
        return Caller(project=request.headers.get("X-Project-Id") or None, privileged=bool(roles() & PRIVILEGED))

    def visible(job: Job, who: Caller) -> bool:
        return who.privileged or (job.project_id or None) == who.project

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
        if job.state not in ACTIVE_STATES or not svc.runner.cancel(job_id):
            why = ("only running jobs can be cancelled" if job.state not in ACTIVE_STATES
                   else "its operation runs in another process (the CLI) and cannot be cancelled here")
            return error(409, f"job {job_id} is {job.state}; {why}")
        resp = jsonify(view(job))
        resp.status_code = 202
        return resp

    def _same(job: Job, req: SnapshotRequest) -> Job:
        """The earlier job for this key or image id, when it was for the same disk (else Conflict)."""
        if job.request.get("disk") != req.disk:
            what = f"image {req.image_id}" if req.image_id and job.image_id == req.image_id else "this key"
            raise Conflict(f"{what} belongs to a snapshot of {job.request.get('disk')} (job {job.id}), "
                           f"not of {req.disk}")
        return svc.settle(job)

    def _earlier(req: SnapshotRequest, body: dict[str, Any], key: str | None, project: str | None,
                 who: Caller) -> Job | None:
        """The job that already stands for ``req.image_id`` (one image id, one operation), made from the journal
        when the operation was started by the CLI or the Python API. None when the image id is free."""
        assert req.image_id is not None
        op = svc.journal.get(req.image_id)
        if op is not None and op.state not in jr.REUSABLE:
            owner = (op.extra.get("acting_as") or {}).get("project_id")
            if not who.privileged and owner != who.project:
                raise BadRequest(f"image {req.image_id} does not exist")
            if op.disk != req.disk:
                raise Conflict(f"image {req.image_id} belongs to a snapshot of {op.disk} ({op.state}), "
                               f"not of {req.disk}")
        job = svc.journal.job_for_image(req.image_id)
        if job is not None:
            if not visible(job, who):
                raise BadRequest(f"image {req.image_id} does not exist")
            return _same(job, req)
        if op is None or op.state in jr.REUSABLE:
            return None
        adopted = new_job(body, key, request.environ.get(request_id.ENV_REQUEST_ID), project, req.image_id)
        adopted.state, adopted.path, adopted.store = RUNNING, op.path, op.store
        adopted.reason = str(op.extra.get("reason", ""))
        return svc.settle(svc.journal.insert_job(adopted))

    @app.post("/v1/snapshots")
    def create() -> Response:
        if not request.is_json:
            return error(415, "send application/json")
        try:
            req, body = _request_from_body(request.get_json(silent=True))
        except BadRequest as exc:
            return error(400, str(exc), kind=exc.kind)
        key = request.headers.get("Idempotency-Key")
        if key is not None and (not key or len(key) > 255 or not key.isprintable()):
            return error(400, "Idempotency-Key must be 1 to 255 printable characters")
        key = key or req.image_id
        who = caller()
        auth: dict[str, Any] = {}
        if body.get("user_token"):
            if not roles() & PRIVILEGED and not svc.local_only:
                return error(403, "'user_token' is for trusted service callers (service or admin role)")
            auth["user_token"] = body["user_token"]
        elif not svc.local_only and not roles() & PRIVILEGED:
            auth["user_auth"] = request.environ.get("keystone.token_auth")
        try:  # validate and plan before accepting: bad input gets a 400 and nothing is created
            glance, ident = svc.fs.glance_for(auth.get("user_token"), auth.get("user_auth"))
            # The job belongs to the project the snapshot is taken for: the user's, else the caller's.
            project = ident.project_id if ident.mode == "user" else who.project
            if key:
                existing = svc.journal.job_by_key(project, key)
                if existing is not None:
                    return _job_response(_same(existing, req), 200)
            if req.image_id:
                earlier = _earlier(req, body, key, project, who)
                if earlier is not None:
                    return _job_response(earlier, 200)
            planned = svc.fs.prepare(req, acting=(glance, ident))
        except Conflict as exc:
            return error(409, str(exc), kind=exc.kind)
        except BadRequest as exc:
            return error(400, str(exc), kind=exc.kind)
        except Forbidden as exc:
            return error(403, str(exc), kind=exc.kind)
        except FastsnapError as exc:
            return error(503, str(exc), kind=exc.kind)
        job = new_job(body, key, request.environ.get(request_id.ENV_REQUEST_ID), project, req.image_id)
        if not svc.runner.try_reserve(job):
            m.REJECTED.inc()
            return error(429, f"this host already runs {svc.runner.slots} snapshots",
                         {"Retry-After": str(svc.conf.service.retry_after)})
        stored = svc.journal.insert_job(job)
        if stored.id != job.id:  # a concurrent request for the same key or image id won
            svc.runner.release(job)
            if not visible(stored, who):
                return error(400, f"image {req.image_id} does not exist")
            return _job_response(svc.settle(stored), 200)
        svc.runner.submit(job, lambda j: svc.run(j, req, auth, planned))
        return _job_response(job, 202)

    def _job_response(job: Job, code: int) -> Response:
        resp = jsonify(view(job))
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
