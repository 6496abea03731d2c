"""``fastsnap serve``: the REST service on cheroot (threaded WSGI server), TCP or a local unix socket."""

from __future__ import annotations

import os
import signal
from types import FrameType

from cheroot import wsgi
from oslo_log import log as logging

from fastsnap.service.app import build

LOG = logging.getLogger(__name__)


def serve(config_file: str | None = None) -> int:
    svc, app = build(config_file)
    conf = svc.conf.service
    if conf.unix_socket:
        if os.path.exists(conf.unix_socket):
            os.unlink(conf.unix_socket)
        bind: str | tuple[str, int] = conf.unix_socket
    else:
        bind = (conf.bind_host, conf.bind_port)
    server = wsgi.Server(bind, app, numthreads=max(8, svc.conf.snapshot.max_concurrent * 2),
                         server_name="fastsnap")
    server.prepare()
    if conf.unix_socket:
        os.chmod(conf.unix_socket, int(conf.unix_socket_mode, 8))
    LOG.info("fastsnap service listening on %s", bind)
    print(f"fastsnap service listening on {bind}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve()
    except KeyboardInterrupt as exc:
        LOG.info("stopping: %s", exc)
    finally:
        svc.stop()
        server.stop()
    return 0


def main() -> int:
    """``fastsnap-api``: the service with the config from ``$FASTSNAP_CONFIG_FILE``."""
    return serve(None)
