"""The cluster-wide view (issue 23 point 5) on the real stack: two hosts share one journal namespace. Host A's
snapshot is SIGKILLed at a step and its lease (2 s) lapses; host B has a snapshot in flight (held at a step in
this process). ``fastsnap status`` on host B, ``GET /v1/status`` and ``/metrics`` of host B's service show host A
lapsed, its operation unsettled and B's in flight; after ``recover`` on host B nothing is unsettled."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastsnap import Fastsnap, SnapshotRequest
from fastsnap.plan import Plan
from fastsnap.result import SnapshotResult
from fastsnap.states import OpState
from testkit.service import Service
from testkit.stack import TEST_NAMESPACE_PREFIX, Stack, journal_for, journal_section
from tests.integration.conftest import Writer

pytestmark = pytest.mark.stack

MEMBERS = "allowed_roles = service,admin,member\n"  # a plain member gets past the role check: 403 is /v1/status's


def _conf(stack: Stack, tmp: Path, name: str, host: str, namespace: str, lease_seconds: int | None = None) -> str:
    text = Path(stack.config_file).read_text().replace("[journal]\n", "[journal_unused]\n")
    path = tmp / f"{name}.conf"
    path.write_text(text + journal_section(tmp / f"{name}-state", host=host, lease_seconds=lease_seconds,
                                           namespace=namespace)
                    + "[snapshot]\nflatten = never\n")  # no flatten backlog of this test's own: it counts 0
    return str(path)


class Held:
    """A snapshot on host B, in this process, held just before its ``clone`` step acts (journaled with its
    phase already): a running operation whose host's lease lives (this process renews it)."""

    def __init__(self, fs: Fastsnap, disk: str, base: str) -> None:
        self.reached, self.gate = threading.Event(), threading.Event()
        self.image_id = ""
        self.result: SnapshotResult | None = None
        self.error: BaseException | None = None

        def on_plan(plan: Plan, image_id: str) -> None:
            self.image_id = image_id

        def on_step(step: str) -> None:
            if step == "clone":
                self.reached.set()
                assert self.gate.wait(300), "never released"

        def run() -> None:
            try:
                self.result = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name="held", base_image=base),
                                          on_plan=on_plan, on_step=on_step)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name="held-snapshot", daemon=True)
        self.thread.start()

    def release(self) -> SnapshotResult:
        self.gate.set()
        self.thread.join(300)
        assert self.error is None and self.result is not None, self.error
        return self.result


@pytest.fixture
def cluster(stack: Stack, tmp_path: Path) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    namespace = f"{TEST_NAMESPACE_PREFIX}status-{tag}"
    host_a, host_b = f"lost-{tag}", f"keep-{tag}"
    (tmp_path / "svc").mkdir()
    svc = Service(stack, tmp_path / "svc", extra=MEMBERS + "recover_interval = 0\n", host=host_b,
                  namespace=namespace)  # no periodic recover: the test's own recover settles host A's operation
    svc.start()
    fs_b = Fastsnap(config_file=_conf(stack, tmp_path, "held", host_b, namespace))
    try:
        yield {"a": host_a, "b": host_b, "svc": svc, "fs_b": fs_b,
               "conf_a": _conf(stack, tmp_path, "host-a", host_a, namespace, lease_seconds=2),
               "conf_b": _conf(stack, tmp_path, "host-b", host_b, namespace)}
    finally:
        svc.stop()
        fs_b.close()


def _cli_status(stack: Stack, conf: str) -> dict[str, Any]:
    out = stack.fastsnap("--config-file", conf, "status", "--json")
    assert out.returncode == 0, out.stderr
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def _check_both(status: dict[str, Any], c: dict[str, Any], op_a: str, disk_a: str, op_b: str, killed_at: float
                ) -> None:
    """Host A lapsed with its killed operation unsettled; host B alive with its held operation in flight (held
    before its clone step acts: its last step journaled is its phase's last, the disk snapshot's release)."""
    host_a, host_b = c["a"], c["b"]
    assert status["lapsed_hosts"] == [host_a], status
    assert status["in_flight"] == {host_b: 1}, status
    held = journal_for(c["conf_b"]).get(op_b)
    assert held is not None, op_b
    assert held.steps[-2:] == ["clone", "disk_snap_release"], held.steps
    assert [(o["op_id"], o["host"], o["disk"], o["step"]) for o in status["in_flight_operations"]] == [
        (op_b, host_b, held.disk, held.steps[-1])], status
    [unsettled] = status["unsettled"]
    assert (unsettled["op_id"], unsettled["host"], unsettled["disk"], unsettled["path"], unsettled["step"]) == (
        op_a, host_a, f"vms/{disk_a}", "clone", "disk_snap_release"), unsettled
    # its age is counted to the status's own time ("at"), not to now: the CLI may take a while to exit on a busy
    # machine (reserved before the kill, and less than 120 s before it)
    assert status["at"] - killed_at - 1 <= unsettled["age"] <= status["at"] - killed_at + 120, unsettled
    rows = {h["host"]: h for h in status["hosts"]}
    assert set(rows) == {host_a, host_b}
    assert (rows[host_a]["alive"], rows[host_a]["in_flight"], rows[host_a]["unsettled"]) == (False, 0, 1)
    assert (rows[host_b]["alive"], rows[host_b]["in_flight"], rows[host_b]["unsettled"]) == (True, 1, 0)
    assert rows[host_a]["seen_at"] is not None and rows[host_a]["seen_at"] <= killed_at
    assert status["flatten_backlog"] == 0
    # parked disks are Ceph's (the whole pool vms, other tests' too): the count is of the list
    assert status["parked_count"] == len(status["parked_disks"])
    assert disk_a not in {p["name"] for p in status["parked_disks"]}


def _gauges(svc: Service) -> dict[str, float]:
    r = svc.call("GET", "/metrics")
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line.startswith(("fastsnap_operations_", "fastsnap_hosts_lapsed", "fastsnap_flatten_backlog")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_status_shows_a_lost_hosts_unsettled_operation_until_recovered(stack: Stack, cluster: dict[str, Any],
                                                                      make_disk: Writer,
                                                                      bases: dict[str, str]) -> None:
    t0 = time.monotonic()
    svc: Service = cluster["svc"]
    host_a, host_b, conf_a, conf_b = cluster["a"], cluster["b"], cluster["conf_a"], cluster["conf_b"]
    disk_a, disk_b = make_disk(size=16 << 20), make_disk(size=16 << 20)
    journal = journal_for(conf_b)

    # Host A: a CLI snapshot SIGKILLed at its clone step leaves a running operation of host A.
    killed = stack.fastsnap("--config-file", conf_a, "snapshot", "--disk", f"vms/{disk_a}", "--name", "lost",
                            "--base-image", bases["fast"], env={"FASTSNAP_TEST_CRASH_AT": "clone"})
    killed_at = time.time()
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    [op_a] = journal.list(OpState.RUNNING)
    stack.snapshots.append(op_a.op_id)
    assert op_a.host == host_a and op_a.disk == f"vms/{disk_a}" and op_a.steps[-1] == "disk_snap_release"

    # Host B: a snapshot in flight, held at its clone step.
    held = Held(cluster["fs_b"], disk_b, bases["fast"])
    try:
        assert held.reached.wait(120), held.error
        stack.snapshots.append(held.image_id)

        # Host A's lease (2 s, its only process killed) lapses; host B's lives.
        waited, deadline = time.monotonic(), time.monotonic() + 30
        while journal.ops.lease_alive(host_a):
            assert time.monotonic() < deadline, "host A's lease did not lapse"
            time.sleep(0.2)
        lapsed_after, waited = time.time() - killed_at, time.monotonic() - waited
        assert journal.ops.lease_alive(host_b)

        cli = _cli_status(stack, conf_b)
        _check_both(cli, cluster, op_a.op_id, disk_a, held.image_id, killed_at)
        text = stack.fastsnap("--config-file", conf_b, "status")
        assert text.returncode == 0, text.stderr
        assert "unsettled operations" in text.stdout and op_a.op_id in text.stdout, text.stdout
        assert "lapsed" in text.stdout and host_a in text.stdout and held.image_id in text.stdout, text.stdout

        rest = svc.call("GET", "/v1/status")
        assert rest.status_code == 200, rest.text
        _check_both(rest.json(), cluster, op_a.op_id, disk_a, held.image_id, killed_at)
        refused = svc.call("GET", "/v1/status", user="demo")
        assert refused.status_code == 403 and "roles" in refused.json()["error"]["message"], refused.text

        assert _gauges(svc) == {f'fastsnap_operations_in_flight{{host="{host_b}"}}': 1.0,
                                "fastsnap_hosts_lapsed": 1.0, "fastsnap_operations_unsettled": 1.0,
                                "fastsnap_flatten_backlog": 0.0}
    finally:
        result = held.release()
    assert result.image_id == held.image_id and result.path == "clone"

    # Host B's recover takes host A's operation over (killed before the clone acted: rolled back).
    out = stack.fastsnap("--config-file", conf_b, "recover", "--json")
    assert out.returncode == 0, out.stderr
    assert [(a["op_id"], a["action"]) for a in json.loads(out.stdout)] == [(op_a.op_id, "rolled_back")], out.stdout
    settled = journal.get(op_a.op_id)
    assert settled is not None and settled.state == OpState.ROLLED_BACK
    assert [s for s in stack.snaps("vms", disk_a) if s[1] == 0] == []
    assert op_a.op_id not in stack.image_ids()

    for status in (_cli_status(stack, conf_b), svc.call("GET", "/v1/status").json()):
        assert status["unsettled"] == [] and status["in_flight_operations"] == [], status
        assert status["in_flight"] == {host_b: 0}, status  # the service holds host B's lease
        assert status["lapsed_hosts"] == [host_a], status   # idle: nothing of it left to settle
        assert {h["host"]: h["unsettled"] for h in status["hosts"]} == {host_a: 0, host_b: 0}
    assert _gauges(svc) == {f'fastsnap_operations_in_flight{{host="{host_b}"}}': 0.0,
                            "fastsnap_hosts_lapsed": 1.0, "fastsnap_operations_unsettled": 0.0,
                            "fastsnap_flatten_backlog": 0.0}
    print(f"\nstatus test: host A's lease seen lapsed {lapsed_after:.1f}s after the kill (waited {waited:.1f}s for "
          f"it once B's snapshot was held); whole test {time.monotonic() - t0:.1f}s")
