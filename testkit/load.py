"""The REST service under load (issue 11, point 9): the request mix, the client that fires it and the checks.

Many concurrent POSTs, clone and stream, with duplicates (same Idempotency-Key, same image id) and cancels; then
the queue drains and everything is checked. Here so that the test (``tests/integration/test_load.py``) and the
benchmark (``python -m bench.load``, which records its figures in ``bench/RESULTS.md``) run the same thing.

Every answer must be a job (202 new, 200 the same request again) or a clean 429 (busy) / 409 (conflict); every
job must end done or cancelled; every done job's image is active and byte-identical to its disk; a cancelled
job leaves nothing.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

FINAL = ("done", "failed", "cancelled")
ALLOWED = (200, 202, 409, 429)


@dataclass
class Req:
    body: dict[str, Any]
    headers: dict[str, str]
    group: str            # requests of one group are duplicates: they must all name the same job
    cancel: bool = False  # cancel the job right after it is accepted


@dataclass
class Answer:
    req: Req
    code: int
    job: dict[str, Any] | None
    seconds: float
    attempts: int = 1
    error: str = ""


@dataclass
class Outcome:
    answers: list[Answer]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)   # final state of every job answered
    cancels: Counter[int] = field(default_factory=Counter)           # DELETE answers by code
    burst_seconds: float = 0.0
    drain_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def plan_requests(disks: Sequence[str], queued: Sequence[str], posts: int = 200, seed: int = 11) -> list[Req]:
    """``posts`` requests over ``disks``: half clone (store fast), half stream (store cheap); about a third are
    duplicates (pairs with one Idempotency-Key, and pairs filling one queued image id); one in eight of the
    others is cancelled right after it is accepted."""
    rng = random.Random(seed)
    reqs: list[Req] = []
    free_queued = list(queued)
    i = 0
    while len(reqs) < posts:
        disk = disks[i % len(disks)]
        store = "fast" if i % 2 == 0 else "cheap"
        body: dict[str, Any] = {"disk": f"vms/{disk}", "name": f"load-{i}", "store": store}
        kind = rng.random()
        if kind < 0.15 and free_queued and len(reqs) + 2 <= posts:
            body["image_id"] = free_queued.pop()
            group = body["image_id"]
            reqs += [Req(body, {}, group), Req(dict(body), {}, group)]
        elif kind < 0.35 and len(reqs) + 2 <= posts:
            key = str(uuid.uuid4())
            reqs += [Req(body, {"Idempotency-Key": key}, key), Req(dict(body), {"Idempotency-Key": key}, key)]
        else:
            reqs.append(Req(body, {}, f"single-{i}", cancel=rng.random() < 0.125))
        i += 1
    rng.shuffle(reqs)
    return reqs[:posts]


def fire(url: str, token: Callable[[], str], reqs: Sequence[Req], retry: bool = False,
         deadline: float = 600) -> Outcome:
    """POST every request at once (one thread each, released together). With ``retry`` a 429 is retried after
    its Retry-After until accepted (a client that insists); otherwise a 429 is final."""
    out = Outcome(answers=[])
    lock = threading.Lock()
    start = threading.Barrier(len(reqs))
    end_by = time.monotonic() + deadline
    cancel_codes: Counter[int] = Counter()

    def one(r: Req) -> None:
        start.wait()
        t0 = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                resp = requests.post(f"{url}/v1/snapshots", json=r.body, timeout=120,
                                     headers={"X-Auth-Token": token(), **r.headers})
            except requests.RequestException as exc:
                ans = Answer(r, 0, None, time.monotonic() - t0, attempts, f"{type(exc).__name__}: {exc}")
                break
            if resp.status_code == 429 and retry and time.monotonic() < end_by:
                time.sleep(float(resp.headers.get("Retry-After", "1")) * (0.5 + random.random()))
                continue
            try:
                payload = resp.json()
            except ValueError:
                payload = None
            job = payload if resp.status_code in (200, 202) and isinstance(payload, dict) else None
            ans = Answer(r, resp.status_code, job, time.monotonic() - t0, attempts,
                         "" if job else (resp.text or "")[:300])
            break
        if ans.job is not None and r.cancel:
            d = requests.delete(f"{url}/v1/snapshots/{ans.job['id']}", headers={"X-Auth-Token": token()},
                                timeout=120)
            with lock:
                cancel_codes[d.status_code] += 1
        with lock:
            out.answers.append(ans)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(r,)) for r in reqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.burst_seconds = time.monotonic() - t0
    out.cancels = cancel_codes
    return out


def drain(url: str, token: Callable[[], str], out: Outcome, timeout: float = 600) -> None:
    """Wait until every job answered is final; record the final jobs."""
    t0 = time.monotonic()
    ids = {a.job["id"] for a in out.answers if a.job}
    while ids and time.monotonic() - t0 < timeout:
        for job_id in sorted(ids):
            job = requests.get(f"{url}/v1/snapshots/{job_id}", headers={"X-Auth-Token": token()}, timeout=60).json()
            if job.get("state") in FINAL:
                out.jobs[job_id] = job
                ids.discard(job_id)
        if ids:
            time.sleep(0.3)
    out.drain_seconds = time.monotonic() - t0
    if ids:
        out.problems.append(f"{len(ids)} jobs not final after {timeout:.0f}s: {sorted(ids)[:5]}")


def check_answers(out: Outcome) -> None:
    """Every answer is a job or a clean 429/409; duplicates name one job; no job failed."""
    for a in out.answers:
        if a.code not in ALLOWED:
            out.problems.append(f"answer {a.code} to {a.req.body['name']}: {a.error or a.job}")
        elif a.code in (409, 429) and not a.error.startswith('{"error"'):
            out.problems.append(f"{a.code} without an error body: {a.error}")
    by_group: dict[str, set[str]] = {}
    for a in out.answers:
        if a.job:
            by_group.setdefault(a.req.group, set()).add(a.job["id"])
    for group, ids in by_group.items():
        if len(ids) > 1:
            out.problems.append(f"duplicates of {group} got {len(ids)} jobs: {sorted(ids)}")
    for job in out.jobs.values():
        if job["state"] == "failed":
            out.problems.append(f"job {job['id']} failed: {job.get('error')}")


def check_results(out: Outcome, disk_sha: dict[str, str], glance_status: Callable[[str], str | None],
                  glance_sha: Callable[[str], str]) -> int:
    """Every done job's image is active with its disk's bytes; every cancelled one's image is gone. Returns the
    number of snapshots verified byte for byte."""
    verified = 0
    for job in out.jobs.values():
        disk = job["request"]["disk"].split("/", 1)[1]
        image_id = str(job.get("image_id") or "")
        if job["state"] == "done":
            status = glance_status(image_id) if image_id else None
            if status != "active":
                out.problems.append(f"job {job['id']} done but image {image_id} is {status}")
            elif glance_sha(image_id) != disk_sha[disk]:
                out.problems.append(f"image {image_id} differs from its disk {disk}")
            else:
                verified += 1
        elif job["state"] == "cancelled" and image_id and glance_status(image_id) is not None:
            out.problems.append(f"job {job['id']} cancelled but image {image_id} is "
                                f"{glance_status(image_id)}")
    return verified


def figures(out: Outcome, posts: int, slots: int, verified: int, retry: bool) -> dict[str, Any]:
    codes = Counter(a.code for a in out.answers)
    lat = sorted(a.seconds for a in out.answers if a.attempts == 1)
    states = Counter(j["state"] for j in out.jobs.values())
    done = [j for j in out.jobs.values() if j["state"] == "done"]
    paths = Counter(j.get("path") for j in done)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else 0.0

    return {
        "posts": posts, "slots": slots, "retry_429": retry, "answers": dict(sorted(codes.items())),
        "jobs": len(out.jobs), "states": dict(states), "done_by_path": dict(paths),
        "cancel_answers": dict(out.cancels), "verified_byte_identical": verified,
        "answer_p50_s": pct(0.5), "answer_p95_s": pct(0.95), "answer_max_s": pct(1.0),
        "burst_s": round(out.burst_seconds, 2), "drain_s": round(out.drain_seconds, 2),
        "snapshots_per_s": round(len(done) / (out.burst_seconds + out.drain_seconds), 2)
        if done else 0.0,
        "median_job_s": round(statistics.median(j["result"]["seconds"] for j in done
                                                if j.get("result") and not j["result"].get("already_done")), 3)
        if done else 0.0,
        "problems": list(out.problems),
    }
