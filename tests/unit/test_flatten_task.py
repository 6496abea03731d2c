"""Only a task the mgr accepted counts as queued (issue 11, point 5)."""

from __future__ import annotations

import pytest

from fastsnap.errors import CephError
from fastsnap.flatten import accepted_task
from fastsnap.location import ImageSpec

SPEC = ImageSpec("images", "x")


def test_accepted() -> None:
    out = '{"sequence": 3, "id": "9f1c", "message": "Flattening image images/x", "refs": {}}'
    assert accepted_task(SPEC, 0, out, "", 10) == "9f1c"


@pytest.mark.parametrize(("code", "out", "err", "reason"), [
    (124, "", "", "did not answer the flatten task for images/x within 10s"),
    (1, "", "Error EACCES: access denied", "EACCES"),
    (22, "", "", "exit 22"),
    (0, "", "", "without a task id"),
    (0, "not json", "", "without a task id"),
    (0, '{"message": "no id"}', "", "without a task id"),
])
def test_not_accepted(code: int, out: str, err: str, reason: str) -> None:
    with pytest.raises(CephError, match=reason):
        accepted_task(SPEC, code, out, err, 10)
