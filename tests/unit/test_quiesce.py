"""quiesce.decide: whether to freeze the guest, from the request and the base image's properties (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from fastsnap.errors import QuiesceRequired
from fastsnap.quiesce import Decision, decide

AGENT = {"hw_qemu_guest_agent": "yes"}
REQUIRE = {"hw_qemu_guest_agent": "yes", "os_require_quiesce": "yes"}


@pytest.mark.parametrize("domain,props,require,want", [
    (None, None, None, Decision(False, False, None, "no libvirt domain given")),
    (None, AGENT, None, Decision(False, False, None, "no libvirt domain given")),
    ("i-1", None, None, Decision(True, False, "i-1", "")),                    # no base image to ask: try
    ("i-1", None, True, Decision(True, True, "i-1", "")),
    ("i-1", AGENT, None, Decision(True, False, "i-1", "")),
    ("i-1", {"hw_qemu_guest_agent": "True"}, None, Decision(True, False, "i-1", "")),
    ("i-1", REQUIRE, None, Decision(True, True, "i-1", "")),
    ("i-1", REQUIRE, False, Decision(True, False, "i-1", "")),               # the request overrides the image
    ("i-1", {}, None, Decision(False, False, "i-1", "the image does not have hw_qemu_guest_agent=yes")),
    ("i-1", {"hw_qemu_guest_agent": "no"}, None,
     Decision(False, False, "i-1", "the image does not have hw_qemu_guest_agent=yes")),
])
def test_decide(domain: str | None, props: dict[str, Any] | None, require: bool | None, want: Decision) -> None:
    assert decide(domain, props, require) == want


@pytest.mark.parametrize("domain,props,require,match", [
    (None, REQUIRE, None, "no libvirt domain was given"),
    (None, None, True, "no libvirt domain was given"),
    ("i-1", {"os_require_quiesce": "yes"}, None, "hw_qemu_guest_agent=yes"),
    ("i-1", {}, True, "hw_qemu_guest_agent=yes"),
])
def test_required_but_impossible(domain: str | None, props: dict[str, Any] | None, require: bool | None,
                                 match: str) -> None:
    with pytest.raises(QuiesceRequired, match=match):
        decide(domain, props, require)
