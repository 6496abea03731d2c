"""Accepting a ``POST /v1/snapshots``: who may snapshot as whom (tenancy), the answer to a retry (idempotency: one
key or image id, one job), the job's slot, and the race of two requests for the same key or image id. The route
(:mod:`fastsnap.service.routes.snapshots`) only reads the HTTP request and renders what this decides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastsnap.caller import Caller
from fastsnap.errors import BadRequest, Conflict, FastsnapError, http_status
from fastsnap.journal import Job
from fastsnap.request import SnapshotRequest
from fastsnap.service import metrics as m
from fastsnap.service.jobs import new_job
from fastsnap.service.service import Service
from fastsnap.states import REUSABLE, JobState

PRIVILEGED = {"service", "admin"}


@dataclass(frozen=True)
class Requester:
    """Who calls: the project of the caller's token, and whether it may see every project's jobs."""

    project: str | None
    privileged: bool


@dataclass(frozen=True)
class Submission:
    """One POST as the route read it: the request and its body, the idempotency key (the header's, else the
    image id), the request id, the caller, its roles and its own Keystone auth (keystonemiddleware's)."""

    req: SnapshotRequest
    body: dict[str, Any]
    key: str | None
    request_id: str | None
    who: Requester
    roles: frozenset[str]
    token_auth: Any = None


class Refused(Exception):
    """The request is not accepted: the error answer to give (``code``, ``message``, ``headers``, ``kind``)."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.headers, self.kind = code, message, headers or {}, kind

    @classmethod
    def of(cls, exc: FastsnapError) -> Refused:
        """A fastsnap error raised while the request was validated."""
        return cls(http_status(exc, False), str(exc), kind=getattr(exc, "kind", None))


@dataclass
class Accepted:
    """The job that stands for the request, and the status to answer with: 202 new, 200 an earlier one."""

    job: Job
    code: int


def visible(job: Job, who: Requester) -> bool:
    return who.privileged or (job.project_id or None) == who.project


def caller_of(sub: Submission, local_only: bool, opts: Any) -> Caller:
    """Whom the snapshot is for. A trusted caller (the socket's operator, or the service and admin roles) may
    pass a user's token, or act as fastsnap itself with an operator role; anyone else snapshots on its own
    behalf, of a disk its project owns. For a user: the ownership check with Nova (fastsnap.ownership), always
    for an untrusted caller; for a trusted one (the Nova hook) unless [service] verify_trusted_callers is off.
    ``local_only``: the service listens on its unix socket only; ``opts``: the ``[service]`` options."""
    trusted = local_only or bool(sub.roles & PRIVILEGED)
    verify = not trusted or opts.verify_trusted_callers
    if sub.body.get("user_token"):
        if not trusted:
            raise Refused(403, "'user_token' is for trusted service callers (service or admin role)")
        return Caller(user_token=sub.body["user_token"], verify_owner=verify)
    if not trusted:  # snapshots on its own behalf, of a disk its project owns
        return Caller(user_auth=sub.token_auth, verify_owner=verify)
    if not local_only and not sub.roles & set(opts.operator_roles):
        raise Refused(403, f"a snapshot as fastsnap itself needs one of the roles "
                           f"{sorted(opts.operator_roles)} ([service] operator_roles); pass the "
                           f"user's token ('user_token') to snapshot on a user's behalf")
    return Caller(verify_owner=verify)


def accept(svc: Service, sub: Submission) -> Accepted:
    """Validate and plan before accepting (bad input gets a 400 and nothing is created), answer a retry with
    its earlier job, take a slot, store the job and start it. Raises :class:`Refused`."""
    req, who, key = sub.req, sub.who, sub.key
    caller = caller_of(sub, svc.local_only, svc.conf.service)
    try:
        _, ident = caller.resolve(svc.conf, svc.fs.session, svc.fs.glance)
        # The job belongs to the project the snapshot is taken for: the user's, else the caller's.
        project = ident.project_id if ident.mode == "user" else who.project
        if key:
            existing = svc.journal.job_by_key(project, key)
            if existing is not None:
                return Accepted(_same(svc, existing, req), 200)
        if req.image_id:
            earlier = _earlier(svc, sub, project)
            if earlier is not None:
                return Accepted(earlier, 200)
        planned = svc.fs.prepare(req, caller)
    except FastsnapError as exc:
        raise Refused.of(exc) from exc
    job = new_job(sub.body, key, sub.request_id, project, req.image_id)
    # Snapshots for users count against their project's share too; operator ones only against the host's.
    full = svc.runner.try_reserve(job, limited=ident.mode == "user")
    if full is not None:
        m.REJECTED.labels(full).inc()
        what = (f"this host already runs {svc.runner.slots} snapshots" if full == "host" else
                f"project {project} already runs {svc.runner.per_project} snapshots on this host "
                f"([service] max_concurrent_per_project)")
        raise Refused(429, what, {"Retry-After": str(svc.conf.service.retry_after)})
    stored = svc.journal.insert_job(job)
    if stored.id != job.id:  # a concurrent request for the same key or image id won
        svc.runner.release(job)
        if not visible(stored, who):
            raise Refused(400, f"image {req.image_id} does not exist")
        return Accepted(svc.settle(stored), 200)
    svc.runner.submit(job, lambda j: svc.run(j, req, caller, planned))
    return Accepted(job, 202)


def _same(svc: Service, job: Job, req: SnapshotRequest) -> Job:
    """The earlier job for this key or image id, when it was for the same disk (else Conflict)."""
    if job.request.get("disk") != req.disk:
        what = f"image {req.image_id}" if req.image_id and job.image_id == req.image_id else "this key"
        raise Conflict(f"{what} belongs to a snapshot of {job.request.get('disk')} (job {job.id}), "
                       f"not of {req.disk}")
    return svc.settle(job)


def _earlier(svc: Service, sub: Submission, project: str | None) -> Job | None:
    """The job that already stands for ``req.image_id`` (one image id, one operation), made from the journal
    when the operation was started by the CLI or the Python API. None when the image id is free."""
    req, who = sub.req, sub.who
    assert req.image_id is not None
    op = svc.journal.get(req.image_id)
    if op is not None and op.state not in REUSABLE:
        owner = (op.acting_as or {}).get("project_id")
        if not who.privileged and owner != who.project:
            raise BadRequest(f"image {req.image_id} does not exist")
        if op.disk != req.disk:
            raise Conflict(f"image {req.image_id} belongs to a snapshot of {op.disk} ({op.state}), "
                           f"not of {req.disk}")
    job = svc.journal.job_for_image(req.image_id)
    if job is not None:
        if not visible(job, who):
            raise BadRequest(f"image {req.image_id} does not exist")
        return _same(svc, job, req)
    if op is None or op.state in REUSABLE:
        return None
    adopted = new_job(sub.body, sub.key, sub.request_id, project, req.image_id)
    adopted.state, adopted.path, adopted.store = JobState.RUNNING, op.path, op.store
    adopted.reason = op.reason
    return svc.settle(svc.journal.insert_job(adopted))
