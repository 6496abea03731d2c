"""qcow2 streams (issue 25) against the real stack: a disk streamed into the file store ``cheap`` as qcow2, the image
downloaded from Glance and judged by QEMU's own tool (``qemu-img check``; ``qemu-img compare`` against the RBD
snapshot, read through QEMU's rbd driver), and qcow2 asked of the clone path refused with nothing created."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rbd

from fastsnap import BadRequest, Fastsnap, SnapshotRequest
from fastsnap.qcow2 import CLUSTER
from testkit.cleanup import remove_disk
from testkit.stack import Stack
from tests.integration.conftest import Writer

MiB = 1 << 20
OBJ = 4 * MiB  # the test disks' RBD objects: diff_iterate's whole-object extents


@pytest.fixture
def fs(stack: Stack) -> Iterator[Fastsnap]:
    with Fastsnap(config_file=stack.config_file) as client:
        yield client


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=300, check=False)


def _rbd_uri(stack: Stack, spec: str) -> str:
    """The disk (``pool/image@snap``) as QEMU's rbd driver names it, as the admin of cluster A (the stack's
    env.sh: the test process's own environment need not have sourced it)."""
    return f"rbd:{spec}:conf={stack.env['CEPH_CONF']}"


def _download(stack: Stack, image_id: str, path: Path) -> int:
    with open(path, "wb") as f:
        for chunk in stack.glance().images.data(image_id):
            f.write(chunk)
    return path.stat().st_size


def _judge(stack: Stack, image_id: str, ref: str, tmp_path: Path) -> dict[str, Any]:
    """Download the image, check it as qcow2 and compare it with the RBD snapshot ``ref``; its qemu-img info."""
    out = tmp_path / f"{image_id}.qcow2"
    size = _download(stack, image_id, out)
    check = _qemu_img("check", "--output=json", "-f", "qcow2", str(out))
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert (report.get("corruptions", 0), report.get("leaks", 0), report.get("check-errors", 0)) == (0, 0, 0)
    assert report["image-end-offset"] == size
    cmp = _qemu_img("compare", "-f", "qcow2", "-F", "raw", str(out), _rbd_uri(stack, ref))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    info: dict[str, Any] = json.loads(_qemu_img("info", "--output=json", "-f", "qcow2", str(out)).stdout)
    out.unlink()
    return info


def _ref_snapshot(stack: Stack, disk: str) -> str:
    """A snapshot of the test's own to compare with (fastsnap removes its own when it is done)."""
    with stack.ioctx("vms") as io, rbd.Image(io, disk) as img:
        img.create_snap("ref")
    return f"vms/{disk}@ref"


def test_qcow2_stream_into_a_file_store(stack: Stack, fs: Fastsnap, make_disk: Writer, tmp_path: Path) -> None:
    disk = make_disk()   # 64 MiB, 1 MiB of data at 0, 5 and 40 MiB: three 4 MiB objects
    ref = _ref_snapshot(stack, disk)
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="qcow2 stream", store="cheap", format="qcow2"))
    stack.snapshots.append(res.image_id)
    assert (res.path, res.store, res.format) == ("stream", "cheap", "qcow2")
    assert "as qcow2" in res.reason
    allocated = 3 * OBJ
    assert res.bytes_read == allocated                      # only the allocated objects were read
    assert allocated < res.bytes_streamed <= allocated + 8 * CLUSTER  # their clusters and a few tables
    img = stack.glance().images.get(res.image_id)
    assert (img["status"], img["stores"], img["disk_format"]) == ("active", "cheap", "qcow2")
    assert img["size"] == res.bytes_streamed
    info = _judge(stack, res.image_id, ref, tmp_path)
    assert info["virtual-size"] == 64 * MiB
    assert [s for s in stack.snaps("vms", disk) if s[0] != "ref"] == []   # fastsnap's snapshot is gone


def test_qcow2_stream_of_a_clone_carries_its_parent(stack: Stack, fs: Fastsnap, bases: dict[str, str],
                                                    tmp_path: Path) -> None:
    """A disk cloned from the base image (as Nova's are) and written to: the parent's data is in the image."""
    disk = f"disk-q2-{os.urandom(4).hex()}"
    with stack.ioctx("images") as src, stack.ioctx("vms") as io:
        rbd.RBD().clone(src, bases["fast"], "snap", io, disk)
        try:
            with rbd.Image(io, disk) as img:
                img.resize(32 * MiB)
                img.write(os.urandom(MiB), 20 * MiB)
            ref = _ref_snapshot(stack, disk)
            res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="qcow2 clone", base_image=bases["cheap"],
                                              format="qcow2"))
            stack.snapshots.append(res.image_id)
            assert (res.path, res.store, res.format) == ("stream", "cheap", "qcow2")
            assert stack.glance().images.get(res.image_id)["disk_format"] == "qcow2"
            assert _judge(stack, res.image_id, ref, tmp_path)["virtual-size"] == 32 * MiB
        finally:
            stack.delete_snapshots()
            remove_disk(io, disk)


def test_qcow2_asked_of_the_clone_path_creates_nothing(stack: Stack, fs: Fastsnap, make_disk: Writer,
                                                       bases: dict[str, str]) -> None:
    disk = make_disk()
    before = stack.image_ids()
    with pytest.raises(BadRequest, match="format 'qcow2' is made by the stream path only"):
        fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="no", base_image=bases["fast"], format="qcow2"))
    with pytest.raises(BadRequest, match="format must be raw or qcow2, not 'vmdk'"):
        fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="no", store="cheap", format="vmdk"))
    assert stack.image_ids() == before
    assert stack.snaps("vms", disk) == []
