"""``[ceph]``: the Ceph cluster holding the instance disks."""

from __future__ import annotations

from oslo_config import cfg

ceph_group = cfg.OptGroup("ceph", title="Ceph cluster holding the instance disks")
ceph_opts = [
    cfg.StrOpt("conf", default="/etc/ceph/ceph.conf",
               help="Path to the ceph.conf of the cluster that holds the instance disks (Nova's "
                    "[libvirt] images_rbd_ceph_conf)."),
    cfg.StrOpt("user", default="fastsnap",
               help="Ceph client id (without 'client.'). Needs mon 'profile rbd', and osd and mgr "
                    "'profile rbd pool=<pool>' on the instance pool and every Glance rbd pool it clones into."),
    cfg.StrOpt("keyring", help="Keyring file of the client; default: what ceph.conf says."),
    cfg.IntOpt("connect_timeout", default=15, min=1,
               help="Seconds to wait for the monitors when connecting (client_mount_timeout)."),
    cfg.IntOpt("op_timeout", default=60, min=1,
               help="Seconds after which a single monitor or OSD operation fails instead of hanging "
                    "(rados_mon_op_timeout, rados_osd_op_timeout)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(ceph_group)
    conf.register_opts(ceph_opts, group=ceph_group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(ceph_group.name, list(ceph_opts))]
