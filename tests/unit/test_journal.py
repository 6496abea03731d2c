"""The journal's one schema for operations and jobs: creation, migration of a version-1 database, and the
atomic job insert that keeps one job per (project, key) and per image id."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from fastsnap import journal as jr
from fastsnap.states import JobState, OpState


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
    op = jr.Operation(op_id="img-1", disk="vms/d", path="clone", store="fast", pool="images", fsid="f",
                      image_created=True, delete_image_on_error=True, state=OpState.DONE)
    db.execute("insert into operations values (?, ?, ?, ?)", ("img-1", "done", json.dumps(op.__dict__), 1.0))
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
