"""The service's jobs live in the journal beside the operations (issue 11, points 1 and 2): a POST for an image
id that is done or running returns that job (200) and never starts a second one, across service restarts and
across the CLI and the service on one host; jobs are scoped to the caller's project."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastsnap.states import OpState
from testkit.env import ROOT
from testkit.nova import Server
from testkit.reqcount import counting_proxy
from testkit.service import Service
from testkit.stack import Stack, journal_for
from tests.integration.conftest import Writer
from tests.integration.test_service import _big_disk

MEMBERS = "allowed_roles = service,admin,member\n"  # plain members may call, for themselves


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Service]:
    svc = Service(stack, tmp_path, extra=MEMBERS)
    svc.start()
    yield svc
    svc.stop()


def _queued(stack: Stack, user: str = "fastsnap") -> str:
    img = stack.glance(user).images.create(name=f"queued-{uuid.uuid4().hex[:6]}", disk_format="raw",
                                           container_format="bare")
    stack.snapshots.append(img["id"])
    return str(img["id"])


def _cli(svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI on the service's host: same config file, so the same journal."""
    return svc.stack.fastsnap("--config-file", str(svc.conf), *args)


def _post(svc: Service, body: dict[str, Any], user: str = "fastsnap", **kw: Any) -> Any:
    return svc.call("POST", "/v1/snapshots", json=body, user=user, **kw)


def _intact(stack: Stack, image_id: str, disk: str) -> dict[str, Any]:
    img: dict[str, Any] = stack.glance("admin").images.get(image_id)
    assert img["status"] == "active"
    assert stack.glance_sha256(image_id, "admin") == stack.disk_sha256("vms", disk)
    return img


def test_post_for_a_done_image_returns_its_job_across_restarts(stack: Stack, service: Service,
                                                               make_disk: Writer) -> None:
    disk = make_disk(size=16 << 20)
    image_id = _queued(stack)
    body = {"disk": f"vms/{disk}", "name": "once", "store": "fast", "image_id": image_id}
    first = _post(service, body)
    assert first.status_code == 202, first.text
    job = service.wait(first.json()["id"])
    assert job["state"] == "done" and job["image_id"] == image_id
    before = _intact(stack, image_id, disk)
    again = _post(service, body)
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    # A retry with an Idempotency-Key of its own still finds the image id's job: one image id, one job.
    keyed = _post(service, body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert keyed.status_code == 200 and keyed.json()["id"] == job["id"]
    service.stop()
    service.start()
    after = _post(service, body)
    assert after.status_code == 200 and after.json()["id"] == job["id"] and after.json()["state"] == "done"
    # The CLI on the same host sees the operation in the same journal and does not touch it either.
    cli = _cli(service, "snapshot", "--disk", f"vms/{disk}", "--name", "once", "--store", "fast",
               "--image-id", image_id, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["already_done"] is True
    assert _intact(stack, image_id, disk)["updated_at"] == before["updated_at"]
    jobs = service.call("GET", "/v1/snapshots", params={"image_id": image_id}).json()["snapshots"]
    assert [j["id"] for j in jobs] == [job["id"]]
    # Another disk for the same image id: 409, nothing made for it.
    other = make_disk(size=16 << 20)
    clash = _post(service, {**body, "disk": f"vms/{other}"})
    assert clash.status_code == 409 and f"belongs to a snapshot of vms/{disk}" in clash.json()["error"]["message"]
    assert stack.snaps("vms", other) == []


def test_post_for_an_image_the_cli_made_or_is_making(stack: Stack, service: Service, make_disk: Writer) -> None:
    # Done by the CLI first: the POST gets a job standing for that operation (200, done, its result).
    disk = make_disk(size=16 << 20)
    image_id = _queued(stack)
    cli = _cli(service, "snapshot", "--disk", f"vms/{disk}", "--name", "by-cli", "--store", "cheap",
               "--image-id", image_id, "--json")
    assert cli.returncode == 0, cli.stderr
    before = _intact(stack, image_id, disk)
    r = _post(service, {"disk": f"vms/{disk}", "name": "by-cli", "store": "cheap", "image_id": image_id})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "done" and job["result"]["image_id"] == image_id and job["result"]["path"] == "stream"
    assert _intact(stack, image_id, disk)["updated_at"] == before["updated_at"]

    # Running in the CLI: the POST answers with a running job for it, which settles once the CLI is done.
    big = _big_disk(make_disk)
    image_id = _queued(stack)
    proc = subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), "--config-file", str(service.conf), "snapshot",
                             "--disk", f"vms/{big}", "--name", "slow", "--store", "cheap", "--image-id", image_id,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **stack.env})
    journal = journal_for(service.conf)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        op = journal.get(image_id)
        if op is not None and op.began("upload"):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    r = _post(service, {"disk": f"vms/{big}", "name": "slow", "store": "cheap", "image_id": image_id})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "running"
    job_id = r.json()["id"]
    assert service.call("DELETE", f"/v1/snapshots/{job_id}").status_code == 409  # the CLI's, not ours
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert json.loads(out)["already_done"] is False
    done = service.wait(job_id)
    assert done["state"] == "done" and done["result"]["image_id"] == image_id
    _intact(stack, image_id, big)


@pytest.fixture(scope="module")
def projects(stack: Stack) -> dict[str, str]:
    return {u: str(stack.session(u).get_project_id()) for u in ("demo", "demo2", "fastsnap")}


@pytest.mark.nova
def test_jobs_are_scoped_to_the_callers_project(stack: Stack, service: Service, tenant_servers: dict[str, Server],
                                                projects: dict[str, str]) -> None:
    """Members of demo and demo2 each snapshot their own server (the only disks they may name) with the same
    Idempotency-Key: each project gets its own job, sees only its own, and cannot reach the other's."""
    key = str(uuid.uuid4())
    base = stack.env["FASTSNAP_NOVA_IMAGE"]
    bodies = {u: {"disk": s.disk, "name": "mine", "store": "fast", "base_image": base, "instance_uuid": s.id}
              for u, s in tenant_servers.items()}
    jobs: dict[str, dict[str, Any]] = {}
    for user in ("demo", "demo2"):
        r = _post(service, bodies[user], user=user, headers={"Idempotency-Key": key})
        assert r.status_code == 202, r.text  # the same key in another project is another request
        jobs[user] = service.wait(r.json()["id"])
        assert jobs[user]["state"] == "done", jobs[user]
        assert jobs[user]["project_id"] == projects[user]
        stack.snapshots.append(jobs[user]["image_id"])
    assert jobs["demo"]["id"] != jobs["demo2"]["id"]

    def ids(user: str) -> set[str]:
        r = service.call("GET", "/v1/snapshots", user=user)
        assert r.status_code == 200
        return {j["id"] for j in r.json()["snapshots"]}

    assert ids("demo") == {jobs["demo"]["id"]}
    assert ids("demo2") == {jobs["demo2"]["id"]}
    assert ids("fastsnap") >= {jobs["demo"]["id"], jobs["demo2"]["id"]}  # service callers see every project
    for verb in ("GET", "DELETE"):
        r = service.call(verb, f"/v1/snapshots/{jobs['demo']['id']}", user="demo2")
        assert r.status_code == 404, r.text
    assert service.call("GET", f"/v1/snapshots/{jobs['demo']['id']}", user="demo").status_code == 200
    assert service.call("GET", f"/v1/snapshots/{jobs['demo']['id']}").status_code == 200
    # Same key again: each project gets its own job back.
    for user in ("demo", "demo2"):
        r = _post(service, bodies[user], user=user, headers={"Idempotency-Key": key})
        assert r.status_code == 200 and r.json()["id"] == jobs[user]["id"]
    # A trusted caller (Nova) acting for demo's user token: the job is demo's, so the key finds demo's job.
    nova = _post(service, {**bodies["demo"], "user_token": service.token("demo")}, headers={"Idempotency-Key": key})
    assert nova.status_code == 200 and nova.json()["id"] == jobs["demo"]["id"]
    # demo2 cannot reach demo's image through its image id either.
    r = _post(service, {**bodies["demo2"], "image_id": jobs["demo"]["image_id"]}, user="demo2")
    assert r.status_code == 400 and "does not exist" in r.json()["error"]["message"]


@pytest.mark.nova
def test_trusted_caller_job_records_the_users_project(stack: Stack, service: Service,
                                                      tenant_servers: dict[str, Server],
                                                      projects: dict[str, str]) -> None:
    server = tenant_servers["demo2"]
    r = _post(service, {"disk": server.disk, "name": "for-demo2", "store": "fast", "instance_uuid": server.id,
                        "base_image": stack.env["FASTSNAP_NOVA_IMAGE"], "user_token": service.token("demo2")})
    assert r.status_code == 202, r.text
    job = service.wait(r.json()["id"])
    assert job["state"] == "done" and job["project_id"] == projects["demo2"]
    stack.snapshots.append(job["image_id"])
    assert job["id"] in {j["id"] for j in service.call("GET", "/v1/snapshots", user="demo2").json()["snapshots"]}
    assert job["id"] not in {j["id"] for j in service.call("GET", "/v1/snapshots", user="demo").json()["snapshots"]}
    assert "user_token" not in job["request"]
    # Nor in the journal's record of the job (the user's token is a secret; the journal lives on).
    stored = journal_for(service.conf).get_job(job["id"])
    assert stored is not None and "user_token" not in stored.request
    token = service.token("demo2").encode()
    files = list((service.conf.parent / "state").glob("journal.sqlite*"))  # with the WAL's
    assert files and not any(token in f.read_bytes() for f in files)


def _until(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_service_recovers_a_killed_cli_run_and_retries_what_glance_failed(stack: Stack, tmp_path: Path,
                                                                         make_disk: Writer,
                                                                         bases: dict[str, str]) -> None:
    """A CLI snapshot on the service's host is killed with its clone complete while the service runs. The service's
    periodic recover finds it; Glance (a proxy in front of the real one) answers 503 to the location add, so the
    snapshot is left running, not undone, and the pending gauge says so; once Glance answers, the next periodic
    recover registers it."""
    with counting_proxy(stack.env["FASTSNAP_TEST_GLANCE_URL"]) as glance:
        svc = Service(stack, tmp_path, extra=f"recover_interval = 2\n[glance]\nendpoint_override = {glance.url}\n")
        svc.start()
        try:
            disk = make_disk(size=16 << 20)
            glance.fail = {"POST /v2/images/{id}/locations": 1 << 30, "PATCH /v2/images/{id}": 1 << 30}
            out = stack.fastsnap("--config-file", str(svc.conf), "snapshot", "--disk", f"vms/{disk}", "--name",
                                 "left", "--base-image", bases["fast"], env={"FASTSNAP_TEST_CRASH_AT": "location"})
            assert out.returncode == -9, (out.returncode, out.stderr)
            journal = journal_for(tmp_path / "fastsnap.conf")
            (op,) = journal.list(OpState.RUNNING)
            stack.snapshots.append(op.op_id)

            def pending() -> bool:
                return "fastsnap_recover_pending 1.0" in svc.call("GET", "/metrics").text

            _until("the service's recover to try and leave it", pending)
            assert glance.snapshot().get("POST /v2/images/{id}/locations", 0) >= 1
            assert [o.op_id for o in journal.list(OpState.RUNNING)] == [op.op_id]
            assert stack.glance("admin").images.get(op.op_id)["status"] == "queued"
            assert ("snap", 0) in stack.snaps("images", op.op_id)
            glance.fail.clear()
            _until("the next recover to register it",
                   lambda: getattr(journal.get(op.op_id), "state", None) is OpState.DONE)
            _until("the gauge to clear", lambda: not pending())
            _intact(stack, op.op_id, disk)
        finally:
            svc.stop()
