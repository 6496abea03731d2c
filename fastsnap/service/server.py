"""``fastsnap serve``: the REST service on cheroot (threaded WSGI server), TCP or a local unix socket."""

from __future__ import annotations

import os
import signal
import socket
import stat
from types import FrameType

from cheroot import wsgi
from oslo_log import log as logging

from fastsnap.errors import ConfigError
from fastsnap.service.app import build

LOG = logging.getLogger(__name__)


def _unix_socket_ready(path: str) -> None:
    """Clear the way for binding ``path``: remove a stale socket a dead service left; refuse a path that is not a
    socket, or a socket another service still answers on."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"[service] unix_socket {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a stale socket
            return
    raise ConfigError(f"another process already serves on {path}")


def _bind(server: wsgi.Server, path: str | None, mode: int) -> None:
    """Bind and listen. A unix socket is created with its final mode: the umask is set for the bind, so there is
    no moment at which the socket is more open than ``unix_socket_mode``."""
    if path is None:
        server.prepare()
        return
    old = os.umask(0o777 & ~mode)
    try:
        server.prepare()
    finally:
        os.umask(old)


def serve(config_file: str | None = None) -> int:
    svc, app = build(config_file)
    conf = svc.conf.service
    if conf.unix_socket:
        _unix_socket_ready(conf.unix_socket)
        bind: str | tuple[str, int] = conf.unix_socket
    else:
        bind = (conf.bind_host, conf.bind_port)
    server = wsgi.Server(bind, app, numthreads=max(8, svc.conf.snapshot.max_concurrent * 2),
                         server_name="fastsnap", request_queue_size=conf.backlog)
    _bind(server, conf.unix_socket, int(conf.unix_socket_mode, 8))
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
