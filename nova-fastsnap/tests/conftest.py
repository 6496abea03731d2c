"""nova-fastsnap's tests against the real Nova, without services. Nova exists only in its own venv, so they run
with that venv's python (scripts/test does, once the stack's Nova part is up):

    .venv-nova/bin/python -m pytest nova-fastsnap/tests

They test the hook of this work tree, not the copy installed in that venv (``pip install ./nova-fastsnap``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parents[1] / "nova" / "virt"

try:
    import nova.virt
except ImportError as exc:
    raise pytest.UsageError(f"these tests need Nova: run them with Nova's venv (.venv-nova/bin/python -m pytest "
                            f"nova-fastsnap/tests), not {sys.executable} ({exc})") from exc

if "nova.virt.fastsnap" in sys.modules:
    raise pytest.UsageError("nova.virt.fastsnap was imported before the tests could point it at the work tree")
# nova.virt.fastsnap from nova-fastsnap/ (Nova's own packages are untouched: only this subpackage is found there).
nova.virt.__path__.insert(0, str(HOOK))
