"""Every fastsnap option, one module per section (as ``nova.conf``), and the loader.

Importing this package needs oslo.config and keystoneauth1 only: no Ceph bindings, no fastsnap module with I/O.
``list_opts`` is the ``oslo.config.opts`` entry point that generates ``etc/fastsnap.conf.sample``.
"""

from __future__ import annotations

import os

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.conf import ceph, default, glance, journal, libvirt, nova, service, snapshot
from fastsnap.errors import ConfigError

_SECTIONS = (default, ceph, glance, nova, snapshot, libvirt, journal, service)
DEFAULT_CONFIG_FILE = "/etc/fastsnap/fastsnap.conf"


def register_opts(conf: cfg.ConfigOpts) -> None:
    for section in _SECTIONS:
        section.register_opts(conf)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Entry point of ``oslo-config-generator --namespace fastsnap``."""
    return [pair for section in _SECTIONS for pair in section.list_opts()]


def load(config_file: str | None = None, args: list[str] | None = None) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with every fastsnap option registered, read from ``config_file``
    (default: ``$FASTSNAP_CONFIG_FILE``, else ``/etc/fastsnap/fastsnap.conf`` when present)."""
    conf = cfg.ConfigOpts()
    logging.register_options(conf)
    register_opts(conf)
    path = config_file or os.environ.get("FASTSNAP_CONFIG_FILE")
    if not path and os.path.exists(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    files = [path] if path else []
    for f in files:
        if not os.path.isfile(f):
            raise ConfigError(f"config file {f} does not exist")
    conf(args=args or [], project="fastsnap", default_config_files=files, default_config_dirs=[])
    return conf


__all__ = ["list_opts", "load", "register_opts"]
