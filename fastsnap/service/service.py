"""The REST service's state and work: the Fastsnap client, the job store and runner, start-up recovery, the
flatten poller and running one job. Accepting a request is :mod:`fastsnap.service.accept`; routes are in
:mod:`fastsnap.service.routes`."""

from __future__ import annotations

import threading
import time

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.api import Fastsnap
from fastsnap.caller import Caller
from fastsnap.errors import Cancelled
from fastsnap.journal import Job
from fastsnap.plan import Plan, SnapshotPath
from fastsnap.planning import Planned
from fastsnap.request import SnapshotRequest
from fastsnap.result import SnapshotResult
from fastsnap.service import metrics as m
from fastsnap.service.errors import job_error
from fastsnap.service.jobs import Runner
from fastsnap.states import (
    JOB_ACTIVE,
    REGISTER_STEPS,
    REUSABLE,
    JobState,
    OpState,
    RecoverAction,
)
from fastsnap.status import flatten_backlog, parked_count

LOG = logging.getLogger(__name__)


class Service:
    """State shared by the request handlers: the Fastsnap client, the job store and runner."""

    def __init__(self, conf: cfg.ConfigOpts, local_only: bool = False) -> None:
        self.conf = conf
        self.local_only = local_only
        self.fs = Fastsnap(conf)
        self.journal = self.fs.journal
        self.runner = Runner(conf.snapshot.max_concurrent, conf.service.max_concurrent_per_project)
        self._stop = threading.Event()
        self._wake = threading.Event()  # a parked disk was reported: drain now, not at the next poll
        m.initialise_series()

    # -- start-up -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what a previous process left, settle its jobs from their operations, start the flatten
        poller and the periodic recover."""
        self._recover()
        self._settle_active(at_start=True)
        threading.Thread(target=self._flatten_loop, name="fastsnap-flatten", daemon=True).start()
        if self.conf.service.recover_interval:
            threading.Thread(target=self._recover_loop, name="fastsnap-recover", daemon=True).start()

    def _recover(self) -> None:
        results = self.fs.recover()
        for action in results:
            (LOG.warning if action.action is RecoverAction.FAILED else LOG.info)("recover: %s", action.to_dict())
        m.RECOVER_PENDING.set(sum(1 for r in results if r.action is RecoverAction.FAILED))

    def _recover_loop(self) -> None:
        """Operations left by a dead process after start (or left for the next recover) are finished or undone
        every ``recover_interval``; jobs standing for them are then brought up to date."""
        while not self._stop.wait(self.conf.service.recover_interval):
            try:
                self._recover()
                self._settle_active()
            except Exception:
                LOG.exception("periodic recover failed")

    def _settle_active(self, at_start: bool = False) -> None:
        for job in self.journal.list_jobs(limit=1 << 30):
            if job.state in JOB_ACTIVE:
                self.settle(job, at_start)

    def settle(self, job: Job, at_start: bool = False) -> Job:
        """Bring a job that no thread of this process runs up to date with its operation in the journal (a job
        a killed service left, or one standing for an operation the CLI or the Python API runs)."""
        if job.state not in JOB_ACTIVE or (not at_start and self.runner.running(job.id)):
            return job
        if not at_start:  # read again: a thread of ours may have finished it since it was read
            fresh = self.journal.get_job(job.id)
            if fresh is None or fresh.state not in JOB_ACTIVE:
                return fresh or job
            job = fresh
        op = self.journal.get(job.image_id) if job.image_id else None
        if op is not None and op.state == OpState.DONE:
            res = SnapshotResult.of(op)
            job.state, job.result, job.error = JobState.DONE, res.to_dict(), None
            job.path, job.store, job.reason = res.path, res.store, res.reason
        elif op is not None and op.state in REUSABLE:
            job.state = JobState.FAILED
            job.error = {"code": 500, "title": "Interrupted" if at_start else "failed",
                         "message": ("the service stopped during this snapshot; it was rolled back" if at_start
                                     else f"the operation failed and was rolled back: {op.error}")}
        elif op is None and at_start:
            job.state = JobState.FAILED
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
        if self.runner.in_flight == 0:  # nothing of ours runs: give the host's lease share back now
            self.fs.journal.close()
        # else the lease lapses on its own ([journal] lease_seconds) once this process is gone, never before

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
                m.PARKED_DISKS.set(parked_count(parked))
            except Exception:
                LOG.exception("draining parked disks failed")
            try:
                rows = self.fs.flatten_status(run_local=True)
                m.FLATTEN_BACKLOG.set(flatten_backlog(rows))
            except Exception:
                LOG.exception("flatten poll failed")

    # -- the job ----------------------------------------------------------------------------------------

    def run(self, job: Job, req: SnapshotRequest, caller: Caller, planned: Planned | None = None) -> None:
        """Take the snapshot of an accepted job for ``caller`` (resolved while accepting); ``planned``: what the
        request's validation planned (not asked of Glance and Keystone again)."""
        t0 = time.monotonic()
        last = [0.0]
        m.IN_FLIGHT.inc()

        def on_plan(plan: Plan, image_id: str) -> None:
            job.path, job.store, job.reason, job.image_id = plan.path.value, plan.store, plan.reason, image_id
            job.state = JobState.RUNNING
            self.journal.save_job(job)

        def on_step(step: str) -> None:
            if self.runner.cancelled(job.id):
                raise Cancelled(f"cancelled at step {step}")
            if step in REGISTER_STEPS and job.state != JobState.REGISTERING:
                job.state = JobState.REGISTERING
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
            res = self.fs.snapshot(req, caller=caller, progress=progress, wait=0, on_plan=on_plan,
                                   on_step=on_step, planned=planned)
            job.result = res.to_dict()
            job.state = JobState.DONE
            # the body's length: the disk's size for raw, the qcow2 file's for qcow2 (what progress counted)
            job.bytes_done = res.bytes_streamed
            job.bytes_total = res.bytes_streamed if res.path == SnapshotPath.STREAM else 0
            m.LATENCY.labels(res.path).observe(res.seconds)
            m.BYTES.inc(res.bytes_streamed)
            m.QUIESCE.labels("quiesced" if res.quiesced else "crash_consistent").inc()
            if res.quiesce.get("freeze_seconds") is not None:
                m.FREEZE.observe(res.quiesce["freeze_seconds"])
            if res.path == SnapshotPath.STREAM:
                m.FALLBACKS.labels(m.fallback_reason(res.reason)).inc()
        except BaseException as exc:
            cancelled = isinstance(exc, Cancelled) or self.runner.cancelled(job.id)
            job.state = JobState.CANCELLED if cancelled else JobState.FAILED
            job.error = job_error(exc, cancelled)
            m.ERRORS.labels(job.error["kind"]).inc()
            LOG.warning("job %s (request %s) %s: %s", job.id, job.request_id, job.state, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            m.IN_FLIGHT.dec()
            job.updated_at = time.time()
            self.journal.save_job(job)
            LOG.info("job %s (request %s) %s in %.2fs", job.id, job.request_id, job.state, time.monotonic() - t0)
