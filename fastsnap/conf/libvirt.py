"""``[libvirt]``: the local hypervisor, for freezing guests around snapshots."""

from __future__ import annotations

from oslo_config import cfg

libvirt_group = cfg.OptGroup("libvirt", title="The local libvirt, for freezing guests around snapshots")
libvirt_opts = [
    cfg.StrOpt("connection_uri", default="qemu:///system",
               help="libvirt URI of the hypervisor running the instances (Nova's [libvirt] connection_uri). "
                    "fastsnap's user needs access to it (e.g. membership of the 'libvirt' group)."),
    cfg.IntOpt("agent_timeout", default=5, min=1,
               help="Seconds to wait for the guest agent to answer a ping before deciding it is not running."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(libvirt_group)
    conf.register_opts(libvirt_opts, group=libvirt_group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(libvirt_group.name, list(libvirt_opts))]
