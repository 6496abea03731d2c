"""``[nova]``: how fastsnap reaches Nova's compute API to check who owns a disk (keystoneauth adapter options,
as Nova's own ``[glance]`` or ``[neutron]`` sections). The caller's session is used: Nova's policy decides what
the caller may see."""

from __future__ import annotations

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = "nova"
SERVICE_TYPE = "compute"
VALID_INTERFACES = ["internal", "public"]

nova_group = cfg.OptGroup(GROUP, title="Nova's compute API, for the ownership check of snapshots taken for users")
nova_opts = [
    cfg.IntOpt("timeout", default=30, min=1, help="Seconds to wait for Nova to answer the ownership check."),
]


def _adapter_opts() -> list[cfg.Opt]:
    opts: list[cfg.Opt] = ks_loading.get_adapter_conf_options(include_deprecated=False)
    cfg.set_defaults(opts, service_type=SERVICE_TYPE, valid_interfaces=VALID_INTERFACES)
    return opts


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(nova_group)
    conf.register_opts(nova_opts, group=nova_group)
    conf.register_opts(_adapter_opts(), group=nova_group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, list(nova_opts) + _adapter_opts())]
