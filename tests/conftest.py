"""Options for the whole suite: `--stack=native|containers` selects the stack of the integration tests (the same
as FASTSNAP_TEST_MODE; see tests/integration/conftest.py)."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stack", choices=("native", "containers"), default=None,
                     help="stack of the integration tests: native (ceph-test-env/up, default) or containers "
                          "(docker-compose.yml, started and stopped by the session); default $FASTSNAP_TEST_MODE")


def pytest_configure(config: pytest.Config) -> None:
    mode = config.getoption("--stack")
    if mode:
        os.environ["FASTSNAP_TEST_MODE"] = mode


STACK_DIRS = ("integration", "containers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration and tests/containers needs the real stack: mark it ``stack`` (a
    ``pytestmark`` in a conftest would not apply), so that ``-m "not stack"`` selects the pure-logic tests."""
    for item in items:
        if item.path.parent.name in STACK_DIRS or item.path.parent.parent.name in STACK_DIRS:
            item.add_marker(pytest.mark.stack)
