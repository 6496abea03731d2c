"""Loading fastsnap's configuration (oslo.config) and logging (oslo.log)."""

from __future__ import annotations

import os

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import ceph, crosscluster, flatten, glance, journal, quiesce

snapshot_opts = [
    cfg.StrOpt("default_store",
               help="Glance store that receives snapshots when a request names none. Unset: the base image's "
                    "rbd store when it is on the disk's cluster, else Glance's default store."),
    cfg.IntOpt("chunk_size_mb", default=8, min=1, max=64,
               help="Size of each read from the disk on the stream path, in MiB (rounded to RBD objects)."),
    cfg.IntOpt("read_ahead", default=8, min=1, max=64,
               help="Reads kept in flight on the stream path. Read buffers take at most max(chunk_size_mb, "
                    "min(chunk_size_mb * read_ahead, 16 MiB))."),
    cfg.IntOpt("max_concurrent", default=5, min=1,
               help="Snapshots this host runs at once (like Nova's max_concurrent_snapshots); others wait "
                    "(CLI) or are refused with 429 (service)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    ceph.register_opts(conf)
    glance.register_opts(conf)
    journal.register_opts(conf)
    conf.register_opts(snapshot_opts, group="snapshot")
    flatten.register_opts(conf)
    quiesce.register_opts(conf)
    crosscluster.register_opts(conf)
    from fastsnap.service import app

    app.register_opts(conf)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Entry point of ``oslo-config-generator --namespace fastsnap``."""
    return [
        ("ceph", [*ceph.ceph_opts, crosscluster.remote_list_opt]),
        ("glance", glance.list_opts()),
        ("snapshot", list(snapshot_opts) + list(flatten.flatten_opts) + list(quiesce.quiesce_opts)
         + list(crosscluster.copy_opts)),
        ("remote_cluster_example", list(crosscluster.cluster_opts)),
        ("libvirt", list(quiesce.libvirt_opts)),
        ("journal", list(journal.journal_opts)),
        ("service", _service_opts()),
    ]


def _service_opts() -> list[cfg.Opt]:
    from fastsnap.service import app

    return list(app.service_opts)


def load(config_file: str | None = None, args: list[str] | None = None) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with every fastsnap option registered, read from ``config_file``
    (default: ``$FASTSNAP_CONFIG_FILE``, else ``/etc/fastsnap/fastsnap.conf`` when present)."""
    conf = cfg.ConfigOpts()
    logging.register_options(conf)
    register_opts(conf)
    path = config_file or os.environ.get("FASTSNAP_CONFIG_FILE")
    if not path and os.path.exists("/etc/fastsnap/fastsnap.conf"):
        path = "/etc/fastsnap/fastsnap.conf"
    files = [path] if path else []
    for f in files:
        if not os.path.isfile(f):
            from fastsnap.errors import ConfigError

            raise ConfigError(f"config file {f} does not exist")
    conf(args=args or [], project="fastsnap", default_config_files=files, default_config_dirs=[])
    return conf
