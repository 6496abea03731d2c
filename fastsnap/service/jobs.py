"""Snapshot jobs of the REST service: records in the journal (:class:`fastsnap.journal.Job`, states in
:class:`fastsnap.states.JobState`), run on a bounded thread pool."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from oslo_log import log as logging

from fastsnap.journal import Job

LOG = logging.getLogger(__name__)


class Runner:
    """Runs jobs on at most ``slots`` threads, at most ``per_project`` of them for one project (0: no such
    limit); refuses more (the caller answers 429)."""

    def __init__(self, slots: int, per_project: int = 0) -> None:
        self.slots = slots
        self.per_project = per_project
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="fastsnap-job")
        self._lock = threading.Lock()
        self._running: dict[str, Job] = {}
        self._cancel: set[str] = set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def try_reserve(self, job: Job, limited: bool = True) -> str | None:
        """Take a slot for ``job``; None when taken, else which limit is full: "host" or "project" (``limited``:
        whether the per-project limit applies to this job, by its ``project_id``)."""
        with self._lock:
            if len(self._running) >= self.slots:
                return "host"
            if limited and self.per_project and job.project_id is not None and sum(
                    1 for j in self._running.values() if j.project_id == job.project_id) >= self.per_project:
                return "project"
            self._running[job.id] = job
            return None

    def release(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.id, None)
            self._cancel.discard(job.id)

    def submit(self, job: Job, work: Callable[[Job], None]) -> None:
        def run() -> None:
            try:
                work(job)
            except Exception:  # work records its own errors; never lose the thread silently
                LOG.exception("job %s crashed", job.id)
            finally:
                self.release(job)

        self._pool.submit(run)

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            if job_id not in self._running:
                return False
            self._cancel.add(job_id)
            return True

    def running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running

    def cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancel

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


SECRET_FIELDS = ("user_token",)


def new_job(request: dict[str, Any], key: str | None, request_id: str | None, project_id: str | None = None,
            image_id: str | None = None) -> Job:
    """A job for a request body; secrets (the user's token) are left out: the record lives in the journal."""
    kept = {k: v for k, v in request.items() if k not in SECRET_FIELDS}
    return Job(id=str(uuid.uuid4()), key=key, request=kept, request_id=request_id, project_id=project_id,
               image_id=image_id)


def view(job: Job) -> dict[str, Any]:
    """The job as the API shows it (never the user token)."""
    d = dict(job.__dict__)
    d["request"] = {k: v for k, v in job.request.items() if k not in SECRET_FIELDS}  # records from before
    return d
