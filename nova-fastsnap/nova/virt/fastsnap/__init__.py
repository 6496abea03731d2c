"""fastsnap's hook for Nova: ``[DEFAULT] compute_driver = fastsnap.FastsnapLibvirtDriver``.

Nova loads its compute driver as ``nova.virt.<compute_driver>``, so the hook lives in this package, laid out as
Nova's own parts:

``conf``         the ``[fastsnap]`` options (``register_opts``, ``list_opts``: the ``nova_fastsnap`` namespace)
``driver``       ``FastsnapLibvirtDriver``, Nova's ``LibvirtDriver`` switching the hook's parts on at ``init_host``
``imagebackend`` the rbd image backend whose ``direct_snapshot`` asks fastsnap
``storage``      the RBD driver whose disk removal parks disks fastsnap snapshots depend on
``client``       the fastsnap service's client (standard library only)
``seams``        the parts of Nova the hook relies on, checked at start-up (standard library only)

The driver is imported on first use, so that ``client`` and ``seams`` import without Nova.
"""

from typing import Any

__all__ = ["FastsnapLibvirtDriver"]


def __getattr__(name: str) -> Any:
    if name == "FastsnapLibvirtDriver":
        from nova.virt.fastsnap.driver import FastsnapLibvirtDriver

        return FastsnapLibvirtDriver
    raise AttributeError(name)
