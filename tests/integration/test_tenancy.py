"""Snapshots on behalf of a user (user token + fastsnap's service token) belong to the user's project."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from fastsnap import BadRequest, Fastsnap, Forbidden, SnapshotRequest, auth
from tests.integration.conftest import Stack, Writer


@pytest.fixture
def fs(stack: Stack) -> Iterator[Fastsnap]:
    with Fastsnap(config_file=stack.config_file) as client:
        yield client


@pytest.fixture(scope="module")
def demo2(stack: Stack) -> dict[str, Any]:
    sess = stack.session("demo2")
    return {"token": sess.get_token(), "project": sess.get_project_id(), "glance": stack.glance("demo2"),
            "base": stack.upload_base("fast", os.urandom(1 << 20), user="demo2")}


def _listed(stack: Stack, user: str, image_id: str) -> bool:
    return image_id in {i["id"] for i in stack.glance(user).images.list()}


@pytest.mark.parametrize("path", ["clone", "stream"])
def test_snapshot_owned_by_the_users_project(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                             demo2: dict[str, Any], path: str) -> None:
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    req = SnapshotRequest(disk=f"vms/{disk}", name=f"user-{path}", base_image=demo2["base"],
                          store=None if path == "clone" else "cheap")
    res = fs.snapshot(req, user_token=demo2["token"])
    stack.snapshots.append(res.image_id)
    assert res.path == path
    assert res.acting_as["mode"] == "user" and res.acting_as["project_id"] == demo2["project"]
    img = demo2["glance"].images.get(res.image_id)
    assert img["owner"] == demo2["project"] and img["status"] == "active"
    assert _listed(stack, "demo2", res.image_id)
    assert not _listed(stack, "demo", res.image_id)
    assert stack.glance_sha256(res.image_id, "demo2") == want


def test_fills_an_image_the_user_created(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                         demo2: dict[str, Any]) -> None:
    disk = make_disk()
    queued = demo2["glance"].images.create(name="user-made", disk_format="raw", container_format="bare")
    stack.snapshots.append(queued["id"])
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="filled", base_image=demo2["base"],
                                      image_id=queued["id"]), user_token=demo2["token"])
    assert res.image_id == queued["id"] and res.path == "clone"
    img = demo2["glance"].images.get(queued["id"])
    assert img["status"] == "active" and img["owner"] == demo2["project"]


def _state(stack: Stack, disk: str) -> tuple[Any, ...]:
    return (stack.rbd_images("vms"), stack.rbd_images("images"), stack.snaps("vms", disk), stack.image_ids())


def test_base_image_private_to_another_project(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                               demo2: dict[str, Any]) -> None:
    other = stack.upload_base("fast", os.urandom(1 << 20), user="demo")   # private to project demo
    disk = make_disk()
    before = _state(stack, disk)
    with pytest.raises(BadRequest) as err:
        fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="x", base_image=other), user_token=demo2["token"])
    assert other in str(err.value) and "not found" in str(err.value)
    assert _state(stack, disk) == before


@pytest.mark.parametrize("token", ["not-a-token", "gAAAAABexpired-or-revoked-token-xxxxxxxxxxxxxxxxxxxx"])
def test_invalid_user_token(stack: Stack, fs: Fastsnap, make_disk: Writer, demo2: dict[str, Any],
                            token: str) -> None:
    disk = make_disk()
    before = _state(stack, disk)
    with pytest.raises(Forbidden) as err:
        fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="x", base_image=demo2["base"]), user_token=token)
    assert "invalid or expired" in str(err.value)
    assert _state(stack, disk) == before


def test_revoked_token(stack: Stack, fs: Fastsnap, make_disk: Writer, demo2: dict[str, Any]) -> None:
    sess = stack.session("demo2")
    token = sess.get_token()
    admin = stack.session("admin")
    admin.delete("/auth/tokens", headers={"X-Subject-Token": token},
                 endpoint_filter={"service_type": "identity", "interface": "public"})
    disk = make_disk()
    with pytest.raises(Forbidden):
        fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="x", base_image=demo2["base"]), user_token=token)


def test_cli_on_behalf_of_env_user(stack: Stack, make_disk: Writer, demo2: dict[str, Any]) -> None:
    import json

    disk = make_disk()
    env = {"OS_USERNAME": "demo2", "OS_PROJECT_NAME": "demo2", "OS_PASSWORD": stack.env["FASTSNAP_TEST_DEMO_PASSWORD"]}
    out = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "cli-user", "--base-image", demo2["base"],
                         "--user-from-env", "--json", env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    stack.snapshots.append(res["image_id"])
    assert res["acting_as"]["project_id"] == demo2["project"]
    bad = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "x", "--os-token", "bogus", "--json")
    assert bad.returncode == 1 and "invalid or expired" in bad.stderr
    operator = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "op", "--store", "cheap", "--json")
    assert operator.returncode == 0, operator.stderr
    op = json.loads(operator.stdout)
    stack.snapshots.append(op["image_id"])
    assert op["acting_as"]["mode"] == "operator"


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
