"""The request budget of a clone-path snapshot (issue 17): what one snapshot asks of Glance and Keystone.

Every request fastsnap sends to the real Glance (and Keystone) goes through a counting proxy
(``testkit.reqcount.CountingProxy``: ``[glance] endpoint_override`` and ``auth_url`` point at it), so the count is
what reached the server, whatever fastsnap's code believes it sent. A warm client (the service, or a Python API
client that already took one snapshot) must stay within:

- Glance: at most 6 requests per clone snapshot (one image create, one location, status polls; the store
  catalogue comes from the cache, no ``/versions`` or schema round trips);
- Keystone: none (the token of the session is reused).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastsnap import Fastsnap, SnapshotRequest
from testkit.reqcount import CountingProxy
from testkit.service import Service
from testkit.stack import Stack
from tests.integration.conftest import Writer

GLANCE_BUDGET = 6


@pytest.fixture
def proxies(stack: Stack) -> Iterator[tuple[CountingProxy, CountingProxy]]:
    glance = CountingProxy(stack.env["FASTSNAP_TEST_GLANCE_URL"]).start()
    keystone = CountingProxy(stack.env["OS_AUTH_URL"]).start()
    try:
        yield glance, keystone
    finally:
        glance.stop()
        keystone.stop()


def _through(glance: CountingProxy, keystone: CountingProxy) -> str:
    """fastsnap.conf lines sending fastsnap's Glance and Keystone requests through the proxies."""
    return f"\n[glance]\nendpoint_override = {glance.url}\nauth_url = {keystone.url}\n"


def _polls(counts: dict[str, int]) -> int:
    return counts.get("GET /v2/images/{id}", 0) + counts.get("GET /v2/images", 0)


def _assert_budget(glance: dict[str, int], keystone: dict[str, int], base_image: bool) -> None:
    what = f"Glance: {glance}; Keystone: {keystone}"
    assert glance.get("POST /v2/images", 0) == 1, what
    assert glance.get("POST /v2/images/{id}/locations", 0) == 1, what
    assert glance.get("GET /v2/info/stores/detail", 0) == 0, what      # cached
    assert glance.get("GET /versions", 0) == 0, what                   # asked once per process
    assert glance.get("GET /v2/schemas/image", 0) == 0, what
    base_reads = glance.get("GET /v2/images/{id}/locations", 0)
    polls = _polls(glance)
    if base_image:  # the base image (GET) and its locations (hidden from the image for non-admins)
        assert base_reads <= 1 and polls >= 1, what
        assert sum(glance.values()) - base_reads - 1 <= GLANCE_BUDGET, what
    else:
        assert base_reads == 0 and polls >= 1, what
        assert sum(glance.values()) <= GLANCE_BUDGET, what
    assert sum(keystone.values()) == 0, what


@pytest.mark.parametrize("with_base", [False, True], ids=["no-base", "base-image"])
def test_python_api_clone_snapshot_budget(stack: Stack, make_disk: Writer, bases: dict[str, str],
                                          proxies: tuple[CountingProxy, CountingProxy], tmp_path: Path,
                                          with_base: bool) -> None:
    glance, keystone = proxies
    conf = tmp_path / "fastsnap.conf"
    conf.write_text(Path(stack.config_file).read_text() + _through(glance, keystone))
    kw: dict[str, Any] = {"base_image": bases["fast"]} if with_base else {"store": "fast"}
    with Fastsnap(config_file=str(conf)) as fs:
        warm = fs.snapshot(SnapshotRequest(disk=f"vms/{make_disk()}", name="budget-warm", **kw))
        stack.snapshots.append(warm.image_id)
        glance.reset()
        keystone.reset()
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{make_disk()}", name="budget", **kw))
        stack.snapshots.append(res.image_id)
        counts, ks = glance.snapshot(), keystone.snapshot()
    assert res.path == "clone" and not res.already_done
    assert stack.glance().images.get(res.image_id)["status"] == "active"
    _assert_budget(counts, ks, with_base)


def test_queued_image_fill_budget(stack: Stack, make_disk: Writer, bases: dict[str, str],
                                  proxies: tuple[CountingProxy, CountingProxy], tmp_path: Path) -> None:
    """Nova's way: fill the queued image nova-api created: its read and one PATCH instead of the create."""
    glance, keystone = proxies
    conf = tmp_path / "fastsnap.conf"
    conf.write_text(Path(stack.config_file).read_text() + _through(glance, keystone))
    g = stack.glance()
    with Fastsnap(config_file=str(conf)) as fs:
        warm = fs.snapshot(SnapshotRequest(disk=f"vms/{make_disk()}", name="budget-warm", store="fast"))
        stack.snapshots.append(warm.image_id)
        queued = g.images.create(name="budget-queued", disk_format="raw", container_format="bare",
                                 instance_uuid=str(uuid.uuid4()))
        stack.snapshots.append(queued["id"])
        glance.reset()
        keystone.reset()
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{make_disk()}", name="budget-filled", store="fast",
                                          image_id=queued["id"], container_format="ovf"))
        counts, ks = glance.snapshot(), keystone.snapshot()
    img = g.images.get(res.image_id)
    assert img["status"] == "active" and img["name"] == "budget-filled" and img["container_format"] == "ovf"
    assert img["instance_uuid"] == queued["instance_uuid"]
    what = f"Glance: {counts}; Keystone: {ks}"
    assert counts.get("PATCH /v2/images/{id}", 0) == 1 and counts.get("POST /v2/images", 0) == 0, what
    assert counts.get("POST /v2/images/{id}/locations", 0) == 1, what
    assert sum(counts.values()) - 1 <= GLANCE_BUDGET, what  # the queued image's read, then as a new image
    assert sum(ks.values()) == 0, what


def test_service_clone_snapshot_budget(stack: Stack, make_disk: Writer, bases: dict[str, str],
                                       proxies: tuple[CountingProxy, CountingProxy], tmp_path: Path) -> None:
    glance, keystone = proxies
    svc = Service(stack, tmp_path, extra=_through(glance, keystone))
    svc.start()
    try:
        def snap(name: str) -> dict[str, Any]:
            r = svc.call("POST", "/v1/snapshots", json={"disk": f"vms/{make_disk()}", "name": name,
                                                        "store": "fast"})
            assert r.status_code == 202, r.text
            job = svc.wait(r.json()["id"])
            assert job["state"] == "done" and job["path"] == "clone", job
            stack.snapshots.append(job["image_id"])
            return job

        snap("budget-warm")
        glance.reset()
        keystone.reset()
        snap("budget")
        counts, ks = glance.snapshot(), keystone.snapshot()
    finally:
        svc.stop()
    _assert_budget(counts, ks, base_image=False)
