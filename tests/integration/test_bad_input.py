"""Bad input everywhere (issue 11, point 8): the CLI exits 2 and the service answers 4xx with a precise message,
and nothing is created: no Glance image, no RBD image, no RBD snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.env import ROOT
from testkit.service import Service
from testkit.stack import Stack
from tests.integration.conftest import Writer


def _state(stack: Stack, disk: str) -> tuple[Any, ...]:
    return (stack.image_ids(), stack.rbd_images("vms"), stack.rbd_images("images"), stack.snaps("vms", disk))


def _unchanged(stack: Stack, disk: str, before: tuple[Any, ...], within: float = 60) -> None:
    """Glance and both pools are as ``before``. Something else the stack runs (right after it started: Glance's
    own background work) may add an image for a moment: a state that differs is looked at again until it settles
    (``within`` seconds); what bad input would have created stays, and fails the test."""
    deadline = time.monotonic() + within
    while (now := _state(stack, disk)) != before and time.monotonic() < deadline:
        time.sleep(2)
    assert now == before


def _bad_cli(disk: str, queued: str) -> list[tuple[list[str], str]]:
    long = "n" * 256
    many = [a for i in range(129) for a in ("--property", f"p{i}=v")]
    return [
        (["--disk", "vms", "--name", "x"], "expected POOL/IMAGE"),
        (["--disk", f"vms/{disk}/x", "--name", "x"], "expected POOL/IMAGE"),
        (["--disk", f"vms/{disk}@s", "--name", "x"], "expected POOL/IMAGE"),
        (["--disk", "nopool/x", "--name", "x"], "Ceph pool 'nopool' does not exist"),
        (["--disk", "vms/\x1bx", "--name", "x"], "disk contains the control character U+001B"),
        (["--disk", f"vms/{disk}", "--name", long], "image name is 256 characters long; at most 255"),
        (["--disk", f"vms/{disk}", "--name", "a\x07b"], "image name contains the control character U+0007"),
        (["--disk", f"vms/{disk}", "--name", "caf\udce9"], "image name is not valid UTF-8 (byte 0xe9"),
        (["--disk", f"vms/{disk}", "--name", "x", "--property", "k=v\udcff"],
         "property 'k' is not valid UTF-8 (byte 0xff"),
        (["--disk", f"vms/{disk}", "--name", "x", "--property", "k=a\nb"],
         "property 'k' contains the control character U+000A"),
        (["--disk", f"vms/{disk}", "--name", "x", "--property", "novalue"], "is not KEY=VALUE"),
        (["--disk", f"vms/{disk}", "--name", "x", *many], "129 properties given; at most 128"),
        (["--disk", f"vms/{disk}", "--name", "x", "--property", f"k={'v' * 256}"], "256 characters long"),
        (["--disk", f"vms/{disk}", "--name", "x", "--image-id", "nope"], "is not a UUID"),
        (["--disk", f"vms/{disk}", "--name", "x", "--image-id", str(uuid.uuid4())], "does not exist"),
        (["--disk", f"vms/{disk}", "--name", "x", "--base-image", str(uuid.uuid4())], "base image"),
        (["--disk", f"vms/{disk}", "--name", "x", "--store", "nowhere"], "nowhere"),
        (["--disk", f"vms/{disk}", "--name", "x", "--image-id", queued, "--store", "nowhere"], "nowhere"),
    ]


def test_cli_bad_input_exits_2_and_creates_nothing(stack: Stack, make_disk: Writer) -> None:
    disk = make_disk(size=8 << 20)
    queued = stack.glance().images.create(name="q", disk_format="raw", container_format="bare")["id"]
    stack.snapshots.append(queued)
    before = _state(stack, disk)
    for args, needle in _bad_cli(disk, queued):
        out = stack.fastsnap("snapshot", *args)
        assert out.returncode == 2, (args[:6], out.returncode, out.stderr)
        assert needle in out.stderr, (args[:6], out.stderr)
        assert "Traceback" not in out.stderr
    _unchanged(stack, disk, before)
    assert stack.glance().images.get(queued)["status"] == "queued"  # the given image is left as it was


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Service]:
    svc = Service(stack, tmp_path)
    svc.start()
    yield svc
    svc.stop()


def test_rest_bad_input_is_4xx_and_creates_nothing(stack: Stack, service: Service, make_disk: Writer) -> None:
    disk = make_disk(size=8 << 20)
    ok = {"disk": f"vms/{disk}", "name": "x"}
    cases: list[tuple[Any, int, str]] = [
        ([], 400, "must be a JSON object"),
        ("text", 400, "must be a JSON object"),
        (None, 415, "application/json"),  # no body at all
        ({**ok, "disk": 7}, 400, "'disk' is required and must be a string"),
        ({**ok, "name": ["x"]}, 400, "'name' is required and must be a string"),
        ({**ok, "disk": "vms"}, 400, "expected POOL/IMAGE"),
        ({**ok, "disk": "vms/a\u0000"}, 400, "disk contains the control character U+0000"),
        ({**ok, "name": "n" * 256}, 400, "at most 255"),
        ({**ok, "name": "a\u009bb"}, 400, "control character U+009B"),
        ({**ok, "name": "\ud800"}, 400, "lone surrogate U+D800"),
        ({**ok, "properties": []}, 400, "'properties' must be an object of strings, not list"),
        ({**ok, "properties": {"k": 1}}, 400, "property 'k' must be a string, not int"),
        ({**ok, "properties": {"k": "a\rb"}}, 400, "control character U+000D"),
        ({**ok, "properties": {f"p{i}": "v" for i in range(500)}}, 400, "500 properties given"),
        ({**ok, "rotation": "2"}, 400, "'rotation' must be a positive integer"),
        ({**ok, "rotation": True}, 400, "'rotation' must be a positive integer"),
        ({**ok, "keep_image_on_error": "yes"}, 400, "'keep_image_on_error' must be a boolean"),
        ({**ok, "type": "clone"}, 400, "'type' must be snapshot or backup"),
        ({**ok, "image_id": 5}, 400, "'image_id' must be a string"),
        ({**ok, "image_id": "x"}, 400, "is not a UUID"),
        ({**ok, "base_image": str(uuid.uuid4())}, 400, "base image"),
        ({**ok, "store": "nowhere"}, 400, "nowhere"),
        ({**ok, "extra" * 40: 1}, 400, "unknown field(s)"),
    ]
    before = _state(stack, disk)
    for body, code, needle in cases:
        r = service.call("POST", "/v1/snapshots", json=body)
        assert r.status_code == code, (str(body)[:100], r.status_code, r.text[:300])
        assert needle in r.json()["error"]["message"], (str(body)[:100], r.text[:300])
    headers = {"X-Auth-Token": service.token(), "Content-Type": "application/json"}
    raw: list[tuple[bytes, dict[str, str], int, str]] = [
        (b'{"disk": "vms/x", "name": "caf\xe9"}', {}, 400, "must be a JSON object"),  # not UTF-8
        (b'{"disk": ', {}, 400, "must be a JSON object"),                              # truncated
        (json.dumps({**ok, "name": "y" * (2 << 20)}).encode(), {}, 413, ""),           # over 1 MiB
        (json.dumps(ok).encode(), {"Content-Type": "text/plain"}, 415, "application/json"),
        (json.dumps(ok).encode(), {"Idempotency-Key": "k" * 256}, 400, "Idempotency-Key"),
    ]
    for data, extra, code, needle in raw:
        r = requests.post(service.url + "/v1/snapshots", data=data, headers={**headers, **extra}, timeout=60)
        assert r.status_code == code, (data[:60], r.status_code, r.text[:300])
        assert r.json()["error"]["code"] == code and needle in r.json()["error"]["message"]
    _unchanged(stack, disk, before)
    assert service.call("GET", "/v1/snapshots").json()["snapshots"] == []


def test_cli_non_utf8_bytes_in_argv(stack: Stack, make_disk: Writer) -> None:
    """Raw bytes as a shell passes them (not via Python str): still exit 2 and a readable message."""
    disk = make_disk(size=8 << 20)
    before = _state(stack, disk)
    out = subprocess.run([os.fsencode(ROOT / ".venv/bin/fastsnap"), b"snapshot", b"--disk", f"vms/{disk}".encode(),
                          b"--name", b"\xff\xfe bad"], capture_output=True, env={**os.environ, **stack.env},
                         timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    assert b"image name is not valid UTF-8 (byte 0xff at position 0)" in out.stderr
    _unchanged(stack, disk, before)
