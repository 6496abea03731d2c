"""``[glance] location_api`` (issue 17) against the real Glance.

``patch`` registers a clone's location with the JSON-patch ``add /locations/-``: one synchronous request, no Glance
task, no status polls. Glance allows it only with its deprecated ``show_multiple_locations = True``:

- with the stack's default (off), the snapshot fails with a precise error and leaves nothing behind;
- with it on (a second glance-api with it, for this module), the image is active when the request returns,
  after exactly two Glance requests (create, patch), and Glance computed no hash although ``do_secure_hash`` is on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastsnap import Fastsnap, Forbidden, SnapshotRequest
from testkit.reqcount import CountingProxy
from testkit.stack import Stack
from tests.integration.conftest import Writer
from tests.integration.glance_shapes import ShapedGlance


def _conf(stack: Stack, tmp_path: Path, api: str, glance_url: str | None = None) -> str:
    text = Path(stack.config_file).read_text() + f"\n[glance]\nlocation_api = {api}\n"
    if glance_url:
        text += f"endpoint_override = {glance_url}\n"
    conf = tmp_path / f"fastsnap-{api}.conf"
    conf.write_text(text)
    return str(conf)


def _state(stack: Stack, disk: str) -> tuple[Any, ...]:
    return (stack.image_ids(), stack.rbd_images("vms"), stack.rbd_images("images"), stack.snaps("vms", disk))


def test_patch_refused_by_glance_fails_cleanly(stack: Stack, make_disk: Writer, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Glance with show_multiple_locations off (the default, and Kolla's) refuses the PATCH: a Forbidden naming
    the setting, one WARNING line naming it, and the image, the clone and the disk's temporary snapshot are all
    rolled back."""
    disk = make_disk()
    before = _state(stack, disk)
    name = f"patch-refused-{uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.WARNING, logger="fastsnap"), Fastsnap(
            config_file=_conf(stack, tmp_path, "patch")) as fs, pytest.raises(Forbidden) as err:
        fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name=name, store="fast"))
    assert "show_multiple_locations" in str(err.value) and "location_api" in str(err.value)
    named = [r for r in caplog.records if r.levelno >= logging.WARNING and "show_multiple_locations" in r.getMessage()]
    assert len(named) == 1 and named[0].levelno == logging.WARNING, [r.getMessage() for r in caplog.records]
    assert _state(stack, disk) == before
    assert not [i for i in stack.glance("admin").images.list() if i["name"] == name]


@pytest.fixture(scope="module")
def multiple_locations(stack: Stack) -> Iterator[ShapedGlance]:
    """A second glance-api with show_multiple_locations = True (OpenStack-Ansible's shape, beside the stack's own:
    tests/integration/glance_shapes.py) for this module; native stack only (conftest.NATIVE_ONLY)."""
    g = ShapedGlance.start("osa")
    try:
        yield g
    finally:
        g.stop()


def test_patch_registers_in_one_request(stack: Stack, make_disk: Writer, tmp_path: Path,
                                        multiple_locations: ShapedGlance) -> None:
    glance = CountingProxy(multiple_locations.url).start()
    try:
        with Fastsnap(config_file=_conf(stack, tmp_path, "patch", glance.url)) as fs:
            warm = fs.snapshot(SnapshotRequest(disk=f"vms/{make_disk()}", name="patch-warm", store="fast"))
            stack.snapshots.append(warm.image_id)
            glance.reset()
            res = fs.snapshot(SnapshotRequest(disk=f"vms/{make_disk()}", name="patch", store="fast"))
            stack.snapshots.append(res.image_id)
            counts = glance.snapshot()
    finally:
        glance.stop()
    assert res.path == "clone" and not res.already_done
    assert counts == {"POST /v2/images": 1, "PATCH /v2/images/{id}": 1}, counts
    img = stack.glance().images.get(res.image_id)
    assert img["status"] == "active"
    assert img["direct_url"] == f"rbd://{stack.fsid_a}/images/{res.image_id}/snap"
    # the PATCH never hashes (the stack's Glance runs with do_secure_hash = True)
    assert not img.get("os_hash_value") and not img.get("checksum")
    # a registered location is Glance's to delete: deleting the image removes the clone
    stack.glance().images.delete(res.image_id)
    stack.snapshots.remove(res.image_id)
    assert res.image_id not in stack.rbd_images("images")
