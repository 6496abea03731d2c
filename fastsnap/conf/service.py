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
                help="Keystone roles allowed to call the service over TCP; any other token is refused (403). A "
                     "caller with 'service' or 'admin' may snapshot as fastsnap itself (the image lands in "
                     "fastsnap's project) or pass a user's token ('user_token') to snapshot on that user's "
                     "behalf. A caller allowed here with neither role (e.g. 'member') snapshots only on its own "
                     "behalf, and only a disk its project owns: it must name the server ('instance_uuid'), Nova "
                     "must show that server to it, and the disk must be the server's root disk ([libvirt] "
                     "images_rbd_pool/<uuid>_disk); otherwise 404 or 403 and nothing is created. 'reader' alone "
                     "never snapshots unless listed here."),
    cfg.ListOpt("operator_roles", default=["admin"],
                help="Roles of a TCP caller that may snapshot as fastsnap itself (operator mode: no user, no "
                     "ownership check, the image lands in fastsnap's project). Others among the 'service' and "
                     "'admin' callers must pass a user's token ('user_token'), as Nova's hook does, and are "
                     "checked (verify_trusted_callers): a leaked credential of some other OpenStack service "
                     "(which hold 'service') cannot copy a disk unchecked. The unix socket is always an "
                     "operator."),
    cfg.BoolOpt("verify_trusted_callers", default=True,
                help="Check ownership with Nova (one GET of the server as the user) also when a trusted caller "
                     "(the 'service' role over TCP, or the unix socket) snapshots on behalf of a user, as Nova's "
                     "hook does. On by default as defence in depth: in most clouds every OpenStack service user "
                     "(Cinder, Neutron, Glance...) holds 'service', so a leaked service credential plus any user "
                     "token could otherwise copy another project's disk. False trusts those callers to have "
                     "checked (Nova did, before calling); requests of untrusted callers are always checked."),
    cfg.IntOpt("max_concurrent_per_project", default=3, min=0,
               help="Snapshots one project may run at once on this host, beside [snapshot] max_concurrent; past "
                    "it the service answers 429 with Retry-After, so one tenant cannot take every slot. Counts "
                    "jobs by the project the snapshot is taken for; operator jobs over the unix socket are not "
                    "limited. 0: no per-project limit."),
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
