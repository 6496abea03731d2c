"""One image id, one operation: retries and duplicates of a snapshot never act twice and never undo a finished
snapshot (the data-loss bug of issue 11: a second run's rollback deleted the image the first run reported)."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from typing import Any

import pytest

from fastsnap import Conflict, Fastsnap, SnapshotRequest
from testkit.env import ROOT
from testkit.stack import Stack
from tests.integration.conftest import Writer


def _queued(stack: Stack) -> str:
    img = stack.glance().images.create(name=f"queued-{uuid.uuid4().hex[:6]}", disk_format="raw",
                                       container_format="bare")
    stack.snapshots.append(img["id"])
    return str(img["id"])


def _cli(stack: Stack, *args: str) -> subprocess.Popen[str]:
    import os

    env = {**os.environ, **stack.env}
    return subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _assert_intact(stack: Stack, image_id: str, disk: str, store: str) -> None:
    img = stack.glance().images.get(image_id)
    assert img["status"] == "active"
    assert img["stores"] == store
    assert stack.glance_sha256(image_id) == stack.disk_sha256("vms", disk)


@pytest.mark.parametrize("store", ["fast", "cheap"])
def test_same_image_twice_at_once_then_late_retry(stack: Stack, make_disk: Writer, store: str) -> None:
    """Two CLI runs for one queued image at once: one fills it, the other returns that result; a late retry
    returns it too. The image stays active with the disk's bytes throughout."""
    for _ in range(2):
        disk = make_disk()
        image_id = _queued(stack)
        args = ("snapshot", "--disk", f"vms/{disk}", "--name", "dup", "--store", store, "--image-id", image_id,
                "--json")
        runs = [_cli(stack, *args) for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in runs]
        for p, (_, err) in zip(runs, outs, strict=True):
            assert p.returncode == 0, err
        results = [json.loads(out) for out, _ in outs]
        assert sorted(r["already_done"] for r in results) == [False, True]
        assert {r["image_id"] for r in results} == {image_id}
        assert {r["path"] for r in results} == {"clone" if store == "fast" else "stream"}
        _assert_intact(stack, image_id, disk, store)

        late = stack.fastsnap(*args)
        assert late.returncode == 0, late.stderr
        assert json.loads(late.stdout)["already_done"] is True
        _assert_intact(stack, image_id, disk, store)
        plain = stack.fastsnap(*args[:-1])  # the default output: cliff's table of the result's fields
        fields = {cells[0]: cells[1] for ln in plain.stdout.splitlines() if ln.startswith("|")
                  for cells in [[c.strip() for c in ln.split("|")[1:-1]]]}
        assert plain.returncode == 0 and fields["already_done"] == "True" and fields["image_id"] == image_id, plain
        values = stack.fastsnap(*args[:-1], "-f", "value", "-c", "image_id", "-c", "already_done")
        assert values.returncode == 0 and values.stdout == f"{image_id}\nTrue\n", values


def test_same_image_from_threads(stack: Stack, make_disk: Writer) -> None:
    """The Python API from several threads of one process: one acts, the others get its result."""
    disk = make_disk()
    image_id = _queued(stack)
    results: list[Any] = []
    errors: list[BaseException] = []
    with Fastsnap(config_file=stack.config_file) as fs:
        def run() -> None:
            try:
                results.append(fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="t", store="fast",
                                                           image_id=image_id)))
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
    assert errors == []
    assert sorted(r.already_done for r in results) == [False, True, True, True]
    _assert_intact(stack, image_id, disk, "fast")


def test_image_of_another_disk_is_refused_and_untouched(stack: Stack, make_disk: Writer) -> None:
    disk, other = make_disk(), make_disk()
    image_id = _queued(stack)
    first = stack.fastsnap("snapshot", "--disk", f"vms/{disk}", "--name", "a", "--store", "fast",
                           "--image-id", image_id)
    assert first.returncode == 0, first.stderr
    again = stack.fastsnap("snapshot", "--disk", f"vms/{other}", "--name", "b", "--store", "fast",
                           "--image-id", image_id)
    assert again.returncode == 2
    assert f"belongs to a snapshot of vms/{disk}" in again.stderr
    _assert_intact(stack, image_id, disk, "fast")
    with Fastsnap(config_file=stack.config_file) as fs, pytest.raises(Conflict):
        fs.snapshot(SnapshotRequest(disk=f"vms/{other}", name="b", store="fast", image_id=image_id))
    # Nothing was made for the other disk: no temporary snapshot.
    assert stack.snaps("vms", other) == []


def test_retry_after_a_kill_finishes_the_first_attempt(stack: Stack, make_disk: Writer) -> None:
    """A run killed after the clone got its ``snap``: the retry rolls the first attempt forward and returns it,
    without a separate ``recover``."""
    disk = make_disk()
    image_id = _queued(stack)
    args = ("snapshot", "--disk", f"vms/{disk}", "--name", "k", "--store", "fast", "--image-id", image_id,
            "--json")
    killed = stack.fastsnap(*args, env={"FASTSNAP_TEST_CRASH_AT": "location"})
    assert killed.returncode == -9
    retry = stack.fastsnap(*args)
    assert retry.returncode == 0, retry.stderr
    res = json.loads(retry.stdout)
    assert res["already_done"] is True and res["path"] == "clone"
    assert res["location"] == f"rbd://{stack.fsid_a}/images/{image_id}/snap"
    _assert_intact(stack, image_id, disk, "fast")
