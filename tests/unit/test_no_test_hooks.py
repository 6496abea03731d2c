"""Fault-injection hooks are reachable only from tests: no fastsnap module reads a test variable."""

from __future__ import annotations

from pathlib import Path

from fastsnap import workflow as wf

PACKAGE = Path(__file__).resolve().parents[2] / "fastsnap"


def test_no_module_reads_test_variables() -> None:
    readers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "FASTSNAP_TEST_" in p.read_text()]
    assert readers == []


def test_crash_points_do_nothing_without_a_hook() -> None:
    assert wf.CRASH_HOOK is None
    for point in ("reserved", "image", "clone:after", "upload:mid"):
        wf.crash_point(point)  # returns: no hook, no crash
    progress = object()
    assert wf.progress_hook(progress) is progress  # type: ignore[arg-type]
