"""The hook's options, ``[fastsnap]`` in ``nova.conf``: to the hook what ``nova.conf`` is to Nova.

Laid out as Nova's option modules (``nova/conf/libvirt.py``: the group, its options, ``register_opts(conf)`` and
``list_opts()``), and registered as ``nova/conf/__init__.py`` registers Nova's: once, here, on the global
``CONF`` (Nova's), when this module is imported. The hook's other modules take ``CONF`` from here and register
nothing. ``list_opts`` is the ``oslo.config.opts`` entry point ``nova_fastsnap``
(``oslo-config-generator --namespace nova --namespace nova_fastsnap``), so Nova's sample generation lists them.

oslo.config only: importing it needs no other part of Nova.
"""

from __future__ import annotations

from oslo_config import cfg

GROUP = "fastsnap"

fastsnap_group = cfg.OptGroup(
    GROUP, title="fastsnap's Nova hook",
    help="The compute driver fastsnap.FastsnapLibvirtDriver: RBD snapshots taken by the local fastsnap service, "
         "and instance disks that fastsnap snapshots still depend on parked in the RBD trash.")

fastsnap_opts = [
    cfg.BoolOpt("enabled", default=True,
                help="Ask the local fastsnap service to take RBD snapshots. False: Nova's own path, silently."),
    cfg.StrOpt("unix_socket", default="/run/fastsnap/api.sock",
               help="The fastsnap service's unix socket ([service] unix_socket in fastsnap.conf). The nova-compute "
                    "user must be allowed to connect (socket group and mode)."),
    cfg.FloatOpt("request_timeout", default=60.0, min=1.0,
                 help="Seconds to connect to fastsnap and for each answer."),
    cfg.FloatOpt("poll_interval", default=0.5, min=0.05, help="Seconds between polls of a snapshot job."),
    cfg.FloatOpt("job_timeout", default=3600.0, min=0.0,
                 help="Seconds a snapshot job may take before it is cancelled and the snapshot fails (0: no "
                      "limit)."),
    cfg.FloatOpt("unreachable_timeout", default=60.0, min=0.0,
                 help="Seconds fastsnap may stay unreachable while a job runs before the snapshot fails."),
    cfg.FloatOpt("busy_timeout", default=60.0, min=0.0,
                 help="Seconds to retry while fastsnap answers 429 (host busy) before leaving the snapshot to "
                      "Nova's own path."),
    cfg.BoolOpt("park_disks", default=True,
                help="When an instance disk cannot be removed only because fastsnap snapshots (not yet "
                     "flattened) still depend on it, move it to the RBD trash (the name is free at once; fastsnap "
                     "flattens its dependents first and then purges it) instead of retrying 'rbd remove' "
                     "[libvirt] rbd_destroy_volume_retries times and leaving it behind."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(fastsnap_group)
    conf.register_opts(fastsnap_opts, group=fastsnap_group)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """Entry point of ``oslo-config-generator --namespace nova_fastsnap``."""
    return [(fastsnap_group, list(fastsnap_opts))]


#: Nova's configuration (``nova.conf.CONF`` is oslo.config's global ``cfg.CONF``), with the hook's group.
CONF = cfg.CONF
register_opts(CONF)

__all__ = ["CONF", "GROUP", "fastsnap_group", "fastsnap_opts", "list_opts", "register_opts"]
