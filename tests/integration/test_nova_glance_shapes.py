"""The Nova hook with Glance as Kolla and OpenStack-Ansible configure it, and Nova with and without
``[service_user] send_service_user_token`` (issue 24, point 5).

Per configuration, nova-compute (with fastsnap's hook) and the compute host's fastsnap service both use a second
glance-api of that shape (tests/integration/glance_shapes.py; nova-compute through
``FASTSNAP_TEST_NOVA_COMPUTE_GLANCE_URL``, which restarts nova-compute only):

- kolla, no service token: Nova sees no image location, so it boots servers by downloading the image into a new
  disk (not a clone). The hook's snapshot takes the clone path (fastsnap finds the base image's store in its
  ``stores`` field and registers the clone with its own service token: Nova's is not needed); into the other
  cluster's store it is the copy path, since the disk is no clone.
- osa, with the service token: Nova clones the disk from the image; the clone path as above, and the delta path
  into the other cluster's store. With the stack's own Glance (only ``show_image_direct_url``, which shows one
  location) the delta path holds too: fastsnap reads the base image's other locations as its own service user.

The server boots from a small public base image in ``fast`` with a copy in ``remote`` (no OS: it needs to run, not
to boot anything). Every server and image is deleted. The matrix: doc/source/install/glance-shapes.rst.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rbd

from testkit.novaapi import NovaAPI, read_ini
from testkit.stack import Stack
from tests.integration.glance_shapes import ShapedGlance
from tests.integration.test_nova import (
    BOOT_TIMEOUT,
    HOOK_DRIVER,
    FastsnapService,
    delete_images,
    driver_now,
    fastsnap_event,
    serving,
    up_nova,
    wait_idle,
    wait_image,
)

pytestmark = [pytest.mark.stack, pytest.mark.nova]

MiB = 1 << 20
OBJ = 8 * MiB


@pytest.fixture(scope="module")
def restore(stack: Stack) -> Iterator[None]:
    """nova-compute as it was before this module (driver, the catalogue's Glance, the service token), afterwards."""
    before = driver_now(stack)
    yield
    print(f"nova-compute restored ({before}) in {up_nova(stack, FASTSNAP_TEST_NOVA_DRIVER=before):.1f}s")


def _base(stack: Stack) -> str:
    """A public 2-object raw image in ``fast`` (cluster A) with a copy in ``remote`` (cluster B). One per
    configuration: nova-compute keeps a downloaded image in its cache (instances/_base) and imports the next disk
    from that file instead of cloning it, whatever Glance shows."""
    image_id = stack.upload_base("fast", os.urandom(OBJ) + bytes(OBJ), user="admin", visibility="public")
    stack.copy_image(image_id)
    return image_id


@dataclass
class Deployment:
    shape: str                # kolla | osa (tests/integration/glance_shapes.py)
    service_token: bool       # nova-compute's [service_user] send_service_user_token
    glance: ShapedGlance
    nova: NovaAPI
    service: FastsnapService  # the compute host's fastsnap, [glance] endpoint_override = glance.url
    server: dict[str, Any]    # booted from `base` under this configuration
    base: str


KOLLA = ("kolla", False)  # (shape, nova-compute's send_service_user_token)
OSA = ("osa", True)


@pytest.fixture(scope="module", params=[KOLLA, OSA], ids=["kolla-no-service-token", "osa-service-token"])
def deployment(request: pytest.FixtureRequest, stack: Stack, restore: None) -> Iterator[Deployment]:
    shape, token = request.param
    base = _base(stack)
    glance = ShapedGlance.start(shape)
    try:
        took = up_nova(stack, FASTSNAP_TEST_NOVA_DRIVER=HOOK_DRIVER, FASTSNAP_TEST_NOVA_COMPUTE_GLANCE_URL=glance.url,
                   FASTSNAP_TEST_NOVA_SERVICE_USER_TOKEN=str(token).lower())
        conf = Path(stack.env["FASTSNAP_TEST_NOVA_CONF"])
        compute = read_ini(conf.parent / "nova-compute.conf")
        assert compute["DEFAULT"]["compute_driver"] == HOOK_DRIVER
        assert compute["glance"]["endpoint_override"] == glance.url
        assert compute["service_user"]["send_service_user_token"] == str(token).lower()
        print(f"nova-compute ({shape}, send_service_user_token {token}) up in {took:.1f}s")
        nova = NovaAPI(stack.env, stack.session("demo"), stack.session("admin"), boot_timeout=BOOT_TIMEOUT)
        try:
            with serving(stack, nova, f"fastsnap-{shape}-", glance.conf("")) as svc:
                t0 = time.monotonic()
                server = nova.boot(base, f"fs-{shape}")
                print(f"server booted under {shape} in {time.monotonic() - t0:.1f}s")
                yield Deployment(shape, token, glance, nova, svc, server, base)
        finally:
            nova.delete_servers()
    finally:
        glance.stop()


def _parent(stack: Stack, sid: str) -> str | None:
    with stack.ioctx("vms") as io, rbd.Image(io, f"{sid}_disk", read_only=True) as img:
        try:
            return str(img.get_parent_image_spec()["image_name"])
        except rbd.ImageNotFound:
            return None


def _snapshot(stack: Stack, d: Deployment, svc: FastsnapService, images: list[str], name: str,
              **metadata: str) -> dict[str, Any]:
    """``createImage`` through Nova as the user; the fastsnap job that filled it. No fallback to Nova's own path:
    the compute log holds no "did not take" warning for it."""
    sid = d.server["id"]
    offset = d.nova.log_size()
    image_id, request_id = d.nova.image_create(sid, name, **metadata)
    images.append(image_id)
    img = wait_image(stack, image_id)
    wait_idle(d.nova, sid)
    assert f"fastsnap did not take snapshot {image_id}" not in d.nova.log_since(offset)
    assert fastsnap_event(d.nova, sid, request_id)["result"] == "Success"
    job = svc.job_for(image_id)
    assert job["state"] == "done" and job["result"]["acting_as"]["mode"] == "user", job
    assert img["owner"] == d.nova.sess.get_project_id() and img["instance_uuid"] == sid
    return job


@pytest.fixture
def images(stack: Stack) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    left = delete_images(stack, made)
    assert not left, left


def test_nova_boots_as_the_shape_lets_it(stack: Stack, deployment: Deployment) -> None:
    """The premise: Nova clones the disk from the image only when it sees a location."""
    parent = _parent(stack, deployment.server["id"])
    assert parent == (None if deployment.shape == "kolla" else deployment.base), parent


def test_hook_clone_path(stack: Stack, deployment: Deployment, images: list[str]) -> None:
    job = _snapshot(stack, deployment, deployment.service, images, f"fs-{deployment.shape}-clone")
    assert job["path"] == "clone" and job["store"] == "fast", job
    assert f"base image {deployment.base} is in store 'fast'" in job["result"]["reason"], job["result"]["reason"]


def test_hook_into_the_other_cluster(stack: Stack, deployment: Deployment, images: list[str]) -> None:
    """``fastsnap_store=remote``: delta when Nova cloned the disk (osa), copy when it could not (kolla). With osa's
    disk, fastsnap on the stack's own Glance too (``show_image_direct_url`` only: the image shows one location,
    the one in ``fast``): the copy in ``remote`` is found through the location API as fastsnap's service user, on
    behalf of a user to whom Glance shows no other location."""
    job = _snapshot(stack, deployment, deployment.service, images, f"fs-{deployment.shape}-remote",
                    fastsnap_store="remote")
    reason = job["result"]["reason"]
    if deployment.shape == "kolla":
        assert job["path"] == "copy" and "the disk is not a clone" in reason, reason
        return
    assert job["path"] == "delta" and "has a copy there" in reason, reason
    deployment.service.stop()
    try:
        with serving(stack, deployment.nova, "fastsnap-direct-url-") as svc:
            job = _snapshot(stack, deployment, svc, images, "fs-direct-url-remote", fastsnap_store="remote")
    finally:
        deployment.service.start()
    assert job["path"] == "delta" and "has a copy there" in job["result"]["reason"], job["result"]["reason"]


@pytest.mark.parametrize("deployment", [KOLLA], indirect=True, ids=["kolla-no-service-token"])
def test_hook_patch_location_api_without_multiple_locations_declines_to_nova(
        stack: Stack, deployment: Deployment, images: list[str]) -> None:
    """The one combination that cannot work: fastsnap's ``[glance] location_api = patch`` with
    ``show_multiple_locations = False`` (kolla), which refuses the PATCH. fastsnap refuses it while planning (the
    base image's view has no ``locations``), before creating anything, so the hook declines: one WARNING line
    naming the setting, and Nova's own snapshot makes the image. fastsnap left nothing (no job, no snapshot of
    its own on the disk)."""
    sid = deployment.server["id"]
    disk_snaps = stack.snaps("vms", f"{sid}_disk")
    deployment.service.stop()
    try:
        with serving(stack, deployment.nova, "fastsnap-patch-",
                     deployment.glance.conf("", "location_api = patch\n")) as svc:
            offset = deployment.nova.log_size()
            image_id, request_id = deployment.nova.image_create(sid, "fs-kolla-patch")
            images.append(image_id)
            img = wait_image(stack, image_id)
            wait_idle(deployment.nova, sid)
            code, body = svc.call("GET", f"/v1/snapshots?image_id={image_id}")
            assert code == 200 and body["snapshots"] == [], body
    finally:
        deployment.service.start()
    log = deployment.nova.log_since(offset)
    lines = [ln for ln in log.splitlines() if f"fastsnap did not take snapshot {image_id}" in ln]
    assert len(lines) == 1 and "WARNING" in lines[0], log[-3000:]
    assert "show_multiple_locations" in lines[0] and "location_api" in lines[0], lines[0]
    assert img["status"] == "active"
    assert not [e for e in deployment.nova.events(sid, request_id) if e["event"] == "compute_fastsnap_snapshot"]
    assert stack.snaps("vms", f"{sid}_disk") == disk_snaps


def test_hook_clone_path_with_the_service_token_flipped(stack: Stack, deployment: Deployment,
                                                        images: list[str]) -> None:
    """The other half of the token matrix on the same Glance and server: nova-compute restarted with
    ``send_service_user_token`` the other way round (kolla with it, osa without), one more snapshot through the
    hook. Last test of each configuration: the next one's set-up (or ``restore``) restarts nova-compute again."""
    flipped = not deployment.service_token
    took = up_nova(stack, FASTSNAP_TEST_NOVA_DRIVER=HOOK_DRIVER,
               FASTSNAP_TEST_NOVA_COMPUTE_GLANCE_URL=deployment.glance.url,
               FASTSNAP_TEST_NOVA_SERVICE_USER_TOKEN=str(flipped).lower())
    compute = read_ini(Path(stack.env["FASTSNAP_TEST_NOVA_CONF"]).parent / "nova-compute.conf")
    assert compute["service_user"]["send_service_user_token"] == str(flipped).lower()
    print(f"nova-compute ({deployment.shape}, send_service_user_token {flipped}) restarted in {took:.1f}s")
    job = _snapshot(stack, deployment, deployment.service, images, f"fs-{deployment.shape}-flipped")
    assert job["path"] == "clone" and job["store"] == "fast", job
