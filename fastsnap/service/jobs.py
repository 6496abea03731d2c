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
    """Runs jobs on at most ``slots`` threads; refuses more (the caller answers 429)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="fastsnap-job")
        self._lock = threading.Lock()
        self._running: dict[str, Job] = {}
        self._cancel: set[str] = set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def try_reserve(self, job: Job) -> bool:
        with self._lock:
            if len(self._running) >= self.slots:
                return False
            self._running[job.id] = job
            return True

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


def new_job(request: dict[str, Any], key: str | None, request_id: str | None, project_id: str | None = None,
            image_id: str | None = None) -> Job:
    return Job(id=str(uuid.uuid4()), key=key, request=request, request_id=request_id, project_id=project_id,
               image_id=image_id)


def view(job: Job) -> dict[str, Any]:
    """The job as the API shows it (never the user token)."""
    d = dict(job.__dict__)
    d["request"] = {k: v for k, v in job.request.items() if k != "user_token"}
    return d
