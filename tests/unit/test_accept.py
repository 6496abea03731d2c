"""Who a POST /v1/snapshots may snapshot as (``fastsnap.service.accept.caller_of``): the tenancy rules, pure. The
whole acceptance (idempotency, races, slots) runs against the real stack in tests/integration/test_service.py,
test_idempotency.py and test_tenancy.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from fastsnap.request import SnapshotRequest
from fastsnap.service.accept import Refused, Requester, Submission, caller_of

OPTS = SimpleNamespace(verify_trusted_callers=True, operator_roles=["admin"])
PLUGIN = object()  # keystonemiddleware's auth plugin, as the route finds it


def _sub(roles: set[str], body: dict[str, Any] | None = None) -> Submission:
    return Submission(SnapshotRequest(disk="vms/d", name="n"), body or {}, None, None,
                      Requester("p1", bool(roles & {"service", "admin"})), frozenset(roles), PLUGIN)


def test_a_member_snapshots_as_itself_with_the_ownership_check() -> None:
    who = caller_of(_sub({"member"}), False, OPTS)
    assert who.user_auth is PLUGIN and who.user_token is None and who.verify_owner


def test_a_member_cannot_pass_a_user_token() -> None:
    with pytest.raises(Refused) as err:
        caller_of(_sub({"member"}, {"user_token": "t"}), False, OPTS)
    assert err.value.code == 403 and "trusted service callers" in err.value.message


def test_a_trusted_caller_acts_for_the_user_whose_token_it_passes() -> None:
    who = caller_of(_sub({"service"}, {"user_token": "t"}), False, OPTS)
    assert who.user_token == "t" and who.verify_owner
    off = caller_of(_sub({"service"}, {"user_token": "t"}), False,
                    SimpleNamespace(verify_trusted_callers=False, operator_roles=["admin"]))
    assert not off.verify_owner


def test_operator_mode_needs_an_operator_role_or_the_socket() -> None:
    with pytest.raises(Refused) as err:
        caller_of(_sub({"service"}), False, OPTS)
    assert err.value.code == 403 and "operator_roles" in err.value.message
    assert not caller_of(_sub({"admin"}), False, OPTS).is_user
    assert not caller_of(_sub(set()), True, OPTS).is_user


def test_the_caller_never_shows_its_token() -> None:
    assert "secret" not in repr(caller_of(_sub({"service"}, {"user_token": "secret"}), False, OPTS))
