"""The cluster-wide status (issue 23 point 5), built from plain inputs: operations in flight by host, hosts whose
lease lapsed, unsettled operations (waiting for a recover), the flatten backlog and the parked disks; and the
gauges the service sets from it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import generate_latest

from fastsnap import status as st
from fastsnap.journal import FlattenInfo, Operation
from fastsnap.parked import ParkedDisk
from fastsnap.rados_journal import HostView
from fastsnap.result import FlattenRow
from fastsnap.service import metrics as m
from fastsnap.states import FlattenPolicy, FlattenState, OpState, ParkedState

NOW = 10_000.0


def _op(op_id: str, host: str, state: OpState = OpState.RUNNING, created: float = NOW - 60,
        updated: float | None = None, steps: tuple[str, ...] = ("image", "disk_snap"), path: str = "clone",
        disk: str | None = None) -> Operation:
    return Operation(op_id=op_id, disk=disk or f"vms/{op_id}_disk", path=path, store="fast", pool="images",
                     fsid="f", image_created=True, delete_image_on_error=True, state=state, steps=list(steps),
                     host=host, created_at=created, updated_at=created if updated is None else updated)


def _flatten(image_id: str, state: FlattenState | None) -> FlattenRow:
    return FlattenRow(image_id, f"vms/{image_id}_disk", "images",
                      FlattenInfo(FlattenPolicy.BACKGROUND, "policy background", 1, state))


def _parked(image_id: str, state: ParkedState = ParkedState.WAITING) -> ParkedDisk:
    return ParkedDisk(pool="vms", id=image_id, name=f"{image_id}_disk", parked_at="2024-01-01 00:00:00",
                      snapshots=1, dependents=[f"images/{image_id}"], state=state)


def _summary(s: st.ClusterStatus) -> dict[str, Any]:
    return {"in_flight": s.in_flight_by_host, "in_flight_ops": [(o.op_id, o.host) for o in s.in_flight],
            "lapsed": [h.host for h in s.lapsed_hosts], "unsettled": [(o.op_id, o.host) for o in s.unsettled]}


CASES: dict[str, tuple[list[Operation], list[HostView], dict[str, Any]]] = {
    "empty cluster": ([], [], {"in_flight": {}, "in_flight_ops": [], "lapsed": [], "unsettled": []}),
    "in flight by host, finished ones left out": (
        [_op("a1", "alpha"), _op("a2", "alpha", created=NOW - 5), _op("b1", "beta"),
         _op("done", "beta", state=OpState.DONE), _op("undone", "alpha", state=OpState.ROLLED_BACK)],
        [HostView("alpha", True, NOW - 100), HostView("beta", True, NOW - 50), HostView("gamma", True, NOW - 1)],
        {"in_flight": {"alpha": 2, "beta": 1, "gamma": 0},
         "in_flight_ops": [("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")], "lapsed": [], "unsettled": []}),
    "a lapsed host's running operations are unsettled, oldest first": (
        [_op("a1", "alpha"), _op("l1", "lost", created=NOW - 30), _op("l2", "lost", created=NOW - 300),
         _op("l-done", "lost", state=OpState.DONE)],
        [HostView("alpha", True, NOW - 10), HostView("lost", False, NOW - 400)],
        {"in_flight": {"alpha": 1}, "in_flight_ops": [("a1", "alpha")], "lapsed": ["lost"],
         "unsettled": [("l2", "lost"), ("l1", "lost")]}),
    "idle hosts with a lapsed lease are lapsed, with nothing unsettled": (
        [_op("x", "alpha", state=OpState.DONE)],
        [HostView("alpha", False, NOW - 10), HostView("beta", False, NOW - 20)],
        {"in_flight": {}, "in_flight_ops": [], "lapsed": ["alpha", "beta"], "unsettled": []}),
    "a host of running operations that no lease record names is lapsed": (
        [_op("m1", "migrated-host"), _op("b1", "beta")],
        [HostView("beta", True, NOW - 10)],
        {"in_flight": {"beta": 1}, "in_flight_ops": [("b1", "beta")], "lapsed": ["migrated-host"],
         "unsettled": [("m1", "migrated-host")]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_operations_and_hosts(case: str) -> None:
    ops, hosts, want = CASES[case]
    got = st.build(ops, hosts, [], [], NOW)
    assert _summary(got) == want
    assert got.at == NOW and got.flatten_backlog == 0 and got.parked_disks == []
    # every running operation is counted exactly once, on its host's row
    running = [o for o in ops if o.state == OpState.RUNNING]
    assert sum(h.in_flight + h.unsettled for h in got.hosts) == len(running)
    assert len(got.in_flight) + len(got.unsettled) == len(running)


def test_host_rows() -> None:
    got = st.build([_op("l1", "lost"), _op("a1", "alpha"), _op("n1", "nameless")],
                   [HostView("lost", False, NOW - 400), HostView("alpha", True, NOW - 10)], [], [], NOW)
    assert [h.to_dict() for h in got.hosts] == [
        {"host": "alpha", "alive": True, "seen_at": NOW - 10, "in_flight": 1, "unsettled": 0},
        {"host": "lost", "alive": False, "seen_at": NOW - 400, "in_flight": 0, "unsettled": 1},
        {"host": "nameless", "alive": False, "seen_at": None, "in_flight": 0, "unsettled": 1},
    ]


def test_unsettled_operation_details() -> None:
    op = _op("l1", "lost", created=NOW - 125.04, updated=NOW - 20, steps=("image", "disk_snap", "clone"),
             disk="vms/server_disk")
    got = st.build([op], [HostView("lost", False, NOW - 400)], [], [], NOW)
    assert [u.to_dict() for u in got.unsettled] == [
        {"op_id": "l1", "host": "lost", "disk": "vms/server_disk", "path": "clone", "step": "clone",
         "age": 125.0, "idle": 20.0}]
    # an operation reserved but with no step yet; a clock behind the record's never gives a negative age
    fresh = st.build([_op("f", "lost", created=NOW + 3, steps=())], [HostView("lost", False, NOW)], [], [], NOW)
    assert fresh.unsettled[0].step is None and fresh.unsettled[0].age == 0.0


def test_flatten_backlog_and_parked_disks() -> None:
    rows = [_flatten("q", FlattenState.QUEUED), _flatten("l", FlattenState.LOCAL), _flatten("d", FlattenState.DONE),
            _flatten("g", FlattenState.GONE), _flatten("n", None)]
    parked = [_parked("p1"), _parked("p2", ParkedState.BLOCKED), _parked("p3", ParkedState.REMOVED)]
    got = st.build([], [], rows, parked, NOW)
    assert got.flatten_backlog == 2  # queued and local: the mgr's or fastsnap's to do
    assert got.parked_count == 2 and [p.id for p in got.parked_disks] == ["p1", "p2", "p3"]
    assert st.flatten_backlog(rows) == 2 and st.parked_count(parked) == 2


def test_to_dict_is_json() -> None:
    got = st.build([_op("a1", "alpha"), _op("l1", "lost")],
                   [HostView("alpha", True, NOW - 10), HostView("lost", False, NOW - 99)],
                   [_flatten("q", FlattenState.QUEUED)], [_parked("p1")], NOW)
    d = json.loads(json.dumps(got.to_dict()))
    assert d["in_flight"] == {"alpha": 1}
    assert [o["op_id"] for o in d["in_flight_operations"]] == ["a1"]
    assert d["lapsed_hosts"] == ["lost"]
    assert [(o["op_id"], o["host"], o["age"]) for o in d["unsettled"]] == [("l1", "lost", 60.0)]
    assert d["flatten_backlog"] == 1 and d["parked_count"] == 1
    assert d["parked_disks"][0]["id"] == "p1" and d["parked_disks"][0]["state"] == "waiting"
    assert set(d) == {"at", "hosts", "in_flight", "in_flight_operations", "lapsed_hosts", "unsettled",
                      "flatten_backlog", "parked_count", "parked_disks"}


def _gauges() -> dict[str, float]:
    out = {}
    for line in generate_latest(m.REGISTRY).decode().splitlines():
        if line.startswith(("fastsnap_operations_", "fastsnap_hosts_lapsed", "fastsnap_flatten_backlog",
                            "fastsnap_parked_disks")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_gauges_follow_the_status() -> None:
    first = st.build([_op("a1", "alpha"), _op("a2", "alpha"), _op("l1", "lost")],
                     [HostView("alpha", True, NOW), HostView("beta", True, NOW), HostView("lost", False, NOW)],
                     [_flatten("q", FlattenState.QUEUED)], [_parked("p1"), _parked("p2")], NOW)
    m.publish(first)
    assert _gauges() == {'fastsnap_operations_in_flight{host="alpha"}': 2.0,
                         'fastsnap_operations_in_flight{host="beta"}': 0.0,
                         "fastsnap_hosts_lapsed": 1.0, "fastsnap_operations_unsettled": 1.0,
                         "fastsnap_flatten_backlog": 1.0, "fastsnap_parked_disks": 2.0}
    # the journal's part alone (what a scrape refreshes): a host gone from the view loses its series, and the
    # flatten backlog and parked disks keep what the last whole status said
    m.publish_operations(st.build([], [HostView("beta", True, NOW)], [], [], NOW))
    assert _gauges() == {'fastsnap_operations_in_flight{host="beta"}': 0.0, "fastsnap_hosts_lapsed": 0.0,
                         "fastsnap_operations_unsettled": 0.0, "fastsnap_flatten_backlog": 1.0,
                         "fastsnap_parked_disks": 2.0}
