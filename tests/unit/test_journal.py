"""The journal (real SQLite files under tmp_path): the reservation of an image id, step records, the one schema
for operations and jobs (creation, migration of a version-1 database, several processes opening it at once), and
the atomic job insert that keeps one job per (project, key) and per image id."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from fastsnap import journal as jr
from fastsnap import rados_journal as rj
from fastsnap.errors import Reserved
from fastsnap.states import JOB_FINAL_FAILED, REUSABLE, FlattenPolicy, FlattenState, JobState, OpState


def _old_record(op_id: str = "img-1", state: str = "done", steps: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An operation record as fastsnap wrote it before the typed fields: ``json.dumps(op.__dict__)`` with the
    free-form ``extra`` dict."""
    return {"op_id": op_id, "disk": "vms/d", "path": "clone", "store": "fast", "pool": "images", "fsid": "f",
            "image_created": True, "delete_image_on_error": True, "state": state, "steps": steps or [],
            "error": None, "pid": 4242, "host": "compute-1", "created_at": 1.0, "updated_at": 2.0,
            "extra": extra or {}}


def _old_database(state: Path) -> None:
    """A journal as fastsnap wrote it before version 2: operations, and the service's own jobs table."""
    state.mkdir()
    db = sqlite3.connect(state / "journal.sqlite", isolation_level=None)
    db.executescript("""
        create table operations (op_id text primary key, state text not null, record text not null,
                                 updated_at real not null);
        create table jobs (id text primary key, key text unique, state text not null, record text not null,
                           created_at real not null);
    """)
    db.execute("insert into operations values (?, ?, ?, ?)", ("img-1", "done", json.dumps(_old_record()), 1.0))
    old_job = {"id": "job-1", "key": "k", "request": {"disk": "vms/d", "name": "n"}, "state": "done",
               "image_id": "img-1", "path": "clone", "store": "fast", "reason": "r", "bytes_done": 0,
               "bytes_total": 0, "result": None, "error": None, "project_id": "p1", "request_id": None,
               "created_at": 1.0, "updated_at": 1.0}
    db.execute("insert into jobs values (?, ?, ?, ?, ?)", ("job-1", "k", "done", json.dumps(old_job), 1.0))
    db.close()


def test_new_database_has_the_current_schema(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    db = sqlite3.connect(j.path)
    assert db.execute("pragma user_version").fetchone()[0] == jr.SCHEMA_VERSION
    tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    assert tables == {"operations", "jobs"}


def test_version_1_database_is_migrated_with_its_jobs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _old_database(state)
    j = jr.Journal(str(state))
    assert j.get("img-1") is not None and j.get("img-1").state == OpState.DONE  # type: ignore[union-attr]
    job = j.get_job("job-1")
    assert job is not None and job.project_id == "p1" and job.image_id == "img-1"
    assert j.job_by_key("p1", "k") is not None
    assert j.job_by_key("p2", "k") is None  # keys are per project now
    assert j.job_for_image("img-1") is not None
    jr.Journal(str(state))  # opening again is a no-op
    db = sqlite3.connect(j.path)
    assert db.execute("pragma user_version").fetchone()[0] == jr.SCHEMA_VERSION
    assert db.execute("select count(*) from jobs").fetchone()[0] == 1


def test_keys_are_per_project_and_image_ids_are_global(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    a = j.insert_job(jr.Job(id="a", key="k", request={}, project_id="p1"))
    assert a.id == "a"
    assert j.insert_job(jr.Job(id="b", key="k", request={}, project_id="p1")).id == "a"
    assert j.insert_job(jr.Job(id="c", key="k", request={}, project_id="p2")).id == "c"
    img = j.insert_job(jr.Job(id="d", key=None, request={}, project_id="p1", image_id="X"))
    assert img.id == "d"
    assert j.insert_job(jr.Job(id="e", key="other", request={}, project_id="p1", image_id="X")).id == "d"
    img.state = JobState.FAILED  # a failed job leaves its image id free again
    j.save_job(img)
    assert j.insert_job(jr.Job(id="f", key=None, request={}, project_id="p1", image_id="X")).id == "f"
    assert {x.id for x in j.list_jobs(project="p1", all_projects=False)} == {"a", "d", "f"}
    assert {x.id for x in j.list_jobs()} == {"a", "c", "d", "f"}


def test_concurrent_inserts_of_one_key_keep_one_job(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    won: list[str] = []

    def insert(i: int) -> None:
        won.append(jr.Journal(str(tmp_path)).insert_job(jr.Job(id=f"j{i}", key="same", request={})).id)

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(won)) == 1 and len(won) == 16
    assert len(j.list_jobs()) == 1


# -- reservations and steps ----------------------------------------------------------------------------------

def _op(op_id: str = "img-1", disk: str = "vms/d", **kw: Any) -> jr.Operation:
    args: dict[str, Any] = {"path": "clone", "store": "fast", "pool": "images", "fsid": "f", "image_created": True,
                            "delete_image_on_error": True, **kw}
    return jr.Operation(op_id=op_id, disk=disk, **args)


def test_reserve_records_the_operation_whole(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    op = _op(flatten=jr.FlattenInfo(FlattenPolicy.BACKGROUND, "soft limit", 2), trust_id="t", size=1 << 30,
             acting_as={"mode": "user", "user_id": "u", "project_id": "p", "roles": ["member"]})
    j.reserve(op)
    got = jr.Journal(str(tmp_path)).get("img-1")  # another Journal object on the same file sees it
    assert got == op and got.state == OpState.RUNNING and got.steps == []


@pytest.mark.parametrize("held_state", [OpState.RUNNING, OpState.DONE])
def test_reserve_is_refused_while_the_id_is_running_or_done(tmp_path: Path, held_state: OpState) -> None:
    j = jr.Journal(str(tmp_path))
    first = _op()
    j.reserve(first)
    j.begin(first, "image")
    if held_state != OpState.RUNNING:
        j.finish(first, held_state)
    with pytest.raises(Reserved, match=f"image img-1 is reserved by an operation that is {held_state}"):
        jr.Journal(str(tmp_path)).reserve(_op(disk="vms/other"))
    assert j.get("img-1") == first  # the holder's record is untouched


@pytest.mark.parametrize("undone_state", REUSABLE)
def test_reserve_replaces_an_operation_that_was_undone(tmp_path: Path, undone_state: OpState) -> None:
    j = jr.Journal(str(tmp_path))
    first = _op()
    j.reserve(first)
    j.begin(first, "image")
    j.begin(first, "disk_snap")
    j.finish(first, undone_state, "boom")
    j.reserve(_op(disk="vms/other", path="stream"))
    got = j.get("img-1")
    assert got is not None
    assert (got.disk, got.path, got.state, got.steps, got.error) == ("vms/other", "stream", OpState.RUNNING, [], None)
    assert [o.op_id for o in j.list()] == ["img-1"]


def test_steps_are_recorded_once_in_order_and_durably(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    op = _op()
    j.reserve(op)
    for step in ("image", "disk_snap", "disk_snap", "clone"):
        j.begin(op, step)
    got = jr.Journal(str(tmp_path)).get("img-1")
    assert got is not None and got.steps == ["image", "disk_snap", "clone"]
    assert got.began("clone") and not got.began("location")
    j.finish(op, OpState.FAILED, "CephError: no space")
    got = j.get("img-1")
    assert got is not None and (got.state, got.error, got.steps) == (OpState.FAILED, "CephError: no space", op.steps)


def test_list_filters_by_state_oldest_first(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    ops = [_op(f"img-{i}") for i in range(4)]
    for op in ops:
        j.reserve(op)
    j.finish(ops[1], OpState.DONE)
    j.finish(ops[3], OpState.ROLLED_BACK)
    j.begin(ops[0], "image")  # saved last: now the newest
    assert [o.op_id for o in j.list(OpState.RUNNING)] == ["img-2", "img-0"]
    assert [o.op_id for o in j.list(OpState.DONE)] == ["img-1"]
    assert [o.op_id for o in j.list()] == ["img-2", "img-1", "img-3", "img-0"]
    assert j.get("nope") is None


def _reserve_in_child(state_dir: str, i: int, start: Any, results: Any) -> None:
    journal = jr.Journal(state_dir)  # a Journal object of its own, in a process of its own
    start.wait(10)
    try:
        journal.reserve(_op(disk=f"vms/d{i}"))
        results.put((i, "won"))
    except Reserved:
        results.put((i, "refused"))
    except Exception as exc:
        results.put((i, f"{type(exc).__name__}: {exc}"))


def test_concurrent_reservations_from_several_processes_let_one_win(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_reserve_in_child, args=(str(tmp_path), i, start, results)) for i in range(6)]
    for p in procs:
        p.start()
    start.set()
    outcome = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    winners = [i for i, r in outcome.items() if r == "won"]
    assert len(winners) == 1, outcome
    winner_disk = f"vms/d{winners[0]}"
    assert all(r == "refused" for i, r in outcome.items() if i != winners[0]), outcome
    got = jr.Journal(str(tmp_path)).get("img-1")
    assert got is not None and got.disk == winner_disk


# -- schema ----------------------------------------------------------------------------------------------------

def test_version_1_database_without_a_jobs_table_gets_one(tmp_path: Path) -> None:
    tmp_path.joinpath("state").mkdir()
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite", isolation_level=None)
    db.execute("create table operations (op_id text primary key, state text not null, record text not null, "
               "updated_at real not null)")
    record = _old_record(state="running", steps=["image"])
    db.execute("insert into operations values (?, ?, ?, ?)", ("img-1", "running", json.dumps(record), 1.0))
    db.close()
    j = jr.Journal(str(tmp_path / "state"))
    assert [o.op_id for o in j.list(OpState.RUNNING)] == ["img-1"]
    assert j.insert_job(jr.Job(id="a", key="k", request={}, image_id="img-1")).id == "a"


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None)
    db.execute(f"pragma user_version = {jr.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        jr.Journal(str(tmp_path))
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("pragma user_version").fetchone()[0] == jr.SCHEMA_VERSION + 1
    assert db.execute("select count(*) from sqlite_master").fetchone()[0] == 0


def _open_in_child(state_dir: str, start: Any, results: Any) -> None:
    start.wait(10)
    try:
        job = jr.Journal(state_dir).get_job("job-1")
        results.put("ok" if job is not None and job.project_id == "p1" else f"job: {job}")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_version_1_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _old_database(state)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_open_in_child, args=(str(state), start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    assert [results.get(timeout=60) for _ in procs] == ["ok"] * 4
    for p in procs:
        p.join(30)
    db = sqlite3.connect(state / "journal.sqlite")
    assert db.execute("pragma user_version").fetchone()[0] == jr.SCHEMA_VERSION
    assert db.execute("select count(*) from jobs").fetchone()[0] == 1
    assert db.execute("select count(*) from operations").fetchone()[0] == 1


# -- jobs ------------------------------------------------------------------------------------------------------

def test_job_for_image_skips_failed_and_cancelled_jobs(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    job = j.insert_job(jr.Job(id="a", key=None, request={}, image_id="X"))
    for state in JOB_FINAL_FAILED:
        job.state = state
        j.save_job(job)
        assert j.job_for_image("X") is None
    job.state = JobState.DONE
    j.save_job(job)
    found = j.job_for_image("X")
    assert found is not None and found.state == JobState.DONE
    assert [x.id for x in j.list_jobs(state=JobState.DONE)] == ["a"] and j.list_jobs(state=JobState.RUNNING) == []


def test_a_job_record_with_unknown_fields_still_loads(tmp_path: Path) -> None:
    job = jr.Job(id="a", key="k", request={"disk": "vms/d"}, project_id="p")
    record = json.loads(job.dump())
    record["added_by_a_newer_fastsnap"] = 1
    assert jr.Job.load(json.dumps(record)) == job


# -- the operation record (to_record / from_record) ----------------------------------------------------------

RESULT = {"image_id": "img-1", "path": "delta", "store": "fast", "pool": "images", "location": "rbd://f/images/img-1/snap",
          "reason": "delta from the base copy", "seconds": 1.5, "size": 1 << 30, "bytes_streamed": 10,
          "bytes_read": 20, "disk": "vms/d", "flatten": {}, "acting_as": {"mode": "operator"}, "already_done": False,
          "quiesced": True, "quiesce": {"reason": "asked"}, "rotated": [], "transfer": {"bytes_read": 20}}


def _full_op() -> jr.Operation:
    """An operation with every field set."""
    return _op(state=OpState.DONE, steps=["image", "disk_snap"], error="e", reason="delta from the base copy",
               acting_as={"mode": "user", "user_id": "u", "project_id": "p", "roles": ["member"]}, size=1 << 30,
               base_location="rbd://g/images/base/snap", check_bytes_read=4096, disk_id="10ab",
               flatten=jr.FlattenInfo(FlattenPolicy.BACKGROUND, "soft limit", 3, FlattenState.QUEUED, "t-1", None),
               quiesce=jr.QuiesceInfo("instance-1", "qemu:///system", False), location_api="v2.17",
               transfer={"size": 1 << 30, "bytes_read": 20, "bytes_written": 10}, trust_id="trust",
               trust_error="no", result=RESULT, chain="remote", previous_backup="prev",
               source_snap="fastsnap-backup-remote-prev", remote_snap_id=7)


def test_a_record_round_trips_through_json() -> None:
    op = _full_op()
    record = op.to_record()
    assert set(record) == {f for f in jr.Operation.__dataclass_fields__}
    text = json.dumps(record, sort_keys=True)  # JSON-safe
    assert jr.Operation.from_record(json.loads(text)) == op
    assert jr.Operation.from_record(record) == op
    assert json.loads(text)["flatten"] == {"policy": "background", "why": "soft limit", "depth": 3, "state": "queued",
                                           "task": "t-1"}
    assert json.loads(text)["quiesce"] == {"domain": "instance-1", "uri": "qemu:///system", "frozen": False}
    bare = _op()
    assert jr.Operation.from_record(json.loads(json.dumps(bare.to_record()))) == bare


def test_a_record_shares_nothing_mutable_with_its_operation() -> None:
    op = _full_op()
    record = op.to_record()
    record["steps"].append("x")
    record["acting_as"]["mode"] = "operator"
    record["result"]["flatten"]["x"] = 1
    record["flatten"]["state"] = "done"
    assert op.steps == ["image", "disk_snap"] and op.acting_as is not None and op.acting_as["mode"] == "user"
    assert op.result == RESULT and RESULT["flatten"] == {}
    assert op.flatten is not None and op.flatten.state is FlattenState.QUEUED
    again = jr.Operation.from_record(record)
    record["acting_as"]["mode"] = "user"
    assert again.acting_as is not None and again.acting_as["mode"] == "operator"


def test_an_old_record_with_extra_is_read_into_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    extra = {"reason": "delta from the base copy",
             "acting_as": {"mode": "user", "user_id": "u", "project_id": "p", "roles": ["member"]},
             "size": 1 << 30, "base_location": "rbd://g/images/base/snap", "check_bytes_read": 4096,
             "disk_id": "10ab",
             "flatten": {"policy": "background", "why": "soft limit", "depth": 3, "state": "queued", "task": "t-1"},
             "quiesce": {"domain": "instance-1", "uri": "qemu:///system", "frozen": False}, "location_api": "v2.17",
             "transfer": {"size": 1 << 30, "bytes_read": 20, "bytes_written": 10}, "trust_id": "trust",
             "trust_error": "no", "result": RESULT, "someones_key": 1}
    record = _old_record(steps=["image", "disk_snap"], extra=extra)
    record["error"] = "e"
    record["added_by_a_newer_fastsnap"] = {"x": 1}
    with caplog.at_level("WARNING", logger="fastsnap.journal"):
        op = jr.Operation.from_record(json.loads(json.dumps(record)))
    want = _full_op()
    want.pid, want.host, want.created_at, want.updated_at = 4242, "compute-1", 1.0, 2.0
    want.chain = want.previous_backup = want.source_snap = None  # newer than records with ``extra``
    want.remote_snap_id = None
    assert op == want
    assert "someones_key" in caplog.text and "added_by_a_newer_fastsnap" not in caplog.text
    assert "extra" not in op.to_record() and "someones_key" not in json.dumps(op.to_record())


def test_an_old_record_without_extra_keys_gets_the_defaults() -> None:
    op = jr.Operation.from_record(_old_record(state="running", extra={"flatten": {}}))
    assert (op.reason, op.acting_as, op.size, op.base_location, op.check_bytes_read, op.disk_id, op.flatten,
            op.quiesce, op.location_api, op.transfer, op.trust_id, op.trust_error, op.result) == (
        "", None, 0, None, 0, None, None, None, None, None, None, None, None)
    assert op.state is OpState.RUNNING


def test_a_record_without_a_required_field_is_refused() -> None:
    record = _old_record()
    del record["disk"]
    with pytest.raises(ValueError, match="journal record img-1: no disk"):
        jr.Operation.from_record(record)


def test_the_journal_reads_an_old_record_and_writes_it_back_typed(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    record = _old_record(state="running", steps=["image"], extra={"trust_id": "t", "disk_id": "10ab",
                                                                  "flatten": {"policy": "never", "why": "w"}})
    db = sqlite3.connect(j.path, isolation_level=None)
    db.execute("insert into operations values (?, ?, ?, ?)", ("img-1", "running", json.dumps(record), 1.0))
    op = j.get("img-1")
    assert op is not None and (op.trust_id, op.disk_id) == ("t", "10ab")
    assert op.flatten == jr.FlattenInfo(FlattenPolicy.NEVER, "w")
    assert [o.op_id for o in j.list(OpState.RUNNING)] == ["img-1"]
    op.trust_id = None
    j.save(op)
    stored = json.loads(db.execute("select record from operations where op_id = 'img-1'").fetchone()[0])
    assert "extra" not in stored and stored["trust_id"] is None and stored["disk_id"] == "10ab"
    assert j.get("img-1") == op


def test_a_directory_entry_carries_what_listing_needs_and_reads_back(tmp_path: Path) -> None:
    """The RADOS directory's entry (fastsnap.operation.Entry) of an operation: state, host, disk, path, the
    disk's id and the flatten state; the directory key is the op id, so the value leaves it out."""
    op = jr.Operation(op_id="img-1", disk="vms/d", path="clone", store="fast", pool="images", fsid="f",
                      image_created=True, delete_image_on_error=True, host="compute-7", disk_id="abc123",
                      flatten=jr.FlattenInfo(FlattenPolicy.BACKGROUND, "why", 2, FlattenState.QUEUED))
    entry = jr.Entry.of(op)
    raw = entry.to_dict()
    assert "op_id" not in raw and raw["state"] == "running" and raw["flatten"] == "queued"
    assert jr.Entry.from_dict("img-1", json.loads(json.dumps(raw))) == entry
    assert jr.Entry.from_dict("x", {}).state is OpState.RUNNING  # a bare entry: read its record
    j = jr.Journal(str(tmp_path))
    j.reserve(op)
    assert j.entries() == [jr.Entry.of(j.get("img-1"))]  # type: ignore[arg-type]


def test_a_sqlite_journal_has_nothing_to_migrate_into_itself(tmp_path: Path) -> None:
    j = jr.Journal(str(tmp_path))
    j.reserve(_op())
    assert j.migrate() == [] and [o.op_id for o in j.list()] == ["img-1"]


def test_the_rados_journals_small_records_keep_their_bytes() -> None:
    """fastsnap.hosts and fastsnap.migrated values are typed records now; their JSON text is what fastsnap wrote
    before (field order included), so an older fastsnap on another host reads them, and they read its."""
    host = rj.HostRecord(1700000000.25, 30, 4242)
    assert host.to_json() == '{"seen_at": 1700000000.25, "lease_seconds": 30, "pid": 4242}'
    assert rj.HostRecord.seen_at_of(host.to_json()) == 1700000000.25
    assert rj.HostRecord.seen_at_of("{}") == 0.0
    moved = rj.MigrationRecord(1700000001.5, ["a", "b"])
    assert moved.to_json() == '{"at": 1700000001.5, "operations": ["a", "b"]}'
    assert rj.MigrationRecord.from_json(moved.to_json()) == moved
