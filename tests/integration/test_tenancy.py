"""Snapshots on behalf of a user (user token + fastsnap's service token) belong to the user's project, and are only
of a disk the user's project owns (issue 22): the request names the server, Nova shows it to the user, and the
disk is its root disk. Bad actors are refused before anything is created, checked against Glance and both pools.

The servers are the stack's real Nova servers of projects demo and demo2 (``tenant_servers``: booted by their
users, paused)."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from fastsnap import BadRequest, Fastsnap, Forbidden, SnapshotRequest, auth
from fastsnap.caller import Caller
from fastsnap.errors import NotFound
from testkit.nova import Server
from testkit.service import Service
from testkit.stack import Stack
from tests.integration.conftest import Writer

MEMBERS = "allowed_roles = service,admin,member\n"  # the setting of the report: members may call


@pytest.fixture
def fs(stack: Stack) -> Iterator[Fastsnap]:
    with Fastsnap(config_file=stack.config_file) as client:
        yield client


@pytest.fixture(scope="module")
def demo2(stack: Stack) -> dict[str, Any]:
    sess = stack.session("demo2")
    return {"token": sess.get_token(), "project": sess.get_project_id(), "glance": stack.glance("demo2"),
            "base": stack.upload_base("fast", os.urandom(1 << 20), user="demo2")}


@pytest.fixture(scope="module")
def nova_image(stack: Stack) -> str:
    """The (public) image the tenant servers booted from: their base image."""
    return stack.env["FASTSNAP_NOVA_IMAGE"]


def _listed(stack: Stack, user: str, image_id: str) -> bool:
    return image_id in {i["id"] for i in stack.glance(user).images.list()}


def _state(stack: Stack, *disks: str) -> tuple[Any, ...]:
    """What a refused request must leave as it was: every Glance image, both pools, the named disks' snapshots."""
    return (stack.image_ids(), stack.rbd_images("vms"), stack.rbd_images("images"),
            [stack.snaps(*d.split("/")) for d in disks])


def _request(server: Server, base: str | None, **kw: Any) -> SnapshotRequest:
    return SnapshotRequest(disk=server.disk, name=kw.pop("name", "tenant"), base_image=base,
                           instance_uuid=kw.pop("instance_uuid", server.id), **kw)


# -- snapshots for a user, of its own server -------------------------------------------------------------------


@pytest.mark.nova
@pytest.mark.parametrize("path", ["clone", "stream"])
def test_snapshot_owned_by_the_users_project(stack: Stack, fs: Fastsnap, tenant_servers: dict[str, Server],
                                             demo2: dict[str, Any], nova_image: str, path: str) -> None:
    server = tenant_servers["demo2"]
    want = stack.disk_sha256(*server.disk.split("/"))
    req = _request(server, nova_image, name=f"user-{path}", store=None if path == "clone" else "cheap")
    res = fs.snapshot(req, caller=Caller(user_token=demo2["token"]))
    stack.snapshots.append(res.image_id)
    assert res.path == path
    assert res.acting_as["mode"] == "user" and res.acting_as["project_id"] == demo2["project"]
    img = demo2["glance"].images.get(res.image_id)
    assert img["owner"] == demo2["project"] and img["status"] == "active"
    assert img["instance_uuid"] == server.id
    assert _listed(stack, "demo2", res.image_id)
    assert not _listed(stack, "demo", res.image_id)
    assert stack.glance_sha256(res.image_id, "demo2") == want


@pytest.mark.nova
def test_fills_an_image_the_user_created(stack: Stack, fs: Fastsnap, tenant_servers: dict[str, Server],
                                         demo2: dict[str, Any], nova_image: str) -> None:
    queued = demo2["glance"].images.create(name="user-made", disk_format="raw", container_format="bare")
    stack.snapshots.append(queued["id"])
    res = fs.snapshot(_request(tenant_servers["demo2"], nova_image, name="filled", image_id=queued["id"]),
                      caller=Caller(user_token=demo2["token"]))
    assert res.image_id == queued["id"] and res.path == "clone"
    img = demo2["glance"].images.get(queued["id"])
    assert img["status"] == "active" and img["owner"] == demo2["project"]


# -- bad actors through the Python API -------------------------------------------------------------------------


@pytest.mark.nova
def test_member_names_another_projects_server(stack: Stack, fs: Fastsnap, tenant_servers: dict[str, Server],
                                              demo2: dict[str, Any], nova_image: str) -> None:
    """demo2 names demo's server and its disk: Nova shows demo2 no such server, so 404 and nothing is made."""
    theirs = tenant_servers["demo"]
    before = _state(stack, theirs.disk)
    with pytest.raises(NotFound) as err:
        fs.snapshot(_request(theirs, nova_image), caller=Caller(user_token=demo2["token"]))
    assert err.value.http_status == 404
    assert f"server {theirs.id} not found" in str(err.value)
    assert _state(stack, theirs.disk) == before


@pytest.mark.nova
def test_member_names_its_server_and_another_disk(stack: Stack, fs: Fastsnap, tenant_servers: dict[str, Server],
                                                  demo2: dict[str, Any], nova_image: str,
                                                  make_disk: Writer) -> None:
    """demo2 names its own server but demo's disk, or a disk of no server: 403, nothing made."""
    mine, theirs = tenant_servers["demo2"], tenant_servers["demo"]
    loose = f"vms/{make_disk(size=8 << 20)}"
    for disk in (theirs.disk, loose, f"images/{mine.id}_disk"):
        before = _state(stack, theirs.disk, loose)
        with pytest.raises(Forbidden) as err:
            fs.snapshot(SnapshotRequest(disk=disk, name="x", base_image=nova_image, instance_uuid=mine.id),
                        caller=Caller(user_token=demo2["token"]))
        assert f"disk {disk} is not the root disk of server {mine.id} (that is {mine.disk})" in str(err.value)
        assert _state(stack, theirs.disk, loose) == before


@pytest.mark.nova
def test_a_snapshot_for_a_user_must_name_the_server(stack: Stack, fs: Fastsnap, tenant_servers: dict[str, Server],
                                                    demo2: dict[str, Any], nova_image: str) -> None:
    theirs = tenant_servers["demo"]
    before = _state(stack, theirs.disk)
    with pytest.raises(Forbidden) as err:
        fs.snapshot(SnapshotRequest(disk=theirs.disk, name="x", base_image=nova_image),
                    caller=Caller(user_token=demo2["token"]))
    assert "must name the server" in str(err.value)
    with pytest.raises(BadRequest, match="is not a UUID"):
        fs.snapshot(SnapshotRequest(disk=theirs.disk, name="x", instance_uuid=f"{theirs.id}/../.."),
                    caller=Caller(user_token=demo2["token"]))
    assert _state(stack, theirs.disk) == before


@pytest.mark.nova
def test_base_image_private_to_another_project(stack: Stack, fs: Fastsnap, tenant_servers: dict[str, Server],
                                               demo2: dict[str, Any]) -> None:
    other = stack.upload_base("fast", os.urandom(1 << 20), user="demo")   # private to project demo
    server = tenant_servers["demo2"]
    before = _state(stack, server.disk)
    with pytest.raises(BadRequest) as err:
        fs.snapshot(_request(server, other), caller=Caller(user_token=demo2["token"]))
    assert other in str(err.value) and "not found" in str(err.value)
    assert _state(stack, server.disk) == before


@pytest.mark.parametrize("token", ["not-a-token", "gAAAAABexpired-or-revoked-token-xxxxxxxxxxxxxxxxxxxx"])
def test_invalid_user_token(stack: Stack, fs: Fastsnap, make_disk: Writer, demo2: dict[str, Any],
                            token: str) -> None:
    disk = f"vms/{make_disk()}"
    before = _state(stack, disk)
    with pytest.raises(Forbidden) as err:
        fs.snapshot(SnapshotRequest(disk=disk, name="x", base_image=demo2["base"], instance_uuid=str(uuid.uuid4())),
                    caller=Caller(user_token=token))
    assert "invalid or expired" in str(err.value)
    assert _state(stack, disk) == before


def test_revoked_token(stack: Stack, fs: Fastsnap, make_disk: Writer, demo2: dict[str, Any]) -> None:
    sess = stack.session("demo2")
    token = sess.get_token()
    admin = stack.session("admin")
    admin.delete("/auth/tokens", headers={"X-Subject-Token": token},
                 endpoint_filter={"service_type": "identity", "interface": "public"})
    disk = f"vms/{make_disk()}"
    before = _state(stack, disk)
    with pytest.raises(Forbidden):
        fs.snapshot(SnapshotRequest(disk=disk, name="x", base_image=demo2["base"], instance_uuid=str(uuid.uuid4())),
                    caller=Caller(user_token=token))
    assert _state(stack, disk) == before


# -- the CLI ---------------------------------------------------------------------------------------------------


@pytest.mark.nova
def test_cli_on_behalf_of_env_user(stack: Stack, make_disk: Writer, tenant_servers: dict[str, Server],
                                   demo2: dict[str, Any], nova_image: str) -> None:
    mine, theirs = tenant_servers["demo2"], tenant_servers["demo"]
    env = {"OS_USERNAME": "demo2", "OS_PROJECT_NAME": "demo2", "OS_PASSWORD": stack.env["FASTSNAP_TEST_DEMO_PASSWORD"]}
    out = stack.fastsnap("snapshot", "--disk", mine.disk, "--instance-uuid", mine.id, "--name", "cli-user",
                         "--base-image", nova_image, "--user-from-env", "--json", env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    stack.snapshots.append(res["image_id"])
    assert res["acting_as"]["project_id"] == demo2["project"]
    before = _state(stack, theirs.disk)
    for who in (("--user-from-env",), ("--os-token", demo2["token"])):
        stolen = stack.fastsnap("snapshot", "--disk", theirs.disk, "--instance-uuid", theirs.id, "--name", "x",
                                "--base-image", nova_image, *who, "--json", env=env)
        assert stolen.returncode == 1 and f"server {theirs.id} not found" in stolen.stderr, stolen.stderr
        unnamed = stack.fastsnap("snapshot", "--disk", theirs.disk, "--name", "x", *who, "--json", env=env)
        assert unnamed.returncode == 1 and "must name the server" in unnamed.stderr, unnamed.stderr
    assert _state(stack, theirs.disk) == before
    disk = make_disk()
    bad = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "x", "--os-token", "bogus", "--json")
    assert bad.returncode == 1 and "invalid or expired" in bad.stderr
    # The host's operator (fastsnap's own credentials) snapshots any disk, into fastsnap's project.
    operator = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "op", "--store", "cheap", "--json")
    assert operator.returncode == 0, operator.stderr
    op = json.loads(operator.stdout)
    stack.snapshots.append(op["image_id"])
    assert op["acting_as"]["mode"] == "operator"


# -- the REST service, members allowed (the report) ----------------------------------------------------


@pytest.fixture
def members(stack: Stack, tmp_path: Path) -> Iterator[Service]:
    svc = Service(stack, tmp_path, slots=4, extra=MEMBERS + "max_concurrent_per_project = 2\n",
                  operator_roles=None)  # fastsnap's default: only admin snapshots as fastsnap itself
    svc.start()
    yield svc
    svc.stop()


def _post(svc: Service, body: dict[str, Any], user: str | None = "fastsnap", **kw: Any) -> requests.Response:
    return svc.call("POST", "/v1/snapshots", json=body, user=user, **kw)


@pytest.mark.nova
def test_service_member_cannot_copy_another_projects_disk(stack: Stack, members: Service,
                                                          tenant_servers: dict[str, Server], nova_image: str,
                                                          demo2: dict[str, Any]) -> None:
    mine, theirs = tenant_servers["demo2"], tenant_servers["demo"]
    before = _state(stack, theirs.disk)
    refused = {
        "the issue's request: another tenant's disk, no server": (
            {"disk": theirs.disk, "name": "stolen", "store": "cheap"}, "demo2", 403, "must name the server"),
        "another tenant's server": (
            {"disk": theirs.disk, "name": "stolen", "instance_uuid": theirs.id}, "demo2", 404,
            f"server {theirs.id} not found"),
        "its own server, another tenant's disk": (
            {"disk": theirs.disk, "name": "stolen", "instance_uuid": mine.id}, "demo2", 403,
            "is not the root disk"),
        # A trusted caller passing a user's token is checked too ([service] verify_trusted_callers, default on).
        "a service caller for demo2, demo's disk": (
            {"disk": theirs.disk, "name": "stolen", "instance_uuid": theirs.id, "user_token": demo2["token"]},
            "fastsnap", 404, f"server {theirs.id} not found"),
        # Operator mode (no user) over TCP is for admin ([service] operator_roles), not for any service user.
        "a service caller as fastsnap itself": (
            {"disk": theirs.disk, "name": "stolen", "store": "cheap"}, "fastsnap", 403, "operator_roles"),
        "a member passing a user token": (
            {"disk": theirs.disk, "name": "stolen", "instance_uuid": theirs.id, "user_token": demo2["token"]},
            "demo2", 403, "for trusted service callers"),
    }
    for what, (body, user, code, message) in refused.items():
        r = _post(members, {"base_image": nova_image, **body}, user=user)
        assert r.status_code == code, (what, r.status_code, r.text)
        assert message in r.json()["error"]["message"], (what, r.text)
    assert _state(stack, theirs.disk) == before
    for path in ("/v1/parked", "/metrics"):  # host-wide views: not for members
        assert members.call("GET", path, user="demo2").status_code == 403
        assert members.call("GET", path, user="fastsnap").status_code == 200
    # Its own server's disk: accepted, and the image is demo2's.
    r = _post(members, {"disk": mine.disk, "name": "mine", "instance_uuid": mine.id, "base_image": nova_image},
              user="demo2")
    assert r.status_code == 202, r.text
    job = members.wait(r.json()["id"])
    assert job["state"] == "done", job
    stack.snapshots.append(job["image_id"])
    assert stack.glance("admin").images.get(job["image_id"])["owner"] == demo2["project"]


def test_service_forged_identity_headers_without_a_token(stack: Stack, members: Service, make_disk: Writer) -> None:
    """keystonemiddleware strips identity headers a client sends: without a token, forged headers are a 401."""
    disk = f"vms/{make_disk(size=8 << 20)}"
    before = _state(stack, disk)
    project = str(stack.session("demo2").get_project_id())
    forged = {"X-Project-Id": project, "X-Roles": "admin,service", "X-Identity-Status": "Confirmed",
              "X-Service-Roles": "service", "X-User-Id": "x", "X-Tenant-Id": project}
    r = _post(members, {"disk": disk, "name": "forged", "store": "cheap"}, user=None, headers=forged)
    assert r.status_code == 401, r.text
    assert members.call("GET", "/v1/snapshots", user=None, headers=forged).status_code == 401
    assert _state(stack, disk) == before


def test_service_reader_token_is_refused(stack: Stack, members: Service, make_disk: Writer) -> None:
    """A valid token with only the reader role: 403, nothing made (reader is not in allowed_roles)."""
    admin = stack.session("admin")
    ident = {"service_type": "identity", "interface": "public"}
    project = str(stack.session("demo2").get_project_id())
    name, password = f"reader-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    user = admin.post("/users", json={"user": {"name": name, "password": password, "domain_id": "default"}},
                      endpoint_filter=ident).json()["user"]
    try:
        roles = admin.get("/roles", params={"name": "reader"}, endpoint_filter=ident).json()["roles"]
        admin.put(f"/projects/{project}/users/{user['id']}/roles/{roles[0]['id']}", endpoint_filter=ident)
        token = ks_session.Session(auth=v3.Password(
            auth_url=stack.env["OS_AUTH_URL"], username=name, password=password, user_domain_id="default",
            project_id=project)).get_token()
        disk = f"vms/{make_disk(size=8 << 20)}"
        before = _state(stack, disk)
        r = _post(members, {"disk": disk, "name": "reader", "store": "cheap"}, user=None,
                  headers={"X-Auth-Token": token})
        assert r.status_code == 403, r.text
        assert "one of the roles" in r.json()["error"]["message"]
        assert _state(stack, disk) == before
    finally:
        admin.delete(f"/users/{user['id']}", endpoint_filter=ident)


@pytest.mark.nova
def test_service_one_project_cannot_starve_another(stack: Stack, members: Service,
                                                   tenant_servers: dict[str, Server], nova_image: str) -> None:
    """demo2 floods (6 streams at once, per-project limit 2 of 4 host slots): 2 accepted, the rest 429 with
    Retry-After; demo's snapshot still gets its turn. The flood is cancelled afterwards."""
    mine, other = tenant_servers["demo2"], tenant_servers["demo"]
    flood = {"disk": mine.disk, "name": "flood", "instance_uuid": mine.id, "store": "cheap"}
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def one() -> None:
        r = _post(members, flood, user="demo2")
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [r.json()["id"] for r in answers if r.status_code == 202]
    try:
        rejected = [r for r in answers if r.status_code == 429]
        assert len(accepted) == 2 and len(rejected) == 4, [(r.status_code, r.text[:200]) for r in answers]
        for r in rejected:
            assert r.headers["Retry-After"] == "5"
            assert "max_concurrent_per_project" in r.json()["error"]["message"]
        r = _post(members, {"disk": other.disk, "name": "its turn", "instance_uuid": other.id,
                            "base_image": nova_image}, user="demo")
        assert r.status_code == 202, r.text
        job = members.wait(r.json()["id"])
        assert job["state"] == "done", job
        stack.snapshots.append(job["image_id"])
        assert 'fastsnap_rejected_total{limit="project"} 4.0' in members.call("GET", "/metrics").text
    finally:
        for job_id in accepted:
            members.call("DELETE", f"/v1/snapshots/{job_id}")
        for job_id in accepted:
            done = members.wait(job_id)
            if done.get("image_id"):
                stack.snapshots.append(done["image_id"])


def test_trusts_of_snapshots_started_in_the_same_instant(stack: Stack, demo2: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Keystone refuses a second trust with the same trustor, trustee, project and expiry (409): two snapshots of
    one user's servers started at the same moment must each get a trust of their own (the real Keystone; the
    expiry is pinned so that the first try collides for sure)."""
    monkeypatch.setattr(auth, "_expiry", lambda hours: 1.9e9)
    service = stack.session("fastsnap")
    user, ident = auth.user_session(service, demo2["token"])
    ids = [auth.create_trust(user, service, ident, 1) for _ in range(3)]
    try:
        assert len(set(ids)) == 3, ids
        for trust_id in ids:
            body = user.get(f"/OS-TRUST/trusts/{trust_id}", endpoint_filter=auth.IDENTITY).json()["trust"]
            assert body["trustee_user_id"] == service.get_user_id() and body["project_id"] == demo2["project"]
    finally:
        for trust_id in ids:
            auth.delete_trust(user, trust_id)
