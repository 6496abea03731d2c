"""The stack's ``env.sh`` (written by ceph-test-env/lib/common.sh), read rather than sourced.

One reader for everyone: tests must not take these values from ``os.environ`` (CI does not source env.sh), and
the benchmarks and demos that run outside pytest read the same file the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "ceph-test-env/run"


def run_dir() -> Path:
    """The stack's run directory: ``FASTSNAP_TEST_RUN_DIR`` (a stack elsewhere, e.g. scripts/bench's) or
    ceph-test-env/run."""
    return Path(os.environ.get("FASTSNAP_TEST_RUN_DIR") or RUN)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read_env(path: Path | str | None = None) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines of an env.sh (default: the run directory's), a pair of quotes around a
    value removed; other lines (comments, ``PATH=...; export PATH``) are not the stack's values."""
    env: dict[str, str] = {}
    for line in Path(path or run_dir() / "env.sh").read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            k, _, v = line[len("export "):].partition("=")
            env[k] = _unquote(v)
    return env
