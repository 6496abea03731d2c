"""``[journal]``: where the journal and the lock files live; Keystone trusts for crash recovery."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "journal"
journal_opts = [
    cfg.StrOpt("state_dir", default="/var/lib/fastsnap",
               help="Directory of fastsnap's journal (SQLite) and lock files. Must be local to the host."),
    cfg.IntOpt("trust_hours", default=168, min=0,
               help="A snapshot taken on behalf of a user creates a Keystone trust from the user to fastsnap's "
                    "user (the user's roles on its project) so that 'recover' can roll it forward or back after a "
                    "crash; the trust is deleted once the operation is settled and expires after this many hours "
                    "in any case. 0: no trust (recover then cannot undo such an image)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(journal_opts, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(GROUP, list(journal_opts))]
