"""The snapshot engine end to end against real Ceph and Glance: both paths, store choice, bad input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import rbd

from fastsnap import BadRequest, Fastsnap, SnapshotRequest, UnknownStore
from testkit.stack import Stack
from tests.integration.conftest import Writer


@pytest.fixture
def fs(stack: Stack) -> Any:
    with Fastsnap(config_file=stack.config_file) as client:
        yield client


def _snap(stack: Stack, fs: Fastsnap, **kw: Any) -> Any:
    res = fs.snapshot(SnapshotRequest(name=kw.pop("name", "test snapshot"), **kw))
    stack.snapshots.append(res.image_id)
    return res


def _assert_clean_disk(stack: Stack, disk: str) -> None:
    """No temporary snapshot left in the user namespace of the disk."""
    assert [s for s in stack.snaps("vms", disk) if s[1] == 0] == []


def test_clone_path_with_base_in_fast(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                      bases: dict[str, str]) -> None:
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    res = _snap(stack, fs, disk=f"vms/{disk}", base_image=bases["fast"], instance_uuid=str(uuid.uuid4()),
                properties={"owner_note": "t"})
    assert res.path == "clone"
    assert res.store == "fast"
    assert res.location == f"rbd://{stack.fsid_a}/images/{res.image_id}/snap"
    assert "base image" in res.reason and "'fast'" in res.reason
    g = stack.glance()
    img = g.images.get(res.image_id)
    assert img["status"] == "active"
    assert img["stores"] == "fast"
    assert img["size"] == 64 << 20
    assert img["image_type"] == "snapshot"
    assert img["base_image_ref"] == bases["fast"]
    assert img["os_distro"] == "debian"          # inherited from the base image
    assert img["owner_note"] == "t"
    assert g.images.get_image_locations(res.image_id) == [{"url": res.location, "metadata": {"store": "fast"}}]
    assert res.flatten["state"] == "queued" and res.flatten["task"]  # the mgr accepted the background flatten
    with stack.ioctx("images") as io, rbd.Image(io, res.image_id, read_only=True) as clone:
        try:
            parent = clone.get_parent_image_spec()
        except rbd.ImageNotFound:
            parent = None  # the mgr flattened it already (it may, once it accepted the task)
        assert [s["name"] for s in clone.list_snaps()] == ["snap"]
    if parent is not None:
        assert (parent["pool_name"], parent["image_name"]) == ("vms", disk)
        # The disk's temporary snapshot waits in the trash until the clone is flattened or deleted.
        assert [ns for _, ns in stack.snaps("vms", disk)] in ([rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH], [])
    assert stack.glance_sha256(res.image_id) == want
    _assert_clean_disk(stack, disk)


def test_clone_snapshot_is_point_in_time(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                         bases: dict[str, str]) -> None:
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    res = _snap(stack, fs, disk=f"vms/{disk}", base_image=bases["fast"])
    with stack.ioctx("vms") as io, rbd.Image(io, disk) as img:
        img.write(b"\xff" * 65536, 0)  # the instance keeps writing
    assert stack.glance_sha256(res.image_id) == want


@pytest.mark.parametrize("base_store", ["cheap", "remote", None])
def test_stream_path(stack: Stack, fs: Fastsnap, make_disk: Writer, bases: dict[str, str],
                     base_store: str | None) -> None:
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    res = _snap(stack, fs, disk=f"vms/{disk}", base_image=bases[base_store] if base_store else None)
    assert res.path == "stream"
    assert res.store == "cheap"
    assert res.location is None
    assert res.bytes_streamed == 64 << 20
    assert res.bytes_read < res.bytes_streamed   # holes were not read from the OSDs
    if base_store == "remote":
        assert "another cluster" in res.reason and stack.fsid_b in res.reason
    if base_store is None:
        assert "no base image" in res.reason
    img = stack.glance().images.get(res.image_id)
    assert img["status"] == "active" and img["stores"] == "cheap" and img["size"] == 64 << 20
    assert stack.glance_sha256(res.image_id) == want
    _assert_clean_disk(stack, disk)
    assert stack.snaps("vms", disk) == []


def test_explicit_store_overrides_base_store(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                             bases: dict[str, str]) -> None:
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    to_cheap = _snap(stack, fs, disk=f"vms/{disk}", base_image=bases["fast"], store="cheap")
    assert (to_cheap.path, to_cheap.store) == ("stream", "cheap")
    to_fast = _snap(stack, fs, disk=f"vms/{disk}", base_image=bases["cheap"], store="fast")
    assert (to_fast.path, to_fast.store) == ("clone", "fast")
    to_remote = _snap(stack, fs, disk=f"vms/{disk}", store="remote")
    # The stack's fastsnap has credentials for cluster B ([ceph_b]): written there with librbd (issue 16).
    assert (to_remote.path, to_remote.store) == ("copy", "remote")
    assert to_remote.image_id in stack.rbd_images("images", "b")
    for res in (to_cheap, to_fast, to_remote):
        assert stack.glance_sha256(res.image_id) == want


def test_fills_a_queued_image_created_by_the_caller(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                                    bases: dict[str, str]) -> None:
    disk = make_disk()
    g = stack.glance()
    queued = g.images.create(name="nova-made", min_disk=3, os_distro="nova-said", image_type="backup")
    stack.snapshots.append(queued["id"])
    res = _snap(stack, fs, disk=f"vms/{disk}", base_image=bases["fast"], image_id=queued["id"], name="filled",
                container_format="ami")
    assert res.image_id == queued["id"] and res.path == "clone"
    img = g.images.get(queued["id"])
    assert img["status"] == "active" and img["name"] == "filled"
    # What the caller (nova-api) put on the queued image stays; its creator did the inheriting, not fastsnap.
    assert (img["min_disk"], img["os_distro"], img["image_type"]) == (3, "nova-said", "backup")
    assert "hw_disk_bus" not in img and img["base_image_ref"] == bases["fast"]
    assert (img["disk_format"], img["container_format"]) == ("raw", "ami")


# -- bad input: a precise error and nothing created ------------------------------------------------------


def _state(stack: Stack, disk: str) -> tuple[Any, ...]:
    return (stack.rbd_images("vms"), stack.rbd_images("images"), stack.rbd_images("images", "b"),
            stack.snaps("vms", disk), stack.image_ids())


@pytest.mark.parametrize("case", [
    "unknown_store", "missing_disk", "missing_base", "not_queued", "empty_name", "bad_disk_spec",
    "bad_image_id", "reserved_property", "missing_pool",
])
def test_bad_input_creates_nothing(stack: Stack, fs: Fastsnap, make_disk: Writer, bases: dict[str, str],
                                   case: str) -> None:
    disk = make_disk()
    before = _state(stack, disk)
    kw: dict[str, Any] = {"disk": f"vms/{disk}", "name": "bad", "base_image": bases["fast"]}
    expect = {
        "unknown_store": ("store", "nowhere"),
        "missing_disk": ("disk", "vms/no-such-disk"),
        "missing_base": ("base_image", str(uuid.uuid4())),
        "not_queued": ("image_id", bases["cheap"]),
        "empty_name": ("name", " "),
        "bad_disk_spec": ("disk", "just-a-name"),
        "bad_image_id": ("image_id", "not-a-uuid"),
        "reserved_property": ("properties", {"status": "active"}),
        "missing_pool": ("disk", "nopool/x"),
    }[case]
    kw[expect[0]] = expect[1]
    with pytest.raises(BadRequest) as err:
        fs.snapshot(SnapshotRequest(**kw))
    msg = str(err.value)
    needle = {"unknown_store": "nowhere", "missing_disk": "no-such-disk", "missing_base": kw.get("base_image"),
              "not_queued": "not queued", "empty_name": "name", "bad_disk_spec": "POOL/IMAGE",
              "bad_image_id": "not a UUID", "reserved_property": "reserved", "missing_pool": "nopool"}[case]
    assert str(needle) in msg
    if case == "unknown_store":
        assert isinstance(err.value, UnknownStore) and "fast" in msg
    assert _state(stack, disk) == before


def test_cli_contract(stack: Stack, make_disk: Writer, bases: dict[str, str]) -> None:
    disk = make_disk()
    out = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "cli", "--base-image", bases["fast"],
                         "--property", "a=b", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    stack.snapshots.append(res["image_id"])
    assert res["path"] == "clone" and res["store"] == "fast" and res["location"].startswith("rbd://")
    assert {"image_id", "path", "store", "location", "reason"} <= set(res)

    bad = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "cli", "--store", "nowhere", "--json")
    assert bad.returncode == 2
    assert "nowhere" in bad.stderr and bad.stdout == ""

    stores = stack.fastsnap("stores", "--json")
    assert stores.returncode == 0, stores.stderr
    by_id = {s["id"]: s for s in json.loads(stores.stdout)}
    assert by_id["fast"]["clone"] is True and by_id["remote"]["clone"] is False
    assert by_id["cheap"]["default"] is True
    assert by_id["remote"]["fsid"] == stack.fsid_b
