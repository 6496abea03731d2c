"""``[snapshot]``: store choice, the stream path's reads, concurrency, flattening and freezing."""

from __future__ import annotations

from oslo_config import cfg

from fastsnap.states import FlattenPolicy, StreamFormat

GROUP = "snapshot"
snapshot_opts = [
    cfg.StrOpt("default_store",
               help="Glance store that receives snapshots when a request names none. Unset: the base image's "
                    "rbd store when it is on the disk's cluster, else Glance's default store."),
    cfg.IntOpt("chunk_size_mb", default=8, min=1, max=64,
               help="Size of each read from the disk on the stream path, in MiB (rounded to RBD objects)."),
    cfg.IntOpt("read_ahead", default=8, min=1, max=64,
               help="Reads kept in flight on the stream path. Read buffers take at most max(chunk_size_mb, "
                    "min(chunk_size_mb * read_ahead, 16 MiB))."),
    cfg.StrOpt("stream_format", default=StreamFormat.RAW.value, choices=[f.value for f in StreamFormat],
               help="Disk format of the images the stream path makes, like Nova's [libvirt] snapshot_image_format: "
                    "raw sends the whole virtual disk (holes as zeros); qcow2 sends a qcow2 image of only the "
                    "disk's allocated clusters, computed before the first byte and streamed in bounded memory with "
                    "no local file. A request's 'format' overrides it; snapshots through Nova take Nova's "
                    "snapshot_image_format. The clone, delta and copy paths always make raw RBD images."),
    cfg.IntOpt("max_concurrent", default=5, min=1,
               help="Snapshots this host runs at once (like Nova's max_concurrent_snapshots); others wait "
                    "(CLI) or are refused with 429 (service)."),
]
flatten_opts = [
    cfg.StrOpt("flatten", default=FlattenPolicy.BACKGROUND.value, choices=[p.value for p in FlattenPolicy],
               help="When clone-path snapshots are flattened: never, background (Ceph mgr task queue, "
                    "default) or sync (before the snapshot is registered, like Nova)."),
    cfg.DictOpt("store_flatten", default={},
                help="Per-store flatten policy overriding 'flatten', e.g. fast:sync,archive:never."),
    cfg.IntOpt("clone_depth_soft", default=4, min=1,
               help="A clone deeper than this (counting every parent, also through the snapshot trash) is "
                    "flattened in the background even with policy 'never'."),
    cfg.IntOpt("clone_depth_hard", default=8, min=1,
               help="A clone deeper than this is flattened before the snapshot is registered, whatever the "
                    "policy."),
    cfg.IntOpt("mgr_timeout", default=10, min=1,
               help="Seconds to wait for the Ceph mgr to accept a flatten task before falling back to an "
                    "in-process flatten."),
]
quiesce_opts = [
    cfg.FloatOpt("max_freeze_seconds", default=10.0, min=0.1,
                 help="A guest frozen for a snapshot is thawed after at most this many seconds, even when the "
                      "RBD snapshot has not completed (the snapshot then fails)."),
]
# Delta and copy paths (issue 16, fastsnap.crosscluster).
copy_opts = [
    cfg.IntOpt("remote_chunk_size_mb", default=4, min=1, max=64,
               help="Size of each read/write on the delta and copy paths, in MiB (rounded to whole RBD objects of "
                    "the disk: at least one object, 8 MiB for disks cloned from Glance's rbd images)."),
    cfg.IntOpt("remote_parallel", default=8, min=1, max=64,
               help="Reads/writes in flight on the delta and copy paths; their buffers take at most remote_parallel "
                    "times the piece size (remote_chunk_size_mb rounded to objects)."),
    cfg.IntOpt("base_check_samples", default=8, min=0, max=256,
               help="Delta path: number of 64 KiB blocks compared between the base image's copy on the disk's "
                    "cluster and on the target cluster before cloning the latter (besides sizes and identity); "
                    "0 compares sizes only."),
]
# Incremental backups into an rbd store on another cluster (issue 25, fastsnap.crosscluster).
backup_opts = [
    cfg.StrOpt("backup_store",
               help="Glance store that receives backups (type=backup, e.g. Nova's 'server backup create') when a "
                    "request names no store; overrides default_store for backups. Unset: as snapshots. Into an "
                    "rbd store on another cluster fastsnap has credentials for, a backup is incremental: a clone "
                    "of the same disk's previous backup there plus what the disk changed since."),
]
ALL_OPTS = snapshot_opts + flatten_opts + quiesce_opts + copy_opts + backup_opts


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(ALL_OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, list(ALL_OPTS))]
