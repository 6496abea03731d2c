"""A running test guest (ceph-test-env/lib/guest) under libvirt (QEMU TCG), its disk an RBD image in pool vms of
cluster A, attached the way Nova attaches it. Reuses the guest's own selftest helpers (domain XML, RBD disks
with a cephx secret, guest agent calls), loaded from ceph-test-env/lib/guest/selftest."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from testkit.counter import GUEST_DIR, read_counter
from testkit.env import RUN


def _selftest() -> ModuleType:
    path = str(GUEST_DIR / "selftest")
    loader = importlib.machinery.SourceFileLoader("fastsnap_guest_selftest", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


lib = _selftest()


@dataclass
class RunningGuest:
    name: str            # libvirt domain name
    disk: str            # RBD image in vms (cluster A)
    dom: Any
    conf: str            # ceph.conf of cluster A
    boot_seconds: float

    def agent(self, cmd: str, timeout: int = 5, **arguments: Any) -> Any:
        return lib.agent(self.dom, cmd, timeout, **arguments)

    def counter(self) -> int:
        return int(lib.counter(self.dom))

    def freeze_status(self) -> str:
        return str(self.agent("guest-fsfreeze-status"))

    def read_counter(self, spec: str) -> dict[str, Any]:
        """read_counter of an RBD image or snapshot on cluster A (``pool/image[@snap]``)."""
        return read_counter(f"rbd:{spec}", self.conf)

    def wait_counter_above(self, value: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                now = self.counter()
                if now > value:
                    return now
            except Exception:  # the agent refuses file access while frozen: keep asking
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"counter of {self.name} stays at or below {value}")
            time.sleep(0.2)


@contextmanager
def running_guest(conf: str) -> Iterator[RunningGuest]:
    """Build (cached) and boot one guest with its disk in pool vms of the cluster of ``conf`` (client.admin);
    destroy it and remove its disk afterwards."""
    out = RUN / "guest"
    subprocess.run([str(GUEST_DIR / "build"), str(out)], check=True, capture_output=True, timeout=900)
    conn = lib.ensure_libvirtd()
    work = tempfile.mkdtemp(prefix="fastsnap-guest-test-", dir="/var/tmp")
    os.chmod(work, 0o755)
    for f in ("vmlinuz", "initrd.img"):
        shutil.copy(out / f, work)
    tag = uuid.uuid4().hex[:8]
    disks = lib.RbdDisks(conn, conf, "admin", "vms", str(out / "root.img"), tag)
    guest = None
    try:
        disk = disks.create(f"quiesce-{tag}_disk")
        guest = lib.Guest(conn, f"fastsnap-guest-test-{tag}", work, disks.xml(disk),
                          argparse.Namespace(machine="pc", memory=256, nova_devices=False))
        ping, _ = guest.start()
        yield RunningGuest(guest.name, disk, guest.dom, conf, ping)
    finally:
        if guest is not None:
            guest.remove()
        disks.cleanup()
        shutil.rmtree(work, ignore_errors=True)
