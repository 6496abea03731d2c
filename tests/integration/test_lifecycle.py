"""Server lifecycle right after a clone-path snapshot (issue 13): delete, shelve/unshelve, rebuild, many deletes at
once, a killed fastsnap service, and snapshot -> boot -> snapshot chains, with the real Nova (nova-compute on
``fastsnap.FastsnapLibvirtDriver``), real TCG guests and real Ceph.

The module's fastsnap service runs with ``[snapshot] flatten = never`` (and low clone-depth limits): the clone of
each snapshot keeps depending on the instance disk, as it does on a real cluster while the Ceph mgr's one-at-a-time
flatten queue is long. Without fastsnap's hook parking that disk, Nova's delete retries ``rbd remove`` 12 x 5 s and
then leaves the disk in ``vms`` (measured on this stack: 60.5 s and a leaked disk, against 7 s without a
snapshot). Each test ends by waiting for the service's poller to drain the parked disks (it is woken by the hook)
and checks that nothing it made is left in ``vms``, ``images`` or the RBD trash of ``vms``.

One guest at a time except in the "many" test (``FASTSNAP_TEST_LIFECYCLE_SERVERS``, default 8, booted at once).
The kill tests SIGKILL the service at a named point of a snapshot Nova asked for (``tests/crashing_cli.py``) or
while it flattens the clone of a parked disk, delete the server, restart the service and check the end state.
"""

# The Nova-hook fixtures come from test_nova.py; tests take them as arguments of the same name.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rbd

from testkit.counter import resumes_from
from testkit.env import ROOT
from testkit.novaapi import NovaAPI
from testkit.stack import Stack
from tests.integration.test_nova import (  # noqa: F401  (fixtures)
    BOOT_TIMEOUT,
    SNAP_TIMEOUT,
    FastsnapService,
    delete_images,
    fastsnap_driver,
    hook_nova,
    image_gone,
    read_counter,
    serving,
    wait_idle,
    wait_image,
)

pytestmark = [pytest.mark.stack, pytest.mark.nova]

SOFT, HARD = 2, 4          # clone_depth_soft / clone_depth_hard of the module's fastsnap
GENERATIONS = 10
WINDOW = 4                 # stopped servers the chain test keeps
DRAIN_TIMEOUT = 300


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def life_service(stack: Stack, hook_nova: NovaAPI) -> Iterator[FastsnapService]:
    # gunicorn closes idle keep-alive connections after 2 s, the period of some polls: a request sent on a
    # connection being closed is aborted before Nova reads it; send it again on a new one.
    hook_nova.sess._connect_retries = hook_nova.admin._connect_retries = 2
    with serving(stack, hook_nova, "fastsnap-life-",
                 f"[snapshot]\nflatten = never\nclone_depth_soft = {SOFT}\nclone_depth_hard = {HARD}\n") as svc:
        yield svc


@pytest.fixture
def made(stack: Stack, hook_nova: NovaAPI, life_service: FastsnapService) -> Iterator[dict[str, list[str]]]:
    """What a test makes: servers and images. Afterwards: servers and images deleted, the parked disks drained,
    and nothing of them left in vms, images or the trash of vms."""
    things: dict[str, list[str]] = {"servers": [], "images": []}
    yield things
    for sid in things["servers"]:
        if sid in hook_nova.servers:
            hook_nova.delete_servers(sid)
    left = delete_images(stack, things["images"])
    assert not left, f"images Glance did not delete: {left}"
    drained(stack, life_service)
    assert_nothing_left(stack, things)


def drained(stack: Stack, svc: FastsnapService, timeout: float = DRAIN_TIMEOUT) -> float:
    """Wait until the service's poller has no parked disk left; returns the seconds waited."""
    t0 = time.monotonic()
    rows: Any = None
    while time.monotonic() - t0 < timeout:
        code, body = svc.call("GET", "/v1/parked")
        assert code == 200, body
        rows = body["parked_disks"]
        if not rows:
            return time.monotonic() - t0
        time.sleep(1)
    raise AssertionError(f"parked disks not drained after {timeout}s: {rows}")


def trash(stack: Stack, pool: str = "vms") -> list[dict[str, Any]]:
    with stack.ioctx(pool) as io:
        return list(rbd.RBD().trash_list(io))


def assert_nothing_left(stack: Stack, things: dict[str, list[str]]) -> None:
    servers, images = things["servers"], things["images"]
    vms = [i for i in stack.rbd_images("vms") if any(i.startswith(s) for s in servers)]
    trashed = [t for t in trash(stack) if any(str(t["name"]).startswith(s) for s in servers)]
    pool = [i for i in stack.rbd_images("images") if i in images]
    assert (vms, trashed, pool) == ([], [], []), f"left: vms {vms}, trash {trashed}, images {pool}"


def disk_id(stack: Stack, sid: str) -> str:
    with stack.ioctx("vms") as io, rbd.Image(io, f"{sid}_disk", read_only=True) as img:
        return str(img.id())


def parent_of(stack: Stack, pool: str, name: str) -> tuple[str, str] | None:
    with stack.ioctx(pool) as io, rbd.Image(io, name, read_only=True) as img:
        try:
            p = img.get_parent_image_spec()
        except rbd.ImageNotFound:
            return None
        return str(p["pool_name"]), str(p["image_name"])


def boot(nova: NovaAPI, made: dict[str, list[str]], image: str, ready: bool = True) -> str:
    sid = str(nova.boot(image)["id"])
    made["servers"].append(sid)
    if ready:
        nova.ready_counter(sid)
    return sid


def snapshot(stack: Stack, nova: NovaAPI, svc: FastsnapService, made: dict[str, list[str]], sid: str,
             name: str) -> dict[str, Any]:
    """createImage through Nova until the image is active and the server idle; returns fastsnap's job."""
    image_id, _ = nova.image_create(sid, name)
    made["images"].append(image_id)
    wait_image(stack, image_id)
    wait_idle(nova, sid)
    job = svc.job_for(image_id)
    assert job["state"] == "done" and job["path"] == "clone", job
    return job


def timed_delete(nova: NovaAPI, sid: str) -> float:
    t0 = time.monotonic()
    nova.delete_servers(sid)
    return time.monotonic() - t0


def compute_errors(nova: NovaAPI, offset: int) -> list[str]:
    """nova-compute's errors and failed disk removals since ``offset``. Not counted: Placement's generation
    conflict on an inventory update (``placement.concurrent_update``), which Nova logs as an ERROR and retries: the
    host's memory total moves on this machine (13.5-19 GiB seen), so nova-compute updates its inventory while an
    instance's allocations change."""
    return [ln for ln in nova.log_since(offset).splitlines()
            if (" ERROR " in ln and "placement.concurrent_update" not in ln) or "rbd remove" in ln]


# -- the tests -------------------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_delete_right_after_a_snapshot(stack: Stack, hook_nova: NovaAPI, life_service: FastsnapService,
                                      made: dict[str, list[str]]) -> None:
    image = stack.env["FASTSNAP_NOVA_IMAGE"]
    plain = boot(hook_nova, made, image, ready=False)
    plain_secs = timed_delete(hook_nova, plain)

    sid = boot(hook_nova, made, image)
    old_id = disk_id(stack, sid)
    job = snapshot(stack, hook_nova, life_service, made, sid, "life-delete")
    image_id = job["image_id"]
    assert job["result"]["flatten"]["policy"] == "never"
    assert parent_of(stack, "images", image_id) == ("vms", f"{sid}_disk"), "the clone must still depend on the disk"
    offset = hook_nova.log_size()
    secs = timed_delete(hook_nova, sid)
    log = hook_nova.log_since(offset)
    print(f"delete without a snapshot {plain_secs:.1f}s, right after a clone-path snapshot {secs:.1f}s")
    assert f"{sid}_disk" not in stack.rbd_images("vms")
    assert "moved to the RBD trash" in log and old_id in log, log[-3000:]
    assert not compute_errors(hook_nova, offset), compute_errors(hook_nova, offset)
    assert secs < plain_secs + 15, f"delete took {secs:.1f}s (without a snapshot {plain_secs:.1f}s)"
    waited = drained(stack, life_service)
    assert old_id not in {t["id"] for t in trash(stack)}
    assert parent_of(stack, "images", image_id) is None, "the snapshot's clone was not flattened"
    print(f"parked disk drained {waited:.1f}s after the delete returned")

    # The snapshot image stays active and boots.
    assert stack.glance("admin").images.get(image_id)["status"] == "active"
    want = resumes_from(read_counter(stack, f"rbd:images/{image_id}@snap"))
    child = boot(hook_nova, made, image_id, ready=False)
    assert hook_nova.ready_counter(child) == want
    hook_nova.delete_servers(child)


def test_shelve_then_unshelve(stack: Stack, hook_nova: NovaAPI, life_service: FastsnapService,
                              made: dict[str, list[str]]) -> None:
    sid = boot(hook_nova, made, stack.env["FASTSNAP_NOVA_IMAGE"])
    old_id = disk_id(stack, sid)
    time.sleep(5)  # the guest writes its counter for a while
    boot_before = READY.findall(hook_nova.console(sid))[-1][1]
    offset = hook_nova.log_size()
    t0 = time.monotonic()
    r = hook_nova.call("POST", f"/servers/{sid}/action", json={"shelve": None})
    assert r.status_code == 202, r.text
    hook_nova.wait_server(sid, "SHELVED_OFFLOADED", SNAP_TIMEOUT)
    shelve_secs = time.monotonic() - t0
    g = stack.glance("admin")
    shelved = [i for i in g.images.list(filters={"instance_uuid": sid})]
    assert len(shelved) == 1 and shelved[0]["status"] == "active", shelved
    shelved_id = shelved[0]["id"]
    made["images"].append(shelved_id)
    assert life_service.job_for(shelved_id)["path"] == "clone"
    assert f"{sid}_disk" not in stack.rbd_images("vms"), "the offloaded server's disk is still there"
    shelved_counter = resumes_from(read_counter(stack, f"rbd:images/{shelved_id}@snap"))
    assert shelved_counter >= 5, shelved_counter

    t0 = time.monotonic()
    r = hook_nova.call("POST", f"/servers/{sid}/action", json={"unshelve": None})
    assert r.status_code == 202, r.text
    hook_nova.wait_server(sid, "ACTIVE", SNAP_TIMEOUT)
    unshelve_secs = time.monotonic() - t0
    assert disk_id(stack, sid) != old_id
    # The unshelved guest resumes from what the shelve snapshot holds (Nova flattens the new disk on unshelve).
    assert ready_after(hook_nova, sid, boot_before) == shelved_counter
    assert parent_of(stack, "vms", f"{sid}_disk") is None
    # Nova deletes the shelved image after unshelving, without error.
    deadline = time.monotonic() + 60
    while list(g.images.list(filters={"id": shelved_id})) and time.monotonic() < deadline:
        time.sleep(1)
    assert not list(g.images.list(filters={"id": shelved_id})), "the shelved image was not deleted"
    log = hook_nova.log_since(offset)
    assert "Failed to delete snapshot" not in log and "Something wrong happened" not in log, log[-3000:]
    assert not compute_errors(hook_nova, offset), compute_errors(hook_nova, offset)
    drained(stack, life_service)
    assert old_id not in {t["id"] for t in trash(stack)}
    print(f"shelve (offloaded) {shelve_secs:.1f}s, unshelve {unshelve_secs:.1f}s; counter {shelved_counter}")


READY = re.compile(r"FASTSNAP-GUEST-READY counter=(\d+) boot=(\S+)")


def ready_after(nova: NovaAPI, sid: str, boot_before: str, timeout: float = 180) -> int:
    """The counter the guest resumed from on its first boot after ``boot_before`` (its console's READY line)."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = nova.console(sid)
        fresh = [int(c) for c, b in READY.findall(out) if b != boot_before]
        if fresh:
            return fresh[-1]
        time.sleep(1)
    raise AssertionError(f"server {sid}: no new READY line: {out[-1500:]}")


def test_rebuild_right_after_a_snapshot(stack: Stack, hook_nova: NovaAPI, life_service: FastsnapService,
                                        made: dict[str, list[str]]) -> None:
    image = stack.env["FASTSNAP_NOVA_IMAGE"]
    sid = boot(hook_nova, made, image)
    old_id = disk_id(stack, sid)
    job = snapshot(stack, hook_nova, life_service, made, sid, "life-rebuild")
    offset = hook_nova.log_size()
    t0 = time.monotonic()
    r = hook_nova.call("POST", f"/servers/{sid}/action", json={"rebuild": {"imageRef": image}})
    assert r.status_code == 202, r.text
    time.sleep(2)
    hook_nova.wait_server(sid, "ACTIVE", SNAP_TIMEOUT)
    secs = time.monotonic() - t0
    # A new disk, cloned from the image again (Nova would have kept the old disk had its name still been taken).
    assert disk_id(stack, sid) != old_id
    assert parent_of(stack, "vms", f"{sid}_disk") == ("images", image)
    assert not compute_errors(hook_nova, offset), compute_errors(hook_nova, offset)
    drained(stack, life_service)
    assert old_id not in {t["id"] for t in trash(stack)}
    assert parent_of(stack, "images", job["image_id"]) is None
    print(f"rebuild right after a snapshot {secs:.1f}s")


def test_rescue_then_unrescue_right_after_a_snapshot(stack: Stack, hook_nova: NovaAPI,
                                                     life_service: FastsnapService,
                                                     made: dict[str, list[str]]) -> None:
    """Unrescue removes the ``.rescue`` disk with Nova's own RBD driver (fastsnap never snapshots it: Nova refuses
    to snapshot a rescued server); the instance's own disk, which the snapshot's clone still depends on, stays
    where it is, and the delete afterwards parks it."""
    image = stack.env["FASTSNAP_NOVA_IMAGE"]
    sid = boot(hook_nova, made, image, ready=False)  # (ACTIVE; the guest need not have booted)
    old_id = disk_id(stack, sid)
    job = snapshot(stack, hook_nova, life_service, made, sid, "life-rescue")
    offset = hook_nova.log_size()
    t0 = time.monotonic()
    r = hook_nova.call("POST", f"/servers/{sid}/action", json={"rescue": {}})
    assert r.status_code == 200, r.text
    hook_nova.wait_server(sid, "RESCUE", SNAP_TIMEOUT)
    assert f"{sid}_disk.rescue" in stack.rbd_images("vms")
    r = hook_nova.call("POST", f"/servers/{sid}/action", json={"unrescue": None})
    assert r.status_code == 202, r.text
    time.sleep(2)
    hook_nova.wait_server(sid, "ACTIVE", SNAP_TIMEOUT)
    secs = time.monotonic() - t0
    assert f"{sid}_disk.rescue" not in stack.rbd_images("vms")
    assert disk_id(stack, sid) == old_id and old_id not in {t["id"] for t in trash(stack)}
    assert parent_of(stack, "images", job["image_id"]) == ("vms", f"{sid}_disk")
    assert not compute_errors(hook_nova, offset), compute_errors(hook_nova, offset)
    # ... and the delete afterwards parks it.
    offset = hook_nova.log_size()
    delete_secs = timed_delete(hook_nova, sid)
    log = hook_nova.log_since(offset)
    assert "moved to the RBD trash" in log and old_id in log, log[-3000:]
    assert not compute_errors(hook_nova, offset), compute_errors(hook_nova, offset)
    print(f"rescue and unrescue right after a snapshot {secs:.1f}s, then delete {delete_secs:.1f}s")


def test_many_servers_snapshotted_then_deleted_at_once(stack: Stack, hook_nova: NovaAPI,
                                                       life_service: FastsnapService,
                                                       made: dict[str, list[str]]) -> None:
    n = int(os.environ.get("FASTSNAP_TEST_LIFECYCLE_SERVERS", "8"))
    t0 = time.monotonic()
    sids = [hook_nova.create(stack.env["FASTSNAP_NOVA_IMAGE"], f"life-many-{i}") for i in range(n)]
    made["servers"].extend(sids)
    for sid in sids:
        hook_nova.wait_server(sid, "ACTIVE", BOOT_TIMEOUT)
    boot_secs = time.monotonic() - t0
    t0 = time.monotonic()
    images = {sid: hook_nova.image_create(sid, f"life-many-{i}")[0] for i, sid in enumerate(sids)}
    made["images"].extend(images.values())
    for sid, image_id in images.items():
        wait_image(stack, image_id)
        wait_idle(hook_nova, sid)
        assert parent_of(stack, "images", image_id) == ("vms", f"{sid}_disk")
    snap_secs = time.monotonic() - t0
    offset = hook_nova.log_size()
    t0 = time.monotonic()
    _delete_all(hook_nova, sids)
    secs = time.monotonic() - t0
    assert not [s for s in sids if f"{s}_disk" in stack.rbd_images("vms")]
    assert not compute_errors(hook_nova, offset), compute_errors(hook_nova, offset)
    waited = drained(stack, life_service)
    for image_id in images.values():
        assert parent_of(stack, "images", image_id) is None
        assert stack.glance("admin").images.get(image_id)["status"] == "active"
    print(f"{n} servers: booted at once in {boot_secs:.1f}s, snapshotted at once in {snap_secs:.1f}s, deleted at "
          f"once in {secs:.1f}s; parked disks drained {waited:.1f}s later")


def _delete_all(nova: NovaAPI, sids: list[str]) -> None:
    for sid in sids:
        r = nova.call("DELETE", f"/servers/{sid}")
        assert r.status_code == 204, r.text
    _wait_deleted(nova, sids)


def _wait_deleted(nova: NovaAPI, sids: list[str]) -> None:
    left = list(sids)
    deadline = time.monotonic() + 300
    while left and time.monotonic() < deadline:
        left = [s for s in left if nova.call("GET", f"/servers/{s}").status_code != 404]
        time.sleep(1)
    assert not left, f"servers not deleted: {left}"
    nova.servers = [s for s in nova.servers if s not in sids]


def test_service_killed_then_restarted(stack: Stack, hook_nova: NovaAPI, life_service: FastsnapService,
                                       made: dict[str, list[str]]) -> None:
    sid = boot(hook_nova, made, stack.env["FASTSNAP_NOVA_IMAGE"], ready=False)
    old_id = disk_id(stack, sid)
    job = snapshot(stack, hook_nova, life_service, made, sid, "life-kill")
    assert life_service.proc is not None
    life_service.proc.kill()  # SIGKILL
    life_service.proc.wait(30)
    try:
        offset = hook_nova.log_size()
        secs = timed_delete(hook_nova, sid)
        assert f"{sid}_disk" not in stack.rbd_images("vms")
        assert old_id in {t["id"] for t in trash(stack)}, "parked while fastsnap is down"
        assert not compute_errors(hook_nova, offset), compute_errors(hook_nova, offset)
    finally:
        life_service.start()
    waited = drained(stack, life_service)
    assert old_id not in {t["id"] for t in trash(stack)}
    assert parent_of(stack, "images", job["image_id"]) is None
    print(f"delete with fastsnap killed {secs:.1f}s; drained {waited:.1f}s after the restart")


# Where the service is killed during a snapshot Nova asked for, and what the snapshot becomes.
KILL_POINTS = {
    # fastsnap's snapshot of the disk is still in the user namespace: the delete cannot park the disk and runs
    # Nova's retries until the restarted service has rolled the operation back (image deleted, action failed).
    "disk_snap:after": "gone",
    # the clone and its `snap` are complete, the location not registered yet: the disk's snapshot is trashed, so
    # the delete parks the disk at once; the restarted service rolls the snapshot forward through the parked disk.
    "location": "active",
}


def _log_waits(path: Path, offset: int, needle: str, timeout: float, poll: float = 0.5) -> str:
    """Wait until ``needle`` appears in the file after ``offset``; returns that part of the file."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            f.seek(offset)
            text = f.read()
        if needle in text:
            return text
        time.sleep(poll)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s: {text[-3000:]}")


def _fastsnap_event(nova: NovaAPI, sid: str, request_id: str, timeout: float = 180) -> dict[str, Any]:
    """The finished compute_fastsnap_snapshot event of Nova's snapshot action (the server may be deleted)."""
    deadline = time.monotonic() + timeout
    evs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        evs = [e for e in nova.events(sid, request_id) if e["event"] == "compute_fastsnap_snapshot"]
        if evs and evs[0].get("finish_time"):
            return evs[0]
        time.sleep(1)
    raise AssertionError(f"Nova's snapshot action {request_id} did not finish: {evs}")


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_service_killed_during_a_snapshot_then_server_deleted(stack: Stack, hook_nova: NovaAPI,
                                                              life_service: FastsnapService,
                                                              made: dict[str, list[str]], point: str) -> None:
    """SIGKILL of the service in the middle of a snapshot Nova asked for, the server deleted right after, the
    service restarted: the server is deleted, the image is active and boots or is gone with Nova's action
    failed, and nothing is left once the parked disks are drained."""
    outcome = KILL_POINTS[point]
    sid = boot(hook_nova, made, stack.env["FASTSNAP_NOVA_IMAGE"], ready=False)
    old_id = disk_id(stack, sid)
    life_service.stop()
    life_service.start(crash_at=point)
    assert life_service.proc is not None
    offset = hook_nova.log_size()
    image_id, request_id = hook_nova.image_create(sid, f"life-kill-{point}")
    made["images"].append(image_id)
    assert life_service.proc.wait(SNAP_TIMEOUT) == -signal.SIGKILL, "the service was not killed at " + point
    t0 = time.monotonic()
    r = hook_nova.call("DELETE", f"/servers/{sid}")
    assert r.status_code == 204, r.text
    try:
        # What the delete did while fastsnap was down.
        if outcome == "gone":
            _log_waits(hook_nova.compute_log, offset, f"rbd remove {sid}_disk in pool vms failed", 120)
            assert f"{sid}_disk" in stack.rbd_images("vms")
        else:
            _log_waits(hook_nova.compute_log, offset, "moved to the RBD trash", 120)
            assert old_id in {t["id"] for t in trash(stack)}
    finally:
        down = time.monotonic() - t0
        life_service.start()
    _wait_deleted(hook_nova, [sid])
    secs = time.monotonic() - t0
    ev = _fastsnap_event(hook_nova, sid, request_id)
    log = hook_nova.log_since(offset)
    assert "left in place" not in log, log[-3000:]
    job = life_service.job_for(image_id)
    if outcome == "gone":
        assert job["state"] == "failed" and job["error"]["title"] == "Interrupted", job
        assert ev["result"] == "Error" and "service stopped during this snapshot" in (ev.get("details") or ""), ev
        deadline = time.monotonic() + 60
        while not image_gone(stack, image_id) and time.monotonic() < deadline:
            time.sleep(1)
        assert image_gone(stack, image_id), "the image of the rolled-back snapshot is still in Glance"
    else:
        assert job["state"] == "done" and job["path"] == "clone", job
        assert ev["result"] == "Success", ev
        assert stack.glance("admin").images.get(image_id)["status"] == "active"
    waited = drained(stack, life_service)
    assert old_id not in {t["id"] for t in trash(stack)}
    if outcome == "active":
        assert parent_of(stack, "images", image_id) is None, "the rolled-forward clone was not flattened"
        want = resumes_from(read_counter(stack, f"rbd:images/{image_id}@snap"))
        child = boot(hook_nova, made, image_id, ready=False)
        assert hook_nova.ready_counter(child) == want
        hook_nova.delete_servers(child)
    print(f"killed at {point}: image {outcome}; server deleted {secs:.1f}s after the request (service down "
          f"{down:.1f}s of it), parked disks drained {waited:.1f}s later")


def test_service_killed_while_draining_a_parked_disk(stack: Stack, hook_nova: NovaAPI,
                                                     life_service: FastsnapService,
                                                     made: dict[str, list[str]]) -> None:
    """SIGKILL of the service while it flattens the clone of a disk Nova's delete just parked: the restarted
    service finishes the drain (the clone flattened again, its data intact, the disk purged)."""
    sid = boot(hook_nova, made, stack.env["FASTSNAP_NOVA_IMAGE"], ready=False)
    old_id = disk_id(stack, sid)
    image_id = snapshot(stack, hook_nova, life_service, made, sid, "life-kill-drain")["image_id"]
    want = read_counter(stack, f"rbd:images/{image_id}@snap")
    offset = life_service.oslo_log.stat().st_size
    r = hook_nova.call("DELETE", f"/servers/{sid}")
    assert r.status_code == 204, r.text
    assert life_service.proc is not None
    try:
        try:
            _log_waits(life_service.oslo_log, offset, f"flattening images/{image_id} first", 120, poll=0.02)
        finally:
            life_service.proc.kill()  # SIGKILL
            life_service.proc.wait(30)
        mid_flatten = parent_of(stack, "images", image_id) is not None
        assert old_id in {t["id"] for t in trash(stack)}, "the parked disk was removed before the kill"
        _wait_deleted(hook_nova, [sid])
    finally:
        life_service.start()
    waited = drained(stack, life_service)
    assert old_id not in {t["id"] for t in trash(stack)}
    assert parent_of(stack, "images", image_id) is None
    assert read_counter(stack, f"rbd:images/{image_id}@snap") == want
    assert stack.glance("admin").images.get(image_id)["status"] == "active"
    print(f"killed while draining ({'clone still had its parent' if mid_flatten else 'flatten had finished'}); "
          f"drained {waited:.1f}s after the restart")


@contextlib.contextmanager
def depth_limits(svc: FastsnapService, soft: int, hard: int) -> Iterator[None]:
    """The service restarted with other clone-depth limits, and back."""
    text = svc.conf.read_text()
    if (soft, hard) == (SOFT, HARD):
        yield
        return
    svc.stop()
    svc.conf.write_text(text.replace(f"clone_depth_soft = {SOFT}\nclone_depth_hard = {HARD}\n",
                                     f"clone_depth_soft = {soft}\nclone_depth_hard = {hard}\n"))
    svc.start()
    try:
        yield
    finally:
        svc.stop()
        svc.conf.write_text(text)
        svc.start()


@pytest.mark.parametrize("soft,hard", [(SOFT, HARD), (SOFT, SOFT + 1)])
def test_clone_depth_bounded_over_snapshot_boot_chains(stack: Stack, hook_nova: NovaAPI,
                                                       life_service: FastsnapService,
                                                       made: dict[str, list[str]], soft: int, hard: int) -> None:
    with depth_limits(life_service, soft, hard):
        _chain(stack, hook_nova, life_service, made, soft, hard)


def _chain(stack: Stack, hook_nova: NovaAPI, life_service: FastsnapService, made: dict[str, list[str]],
           soft: int, hard: int) -> None:
    """A server booted from the previous generation's snapshot, snapshotted, then stopped (its disk stays, so
    with ``flatten = never`` the chain grows until the depth limits act; the oldest of more than WINDOW stopped
    servers is deleted, which parks its disk and cuts the chain there); 10 generations; then all deleted at once."""
    image = stack.env["FASTSNAP_NOVA_IMAGE"]
    seen = []
    sids = []
    for gen in range(GENERATIONS):
        sid = boot(hook_nova, made, image)  # the guest came up from the previous snapshot: it is readable
        sids.append(sid)
        job = snapshot(stack, hook_nova, life_service, made, sid, f"life-gen-{gen}")
        flat = job["result"]["flatten"]
        seen.append((gen, flat["depth"], flat["policy"]))
        if flat["depth"] > hard:
            assert flat["policy"] == "sync" and parent_of(stack, "images", job["image_id"]) is None, seen
        elif flat["depth"] > soft:
            assert flat["policy"] == "background", seen
        else:
            assert flat["policy"] == "never", seen
        r = hook_nova.call("POST", f"/servers/{sid}/action", json={"os-stop": None})
        assert r.status_code == 202, r.text
        hook_nova.wait_server(sid, "SHUTOFF", SNAP_TIMEOUT)
        if len(sids) > WINDOW:  # stopped servers still hold their vCPUs (16 on this host): the oldest goes
            _delete_all(hook_nova, [sids.pop(0)])
        image = job["image_id"]
    print("generation, depth, policy: " + json.dumps(seen))
    assert max(d for _, d, _ in seen) <= hard + 2, seen
    # A clone at most `hard` deep is registered as such; deeper ones are flattened first (sync). With the
    # first limits the mgr's background flatten keeps it at the soft limit; with a hard limit of soft + 1 the
    # chain reaches it before the mgr is asked.
    want = "background" if hard > soft + 1 else "sync"
    assert want in {p for _, _, p in seen}, f"no {want} flatten over the chain: {seen}"
    for image_id in made["images"]:
        found = read_counter(stack, f"rbd:images/{image_id}@snap")
        assert found.get("counter") is not None or found.get("counter_recovered") is not None, found
    t0 = time.monotonic()
    _delete_all(hook_nova, sids)
    print(f"{len(sids)} servers deleted at once in {time.monotonic() - t0:.1f}s")
    assert not [s for s in sids if f"{s}_disk" in stack.rbd_images("vms")]


def test_flatten_status_shows_and_drains_parked_disks(stack: Stack, hook_nova: NovaAPI,
                                                      life_service: FastsnapService,
                                                      made: dict[str, list[str]]) -> None:
    """The operator's view: with the service stopped, a parked disk shows in ``flatten-status`` and
    ``flatten-status --run`` drains it."""
    sid = boot(hook_nova, made, stack.env["FASTSNAP_NOVA_IMAGE"], ready=False)
    old_id = disk_id(stack, sid)
    snapshot(stack, hook_nova, life_service, made, sid, "life-status")
    life_service.stop()
    try:
        timed_delete(hook_nova, sid)
        cli = [str(ROOT / ".venv/bin/fastsnap"), "--config-file", str(life_service.conf), "flatten-status", "--json"]
        env = {**os.environ, **stack.env}
        out = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300, check=True)
        parked = json.loads(out.stdout)["parked_disks"]
        assert [(p["id"], p["name"], p["state"]) for p in parked] == [(old_id, f"{sid}_disk", "waiting")], parked
        out = subprocess.run([*cli, "--run"], capture_output=True, text=True, env=env, timeout=300, check=True)
        assert [p["state"] for p in json.loads(out.stdout)["parked_disks"]] == ["removed"], out.stdout
        assert old_id not in {t["id"] for t in trash(stack)}
    finally:
        life_service.start()
