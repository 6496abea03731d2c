"""The clone and delta paths with Glance as Kolla and OpenStack-Ansible configure it (issue 24, point 5), fastsnap
acting as itself (operator mode; on behalf of a user through Nova: test_nova_glance_shapes.py).

Each shape is a second glance-api beside the stack's (tests/integration/glance_shapes.py), fastsnap pointed at it:

- kolla: ``show_multiple_locations = False``, ``show_image_direct_url = False``: an image shows neither its
  locations nor a direct_url. fastsnap finds the base image's store in its ``stores`` field (clone path) and its
  copy on the other cluster through the location API, which Glance shows to fastsnap's service role (delta path).
- osa: both on: every location in the image itself.

The matrix, with the Nova half: doc/source/install/glance-shapes.rst.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import rbd

from fastsnap import Fastsnap, SnapshotRequest
from testkit.stack import Stack
from tests.integration.conftest import stack_mode
from tests.integration.glance_shapes import ShapedGlance

pytestmark = [pytest.mark.stack,
              pytest.mark.skipif(stack_mode() != "native", reason="native stack only: starts a second glance-api "
                                 "from the native stack's configuration")]

MiB = 1 << 20
OBJ = 8 * MiB  # the stack's rbd stores write 8 MiB objects


@pytest.fixture(scope="module", params=["kolla", "osa"])
def shaped(request: pytest.FixtureRequest, stack: Stack) -> Iterator[ShapedGlance]:
    g = ShapedGlance.start(request.param)
    print(f"glance-api ({g.shape}) answered {g.started_seconds:.1f}s after its start")
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def two_store_base(stack: Stack) -> str:
    """A 2-object base image in ``fast`` (cluster A), copied into ``remote`` (cluster B) by copy-image."""
    data = os.urandom(OBJ) + bytes(OBJ)
    image_id = stack.upload_base("fast", data)
    stack.copy_image(image_id)
    return image_id


def _clone_disk(stack: Stack, base: str, made: list[str]) -> str:
    """An instance disk as Nova makes it when it sees the base image's location: a clone of its snap, written."""
    name = f"gdisk-{uuid.uuid4().hex[:10]}"
    with stack.ioctx("images") as src, stack.ioctx("vms") as dst:
        rbd.RBD().clone(src, base, "snap", dst, name)
    made.append(name)
    with stack.ioctx("vms") as io, rbd.Image(io, name) as img:
        img.resize(4 * OBJ)
        img.write(os.urandom(MiB), OBJ + MiB)
    return name


def _fastsnap(stack: Stack, shaped: ShapedGlance, tmp_path: Path) -> Fastsnap:
    conf = tmp_path / f"fastsnap-{shaped.shape}.conf"
    conf.write_text(shaped.conf(Path(stack.config_file).read_text()))
    return Fastsnap(config_file=str(conf))


def test_shape_shows_what_its_settings_say(stack: Stack, shaped: ShapedGlance, two_store_base: str) -> None:
    """The premise: the base image seen through the shape's Glance (as fastsnap's service user)."""
    import glanceclient

    img = glanceclient.Client("2", session=stack.session(), endpoint_override=shaped.url).images.get(two_store_base)
    assert set(str(img["stores"]).split(",")) == {"fast", "remote"}
    if shaped.shape == "kolla":
        assert "locations" not in img and "direct_url" not in img, img
    else:
        assert len(img["locations"]) == 2 and img["direct_url"].startswith("rbd://"), img


def test_clone_path_finds_the_base_images_store(stack: Stack, shaped: ShapedGlance, bases: dict[str, str],
                                                disks: list[str], tmp_path: Path) -> None:
    """No store named: the base image's rbd store on the disk's cluster, from its ``stores`` field when its
    locations are hidden (kolla); the clone registered through the location API (2.17) in both shapes."""
    disk = _clone_disk(stack, bases["fast"], disks)
    with _fastsnap(stack, shaped, tmp_path) as fs:
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name=f"shape-clone-{shaped.shape}",
                                          base_image=bases["fast"]))
    stack.snapshots.append(res.image_id)
    assert res.path == "clone" and res.store == "fast", res.reason
    assert f"base image {bases['fast']} is in store 'fast'" in res.reason
    img = stack.glance("admin").images.get(res.image_id)
    assert img["status"] == "active" and img["stores"] == "fast"
    assert img["direct_url"] == f"rbd://{stack.fsid_a}/images/{res.image_id}/snap"  # (the stack's own Glance)


def test_delta_path_finds_the_base_images_copy(stack: Stack, shaped: ShapedGlance, two_store_base: str,
                                               disks: list[str], tmp_path: Path) -> None:
    """Into ``remote`` (cluster B): a clone of the base image's copy there plus what the instance wrote, the copy
    found through the image's locations (osa) or the location API as fastsnap's service role (kolla)."""
    disk = _clone_disk(stack, two_store_base, disks)
    want = stack.disk_sha256("vms", disk)
    with _fastsnap(stack, shaped, tmp_path) as fs:
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name=f"shape-delta-{shaped.shape}",
                                          base_image=two_store_base, store="remote"))
    stack.snapshots.append(res.image_id)
    assert res.path == "delta", res.reason
    assert res.transfer["bytes_read"] == OBJ, res.transfer  # the one object the instance wrote
    assert stack.glance("admin").images.get(res.image_id)["status"] == "active"
    assert stack.glance_sha256(res.image_id, "admin") == want
