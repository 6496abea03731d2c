"""The REST service against the real stack and real Keystone tokens."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.env import ROOT
from testkit.service import Service
from testkit.stack import Stack
from tests.integration.conftest import Writer


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Service]:
    svc = Service(stack, tmp_path)
    svc.start()
    yield svc
    svc.stop()


def _snap(svc: Service, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = svc.call("POST", "/v1/snapshots", json=body, **kw)
    assert r.status_code == 202, r.text
    assert r.headers["Location"].endswith(f"/v1/snapshots/{r.json()['id']}")
    assert r.headers["x-openstack-request-id"].startswith("req-")
    job = svc.wait(r.json()["id"])
    assert job["state"] == "done", job
    svc.stack.snapshots.append(job["image_id"])
    return job


@pytest.mark.parametrize("path", ["clone", "stream", "stream-qcow2"])
def test_both_paths(stack: Stack, service: Service, make_disk: Writer, bases: dict[str, str], path: str) -> None:
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    body = {"disk": f"vms/{disk}", "name": f"api-{path}", "base_image": bases["fast"]}
    if path.startswith("stream"):
        body["store"] = "cheap"
    if path == "stream-qcow2":
        body["format"] = "qcow2"
    job = _snap(service, body)
    assert job["path"] == path.split("-")[0] and job["reason"]
    img = stack.glance().images.get(job["image_id"])
    assert img["status"] == "active"
    if path == "stream-qcow2":  # its content is judged by qemu-img in test_qcow2.py
        assert img["disk_format"] == job["result"]["format"] == job["request"]["format"] == "qcow2"
        assert job["bytes_done"] == job["bytes_total"] == job["result"]["bytes_streamed"] == img["size"] < 64 << 20
        return
    assert img["disk_format"] == job["result"]["format"] == "raw"
    assert stack.glance_sha256(job["image_id"]) == want
    if path == "stream":
        assert job["bytes_done"] == job["bytes_total"] == 64 << 20
    metrics = service.call("GET", "/metrics").text
    assert f'fastsnap_snapshot_seconds_count{{path="{path}"}} 1.0' in metrics


def test_auth(service: Service) -> None:
    r = service.call("GET", "/v1/stores", user=None)
    assert r.status_code == 401 and r.json()["error"]["code"] == 401
    r = service.call("GET", "/v1/stores", user=None, headers={"X-Auth-Token": "bogus"})
    assert r.status_code == 401
    r = service.call("GET", "/v1/stores", user="demo")
    assert r.status_code == 403 and "role" in r.json()["error"]["message"]
    for path in ("/openapi.json", "/metrics", "/v1/snapshots"):
        assert service.call("GET", path, user=None).status_code == 401
    r = service.call("GET", "/v1/stores")
    assert r.status_code == 200
    assert {s["id"]: s["clone"] for s in r.json()["stores"]} == {"fast": True, "cheap": False, "remote": False}


def test_bad_input_is_400_and_creates_nothing(stack: Stack, service: Service, make_disk: Writer) -> None:
    disk = make_disk()
    before = (stack.rbd_images("vms"), stack.rbd_images("images"), stack.image_ids())
    for body, needle, kind in (
            ({"disk": f"vms/{disk}", "name": "x", "store": "nowhere"}, "nowhere", "unknown_store"),
            ({"disk": "vms/none", "name": "x"}, "does not exist", "bad_request"),
            ({"disk": f"vms/{disk}"}, "name", "bad_request"),
            ({"disk": f"vms/{disk}", "name": "x", "bogus": 1}, "bogus", "bad_request"),
            ({"disk": f"vms/{disk}", "name": "x", "container_format": "zip"}, "container format", "bad_request"),
            ({"disk": f"vms/{disk}", "name": "x", "format": "vmdk"}, "format must be raw or qcow2", "bad_request"),
            ({"disk": f"vms/{disk}", "name": "x", "store": "fast", "format": "qcow2"}, "stream path only",
             "bad_request"),
            ({"disk": f"vms/{disk}", "name": "x", "type": "backup"}, "backup_type", "bad_request")):
        r = service.call("POST", "/v1/snapshots", json=body)
        assert r.status_code == 400, r.text
        assert needle in r.json()["error"]["message"]
        assert r.json()["error"]["kind"] == kind  # what Nova's hook tells a user's error from "not for me" by
    assert (stack.rbd_images("vms"), stack.rbd_images("images"), stack.image_ids()) == before
    assert service.call("GET", "/v1/snapshots").json()["snapshots"] == []


def test_idempotent_retry(service: Service, make_disk: Writer, bases: dict[str, str]) -> None:
    disk = make_disk()
    body = {"disk": f"vms/{disk}", "name": "idem", "base_image": bases["fast"]}
    key = str(uuid.uuid4())
    first = _snap(service, body, headers={"Idempotency-Key": key})
    again = service.call("POST", "/v1/snapshots", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    assert len(service.call("GET", "/v1/snapshots", params={"disk": f"vms/{disk}"}).json()["snapshots"]) == 1


def test_backup_rotation(stack: Stack, service: Service, make_disk: Writer, bases: dict[str, str]) -> None:
    disk = make_disk(size=16 << 20)
    instance = str(uuid.uuid4())
    ids = []
    for i in range(3):
        job = _snap(service, {"disk": f"vms/{disk}", "name": f"backup-{i}", "base_image": bases["fast"],
                              "type": "backup", "backup_type": "daily", "rotation": 2, "instance_uuid": instance})
        ids.append(job["image_id"])
        time.sleep(1.1)  # Glance's created_at has one-second resolution
    other = _snap(service, {"disk": f"vms/{disk}", "name": "weekly", "base_image": bases["fast"], "type": "backup",
                            "backup_type": "weekly", "rotation": 1, "instance_uuid": instance})
    left = {i["id"] for i in stack.glance().images.list(filters={"instance_uuid": instance})}
    assert left == {ids[1], ids[2], other["image_id"]}
    img = stack.glance().images.get(ids[2])
    assert img["image_type"] == "backup" and img["backup_type"] == "daily"


def _big_disk(make_disk: Writer) -> str:
    return make_disk(size=768 << 20, chunks=tuple(range(0, 768 << 20, 32 << 20)), chunk_len=4 << 20)


def test_429_when_busy(stack: Stack, tmp_path: Path, make_disk: Writer) -> None:
    svc = Service(stack, tmp_path, slots=1)
    svc.start()
    try:
        disk = _big_disk(make_disk)
        r = svc.call("POST", "/v1/snapshots", json={"disk": f"vms/{disk}", "name": "slow", "store": "cheap"})
        assert r.status_code == 202
        busy = svc.call("POST", "/v1/snapshots", json={"disk": f"vms/{disk}", "name": "second", "store": "cheap"})
        assert busy.status_code == 429 and int(busy.headers["Retry-After"]) > 0
        assert busy.json()["error"]["code"] == 429
        job = svc.wait(r.json()["id"])
        assert job["state"] == "done"
        stack.snapshots.append(job["image_id"])
        assert len(svc.call("GET", "/v1/snapshots").json()["snapshots"]) == 1
    finally:
        svc.stop()


def _wait_state(svc: Service, job_id: str, want: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = svc.call("GET", f"/v1/snapshots/{job_id}").json()
        if job["state"] == want and (want != "running" or job["bytes_done"] > 0):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job never {want}")


def _nothing_left(stack: Stack, disk: str, image_id: str) -> None:
    assert [s for s in stack.snaps("vms", disk) if s[1] == 0] == []
    assert image_id not in stack.image_ids()
    assert image_id not in stack.rbd_images("images")


def test_cancel_mid_stream(stack: Stack, service: Service, make_disk: Writer) -> None:
    disk = _big_disk(make_disk)
    r = service.call("POST", "/v1/snapshots", json={"disk": f"vms/{disk}", "name": "cancel", "store": "cheap"})
    job = _wait_state(service, r.json()["id"], "running")
    assert service.call("DELETE", f"/v1/snapshots/{job['id']}").status_code == 202
    done = service.wait(job["id"])
    assert done["state"] == "cancelled"
    _nothing_left(stack, disk, job["image_id"])
    assert service.call("DELETE", f"/v1/snapshots/{job['id']}").status_code == 409


def test_killed_mid_job_then_restarted(stack: Stack, service: Service, make_disk: Writer) -> None:
    disk = _big_disk(make_disk)
    r = service.call("POST", "/v1/snapshots", json={"disk": f"vms/{disk}", "name": "killed", "store": "cheap"})
    job = _wait_state(service, r.json()["id"], "running")
    service.kill()
    service.start()  # recovers at start
    after = service.call("GET", f"/v1/snapshots/{job['id']}").json()
    assert after["state"] == "failed" and "rolled back" in after["error"]["message"]
    _nothing_left(stack, disk, job["image_id"])


def test_openapi_fuzz_no_server_errors(service: Service) -> None:
    out = subprocess.run(
        [str(ROOT / ".venv/bin/st"), "run", f"{service.url}/openapi.json", "-H",
         f"X-Auth-Token: {service.token()}", "--checks", "not_a_server_error", "--max-examples", "100",
         "--exclude-checks", "unsupported_method"],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-6000:]
    ran = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert ran and int(ran.group(1)) > 50 and ran.group(1) == ran.group(2), out.stdout[-3000:]
    jobs = service.call("GET", "/v1/snapshots").json()["snapshots"]
    assert all(j["state"] != "done" for j in jobs), json.dumps(jobs)[:2000]


def test_local_only_unix_socket(stack: Stack, tmp_path: Path, make_disk: Writer) -> None:
    """[service] unix_socket: no Keystone, access guarded by the socket's file mode."""
    svc = Service(stack, tmp_path)
    sock = tmp_path / "api.sock"
    svc.conf.write_text(svc.conf.read_text().replace("[service]\n", f"[service]\nunix_socket = {sock}\n"
                                                     "unix_socket_mode = 0600\n", 1))
    proc = subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), "--config-file", str(svc.conf), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **stack.env})
    try:
        modes = set()
        for _ in range(3000):  # the socket is born with its mode: never seen more open, not even for a moment
            with contextlib.suppress(FileNotFoundError):
                modes.add(oct(sock.stat().st_mode & 0o777))
                if subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://localhost/openapi.json"],
                                  capture_output=True, check=False).returncode == 0:
                    break
            time.sleep(0.01)
        assert modes == {"0o600"}
        # A second service on the same socket is refused while the first answers; a non-socket path too.
        again = subprocess.run([str(ROOT / ".venv/bin/fastsnap"), "--config-file", str(svc.conf), "serve"],
                               capture_output=True, text=True, timeout=120, env={**os.environ, **stack.env})
        assert again.returncode == 1 and f"another process already serves on {sock}" in again.stderr

        def curl(*args: str) -> dict[str, Any]:
            out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), *args], capture_output=True, text=True,
                                 timeout=60, check=True)
            result: dict[str, Any] = json.loads(out.stdout)
            return result

        assert {s["id"] for s in curl("http://localhost/v1/stores")["stores"]} == {"fast", "cheap", "remote"}
        disk = make_disk(size=16 << 20)
        job = curl("-X", "POST", "-H", "Content-Type: application/json", "-d",
                   json.dumps({"disk": f"vms/{disk}", "name": "local", "store": "cheap"}),
                   "http://localhost/v1/snapshots")
        for _ in range(300):
            job = curl(f"http://localhost/v1/snapshots/{job['id']}")
            if job["state"] in ("done", "failed"):
                break
            time.sleep(0.2)
        assert job["state"] == "done", job
        stack.snapshots.append(job["image_id"])
        assert job["result"]["acting_as"]["mode"] == "operator"
    finally:
        proc.terminate()
        proc.wait(30)
