"""WSGI entry point (``fastsnap-api``): ``gunicorn -w 1 --threads 8 fastsnap.wsgi:application``.

Use one worker process: jobs run on threads of the process that accepted them. The config file comes from
``$FASTSNAP_CONFIG_FILE`` (default /etc/fastsnap/fastsnap.conf).
"""

from __future__ import annotations

from typing import Any

from fastsnap.service.app import build

_service, application = build()

__all__: list[Any] = ["application"]
