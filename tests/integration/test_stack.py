"""The test stack is real: two Ceph clusters with cephx, Keystone, and multistore Glance on both clusters."""

from __future__ import annotations

import io
import os
import subprocess

import rbd

from testkit.env import ROOT
from testkit.stack import Stack


def test_rbd_image_on_cluster_a(stack: Stack) -> None:
    with stack.ioctx("vms") as ioc:
        rbd.RBD().create(ioc, "stack-probe", 8 << 20)
        try:
            with rbd.Image(ioc, "stack-probe") as img:
                img.write(b"x" * 4096, 0)
                assert img.read(0, 4096) == b"x" * 4096
                assert img.features() & rbd.RBD_FEATURE_FAST_DIFF
                assert img.features() & rbd.RBD_FEATURE_DEEP_FLATTEN
        finally:
            rbd.RBD().remove(ioc, "stack-probe")


def test_member_uploads_and_fastsnap_reads_stores_and_locations(stack: Stack) -> None:
    member = stack.glance("demo")
    data = os.urandom(2 << 20)
    ids = {}
    for store in ("fast", "remote"):
        img = member.images.create(name=f"probe-{store}", disk_format="raw", container_format="bare",
                                   visibility="community")
        stack.created_images.append(img["id"])
        member.images.upload(img["id"], io.BytesIO(data), image_size=len(data), backend=store)
        ids[store] = img["id"]
        got = member.images.get(img["id"])
        assert got["status"] == "active"
        assert got["stores"] == store

    service = stack.glance("fastsnap")
    detail = {s["id"]: s for s in service.images.get_stores_info_detail()["stores"]}
    assert set(detail) == {"fast", "cheap", "remote"}
    assert detail["cheap"]["default"] == "true"
    assert detail["cheap"]["type"] == "file"
    for store in ("fast", "remote"):
        assert detail[store]["type"] == "rbd"
        assert detail[store]["properties"]["pool"] == "images"
    assert detail["fast"]["properties"]["fsid"] == stack.fsid_a
    assert detail["remote"]["properties"]["fsid"] == stack.fsid_b
    assert stack.fsid_a != stack.fsid_b

    for store, fsid in (("fast", stack.fsid_a), ("remote", stack.fsid_b)):
        locs = service.images.get_image_locations(ids[store])
        assert locs == [{"url": f"rbd://{fsid}/images/{ids[store]}/snap", "metadata": {"store": store}}]
    assert ids["fast"] in stack.rbd_images("images", "a")
    assert ids["remote"] in stack.rbd_images("images", "b")


def test_member_cannot_see_store_details(stack: Stack) -> None:
    import glanceclient.exc

    member = stack.glance("demo")
    assert {s["id"] for s in member.images.get_stores_info()["stores"]} == {"fast", "cheap", "remote"}
    try:
        member.images.get_stores_info_detail()
    except glanceclient.exc.HTTPForbidden:
        pass
    else:
        raise AssertionError("a member must not see store details")


def test_up_is_idempotent_and_fast_when_running(stack: Stack) -> None:
    out = subprocess.run([str(ROOT / "ceph-test-env/up")], capture_output=True, text=True, check=False,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stack up in" in out.stderr
    assert "creating cluster" not in out.stderr
