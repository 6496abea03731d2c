"""fastsnap's CLI with the kill-at-point hook installed (fault-injection tests only).

``FASTSNAP_TEST_CRASH_AT=<point> python -m tests.crashing_cli <fastsnap args>`` SIGKILLs the process at that
point (see ``fastsnap.workflow.crash_point``). fastsnap itself never reads this variable: the hook exists only in
processes started through this module.
"""

from __future__ import annotations

import os
import signal
import sys

from fastsnap import cli
from fastsnap import workflow as wf


def install(point: str) -> None:
    def hook(at: str) -> None:
        if at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    wf.CRASH_HOOK = hook


if __name__ == "__main__":
    install(os.environ["FASTSNAP_TEST_CRASH_AT"])
    sys.exit(cli.main())
