"""The stack's Nova compute host is real and behaves as stock Nova (the baseline fastsnap's hook changes):
a server boots from the guest image in store ``fast`` as an RBD clone in ``vms``, its guest agent answers and its
writer runs, Nova's own snapshot produces an active image, and deleting the server leaves nothing behind.

One server for the module (TCG is slow); the tests run in file order and the last one deletes it.
"""

from __future__ import annotations

import time
import uuid

import pytest
import rbd

from testkit.nova import Nova, Server
from testkit.stack import Stack

pytestmark = [pytest.mark.stack, pytest.mark.nova]


def test_server_boots_as_a_clone_of_the_fast_image(stack: Stack, nova: Nova, nova_server: Server) -> None:
    print(f"server {nova_server.id} ACTIVE after {nova_server.boot_seconds:.1f}s")
    assert nova_server.domain.startswith(stack.env["FASTSNAP_TEST_NOVA_INSTANCE_PREFIX"] + "-")
    disk = f"{nova_server.id}_disk"
    assert disk in stack.rbd_images("vms")
    with stack.ioctx("vms") as io, rbd.Image(io, disk, read_only=True) as img:
        parent = img.get_parent_image_spec()
        assert img.size() == 1 << 30  # the flavor's root disk, grown from the 256 MiB image
    # Cloned from Glance's RBD image (not downloaded): Glance shows direct_url, the base is on the disk's cluster.
    assert (parent["pool_name"], parent["image_name"], parent["snap_name"]) == (
        "images", stack.env["FASTSNAP_NOVA_IMAGE"], "snap")
    dom = nova.domain(nova_server)
    assert dom.isActive()
    assert "<domain type='qemu'" in dom.XMLDesc(0)  # TCG


def test_guest_agent_answers_and_the_guest_writes(nova: Nova, nova_server: Server) -> None:
    secs = nova.wait_agent(nova_server)
    print(f"guest agent answered {secs:.1f}s after ACTIVE")
    first = nova.counter(nova_server)
    deadline = time.monotonic() + 30
    while (now := nova.counter(nova_server)) <= first and time.monotonic() < deadline:
        time.sleep(0.5)
    assert now > first, f"the guest's counter stayed at {first}"


def test_stock_nova_snapshot_is_active(stack: Stack, nova: Nova, nova_server: Server) -> None:
    name = f"stock-snap-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    image = nova.openstack("server", "image", "create", "--wait", "--name", name, nova_server.id)
    secs = time.monotonic() - t0
    stack.snapshots.append(image["id"])
    try:
        got = stack.glance("admin").images.get(image["id"])
        print(f"stock Nova snapshot {image['id']} active after {secs:.1f}s (stores {got.get('stores')})")
        assert got["status"] == "active"
        assert got["image_type"] == "snapshot"
        assert got["instance_uuid"] == nova_server.id
        # Nova's direct snapshot: a flattened clone in the base image's pool, registered as an rbd location.
        assert got["stores"] == "fast"
        assert image["id"] in stack.rbd_images("images")
        server = nova.server(nova_server.id)
        assert server["status"] == "ACTIVE"
        assert server["OS-EXT-STS:task_state"] is None
    finally:
        stack.delete_snapshots()


def test_server_delete_leaves_nothing(stack: Stack, nova: Nova, nova_server: Server) -> None:
    t0 = time.monotonic()
    nova.delete(nova_server)
    print(f"server deleted in {time.monotonic() - t0:.1f}s")
    assert [i for i in stack.rbd_images("vms") if i.startswith(nova_server.id)] == []
    assert nova_server.domain not in nova.domain_names()
    servers = nova.openstack("server", "list", "--all-projects", user="admin")
    assert nova_server.id not in {s["ID"] for s in servers}
