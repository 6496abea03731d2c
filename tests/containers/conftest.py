"""Container-only fault tests: they run with FASTSNAP_TEST_MODE=containers (or --stack=containers), on the stack
of tests/integration/conftest.py (one per session), and are skipped on the native stack."""

from __future__ import annotations

import pytest

from tests.integration.conftest import bases, disks, make_disk, pytest_terminal_summary, stack, stack_mode

__all__ = ["bases", "disks", "make_disk", "pytest_terminal_summary", "stack"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if stack_mode() == "containers":
        return
    skip = pytest.mark.skip(reason="container-only test: FASTSNAP_TEST_MODE=containers or --stack=containers")
    for item in items:
        if "tests/containers/" in item.nodeid:
            item.add_marker(skip)
