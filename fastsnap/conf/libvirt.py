"""``[libvirt]``: the local hypervisor (freezing guests around snapshots) and where Nova keeps their disks."""

from __future__ import annotations

from oslo_config import cfg

libvirt_group = cfg.OptGroup("libvirt", title="The local libvirt, for freezing guests around snapshots")
libvirt_opts = [
    cfg.StrOpt("connection_uri", default="qemu:///system",
               help="libvirt URI of the hypervisor running the instances (Nova's [libvirt] connection_uri). "
                    "fastsnap's user needs access to it (e.g. membership of the 'libvirt' group)."),
    cfg.IntOpt("agent_timeout", default=5, min=1,
               help="Seconds to wait for the guest agent to answer a ping before deciding it is not running."),
    cfg.StrOpt("images_rbd_pool", default="vms",
               help="The RBD pool Nova keeps instance disks in (Nova's [libvirt] images_rbd_pool on this host). A "
                    "snapshot taken on behalf of a user must name its server, and the disk must be that server's "
                    "root disk, <images_rbd_pool>/<instance uuid>_disk (see [service] verify_trusted_callers)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(libvirt_group)
    conf.register_opts(libvirt_opts, group=libvirt_group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(libvirt_group.name, list(libvirt_opts))]
