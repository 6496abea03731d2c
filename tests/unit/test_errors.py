"""The error table (:mod:`fastsnap.errors`): each class's row, as its header declares it."""

from __future__ import annotations

import pytest

from fastsnap import errors


def _classes() -> list[type[errors.FastsnapError]]:
    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.FastsnapError)]


def test_every_kind_a_class_declares_is_its_own() -> None:
    declared: dict[str, str] = {}
    for cls in _classes():
        if "kind" in vars(cls):
            assert cls.kind not in declared, f"{cls.__name__} reuses {declared.get(cls.kind)}'s kind {cls.kind}"
            declared[cls.kind] = cls.__name__
    assert len(declared) == len(_classes()) - 1  # GlanceUnavailable is a GlanceError to every caller


@pytest.mark.parametrize(("cls", "row"), [
    (errors.FastsnapError, ("error", 500, 1)),
    (errors.BadRequest, ("bad_request", 400, 2)),
    (errors.Reserved, ("reserved", 409, 2)),          # inherits Conflict's status, BadRequest's exit code
    (errors.CephNotFound, ("ceph_not_found", 404, 1)),
    (errors.GlanceUnavailable, ("glance", 503, 1)),  # names nothing: all inherited
    (errors.LeaseLapsed, ("lease", 503, 1)),
    (errors.Busy, ("busy", 429, 1)),
])
def test_a_header_names_what_differs_and_inherits_the_rest(cls: type[errors.FastsnapError],
                                                            row: tuple[str, int, int]) -> None:
    assert (cls.kind, cls.http_status, cls.exit_code) == row
    assert (cls("x").kind, errors.exit_code(cls("x"))) == (row[0], row[2])


def test_the_http_status_of_a_server_side_failure_depends_on_acceptance() -> None:
    assert errors.http_status(errors.CephError("x"), accepted=False) == 503
    assert errors.http_status(errors.CephError("x"), accepted=True) == 500
    assert errors.http_status(errors.Busy("x"), accepted=True) == 429
    assert errors.http_status(KeyError("x"), accepted=False) == 503
