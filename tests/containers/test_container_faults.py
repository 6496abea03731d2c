"""Faults only the containerized stack can make: a Ceph OSD container stopped and started again, Glance cut off
the network, the Keystone container restarted.

Each ends clean as the crash-safety rules require (tests/integration/test_faults.py): no temporary snapshot left
on the disk, no clone without a Glance image, no queued/saving image left by the run, active images hold the
disk's bytes; what a failed run could not undo, ``fastsnap recover --json`` finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from fastsnap import journal as jr
from fastsnap.states import OpState
from testkit.env import ROOT
from testkit.stack import Stack
from tests.integration.conftest import Writer
from tests.integration.test_faults import _assert_clean, _journal, _ops_for, _recover, _start, _wait_saving


def _stream_disk(make_disk: Writer) -> str:
    """A disk whose stream takes seconds: 1 GiB, 512 MiB of data in 8 MiB pieces, holes between."""
    return make_disk(size=1 << 30, chunks=tuple(range(0, 1 << 30, 16 << 20)), chunk_len=8 << 20)


def _status(stack: Stack, image_id: str) -> str | None:
    img = next(iter(stack.glance("admin").images.list(filters={"id": image_id})), None)
    return None if img is None else str(img["status"])


def test_osd_container_stopped_and_started_during_stream(stack: Stack, make_disk: Writer) -> None:
    """The stream waits while the OSD is gone (librados resends once it is back) and completes."""
    disk = _stream_disk(make_disk)
    want = stack.disk_sha256("vms", disk)
    name = f"osd-stop-{uuid.uuid4().hex[:6]}"
    proc = _start(stack, "snapshot", "--disk", f"vms/{disk}", "--name", name, "--store", "cheap", "--json")
    image_id = _wait_saving(stack, name, proc)
    os.kill(proc.pid, signal.SIGSTOP)     # hold the stream mid-way while the OSD goes, however fast it is
    try:
        stack.services.stop("osd-a")      # SIGTERM: the OSD marks itself down and exits
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    try:
        assert _status(stack, image_id) == "saving"
        time.sleep(3)
        assert proc.poll() is None, f"the stream gave up while the OSD was away: {proc.communicate()}"
    finally:
        stack.services.start("osd-a")     # healthy = booted, active, placement groups clean
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert json.loads(out)["image_id"] == image_id
    assert _assert_clean(stack, disk, want, [image_id]) == 1
    assert [op.state for op in _ops_for(stack, disk)] == [OpState.DONE]


def _impatient_config(stack: Stack, tmp_path: Path) -> str:
    """The stack's fastsnap.conf with short Glance timeouts, so that a Glance that is gone is noticed in seconds."""
    text = Path(stack.config_file).read_text().replace("timeout = 60", "timeout = 5")
    text = text.replace("[glance]\n", "[glance]\nconnect_retries = 1\nstatus_timeout = 20\n")
    path = tmp_path / "fastsnap.conf"
    path.write_text(text)
    return str(path)


def _wait_step(stack: Stack, disk: str, steps: tuple[str, ...], proc: subprocess.Popen[str],
               timeout: float = 60) -> jr.Operation:
    """Poll the journal until the operation on ``disk`` has begun one of ``steps``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for op in _journal(stack).list():
            if op.disk == f"vms/{disk}" and any(op.began(s) for s in steps):
                return op
        assert proc.poll() is None, f"fastsnap ended early: {proc.communicate()}"
        time.sleep(0.005)
    raise AssertionError(f"no step of {steps} began")


def test_glance_cut_off_the_network_during_registration(stack: Stack, make_disk: Writer, bases: dict[str, str],
                                                        tmp_path: Path) -> None:
    """Clone path: Glance leaves the network once the Ceph work has begun, so registering the clone fails; the
    run cannot delete its image either (Glance is away) and leaves it to recover, which finishes once Glance is
    back."""
    disk = make_disk(size=16 << 20, chunks=(0, 9 << 20))
    want = stack.disk_sha256("vms", disk)
    env = {**os.environ, **stack.env, "FASTSNAP_CONFIG_FILE": _impatient_config(stack, tmp_path)}
    proc = subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), "snapshot", "--disk", f"vms/{disk}", "--name",
                             "glance-cut", "--base-image", bases["fast"], "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    op = _wait_step(stack, disk, ("disk_snap", "clone", "disk_snap_release", "clone_snap", "location"), proc)
    os.kill(proc.pid, signal.SIGSTOP)     # hold fastsnap still while Glance goes
    try:
        stack.services.disconnect("glance")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        stack.services.connect("glance")
    assert proc.returncode == 1, (out, err)
    assert "Glance" in err and out == ""
    stack.services.wait_healthy(["glance"])
    _settle_glance(stack)
    actions = [a for a in _recover(stack) if a["op_id"] == op.op_id]
    state = _journal(stack).get(op.op_id).state  # type: ignore[union-attr]
    if actions:  # the run's own rollback could not reach Glance: recover did the rest
        assert actions[0]["action"] in ("rolled_forward", "rolled_back"), actions
        assert state in (OpState.DONE, OpState.ROLLED_BACK)
    else:        # the run failed before touching Glance again and rolled back on its own
        assert state == OpState.FAILED
    active = _assert_clean(stack, disk, want, [op.op_id])
    assert active == (1 if state == OpState.DONE else 0)
    assert [a for a in _recover(stack) if a["op_id"] == op.op_id] == []


def _settle_glance(stack: Stack, timeout: float = 60) -> None:
    """Wait until Glance answers authenticated calls again (its pooled connections may need a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            list(stack.glance("admin").images.list(limit=1))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_keystone_container_restarted(stack: Stack, make_disk: Writer, bases: dict[str, str]) -> None:
    """Keystone restarts while a stream is running: the stream ends clean (completed, or rolled back and then
    recovered), tokens issued before the restart stay valid (fernet keys on the volume), and snapshots work
    afterwards."""
    session = stack.session("fastsnap")
    token = session.get_token()
    disk = _stream_disk(make_disk)
    want = stack.disk_sha256("vms", disk)
    name = f"keystone-restart-{uuid.uuid4().hex[:6]}"
    proc = _start(stack, "snapshot", "--disk", f"vms/{disk}", "--name", name, "--store", "cheap", "--json")
    image_id = _wait_saving(stack, name, proc)
    stack.services.restart("keystone")
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        assert "Glance" in err or "Keystone" in err or "auth" in err.lower(), err
        _recover(stack)
    active = _assert_clean(stack, disk, want, [image_id])
    assert active == (1 if proc.returncode == 0 else 0)

    assert session.get_token() == token
    # Keystone itself (not a cache in Glance) still accepts the token.
    assert session.get(stack.env["OS_AUTH_URL"] + "/auth/tokens", headers={"X-Subject-Token": token}).status_code == 200
    after = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "after-restart", "--base-image",
                           bases["fast"], "--json")
    assert after.returncode == 0, after.stderr
    res: dict[str, Any] = json.loads(after.stdout)
    assert _assert_clean(stack, disk, want, [res["image_id"]]) == 1


def _container_snapshot(stack: Stack, disk: str, **body: Any) -> dict[str, Any]:
    """A snapshot of vms/``disk`` through the fastsnap service container's REST API (a Keystone token); its job
    once finished."""
    url = f"http://{stack.services.address('fastsnap')}:8787"
    token = stack.session("fastsnap").get_token()
    assert token
    headers = {"X-Auth-Token": token}
    r = requests.post(f"{url}/v1/snapshots", headers=headers, timeout=60, json={"disk": f"vms/{disk}", **body})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 300
    while True:
        job: dict[str, Any] = requests.get(f"{url}/v1/snapshots/{r.json()['id']}", headers=headers, timeout=60).json()
        if job["state"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_fastsnap_container_serves_snapshots(stack: Stack, make_disk: Writer, bases: dict[str, str]) -> None:
    """The fastsnap service container (docker-compose.yml's fastsnap, `fastsnap serve`) snapshots a disk of
    cluster A through its REST API, with a Keystone token."""
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    job = _container_snapshot(stack, disk, name="from-the-container", base_image=bases["fast"])
    assert job["state"] == "done", job
    assert job["path"] == "clone"
    assert _assert_clean(stack, disk, want, [job["image_id"]]) == 1


def test_fastsnap_container_writes_cluster_b(stack: Stack, make_disk: Writer, bases: dict[str, str]) -> None:
    """The container's fastsnap.conf names cluster B ([ceph] remote_clusters, its fsid from the ceph-conf volume):
    a snapshot into the store ``remote`` is written there with librbd (copy path: the base has no copy in
    ``remote``), not streamed through Glance."""
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    job = _container_snapshot(stack, disk, name="container-to-b", base_image=bases["fast"], store="remote")
    assert job["state"] == "done", job
    assert job["path"] == "copy", job
    assert _assert_clean(stack, disk, want, [job["image_id"]]) == 1
