"""``[DEFAULT]``: this fastsnap instance's identity in the cluster (as Nova's ``[DEFAULT] host``)."""

from __future__ import annotations

import socket

from oslo_config import cfg

GROUP = None
default_opts = [
    cfg.HostDomainOpt("host", default=socket.gethostname(), sample_default="<current_hostname>",
                      help="This fastsnap instance's name in the cluster: the operations it journals carry it, and "
                           "it holds the lease (fastsnap.host.<host> in the journal's namespace) that keeps other "
                           "hosts off its running operations. Must be unique per compute host and stable across "
                           "restarts: use the same value as Nova's [DEFAULT] host."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(default_opts)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return [("DEFAULT", list(default_opts))]
