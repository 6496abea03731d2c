"""``openstack fastsnap ...`` (python-fastsnapclient's OpenStackClient plugin) against the real REST service,
found through the real Keystone catalogue: the real ``openstack`` command in a subprocess, with the stack's
env.sh credentials (OS_*), each command's ``-f``/``-c``, and the service's own error messages on failure.

The service runs where the catalogue's ``fastsnap`` endpoint points (ceph-test-env registers
``http://127.0.0.1:<[service] bind_port>``); the stack's operator (admin) and fastsnap's own user call it, and the
demo user (role member, allowed here as ``[service] allowed_roles`` lets an operator allow it) sees only its own
project's jobs and is refused the cluster-wide views. Its flatten poller waits an hour after its first pass, so
that a clone's flatten stays pending, as journaled, while ``flatten status`` reads it."""

from __future__ import annotations

import configparser
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from testkit.env import ROOT
from testkit.service import Service
from testkit.stack import Stack
from tests.integration.conftest import Writer
from tests.integration.test_service import _big_disk, _nothing_left, _wait_state

OPENSTACK = ROOT / ".venv/bin/openstack"
USERS = {"admin": ("admin", "FASTSNAP_TEST_ADMIN_PASSWORD"), "fastsnap": ("service", "FASTSNAP_TEST_SERVICE_PASSWORD"),
         "demo": ("demo", "FASTSNAP_TEST_DEMO_PASSWORD")}


def _endpoint(stack: Stack) -> str:
    url = stack.session("admin").get_endpoint(service_type="fastsnap", interface="public")
    assert url, "no fastsnap endpoint in the catalogue (ceph-test-env/lib/keystone_seed.py --fastsnap-url)"
    return str(url)


@pytest.fixture(scope="module")
def osc_service(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    port = urlparse(_endpoint(stack)).port
    assert port is not None
    with socket.socket() as s:  # a service already there would answer instead of ours
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something already listens on the catalogue's port {port}"
    svc = Service(stack, tmp_path_factory.mktemp("osc"), port=port, flatten_poll_interval=3600,
                  extra="allowed_roles = service,admin,member")
    svc.start()
    yield svc
    svc.stop()


def openstack(stack: Stack, *args: str, user: str = "admin") -> subprocess.CompletedProcess[str]:
    """The real ``openstack`` CLI as ``user``, with env.sh's OS_* (the catalogue finds the service)."""
    project, password = USERS[user]
    env = {**os.environ, **stack.env, "OS_USERNAME": user, "OS_PROJECT_NAME": project,
           "OS_PASSWORD": stack.env[password]}
    for var in ("OS_CLOUD", "OS_FASTSNAP_ENDPOINT_OVERRIDE"):  # env.sh's credentials, the catalogue's endpoint
        env.pop(var, None)
    return subprocess.run([str(OPENSTACK), *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False, cwd=ROOT)


def ok(stack: Stack, *args: str, user: str = "admin") -> str:
    r = openstack(stack, *args, user=user)
    assert r.returncode == 0, f"openstack {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r.stdout


def as_json(stack: Stack, *args: str, user: str = "admin") -> Any:
    return json.loads(ok(stack, *args, "-f", "json", user=user))


def refused(stack: Stack, *args: str, user: str = "admin") -> str:
    """stderr of a command the service refused (exit code non-zero)."""
    r = openstack(stack, *args, user=user)
    assert r.returncode != 0, f"openstack {' '.join(args)} succeeded: {r.stdout}"
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_the_catalogue_points_at_the_stacks_service_port(stack: Stack) -> None:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(stack.config_file)
    assert _endpoint(stack).rstrip("/") == f"http://127.0.0.1:{cp.get('service', 'bind_port')}"


def test_snapshot_create_show_list_cancel_and_flatten_status(stack: Stack, osc_service: Service,
                                                             make_disk: Writer, bases: dict[str, str]) -> None:
    disk = make_disk(size=16 << 20, chunks=(0, 5 << 20))
    want = stack.disk_sha256("vms", disk)
    name = f"osc-{uuid.uuid4().hex[:6]}"
    job = as_json(stack, "fastsnap", "snapshot", "create", "--disk", f"vms/{disk}", "--base-image", bases["fast"],
                  "--property", "osc_test=yes", "--wait", name)
    stack.snapshots.append(job["image_id"])
    assert job["state"] == "done" and job["path"] == "clone" and job["store"] == "fast", job
    assert job["request"] == {"disk": f"vms/{disk}", "name": name, "base_image": bases["fast"],
                              "properties": {"osc_test": "yes"}}
    assert isinstance(job["created_at"], float)  # -f json keeps the service's values
    image = stack.glance().images.get(job["image_id"])
    assert image["status"] == "active" and image["name"] == name and image["osc_test"] == "yes"
    assert stack.glance_sha256(job["image_id"]) == want

    shown = as_json(stack, "fastsnap", "snapshot", "show", job["id"])
    assert shown["id"] == job["id"] and shown["image_id"] == job["image_id"] and shown["state"] == "done"
    assert ok(stack, "fastsnap", "snapshot", "show", job["id"], "-f", "value", "-c", "state", "-c", "path") \
        .split() == ["done", "clone"]
    # fastsnap's own user sees every project's jobs (service role)
    rows = as_json(stack, "fastsnap", "snapshot", "list", "--disk", f"vms/{disk}", user="fastsnap")
    assert rows == [{"ID": job["id"], "State": "done", "Disk": f"vms/{disk}", "Name": name,
                     "Image ID": job["image_id"], "Path": "clone", "Store": "fast"}]
    assert ok(stack, "fastsnap", "snapshot", "list", "--state", "done", "-f", "value", "-c", "ID").split() \
        == [job["id"]]
    long = as_json(stack, "fastsnap", "snapshot", "list", "--long", "--image", job["image_id"], "-c", "ID",
                   "-c", "Reason", "-c", "Created At")
    assert long == [{"ID": job["id"], "Reason": job["reason"], "Created At": job["created_at"]}]

    err = refused(stack, "fastsnap", "snapshot", "cancel", job["id"])
    assert f"job {job['id']} is done; only running jobs can be cancelled (HTTP 409)" in err
    # another project's user sees none of it
    assert as_json(stack, "fastsnap", "snapshot", "list", user="demo") == []
    assert f"no snapshot job {job['id']} (HTTP 404)" in refused(stack, "fastsnap", "snapshot", "show", job["id"],
                                                                user="demo")

    # the clone's flatten was queued with the Ceph mgr and is pending as journaled (the poller waits an hour)
    flattens = as_json(stack, "fastsnap", "flatten", "status")
    assert [f["Image ID"] for f in flattens] == [job["image_id"]], flattens
    assert flattens[0]["Disk"] == f"vms/{disk}" and flattens[0]["Policy"] == "background"
    assert flattens[0]["State"] in ("queued", "local"), flattens
    rest = osc_service.call("GET", "/v1/flattens").json()["flattens"]
    assert [r["image_id"] for r in rest] == [job["image_id"]]
    status = as_json(stack, "fastsnap", "status")
    assert status["flatten_backlog"] == 1 and isinstance(status["at"], float), status
    assert set(status) == {"at", "hosts", "in_flight", "in_flight_operations", "lapsed_hosts", "unsettled",
                           "flatten_backlog", "parked_count", "parked_disks"}
    assert any(h["alive"] for h in status["hosts"]), status["hosts"]
    assert ok(stack, "fastsnap", "status", "-f", "value", "-c", "flatten_backlog").strip() == "1"


def test_cancel_a_running_snapshot(stack: Stack, osc_service: Service, make_disk: Writer) -> None:
    disk = _big_disk(make_disk)  # 96 MiB of data to stream: seconds, while cancel takes one call
    job = as_json(stack, "fastsnap", "snapshot", "create", "--disk", f"vms/{disk}", "--store", "cheap", "osc-cancel")
    assert job["state"] in ("planning", "running") and job["request"]["store"] == "cheap", job
    _wait_state(osc_service, job["id"], "running")
    cancelling = as_json(stack, "fastsnap", "snapshot", "cancel", job["id"])
    assert cancelling["id"] == job["id"] and cancelling["state"] == "running", cancelling
    print(f"cancelled at {cancelling['bytes_done'] >> 20} of {cancelling['bytes_total'] >> 20} MiB")
    done = osc_service.wait(job["id"])
    assert done["state"] == "cancelled" and done["error"]["kind"] == "cancelled", done
    _nothing_left(stack, disk, done["image_id"])
    assert ok(stack, "fastsnap", "snapshot", "show", job["id"], "-f", "value", "-c", "state").strip() == "cancelled"


def test_store_and_parked_lists(stack: Stack, osc_service: Service) -> None:
    stores = as_json(stack, "fastsnap", "store", "list")
    assert {s["ID"]: s["Clone"] for s in stores} == {"fast": True, "cheap": False, "remote": False}
    assert {s["FSID"] for s in stores if s["ID"] in ("fast", "remote")} == {stack.fsid_a, stack.fsid_b}
    assert ok(stack, "fastsnap", "store", "list", "-f", "value", "-c", "ID", "--sort-column", "ID").split() \
        == ["cheap", "fast", "remote"]
    parked = as_json(stack, "fastsnap", "parked", "list", "--long")
    rest = osc_service.call("GET", "/v1/parked").json()["parked_disks"]
    assert parked == [{"Pool": p["pool"], "ID": p["id"], "Name": p["name"], "Parked At": p["parked_at"],
                       "Snapshots": p["snapshots"], "State": p["state"], "Dependents": p["dependents"],
                       "Error": p["error"]} for p in rest]


def test_the_services_error_messages_are_printed(stack: Stack, osc_service: Service, make_disk: Writer) -> None:
    disk = make_disk(size=4 << 20, chunks=(0,))
    before = stack.image_ids()
    err = refused(stack, "fastsnap", "snapshot", "create", "--disk", f"vms/{disk}", "--store", "nowhere", "x")
    assert "nowhere" in err and "(HTTP 400)" in err and "Request-ID: req-" in err, err
    missing = str(uuid.uuid4())
    assert f"no snapshot job {missing} (HTTP 404)" in refused(stack, "fastsnap", "snapshot", "show", missing)
    # a member may call, for itself: its snapshot must name the server (Nova checks the user's project owns it)
    err = refused(stack, "fastsnap", "snapshot", "create", "--disk", f"vms/{disk}", "x", user="demo")
    assert "must name the server whose disk" in err and "(HTTP 403)" in err, err
    for cmd in (("status",), ("flatten", "status")):  # the cluster's views are not for it
        err = refused(stack, "fastsnap", *cmd, user="demo")
        assert "one of the roles ['admin', 'service'] is required here (HTTP 403)" in err, err
    assert stack.image_ids() == before

