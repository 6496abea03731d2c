"""The ownership rule's pure parts (fastsnap.ownership) and the service's per-project limit (Runner), table-tested.
The rule against the real Nova: tests/integration/test_tenancy.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fastsnap import ownership as own
from fastsnap.errors import BadRequest, Forbidden
from fastsnap.request import SnapshotRequest, validate_request
from fastsnap.service.jobs import Runner, new_job

SID = "6f1c1d1e-7d9b-4a3c-9e0e-0c3b6b1f2a10"
BOOTED = {"id": SID, "image": {"id": "base"}}


@pytest.mark.parametrize(("disk", "server", "pool", "refused"), [
    (f"vms/{SID}_disk", BOOTED, "vms", None),
    (f"nova-disks/{SID}_disk", BOOTED, "nova-disks", None),
    (f"vms/{SID}_disk", BOOTED, "nova-disks", f"is not the root disk of server {SID} (that is nova-disks/{SID}_disk)"),
    (f"vms/{uuid.uuid4()}_disk", BOOTED, "vms", f"is not the root disk of server {SID}"),
    (f"vms/{SID}_disk.rescue", BOOTED, "vms", "is not the root disk"),
    (f"vms/{SID}_disk.config", BOOTED, "vms", "is not the root disk"),
    (f"images/{SID}_disk", BOOTED, "vms", "is not the root disk"),
    (f"vms/{SID}_disk", {"id": SID, "image": ""}, "vms", "boots from a volume"),
])
def test_root_disk(disk: str, server: dict[str, Any], pool: str, refused: str | None) -> None:
    if refused is None:
        own.check_root_disk(disk, server, pool)
    else:
        with pytest.raises(Forbidden, match=refused.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            own.check_root_disk(disk, server, pool)


def test_a_snapshot_for_a_user_names_its_server() -> None:
    assert own.require_server("vms/x", SID) == SID
    for missing in (None, ""):
        with pytest.raises(Forbidden, match="must name the server whose disk vms/x is"):
            own.require_server("vms/x", missing)


@pytest.mark.parametrize("bad", ["../flavors", "x", f"{SID}/../../os-hypervisors", SID + "0"])
def test_instance_uuid_is_a_uuid(bad: str) -> None:
    with pytest.raises(BadRequest, match="is not a UUID"):
        validate_request(SnapshotRequest(disk="vms/d", name="n", instance_uuid=bad))


def _job(project: str | None) -> Any:
    return new_job({}, None, None, project)


def test_runner_per_project_limit() -> None:
    runner = Runner(slots=4, per_project=2)
    try:
        a1, a2, a3, b1, op = _job("a"), _job("a"), _job("a"), _job("b"), _job(None)
        assert runner.try_reserve(a1) is None and runner.try_reserve(a2) is None
        assert runner.try_reserve(a3) == "project"          # a's share is full ...
        assert runner.try_reserve(b1) is None                # ... b still gets its turn
        unlimited = _job("a")
        assert runner.try_reserve(unlimited, limited=False) is None  # operator work: host slots only
        assert runner.try_reserve(op) == "host"              # the host is full
        runner.release(a1)
        assert runner.try_reserve(a3) == "project"           # a2 and the operator job of a's project
        runner.release(unlimited)
        assert runner.try_reserve(a3) is None
        assert runner.in_flight == 3
    finally:
        runner.shutdown()


def test_runner_without_per_project_limit() -> None:
    runner = Runner(slots=3, per_project=0)
    try:
        assert [runner.try_reserve(_job("a")) for _ in range(4)] == [None, None, None, "host"]
    finally:
        runner.shutdown()
