"""Consistent snapshots of a running, writing guest (real libvirt, real qemu-guest-agent, real Ceph and Glance).

The guest increments and fsyncs a counter on its ext4 root disk 4-5 times a second. A snapshot taken with the
guest frozen around the disk's RBD snapshot is a clean filesystem; one taken without is crash-consistent (its
journal needs recovery)."""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fastsnap import Fastsnap, SnapshotRequest
from fastsnap.errors import QuiesceRequired
from testkit.guest import RunningGuest, running_guest
from testkit.stack import Stack


@pytest.fixture(scope="module")
def guest(stack: Stack) -> Iterator[RunningGuest]:
    with running_guest(stack.env["CEPH_CONF"]) as g:
        yield g
        _delete_images(stack, g)


_made: list[str] = []


def _delete_images(stack: Stack, g: RunningGuest) -> None:
    gl = stack.glance("admin")
    while _made:
        with contextlib.suppress(Exception):  # already gone
            gl.images.delete(_made.pop())


@pytest.fixture
def fs(stack: Stack) -> Iterator[Fastsnap]:
    with Fastsnap(config_file=stack.config_file) as client:
        yield client


def _base(stack: Stack, **props: str) -> str:
    gl = stack.glance()
    img = gl.images.create(name=f"quiesce-base-{uuid.uuid4().hex[:6]}", disk_format="raw", container_format="bare",
                           **props)
    stack.created_images.append(img["id"])
    gl.images.upload(img["id"], io.BytesIO(b"\0" * 4096), image_size=4096, backend="fast")
    return str(img["id"])


def _snap(fs: Fastsnap, g: RunningGuest, **kw: Any) -> Any:
    res = fs.snapshot(SnapshotRequest(disk=f"vms/{g.disk}", name="quiesce test", store=kw.pop("store", "fast"),
                                      **kw))
    _made.append(res.image_id)
    return res


def test_quiesced_snapshot_is_clean_and_holds_a_written_value(stack: Stack, fs: Fastsnap,
                                                             guest: RunningGuest) -> None:
    base = _base(stack, hw_qemu_guest_agent="yes", os_require_quiesce="yes")
    before = guest.counter()
    res = _snap(fs, guest, base_image=base, quiesce_domain=guest.name)
    assert res.quiesced is True, res.quiesce
    assert res.quiesce["domain"] == guest.name
    assert 0 < res.quiesce["freeze_seconds"] < 5
    after = guest.wait_counter_above(before)           # thawed: the guest writes on
    assert guest.freeze_status() == "thawed"
    rc = guest.read_counter(f"images/{res.image_id}@snap")
    assert rc["needs_recovery"] is False and rc["fsck_rc"] == 0, rc
    assert before <= rc["counter"] <= after, (before, rc, after)


def test_without_quiesce_the_snapshot_is_crash_consistent(stack: Stack, fs: Fastsnap, guest: RunningGuest) -> None:
    res = _snap(fs, guest)
    assert res.quiesced is False
    assert res.quiesce["reason"] == "no libvirt domain given"
    rc = guest.read_counter(f"images/{res.image_id}@snap")
    # The difference quiescing makes: a copy taken while the guest writes has an ext4 journal to replay.
    print(f"unquiesced snapshot: {json.dumps(rc)}")
    assert rc["needs_recovery"] is True, rc
    assert rc["counter_recovered"] is not None


def test_image_without_agent_property_is_not_frozen(stack: Stack, fs: Fastsnap, guest: RunningGuest) -> None:
    base = _base(stack)
    res = _snap(fs, guest, base_image=base, quiesce_domain=guest.name)
    assert res.quiesced is False
    assert "hw_qemu_guest_agent=yes" in res.quiesce["reason"]
    assert res.quiesce["freeze_seconds"] is None


def test_kill_between_freeze_and_thaw_then_recover_thaws(stack: Stack, guest: RunningGuest) -> None:
    out = stack.fastsnap("snapshot", "--disk", f"vms/{guest.disk}", "--name", "killed frozen", "--store", "fast",
                         "--quiesce-domain", guest.name, "--json", env={"FASTSNAP_TEST_CRASH_AT": "frozen"})
    assert out.returncode == -9, out.stderr
    assert guest.freeze_status() == "frozen"
    rec = stack.fastsnap("recover", "--json")
    assert rec.returncode == 0, rec.stderr
    mine = [a for a in json.loads(rec.stdout) if a["disk"] == f"vms/{guest.disk}"]
    assert len(mine) == 1 and mine[0]["action"] == "rolled_back", mine
    assert f"thawed guest {guest.name}" in mine[0]["did"]
    assert guest.freeze_status() == "thawed"
    now = guest.counter()
    guest.wait_counter_above(now)                       # the guest goes on writing


def test_agent_not_running(stack: Stack, fs: Fastsnap, guest: RunningGuest) -> None:
    """Last in the module: stops the guest agent for good."""
    pid = guest.agent("guest-exec", path="/bin/sh", arg=["-c", "sleep 0.5; kill $(pidof qemu-ga)"])["pid"]
    assert pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the agent stops answering
        try:
            guest.agent("guest-ping", timeout=1)
            time.sleep(0.3)
        except Exception:
            break
    images_before = stack.image_ids()
    snaps_before = stack.snaps("vms", guest.disk)
    with pytest.raises(QuiesceRequired, match="cannot be frozen"):
        _snap(fs, guest, quiesce_domain=guest.name, require_quiesce=True)
    assert stack.image_ids() == images_before           # nothing created
    assert stack.snaps("vms", guest.disk) == snaps_before
    res = _snap(fs, guest, quiesce_domain=guest.name)
    assert res.quiesced is False
    assert "agent" in res.quiesce["reason"]
    assert stack.glance().images.get(res.image_id)["status"] == "active"
