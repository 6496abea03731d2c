"""The load ``scripts/dashboard-picture`` drives through a real fastsnap service, so that the dashboard has something
to show: every phase is bounded in time and everything it makes is registered for removal.

Phases, each a method of :class:`Load`: ``steady`` (two clients taking snapshots one after another: clone into
``fast``, stream into ``cheap``, copy into ``remote`` on cluster B), ``burst`` (bench.load's request mix released at
once: 429s, duplicates, cancels), ``failures`` (stream jobs whose Glance image is deleted mid-upload: failed jobs
of kind ``glance``; and requests refused at once: a missing disk, an unknown store), ``flatten_and_park`` (clones of
larger disks queue their flattens with the Ceph mgr, and one disk is parked in the RBD trash the way the Nova hook
does it, then drained by the service) and ``idle``.

The service is testkit.service's ``Service`` (the tests' own, with its own journal namespace);
disks, Glance images and their removal are bench.lib's; the burst is bench.load's.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import rbd

from bench import lib
from testkit import load as bl
from testkit.service import Service
from testkit.stack import Stack

FINAL = ("done", "failed", "cancelled")


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


class Load:
    def __init__(self, svc: Service, stack: Stack, cleanup: lib.Cleanup, deadline: float) -> None:
        self.svc = svc
        self.stack = stack
        self.cleanup = cleanup
        self.deadline = deadline          # time.monotonic() after which no phase starts anything new
        self.phases: list[Phase] = []
        self.small: list[str] = []
        self.big: list[str] = []
        self.parked: list[str] = []       # RBD ids of disks moved to the trash (removed by the drain or cleanup)
        self.jobs: dict[str, int] = {}    # final job states, counted
        self._lock = threading.Lock()

    # -- disks and single snapshots -------------------------------------------------------------------------

    def make_disks(self, small: int = 6, big: int = 4) -> None:
        """Small disks (4-16 MiB virtual, half written) for the steady load and the burst; big ones (256 MiB
        virtual, 128 MiB written) for the flattens, the parked disk and the failed uploads."""
        for i in range(small):
            name = self.cleanup.disk(lib.unique("dash"))
            virtual = (4 << 20) * (1 + i % 4)
            lib.make_disk(self.stack, name, virtual, virtual // 2)
            self.small.append(name)
        for _ in range(big):
            name = self.cleanup.disk(lib.unique("dash-big"))
            lib.make_disk(self.stack, name, 256 * lib.MiB, 128 * lib.MiB)
            self.big.append(name)
        lib.log(f"disks: {len(self.small)} small, {len(self.big)} big")

    def post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = self.svc.call("POST", "/v1/snapshots", json=body)
        try:
            payload = r.json()
        except ValueError:
            payload = {"text": r.text[:300]}
        if r.status_code in (200, 202) and payload.get("image_id"):
            self.keep_image(str(payload["image_id"]))
        return r.status_code, payload

    def keep_image(self, image_id: str) -> str:
        """Register a Glance image for removal at the end (once)."""
        if image_id not in self.cleanup.images:
            self.cleanup.image(image_id)
        return image_id

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        job = self.svc.wait(job_id, timeout)
        if job.get("image_id"):
            self.keep_image(str(job["image_id"]))
        with self._lock:
            self.jobs[job["state"]] = self.jobs.get(job["state"], 0) + 1
        return job

    def snapshot(self, disk: str, store: str, name: str, insist: float = 60) -> dict[str, Any] | None:
        """One snapshot through the service, retried after 429 for up to ``insist`` seconds; its final job."""
        until = time.monotonic() + insist
        while True:
            code, job = self.post({"disk": f"vms/{disk}", "name": name, "store": store})
            if code in (200, 202):
                return self.wait(str(job["id"]))
            if code != 429 or time.monotonic() > until:
                lib.log(f"snapshot of {disk} into {store}: {code} {job}")
                return None
            time.sleep(1 + random.random())

    # -- phases ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str) -> Any:
        p = Phase(name, time.time())
        lib.log(f"phase {name}")
        self.phases.append(p)
        try:
            yield p
        finally:
            p.end = time.time()
            lib.log(f"phase {name}: {p.end - p.start:.0f} s {p.notes}")

    def idle(self, seconds: float) -> None:
        with self.phase("idle"):
            time.sleep(seconds)

    def steady(self, seconds: float, clients: int = 2) -> None:
        """``clients`` threads, each taking one snapshot after another for ``seconds``: clone, stream, clone,
        stream, copy, ... over the small disks."""
        stores = ("fast", "cheap", "fast", "cheap", "remote")
        with self.phase("steady") as p:
            until = min(time.monotonic() + seconds, self.deadline)
            paths: dict[str, int] = {}

            def client(k: int) -> None:
                i = k
                while time.monotonic() < until:
                    job = self.snapshot(self.small[i % len(self.small)], stores[i % len(stores)], f"dash-steady-{i}")
                    if job is not None and job["state"] == "done":
                        with self._lock:
                            paths[str(job.get("path"))] = paths.get(str(job.get("path")), 0) + 1
                    i += clients
                    time.sleep(random.uniform(0.5, 2.0))

            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            p.notes["done_by_path"] = paths

    def burst(self, posts: int = 24, retry: bool = False) -> None:
        """bench.load's mix (clone and stream, duplicates by Idempotency-Key and by image id, one in eight
        cancelled) released at once against the service's few slots: 429s on the "host" limit. With ``retry``
        the clients insist (each 429 retried after its Retry-After): the slots stay full until all are in."""
        with self.phase("burst (insisting)" if retry else "burst") as p:
            queued = [self.cleanup.image(self.stack.create_image(lib.unique("dash-q"))) for _ in range(posts // 8)]
            out = bl.fire(self.svc.url, self.svc.token, bl.plan_requests(self.small, queued, posts), retry=retry,
                          deadline=120)
            bl.drain(self.svc.url, self.svc.token, out, timeout=300)
            for job in out.jobs.values():
                if job.get("image_id"):
                    self.keep_image(str(job["image_id"]))
                with self._lock:
                    self.jobs[job["state"]] = self.jobs.get(job["state"], 0) + 1
            codes: dict[int, int] = {}
            for a in out.answers:
                codes[a.code] = codes.get(a.code, 0) + 1
            p.notes.update(answers=codes, problems=out.problems[:3])

    def failures(self, uploads: int = 2) -> None:
        """Stream jobs whose Glance image is deleted while its data is uploaded (the job fails, kind glance, and
        is rolled back), and two requests the service refuses at once (no job: a missing disk, an unknown
        store)."""
        with self.phase("failures") as p:
            for i in range(uploads):
                image_id = self.cleanup.image(self.stack.create_image(lib.unique("dash-fail")))
                code, job = self.post({"disk": f"vms/{self.big[i % len(self.big)]}", "name": "dash-fail",
                                       "store": "cheap", "image_id": image_id})
                if code != 202:
                    p.notes[f"upload {i}"] = f"not accepted: {code} {job}"
                    continue
                t0 = time.monotonic()
                while time.monotonic() - t0 < 60:
                    now = self.svc.call("GET", f"/v1/snapshots/{job['id']}").json()
                    if now.get("bytes_done") or now.get("state") in FINAL:
                        break
                    time.sleep(0.1)
                self.stack.delete_image(image_id)
                final = self.wait(str(job["id"]))
                p.notes[f"upload {i}"] = f"{final['state']} ({(final.get('error') or {}).get('kind')})"
            for label, body in (("missing disk", {"disk": "vms/dash-no-such-disk", "store": "cheap"}),
                                ("unknown store", {"disk": f"vms/{self.small[0]}", "store": "no-such-store"})):
                code, answer = self.post({**body, "name": "dash-refused"})
                p.notes[label] = code
                if code in (200, 202):
                    self.wait(str(answer["id"]))

    def flatten_and_park(self, timeout: float = 240) -> None:
        """Clones of all but one big disk at once (their flattens queue with the Ceph mgr, one at a time), then a
        clone of the last one, which is then parked as the Nova hook parks a deleted server's disk (``rbd trash
        mv``, then ``POST /v1/parked``) while that clone still reads through it; the service drains it (flattens
        the clone in-process, removes the disk). Waits until the backlog and the parked disks are gone."""
        with self.phase("flatten_and_park") as p:
            threads = [threading.Thread(target=self.snapshot, args=(d, "fast", "dash-flatten")) for d in self.big[:-1]]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            last = self.big[-1]
            job = self.snapshot(last, "fast", "dash-parked")
            if job is None or job["state"] != "done":
                p.notes["parked"] = f"no clone to park behind: {job}"
                return
            with rbd.Image(self.stack.vms, last, read_only=True) as img:
                disk_id = str(img.id())
            rbd.RBD().trash_move(self.stack.vms, last, 0)
            self.parked.append(disk_id)
            with contextlib.suppress(ValueError):
                self.cleanup.disks.remove(last)  # no longer a name in the pool: the trash entry is cleaned up
            status = self.svc.call("GET", "/v1/status").json()   # what an operator's status call shows now
            p.notes["at_park"] = {"flatten_backlog": status.get("flatten_backlog"),
                                  "parked": status.get("parked_count")}
            self.svc.call("POST", "/v1/parked", json={"pool": "vms", "name": last, "id": disk_id})
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                status = self.svc.call("GET", "/v1/status").json()
                if not status.get("flatten_backlog") and not status.get("parked_count"):
                    break
                time.sleep(2)
            p.notes["drained_s"] = round(time.monotonic() - t0, 1)
            p.notes["end"] = {"flatten_backlog": status.get("flatten_backlog"), "parked": status.get("parked_count")}

    # -- cleanup --------------------------------------------------------------------------------------------

    def remove_parked(self) -> None:
        """Parked disks the service did not drain (its images are deleted first: ``Cleanup.all``)."""
        for disk_id in self.parked:
            try:
                rbd.RBD().trash_remove(self.stack.vms, disk_id, force=True)
            except rbd.ImageNotFound:
                pass  # drained: removed by the service
            except Exception as exc:
                lib.log(f"cleanup: parked disk {disk_id}: {exc}")
