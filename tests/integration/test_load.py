"""The service under 200 concurrent POSTs (issue 11, point 9), sized for two shared cores: tiny disks (1-4 MiB),
clone and stream, duplicates (Idempotency-Key and image id) and cancels. Every answer is a job or a clean
429/409; after the queue drains every reported snapshot is active and byte-identical to its disk, and nothing
is leaked (no temporary snapshot, no stray clone, no Glance image without a job). The request mix and the
checks are testkit/load.py's, shared with bench/load.py, whose figures are in bench/RESULTS.md."""

from __future__ import annotations

import os
from pathlib import Path

import rbd

from testkit import load
from testkit.cleanup import remove_disk
from testkit.service import Service
from testkit.stack import Stack

POSTS = 200


def test_200_concurrent_posts(stack: Stack, tmp_path: Path) -> None:
    disks: list[str] = []
    with stack.ioctx("vms") as io:
        for i in range(8):
            name = f"load-{os.urandom(4).hex()}"
            size = (1 + i % 4) << 20
            rbd.RBD().create(io, name, size, old_format=False)
            with rbd.Image(io, name) as img:
                img.write(os.urandom(size // 2), size // 4)
            disks.append(name)
    shas = {d: stack.disk_sha256("vms", d) for d in disks}
    g = stack.glance()
    queued = [str(g.images.create(name=f"load-q-{i}", disk_format="raw", container_format="bare")["id"])
              for i in range(POSTS // 10)]
    stack.snapshots.extend(queued)
    before_glance, before_rbd = stack.image_ids(), set(stack.rbd_images("images"))
    svc = Service(stack, tmp_path, slots=4, extra="retry_after = 1\n")
    svc.start()
    try:
        token = svc.token()
        out = load.fire(svc.url, lambda: token, load.plan_requests(disks, queued, POSTS), retry=True, deadline=30)
        load.drain(svc.url, lambda: token, out, timeout=300)
        load.check_answers(out)
        done = {j["image_id"] for j in out.jobs.values() if j["state"] == "done"}
        stack.snapshots.extend(i for i in done if i not in queued)
        status = {i["id"]: i["status"] for i in stack.glance("admin").images.list()}
        verified = load.check_results(out, shas, status.get, lambda i: stack.glance_sha256(i))
        figures = load.figures(out, POSTS, 4, verified, retry=True)
        assert figures["problems"] == [], figures
        assert len(out.answers) == POSTS
        assert figures["answers"].get(202, 0) >= 8 and figures["answers"].get(200, 0) > 0  # duplicates met
        assert verified == len(done) > 0
        # Nothing leaked: no temporary snapshot on any disk, no clone or Glance image that is not a done job's.
        for d in disks:
            assert [s for s in stack.snaps("vms", d) if s[1] == 0] == [], d
        assert set(stack.rbd_images("images")) - before_rbd <= done
        assert set(status) - before_glance <= done
        cancelled = {j["image_id"] for j in out.jobs.values() if j["state"] == "cancelled"}
        for q in queued:
            assert status.get(q) == ("active" if q in done else None if q in cancelled else "queued"), q
        print(figures)
    finally:
        svc.stop()
        stack.delete_snapshots()
        with stack.ioctx("vms") as io:
            for d in disks:
                remove_disk(io, d)
