"""``[journal]``: where the journal lives (RADOS, beside the data), the host lease, local state, Keystone trusts."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "journal"
journal_opts = [
    cfg.StrOpt("pool", default=None, sample_default="<[libvirt] images_rbd_pool>",
               help="The RADOS pool of the journal: every operation, its steps and everything 'recover' needs, "
                    "the directory of operations and the hosts' leases (layout: fastsnap.rados_journal). Default: "
                    "the pool of the instance disks ([libvirt] images_rbd_pool), which every compute host already "
                    "reaches. Every fastsnap of the cluster must name the same pool and namespace."),
    cfg.StrOpt("namespace", default="fastsnap",
               help="The RADOS namespace of the journal's objects in [journal] pool (no RBD image lives there). "
                    "The caps it needs: 'allow rwx pool=<pool> namespace=<namespace>' (x: the lease and claim "
                    "locks are cls_lock calls)."),
    cfg.IntOpt("lease_seconds", default=60, min=2,
               help="How long this host's lease lasts without a renewal (renewed every third of it while any "
                    "fastsnap process of the host runs). Another host's recover takes over this host's running "
                    "operations only once the lease lapsed, so this is how long a lost host's half-done snapshot "
                    "waits before any host finishes or undoes it."),
    cfg.StrOpt("state_dir", default="/var/lib/fastsnap",
               help="Directory of what stays local to the host: the REST service's jobs (SQLite), the lock files "
                    "of this host's processes and the store cache. An older fastsnap's SQLite journal found here "
                    "is carried into RADOS once, when this version first opens it."),
    cfg.IntOpt("trust_hours", default=168, min=0,
               help="A snapshot taken on behalf of a user creates a Keystone trust from the user to fastsnap's "
                    "user (the user's roles on its project) so that 'recover', on any host, can roll it forward "
                    "or back after a crash; the trust is deleted once the operation is settled and expires after "
                    "this many hours in any case. 0: no trust (recover then cannot undo such an image)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(journal_opts, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, list(journal_opts))]
