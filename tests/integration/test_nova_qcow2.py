"""A qcow2 snapshot through Nova (issue 25 part 2): nova-compute with fastsnap's hook and ``[libvirt]
snapshot_image_format = qcow2`` (for this module; back afterwards), a running TCG guest snapshotted into the file
store ``cheap`` with ``--property fastsnap_store=cheap --property fastsnap_format=qcow2``: fastsnap streams a qcow2
of the disk's allocated clusters, Nova labels it qcow2 as it would its own, ``qemu-img check`` finds it sound, its
guest filesystem holds the guest's counter, and a server booted from it resumes from that counter. Every server and
image is deleted afterwards."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.counter import resumes_from
from testkit.novaapi import NovaAPI, read_ini
from testkit.stack import Stack
from tests.integration.test_nova import (
    BOOT_TIMEOUT,
    HOOK_DRIVER,
    FastsnapService,
    Watch,
    delete_images,
    driver_now,
    live_counter,
    read_counter,
    serving,
    up_nova,
    wait_idle,
    wait_image,
)

pytestmark = [pytest.mark.stack, pytest.mark.nova]


@pytest.fixture(scope="module")
def qcow2_nova(stack: Stack) -> Iterator[NovaAPI]:
    before = (driver_now(stack), stack.env.get("FASTSNAP_TEST_NOVA_SNAPSHOT_FORMAT", ""))
    up_nova(stack, FASTSNAP_TEST_NOVA_DRIVER=HOOK_DRIVER, FASTSNAP_TEST_NOVA_SNAPSHOT_FORMAT="qcow2")
    conf = Path(stack.env["FASTSNAP_TEST_NOVA_CONF"])
    ini = read_ini(conf)
    assert ini["DEFAULT"].get("compute_driver") == HOOK_DRIVER
    assert ini["libvirt"].get("snapshot_image_format") == "qcow2"
    n = NovaAPI(stack.env, stack.session("demo"), stack.session("admin"), boot_timeout=BOOT_TIMEOUT)
    try:
        yield n
    finally:
        try:
            n.delete_servers()
        finally:
            up_nova(stack, FASTSNAP_TEST_NOVA_DRIVER=before[0], FASTSNAP_TEST_NOVA_SNAPSHOT_FORMAT=before[1])


@pytest.fixture(scope="module")
def service(stack: Stack, qcow2_nova: NovaAPI) -> Iterator[FastsnapService]:
    with serving(stack, qcow2_nova, "fastsnap-nova-qcow2-") as svc:
        yield svc


def test_qcow2_stream_through_nova_boots(stack: Stack, qcow2_nova: NovaAPI, service: FastsnapService,
                                         tmp_path: Path) -> None:
    images: list[str] = []
    srv = qcow2_nova.boot(stack.env["FASTSNAP_NOVA_IMAGE"])
    sid = srv["id"]
    try:
        qcow2_nova.ready_counter(sid)
        before = live_counter(stack, qcow2_nova, sid)
        with Watch(qcow2_nova, sid) as watch:
            image_id, _ = qcow2_nova.image_create(sid, "fs-qcow2", fastsnap_store="cheap", fastsnap_format="qcow2")
            images.append(image_id)
            wait_image(stack, image_id)
            wait_idle(qcow2_nova, sid)   # Nova's metadata update (disk_format qcow2, as fastsnap made it) ran
        watch.assert_live_and_no_local_file()
        job = service.job_for(image_id)
        assert job["state"] == "done" and job["path"] == "stream" and job["store"] == "cheap", job
        assert job["request"]["format"] == "qcow2" and job["result"]["format"] == "qcow2", job
        img = stack.glance("admin").images.get(image_id)
        assert img["disk_format"] == "qcow2" and img["stores"] == "cheap"
        assert "fastsnap_format" not in img and "fastsnap_store" not in img   # instructions, not inherited
        assert img["size"] == job["result"]["bytes_streamed"] < int(job["result"]["size"])
        counter = _counter_in(stack, image_id, tmp_path)
        assert counter >= before
        booted = qcow2_nova.boot(image_id)   # Nova fetches the qcow2 and converts it into its rbd disk
        assert qcow2_nova.ready_counter(booted["id"]) == counter, "the new server does not resume from the snapshot"
    finally:
        qcow2_nova.delete_servers()
        delete_images(stack, images)


def _counter_in(stack: Stack, image_id: str, tmp_path: Path) -> int:
    """Download the image, ``qemu-img check`` it, convert it to raw and read the guest's counter from it."""
    q, raw = tmp_path / "snap.qcow2", tmp_path / "snap.raw"
    with open(q, "wb") as f:
        for chunk in stack.glance("admin").images.data(image_id):
            f.write(chunk)
    check = subprocess.run(["qemu-img", "check", "--output=json", "-f", "qcow2", str(q)], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    report: dict[str, Any] = json.loads(check.stdout)
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0
    conv = subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(q), str(raw)],
                          capture_output=True, text=True, check=False)
    assert conv.returncode == 0, conv.stderr
    return resumes_from(read_counter(stack, str(raw)))
