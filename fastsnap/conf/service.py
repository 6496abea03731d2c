"""``[service]``: the REST service for the compute host (TCP with Keystone auth, or a local unix socket)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "service"
service_opts = [
    cfg.HostAddressOpt("bind_host", default="127.0.0.1", help="Address the REST service listens on."),
    cfg.PortOpt("bind_port", default=8787, help="TCP port of the REST service."),
    cfg.StrOpt("unix_socket",
               help="Serve on this unix socket instead of TCP, without Keystone auth (local-only mode: access "
                    "is controlled by the socket's file permissions, see unix_socket_mode)."),
    cfg.StrOpt("unix_socket_mode", default="0660", regex=r"^0?[0-7]{3}$",
               help="File mode of the unix socket, in octal (e.g. 0660: owner and group may call)."),
    cfg.ListOpt("allowed_roles", default=["service", "admin"],
                help="Keystone roles allowed to call the service. A caller with neither 'service' nor 'admin' "
                     "(if allowed here) snapshots on its own behalf."),
    cfg.IntOpt("backlog", default=256, min=5,
               help="Connections the kernel queues for the service before it accepts them (listen backlog). "
                    "cheroot's default (5) resets connections in a burst of concurrent requests."),
    cfg.IntOpt("retry_after", default=5, min=1, help="Retry-After seconds sent with 429 when the host is busy."),
    cfg.IntOpt("flatten_poll_interval", default=30, min=1,
               help="Seconds between checks of queued background flattens (and in-process fallbacks)."),
    cfg.IntOpt("recover_interval", default=300, min=0,
               help="Seconds between the service's runs of 'recover' over operations whose process is gone: a "
                    "CLI snapshot killed while the service lives on, or a complete clone whose registration "
                    "failed on a passing error (Glance unreachable or answering 5xx, a Ceph error) and was left "
                    "for the next recover rather than undone. Operations running in any process are never "
                    "touched (they hold their lock). The service always recovers once at start; 0: only then."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(service_opts, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, list(service_opts))]
