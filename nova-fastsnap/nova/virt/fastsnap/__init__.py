"""fastsnap's hook for Nova: ``[DEFAULT] compute_driver = fastsnap.FastsnapLibvirtDriver``.

Nova loads its compute driver as ``nova.virt.<compute_driver>``, so the hook lives in this package. The driver
is imported on first use, so that :mod:`nova.virt.fastsnap.client` (standard library only) imports without Nova.
"""

from typing import Any

__all__ = ["FastsnapLibvirtDriver"]


def __getattr__(name: str) -> Any:
    if name == "FastsnapLibvirtDriver":
        from nova.virt.fastsnap.driver import FastsnapLibvirtDriver

        return FastsnapLibvirtDriver
    raise AttributeError(name)
