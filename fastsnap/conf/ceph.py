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


# Other clusters (issue 16): the delta and copy paths write snapshots into Glance rbd stores there with librbd.
remote_clusters_opt = cfg.ListOpt(
    "remote_clusters", default=[],
    help="Names of the configuration sections that give fastsnap access to other Ceph clusters, one section "
         "per cluster (e.g. 'remote_clusters = ceph_b' with a section [ceph_b]). A snapshot into a Glance rbd store "
         "on one of these clusters (matched by fsid) is written there directly with librbd (paths delta and "
         "copy); a store on a cluster not listed here is filled through Glance's API (stream path).")
# One section per name in [ceph] remote_clusters holds these (registered when the names are read:
# fastsnap.crosscluster.remote_confs); the sample shows them under [remote_cluster_example].
remote_cluster_opts = [
    cfg.StrOpt("fsid", required=True,
               help="fsid of this cluster, as Glance reports it for the store (GET /v2/info/stores/detail). "
                    "fastsnap refuses to use the cluster when the one it reaches has another fsid."),
    cfg.StrOpt("conf", required=True,
               help="Path to a ceph.conf for this cluster (monitor addresses; may name the keyring)."),
    cfg.StrOpt("user", default="fastsnap",
               help="Ceph client id (without 'client.') on this cluster. Least privilege: mon 'profile rbd' and "
                    "osd 'profile rbd pool=<pool>' for each Glance rbd store pool on this cluster (it creates, "
                    "clones, writes, snapshots and, on roll back, removes images named by Glance image ids)."),
    cfg.StrOpt("keyring", help="Keyring file of the client; default: what the ceph.conf says."),
    cfg.IntOpt("connect_timeout", default=15, min=1,
               help="Seconds to wait for this cluster's monitors when connecting."),
    cfg.IntOpt("op_timeout", default=60, min=1,
               help="Seconds after which one monitor or OSD operation on this cluster fails instead of hanging."),
]
REMOTE_CLUSTER_EXAMPLE = "remote_cluster_example"
# Sections a remote cluster must not be named after.
OWN_SECTIONS = frozenset({"DEFAULT", "ceph", "glance", "snapshot", "libvirt", "journal", "service",
                          "keystone_authtoken", "oslo_concurrency", REMOTE_CLUSTER_EXAMPLE})


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(ceph_group)
    conf.register_opts([*ceph_opts, remote_clusters_opt], group=ceph_group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(ceph_group.name, [*ceph_opts, remote_clusters_opt]), (REMOTE_CLUSTER_EXAMPLE, list(remote_cluster_opts))]
