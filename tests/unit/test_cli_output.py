"""The CLI's output (issue 27 point 3): each command's result drawn by cliff's formatters (-f, -c), --json as
before, the options' errors (exit 2), and the tqdm progress bar only on a terminal. Pure: fixed results, no
service; the integration tests run the same commands against the stack."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
from typing import Any

import pytest
import yaml

from fastsnap import cli
from fastsnap import cli_output as out
from fastsnap.journal import FlattenInfo
from fastsnap.parked import ParkedDisk
from fastsnap.result import FlattenRow, RecoverResult, SnapshotResult, StoreView
from fastsnap.states import FlattenPolicy, FlattenState, ParkedState, RecoverAction
from fastsnap.status import ClusterStatus, HostStatus, OperationView

STORES = [StoreView("fast", "rbd", False, "cluster A", "images", "fsid-a", True),
          StoreView("cheap", "file", True, "files", None, None, False)]
ACTIONS = [RecoverResult("op-1", "vms/a", RecoverAction.FAILED, [], "Glance said no"),
           RecoverResult("op-2", "vms/b", RecoverAction.ROLLED_BACK, ["removed images/op-2", "deleted image op-2"])]
PARKED = [ParkedDisk("vms", "1f2e", "u1_disk", "2026-12-03 10:00:00", 1, ["images/op-3"], ParkedState.WAITING)]
FLATTENS = [FlattenRow("op-3", "vms/u1_disk", "images",
                       FlattenInfo(FlattenPolicy.BACKGROUND, "parent chain", 1, FlattenState.QUEUED, "task-9"))]
AT = 1764756000.0
STATUS = ClusterStatus(
    at=AT, hosts=[HostStatus("host-a", True, AT - 5, 1, 0), HostStatus("host-b", False, None, 0, 1)],
    in_flight=[OperationView("op-4", "host-a", "vms/c", "clone", "plan", 3.2, 0.4)],
    unsettled=[OperationView("op-5", "host-b", "vms/d", "stream", "upload", 100.0, 90.0)],
    flatten_backlog=1, parked_disks=PARKED)
RESULT = SnapshotResult(
    image_id="op-6", path="clone", store="fast", pool="images", location="rbd://fsid-a/images/op-6/snap",
    reason="the disk's cluster", seconds=0.41, size=1 << 30, bytes_streamed=0, bytes_read=0, disk="vms/e",
    flatten={"policy": FlattenPolicy.BACKGROUND, "why": "parent chain", "state": FlattenState.QUEUED},
    acting_as={"mode": "operator"}, rotated=["old-1", "old-2"])


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables are fitted to a terminal's width when stdout is one (pytest -s): wide enough here to fit whole."""
    monkeypatch.setenv("CLIFF_MAX_TERM_WIDTH", "1000")


def _args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def _draw(output: out.Output, *argv: str) -> str:
    buf = io.StringIO()
    out.emit(output, _args(*argv), buf)
    return buf.getvalue()


def _plain(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


def _cells(drawn: str) -> list[list[str]]:
    """The rows of the tables in ``drawn`` (header rows too), each a list of its cells' text."""
    return [[c.strip() for c in ln.split("|")[1:-1]] for ln in drawn.splitlines() if ln.startswith("|")]


# -- listings: stores, recover -------------------------------------------------------------------------------


def test_stores_in_every_list_format() -> None:
    rows = [_plain(s.to_dict()) for s in STORES]
    assert json.loads(_draw(cli.stores_output(STORES), "stores", "-f", "json")) == rows
    assert yaml.safe_load(_draw(cli.stores_output(STORES), "stores", "-f", "yaml")) == rows
    assert _draw(cli.stores_output(STORES), "stores", "-f", "value", "-c", "clone", "-c", "id") == \
        "fast True\ncheap False\n"  # the command's column order, as cliff keeps it
    table = list(csv.reader(io.StringIO(_draw(cli.stores_output(STORES), "stores", "-f", "csv", "-c", "id",
                                              "-c", "pool"))))
    assert table == [["id", "pool"], ["fast", "images"], ["cheap", ""]]
    assert _cells(_draw(cli.stores_output(STORES), "stores")) == [
        list(cli.STORE_COLUMNS),
        ["fast", "rbd", "False", "images", "fsid-a", "True", "cluster A"],
        ["cheap", "file", "True", "-", "-", "False", "files"]]  # an absent value reads "-"


def test_recover_listing_says_nothing_to_recover_or_draws_the_actions() -> None:
    assert _draw(cli.recover_output([]), "recover") == "nothing to recover\n"
    assert _draw(cli.recover_output([]), "recover", "--print-empty").startswith("+-------+")
    assert json.loads(_draw(cli.recover_output([]), "recover", "-f", "json")) == []
    assert _cells(_draw(cli.recover_output(ACTIONS), "recover"))[1:] == [
        ["op-1", "vms/a", "failed", "-", "Glance said no"],
        ["op-2", "vms/b", "rolled_back", "removed images/op-2, deleted image op-2", "-"]]
    rows = json.loads(_draw(cli.recover_output(ACTIONS), "recover", "-f", "json", "--noindent"))
    assert rows[0] == {"op_id": "op-1", "disk": "vms/a", "action": "failed", "did": None, "error": "Glance said no"}
    # a list in -f value is JSON text (not Python's repr)
    assert _draw(cli.recover_output(ACTIONS), "recover", "-f", "value", "-c", "did").splitlines()[1] == \
        '["removed images/op-2", "deleted image op-2"]'


# -- records: snapshot, status, flatten-status -------------------------------------------------------------------


def test_snapshot_record_has_every_field_of_the_json() -> None:
    assert json.loads(_draw(cli.snapshot_output(RESULT), "snapshot", "--disk", "p/i", "--name", "n", "-f",
                            "json")) == _plain(RESULT.to_dict())
    assert _draw(cli.snapshot_output(RESULT), "snapshot", "--disk", "p/i", "--name", "n", "-f", "value",
                 "-c", "path", "-c", "image_id") == "op-6\nclone\n"
    assert _draw(cli.snapshot_output(RESULT), "snapshot", "--disk", "p/i", "--name", "n", "-f", "shell",
                 "-c", "store", "--prefix", "snap_") == 'snap_store="fast"\n'
    fields = dict(_cells(_draw(cli.snapshot_output(RESULT), "snapshot", "--disk", "p/i", "--name", "n"))[1:])
    assert list(fields) == list(cli.SNAPSHOT_FIELDS)
    assert fields["flatten"] == "policy=background, state=queued, why=parent chain"
    assert fields["rotated"] == "old-1, old-2" and fields["seconds"] == "0.41" and fields["transfer"] == ""


def test_status_record_json_is_the_json_of_the_api_and_its_lists_are_tables() -> None:
    argv = ("status",)
    assert json.loads(_draw(cli.status_output(STATUS), *argv, "-f", "json")) == _plain(STATUS.to_dict())
    assert yaml.safe_load(_draw(cli.status_output(STATUS), *argv, "-f", "yaml")) == _plain(STATUS.to_dict())
    assert _draw(cli.status_output(STATUS), *argv, "-f", "value", "-c", "flatten_backlog", "-c", "lapsed_hosts") \
        == '["host-b"]\n1\n'
    assert json.loads(_draw(cli.status_output(STATUS), *argv, "-f", "json", "-c", "unsettled")) == \
        {"unsettled": [_plain(STATUS.unsettled[0].to_dict())]}
    drawn = _draw(cli.status_output(STATUS), *argv)
    local = datetime.datetime.fromtimestamp(AT, datetime.UTC).isoformat(timespec="seconds")
    rows = _cells(drawn)
    assert rows[:6] == [["Field", "Value"], ["at", local], ["in_flight", "host-a=1"], ["lapsed_hosts", "host-b"],
                        ["flatten_backlog", "1"], ["parked_count", "1"]]  # times in ISO 8601 (UTC), for people
    titles = [ln for ln in drawn.splitlines() if ln.endswith(":")]
    assert titles == ["hosts (alive: its lease lives):", "operations in flight:",
                      "unsettled operations (their host's lease lapsed; 'fastsnap recover' on any host settles "
                      "them):", f"{cli.PARKED_TITLE}:"]
    assert ["host-b", "False", "-", "0", "1"] in rows
    assert ["op-5", "host-b", "vms/d", "stream", "upload", "100.0", "90.0"] in rows
    # -c with only some of the lists: only those, titled
    only = _draw(cli.status_output(STATUS), *argv, "-c", "parked_disks")
    assert only.splitlines()[0] == f"{cli.PARKED_TITLE}:"
    assert _cells(only) == [list(cli.PARKED_COLUMNS),
                            ["vms", "1f2e", "u1_disk", "2026-12-03 10:00:00", "1", "waiting", "images/op-3", "-"]]


def test_flatten_status_record_is_the_json_shape_and_empty_lists_say_none() -> None:
    doc = {"flattens": [r.to_dict() for r in FLATTENS], "parked_disks": [p.to_dict() for p in PARKED]}
    assert json.loads(_draw(cli.flatten_status_output(FLATTENS, PARKED), "flatten-status", "-f", "json")) == \
        _plain(doc)
    drawn = _draw(cli.flatten_status_output(FLATTENS, []), "flatten-status")
    assert _cells(drawn) == [list(cli.FLATTEN_COLUMNS),
                             ["op-3", "vms/u1_disk", "images", "background", "queued", "task-9", "1", "parent chain",
                              "-"]]
    assert drawn.endswith(f"{cli.PARKED_TITLE}:\nnone\n")


def test_the_columns_are_the_api_fields() -> None:
    """-c names what --json has: a field added to a result shows up in the tables or this test says so."""
    assert set(cli.STORE_COLUMNS) == {f.name for f in dataclasses.fields(StoreView)}
    assert set(cli.PARKED_COLUMNS) == {f.name for f in dataclasses.fields(ParkedDisk)}
    assert set(cli.HOST_COLUMNS) == {f.name for f in dataclasses.fields(HostStatus)}
    assert set(cli.OPERATION_COLUMNS) == {f.name for f in dataclasses.fields(OperationView)}
    assert set(cli.FLATTEN_COLUMNS) == {"image_id", "disk", "pool"} | {f.name for f in dataclasses.fields(FlattenInfo)}
    assert set(cli.RECOVER_COLUMNS) == {f.name for f in dataclasses.fields(RecoverResult)}
    assert tuple(STATUS.to_dict()) == cli.STATUS_FIELDS
    assert tuple(RESULT.to_dict()) == cli.SNAPSHOT_FIELDS


# -- options ---------------------------------------------------------------------------------------------------


def test_json_is_unchanged_compact_and_sorted(capsys: pytest.CaptureFixture[str]) -> None:
    cli._print(_args("stores", "--json"), [s.to_dict() for s in STORES], lambda: cli.stores_output(STORES))
    assert capsys.readouterr().out == json.dumps([s.to_dict() for s in STORES], sort_keys=True) + "\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["stores", "-c", "nope"], "argument -c/--column: invalid choice: 'nope'"),
    (["status", "-f", "csv"], "argument -f/--format/--output-format: invalid choice: 'csv'"),
    (["recover", "--json", "-f", "table"], "argument -f/--format/--output-format: not allowed with argument --json"),
    (["snapshot", "--disk", "p/i", "--name", "n", "--json", "--output-format", "value"],
     "argument -f/--output-format: not allowed with argument --json"),
    (["stores", "--json", "-c", "id"], "stores: argument -c/--column: not allowed with argument --json"),
])
def test_bad_output_options_exit_2_before_anything_runs(argv: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr()
    assert message in err.err and err.out == ""


def test_snapshot_format_is_the_disk_format_and_f_the_output_format() -> None:
    """``snapshot --format`` was the image's disk format before -f came: it stays that; -f / --output-format
    is the output's there (on the other commands -f / --format / --output-format)."""
    a = _args("snapshot", "--disk", "p/i", "--name", "n", "--format", "qcow2", "-f", "json")
    assert (a.format, a.formatter) == ("qcow2", "json")
    a = _args("snapshot", "--disk", "p/i", "--name", "n", "--output-format", "value")
    assert (a.format, a.formatter) == (None, "value")
    assert _args("stores", "--format", "csv").formatter == _args("stores", "--output-format", "csv").formatter == "csv"


def test_progress_bar_only_for_the_default_output_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert out.human_output(_args("stores")) and out.human_output(_args("stores", "-c", "id"))
    assert not out.human_output(_args("stores", "--json")) and not out.human_output(_args("stores", "-f", "table"))
    with out.progress_bar(False) as progress:
        assert progress is None

    class Terminal(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr("sys.stderr", Terminal(False))
    with out.progress_bar(True) as progress:
        assert progress is None  # not a terminal: no bar
    term = Terminal(True)
    monkeypatch.setattr("sys.stderr", term)
    with out.progress_bar(True) as progress:
        assert progress is not None
        for done in (0, 1 << 20, 3 << 20, 4 << 20):
            progress(done, 4 << 20)
    drawn = term.getvalue()
    assert "100%" in drawn and "4.00M/4.00M" in drawn and drawn.endswith("\n"), drawn  # closed: a last newline
