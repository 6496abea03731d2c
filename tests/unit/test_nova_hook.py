"""Unit tests of the Nova hook's pure parts (nova-fastsnap/nova/virt/fastsnap/client.py) and of the fastsnap
changes it relies on. No services: the socket tests run a real HTTP server on a temporary unix socket."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import socketserver
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fastsnap.errors import BadRequest
from fastsnap.request import SnapshotRequest, from_body
from fastsnap.running import snapshot_properties

ROOT = Path(__file__).resolve().parents[2]


def _load_client() -> ModuleType:
    # By file: the module needs nothing but the standard library, and no `nova` package exists in this venv.
    path = ROOT / "nova-fastsnap/nova/virt/fastsnap/client.py"
    spec = importlib.util.spec_from_file_location("nova_fastsnap_client", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


fc = _load_client()

IMAGE_ID = str(uuid.uuid4())
INSTANCE = str(uuid.uuid4())


def queued(props: dict[str, str] | None = None, name: str = "snap-1") -> dict[str, Any]:
    """A queued image as Nova's image API returns it (properties nested)."""
    return {"id": IMAGE_ID, "name": name, "status": "queued",
            "properties": {"instance_uuid": INSTANCE, "image_type": "snapshot", "user_id": "u", **(props or {})}}


def order(image: dict[str, Any] | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {"disk": f"vms/{INSTANCE}_disk", "user_token": "tok", "base_image": "base-id",
                            "instance_uuid": INSTANCE, "container_format": "bare",
                            "quiesce_domain": "instance-00000001"}
    args.update(kw)
    return fc.order_from_image(image or queued(), **args)


# -- request building ----------------------------------------------------------------------------------------


def test_snapshot_request_without_store_leaves_the_choice_to_fastsnap() -> None:
    body = fc.build_request(order())
    assert body == {"disk": f"vms/{INSTANCE}_disk", "name": "snap-1", "image_id": IMAGE_ID, "user_token": "tok",
                    "type": "snapshot", "container_format": "bare", "base_image": "base-id",
                    "instance_uuid": INSTANCE, "quiesce_domain": "instance-00000001", "format": "raw"}


def test_store_property_becomes_the_store() -> None:
    body = fc.build_request(order(queued({fc.STORE_PROPERTY: " cheap "})))
    assert body["store"] == "cheap"


def test_empty_store_property_is_the_users_error() -> None:
    with pytest.raises(fc.Rejected, match=fc.STORE_PROPERTY):
        order(queued({fc.STORE_PROPERTY: "  "}))


def test_novas_image_format_is_the_format_and_the_property_may_only_agree() -> None:
    """Nova labels the image with its [libvirt] snapshot_image_format after the snapshot (Glance refuses to
    relabel an active image), so fastsnap is always told that format, raw included (its own stream_format
    default must not apply)."""
    assert fc.build_request(order(image_format="qcow2"))["format"] == "qcow2"
    assert fc.build_request(order(queued({fc.FORMAT_PROPERTY: "qcow2"}), image_format="qcow2"))["format"] == "qcow2"
    with pytest.raises(fc.Rejected, match=r"disagrees with this compute host.s \[libvirt\] snapshot_image_format"):
        order(queued({fc.FORMAT_PROPERTY: "qcow2"}))
    with pytest.raises(fc.Rejected, match="fastsnap_format='vmdk' must be raw or qcow2"):
        order(queued({fc.FORMAT_PROPERTY: "vmdk"}), image_format="qcow2")


def test_backup_request_carries_type_but_no_rotation() -> None:
    """Nova's compute manager rotates backups after the snapshot: fastsnap must not rotate a second time."""
    body = fc.build_request(order(queued({"image_type": "backup", "backup_type": "daily"})))
    assert body["type"] == "backup" and body["backup_type"] == "daily"
    assert "rotation" not in body and "keep_image_on_error" not in body


def test_backup_type_is_ignored_for_snapshots() -> None:
    assert "backup_type" not in fc.build_request(order(queued({"backup_type": "daily"})))


def test_no_base_image_and_other_container_format() -> None:
    body = fc.build_request(order(base_image="", container_format="ami", quiesce_domain=None))
    assert "base_image" not in body and "quiesce_domain" not in body and body["container_format"] == "ami"


@pytest.mark.parametrize("props", [{}, {fc.STORE_PROPERTY: "cheap"}, {"image_type": "backup", "backup_type": "w"}])
def test_fastsnap_service_accepts_what_the_hook_sends(props: dict[str, str]) -> None:
    """The hook's body goes through the service's own request parser (unknown fields would be a 400)."""
    req, _ = from_body(fc.build_request(order(queued(props))))
    assert req.image_id == IMAGE_ID and req.quiesce_domain == "instance-00000001"
    assert req.container_format == "bare" and req.store == props.get(fc.STORE_PROPERTY)
    assert req.image_type == props.get("image_type", "snapshot")
    assert req.format == "raw"


def test_service_rejects_a_bad_container_format() -> None:
    with pytest.raises(BadRequest, match="container format"):
        from_body({"disk": "vms/d", "name": "n", "container_format": "zip"})


# -- classification ------------------------------------------------------------------------------------------


def _err(kind: str | None, message: str = "msg") -> dict[str, Any]:
    e: dict[str, Any] = {"code": 400, "title": "Bad Request", "message": message}
    if kind:
        e["kind"] = kind
    return {"error": e}


def test_accepted_and_repeated_requests_give_the_job() -> None:
    job = {"id": "j1", "state": "planning"}
    assert fc.classify_create(202, job, order()) is job
    assert fc.classify_create(200, job, order()) is job


def test_unknown_store_the_user_named_is_rejected() -> None:
    with_store = order(queued({fc.STORE_PROPERTY: "nowhere"}))
    with pytest.raises(fc.Rejected, match="nowhere"):
        fc.classify_create(400, _err("unknown_store", "Glance has no store 'nowhere'"), with_store)


@pytest.mark.parametrize(("status", "body", "needle", "store"), [
    (400, _err("unknown_store"), "unknown_store", None),  # a store the user did not name: not the user's error
    (400, _err("bad_request", "RBD image vms/x does not exist"), "does not exist", "cheap"),
    (400, _err(None, "unknown field(s): quiesce_domain"), "quiesce_domain", "cheap"),  # an older fastsnap
    (403, _err("forbidden", "the user token is invalid or expired"), "expired", "cheap"),
    (503, _err("plan", "Glance did not report the pool"), "pool", "cheap"),
    (500, _err(None, "boom"), "HTTP 500", "cheap"),
    (404, "<html>not found</html>", "not found", "cheap"),
    (429, _err(None, "this host already runs 5 snapshots"), "busy", "cheap"),
])
def test_other_refusals_decline(status: int, body: Any, needle: str, store: str | None) -> None:
    o = order(queued({fc.STORE_PROPERTY: store} if store else {}))
    with pytest.raises(fc.Declined, match=needle):
        fc.classify_create(status, body, o)


def test_job_states() -> None:
    assert fc.classify_job({"id": "j", "state": "done"}) is True
    for state in ("planning", "running", "registering"):
        assert fc.classify_job({"id": "j", "state": state}) is False
    with pytest.raises(fc.JobFailed, match="failed: Glance refused the upload"):
        fc.classify_job({"id": "j", "state": "failed",
                         "error": {"code": 400, "title": "bad_request", "message": "Glance refused the upload"}})
    with pytest.raises(fc.JobFailed, match="cancelled"):
        fc.classify_job({"id": "j", "state": "cancelled", "error": None})
    with pytest.raises(fc.JobFailed, match="unknown state"):
        fc.classify_job({"id": "j", "state": "weird"})


# -- fastsnap: filling a queued image keeps what nova-api put there --------------------------------------------


def test_filling_a_queued_image_keeps_its_properties() -> None:
    base = {"id": "base", "os_distro": "debian", "hw_disk_bus": "scsi", "min_disk": 1, "secret_prop": "x"}
    req = SnapshotRequest(disk="vms/d", name="n", base_image="base", image_id=IMAGE_ID, instance_uuid=INSTANCE,
                          image_type="snapshot", properties={"explicit": "yes"})
    nova_made = {"id": IMAGE_ID, "status": "queued", "image_type": "backup", "instance_uuid": INSTANCE,
                 "os_distro": "debian", "min_disk": 10}
    props = snapshot_properties(req, base, nova_made)
    # Nova's inheritance (non_inheritable_image_properties, min_disk >= flavor root) is not redone or undone.
    assert props == {"base_image_ref": "base", "explicit": "yes"}
    # A new image inherits from the base image as before.
    fresh = snapshot_properties(req, base, None)
    assert fresh["os_distro"] == "debian" and fresh["min_disk"] == 1 and fresh["image_type"] == "snapshot"


# -- the client against a real HTTP server on a unix socket ----------------------------------------------------


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class Fake:
    """Scripted answers: ``answers[(method, path prefix)]`` is a list of (status, body, headers) or a callable."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[Any]] = {}
        self.seen: list[tuple[str, str, Any, dict[str, str]]] = []
        self.hang = threading.Event()

    def answer(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        for (m, prefix), queue in self.answers.items():
            if m == method and path.startswith(prefix) and queue:
                item = queue.pop(0) if len(queue) > 1 else queue[0]
                answer: tuple[int, Any, dict[str, str]] = item() if callable(item) else item
                return answer
        return 404, {"error": {"code": 404, "message": "no such thing"}}, {}


@contextlib.contextmanager
def serve(fake: Fake) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def address_string(self) -> str:  # unix sockets have no (host, port)
            return "local"

        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            fake.seen.append((self.command, self.path, body, dict(self.headers)))
            if fake.hang.is_set():
                time.sleep(2)
                return
            status, payload, headers = fake.answer(self.command, self.path)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _do

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "api.sock")
        server = _Server(path, Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield path
        finally:
            server.shutdown()
            server.server_close()


class Clock:
    """A clock the client's sleeps advance, so timeouts are tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


def client(path: str, timeout: float = 5.0, clock: Clock | None = None) -> Any:
    c = clock or Clock()
    return fc.FastsnapClient(path, timeout=timeout, sleep=c.sleep, clock=c)


def job(state: str, **kw: Any) -> tuple[int, Any, dict[str, str]]:
    return 200, {"id": "j1", "state": state, **kw}, {}


def test_snapshot_job_runs_to_done() -> None:
    fake = Fake()
    fake.answers[("POST", "/v1/snapshots")] = [(202, {"id": "j1", "state": "planning"}, {"Location": "/v1/x"})]
    fake.answers[("GET", "/v1/snapshots/j1")] = [job("running"), job("registering"),
                                                 job("done", result={"path": "clone", "store": "fast"})]
    with serve(fake) as path:
        c = client(path)
        accepted = c.create(order())
        done = c.wait(accepted, poll_interval=0.01)
    assert done["state"] == "done" and done["result"]["path"] == "clone"
    method, url, body, headers = fake.seen[0]
    assert (method, url) == ("POST", "/v1/snapshots") and headers["Content-Type"] == "application/json"
    assert body == fc.build_request(order())
    assert [s[1] for s in fake.seen[1:]] == ["/v1/snapshots/j1"] * 3


def test_missing_socket_declines() -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(fc.Declined, match="does not exist"):
        client(os.path.join(tmp, "api.sock")).create(order())


def test_nobody_listening_declines() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "api.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)  # a socket file left by a stopped service: bound, not listening
        s.close()
        with pytest.raises(fc.Declined, match="refused"):
            client(path).create(order())


def test_busy_is_retried_after_retry_after() -> None:
    fake = Fake()
    fake.answers[("POST", "/v1/snapshots")] = [(429, _err(None, "busy"), {"Retry-After": "3"}),
                                               (202, {"id": "j1", "state": "planning"}, {})]
    clock = Clock()
    with serve(fake) as path:
        assert client(path, clock=clock).create(order())["id"] == "j1"
    assert clock.slept == [3.0]


def test_busy_for_too_long_declines() -> None:
    fake = Fake()
    fake.answers[("POST", "/v1/snapshots")] = [(429, _err(None, "busy"), {"Retry-After": "5"})]
    clock = Clock()
    with serve(fake) as path, pytest.raises(fc.Declined, match="busy"):
        client(path, clock=clock).create(order(), busy_timeout=12)
    assert sum(clock.slept) == pytest.approx(12)


def test_no_answer_is_sent_once_more_then_declines() -> None:
    """A lost answer is retried (the image id is fastsnap's idempotency key), then left to Nova."""
    fake = Fake()
    fake.hang.set()
    with serve(fake) as path, pytest.raises(fc.Declined, match="did not answer"):
        client(path, timeout=0.3).create(order())
    assert [s[0] for s in fake.seen] == ["POST", "POST"]


def test_user_error_is_rejected_through_the_socket() -> None:
    fake = Fake()
    fake.answers[("POST", "/v1/snapshots")] = [(400, _err("unknown_store", "Glance has no store 'x'"), {})]
    with serve(fake) as path, pytest.raises(fc.Rejected, match="no store 'x'"):
        client(path).create(order(queued({fc.STORE_PROPERTY: "x"})))


def test_failed_job_raises() -> None:
    fake = Fake()
    fake.answers[("GET", "/v1/snapshots/j1")] = [
        job("failed", error={"code": 500, "title": "ceph", "message": "OSD timed out"})]
    with serve(fake) as path, pytest.raises(fc.JobFailed, match="OSD timed out"):
        client(path).wait({"id": "j1", "state": "running"}, poll_interval=0.01)


def test_job_timeout_cancels_the_job() -> None:
    fake = Fake()
    fake.answers[("GET", "/v1/snapshots/j1")] = [job("running")]
    fake.answers[("DELETE", "/v1/snapshots/j1")] = [(202, {"id": "j1", "state": "running"}, {})]
    with serve(fake) as path, pytest.raises(fc.JobFailed, match="did not finish in 10s; cancelled"):
        client(path).wait({"id": "j1", "state": "running"}, poll_interval=1, job_timeout=10)
    assert fake.seen[-1][:2] == ("DELETE", "/v1/snapshots/j1")


def test_service_gone_during_the_job_fails_after_a_grace() -> None:
    fake = Fake()
    fake.answers[("GET", "/v1/snapshots/j1")] = [job("running")]
    clock = Clock()
    with serve(fake) as path:
        c = client(path, clock=clock)
    # the server is shut down and its socket removed: every poll now fails to connect
    with pytest.raises(fc.JobFailed, match="unreachable during job j1"):
        c.wait({"id": "j1", "state": "running"}, poll_interval=5, job_timeout=0, unreachable_timeout=30)
    assert 30 < sum(clock.slept) <= 45


def test_service_back_within_the_grace_is_followed() -> None:
    fake = Fake()
    fake.answers[("GET", "/v1/snapshots/j1")] = [job("done")]
    clock = Clock()
    with serve(fake) as path:
        c = client(path, clock=clock)
        real_call: Callable[..., Any] = c.call
        fails = [2]

        def flaky(*a: Any, **kw: Any) -> Any:
            if fails[0]:
                fails[0] -= 1
                raise ConnectionResetError("reset")
            return real_call(*a, **kw)

        c.call = flaky
        assert c.wait({"id": "j1", "state": "running"}, poll_interval=5, unreachable_timeout=30)["state"] == "done"


# -- parking a disk fastsnap snapshots depend on -------------------------------------------------------------

TRASH = 2


def trashed(original: str, sid: int = 4) -> dict[str, Any]:
    """A trashed snapshot as librbd's list_snaps() shows it."""
    return {"id": sid, "name": str(uuid.uuid4()), "namespace": TRASH, "trash": {"original_name": original}}


def test_only_fastsnap_trashed_snapshots_make_a_disk_parkable() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert fc.fastsnap_dependents([trashed(f"fastsnap-{a}"), trashed(f"fastsnap-{b}", 5)], TRASH) == [a, b]


@pytest.mark.parametrize("snaps", [
    [],                                                                      # nothing holds it: plain remove
    [{"id": 3, "name": f"fastsnap-{IMAGE_ID}", "namespace": 0}],             # a snapshot still being taken
    [trashed(f"fastsnap-{IMAGE_ID}"), {"id": 5, "name": "nova-resize", "namespace": 0}],
    [trashed("someone-elses")],                                              # not fastsnap's clone
    [trashed("fastsnap-")],
    [{"id": 6, "name": "x", "namespace": TRASH}],                            # no original name known
])
def test_other_snapshots_keep_novas_behaviour(snaps: list[dict[str, Any]]) -> None:
    assert fc.fastsnap_dependents(snaps, TRASH) is None


def test_backup_sources_are_the_kept_user_namespace_snapshots() -> None:
    kept = f"fastsnap-backup-remote-{IMAGE_ID}"
    snaps = [{"id": 3, "name": kept, "namespace": 0}, {"id": 4, "name": f"fastsnap-{IMAGE_ID}", "namespace": 0},
             {"id": 5, "name": "nova-resize", "namespace": 0}, trashed(f"fastsnap-{IMAGE_ID}")]
    assert fc.backup_sources(snaps, 0) == [kept]
    assert fc.backup_sources([{"id": 3, "name": kept}]) == [kept]  # older librbd: no namespace key
    assert fc.fastsnap_dependents([trashed(f"fastsnap-{IMAGE_ID}"), snaps[0]], TRASH) is None  # dropped, not parked


def test_parked_disk_is_reported_and_a_missing_service_is_no_error() -> None:
    fake = Fake()
    fake.answers[("POST", "/v1/parked")] = [(202, {"accepted": True}, {})]
    with serve(fake) as path:
        assert client(path).parked("vms", f"{INSTANCE}_disk", "1234abcd") is True
    assert fake.seen[0][:3] == ("POST", "/v1/parked", {"pool": "vms", "name": f"{INSTANCE}_disk", "id": "1234abcd"})
    with tempfile.TemporaryDirectory() as tmp:
        assert client(os.path.join(tmp, "api.sock")).parked("vms", "d", "1") is False
