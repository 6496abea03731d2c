"""The REST service for compute hosts, assembled: configuration, logging, the :class:`Service` started (recovery,
flatten poller) and its Flask routes behind keystonemiddleware and the request-id middleware.

Over TCP every endpoint needs a Keystone token (keystonemiddleware auth_token) with one of
``[service] allowed_roles``; a local unix socket (``[service] unix_socket``) is protected by file permissions.
"""

from __future__ import annotations

import os
from typing import Any

from keystonemiddleware import auth_token
from oslo_log import log as logging
from oslo_middleware import request_id

from fastsnap import conf as fsconf
from fastsnap.service.routes import create_app
from fastsnap.service.service import Service


def wsgi_stack(svc: Service) -> Any:
    """The Flask app behind keystonemiddleware (unless local-only) and the request-id middleware."""
    app: Any = create_app(svc)
    if not svc.local_only:
        app = auth_token.AuthProtocol(app, {"oslo_config_project": "fastsnap",
                                            "oslo_config_config": svc.conf, "delay_auth_decision": True})
    return request_id.RequestId(app)


def build(config_file: str | None = None) -> tuple[Service, Any]:
    conf = fsconf.load(config_file)
    if conf.log_dir:  # before logging.setup, which opens the file there
        os.makedirs(conf.log_dir, exist_ok=True)
    logging.setup(conf, "fastsnap")
    svc = Service(conf, local_only=bool(conf.service.unix_socket))
    svc.start()
    return svc, wsgi_stack(svc)


__all__ = ["build", "wsgi_stack"]
