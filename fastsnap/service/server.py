"""``fastsnap serve``: the REST service on cheroot (threaded WSGI server), TCP or a local unix socket."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys
from collections.abc import Sequence
from types import FrameType

from cheroot import wsgi
from oslo_log import log as logging

from fastsnap.errors import ConfigError, FastsnapError, exit_code
from fastsnap.service.app import build
from fastsnap.version import version_string

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastsnap-api", description="fastsnap's REST service (the same as "
                                "`fastsnap serve`): recovers first, then serves on [service] bind_host:bind_port "
                                "or unix_socket.")
    p.add_argument("--config-file", default=None,
                   help="fastsnap.conf (default: $FASTSNAP_CONFIG_FILE, else /etc/fastsnap/fastsnap.conf)")
    p.add_argument("--version", action="version", version=version_string("fastsnap-api"),
                   help="print the installed fastsnap's version and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``fastsnap-api``: the service, with ``--config-file`` or the config from ``$FASTSNAP_CONFIG_FILE``."""
    a = build_parser().parse_args(argv)
    try:
        return serve(a.config_file)
    except FastsnapError as exc:  # as `fastsnap serve`: a clear line and the CLI's exit code, not a traceback
        print(f"fastsnap-api: error: {exc}", file=sys.stderr)
        return exit_code(exc)
