"""The stack's Nova compute host (ceph-test-env/up --nova) as a user drives it, for tests marked ``nova``.

Nova through the ``openstack`` CLI of the Nova venv as the member user ``demo`` of env.sh (or ``demo2``,
``admin``), and the hypervisor through libvirt (python3-libvirt: the guest agent, testkit.novahost's). The
session's fixtures around it are tests/integration/nova.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pytest

from testkit import novahost
from testkit.stack import Stack

GUEST_AGENT_TIMEOUT = 180   # from ACTIVE to the agent's first answer; 4-7 s on an idle machine


@dataclass
class Server:
    id: str
    name: str
    domain: str          # libvirt domain name (OS-EXT-SRV-ATTR:instance_name)
    boot_seconds: float  # `server create --wait` until ACTIVE
    deleted: bool = False
    user: str = "demo"   # who booted it (demo or demo2 of env.sh), whose project owns it

    @property
    def disk(self) -> str:
        """Its root disk as Nova's libvirt driver names it (pool vms of the stack's nova.conf)."""
        return f"vms/{self.id}_disk"


class Nova:
    def __init__(self, stack: Stack) -> None:
        if stack.env.get("FASTSNAP_TEST_NOVA") != "1":
            pytest.fail("the stack has no Nova part: run ceph-test-env/up --nova (or FASTSNAP_TEST_NOVA=1)")
        self.stack = stack
        self.env = stack.env

    def openstack(self, *args: str, user: str = "demo", timeout: float = 600) -> Any:
        """Run the openstack CLI as ``demo`` (env.sh) or ``admin``; return its JSON output (``-f json`` added
        where the command prints something), or None."""
        env = {**os.environ, **self.env}
        if user == "admin":
            env.update(OS_USERNAME="admin", OS_PASSWORD=self.env["FASTSNAP_TEST_ADMIN_PASSWORD"],
                       OS_PROJECT_NAME="admin")
        elif user == "demo2":
            env.update(OS_USERNAME="demo2", OS_PASSWORD=self.env["FASTSNAP_TEST_DEMO_PASSWORD"],
                       OS_PROJECT_NAME="demo2")
        cli = os.path.join(self.env["FASTSNAP_TEST_NOVA_VENV"], "bin", "openstack")
        quiet = args[:2] in (("server", "delete"), ("server", "pause"), ("image", "delete"))
        cmd = [cli, *args] if quiet else [cli, *args, "-f", "json"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        if out.returncode != 0:
            raise AssertionError(f"openstack {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return json.loads(out.stdout) if out.stdout.strip() else None

    def server(self, server_id: str) -> dict[str, Any]:
        return dict(self.openstack("server", "show", server_id, user="admin"))

    def boot(self, name: str, image: str | None = None, user: str = "demo") -> Server:
        t0 = time.monotonic()
        created = self.openstack("server", "create", "--flavor", self.env["FASTSNAP_NOVA_FLAVOR"], "--image",
                                 image or self.env["FASTSNAP_NOVA_IMAGE"], "--nic", "none", "--wait", name,
                                 user=user)
        secs = time.monotonic() - t0
        assert created["status"] == "ACTIVE", created
        shown = self.server(created["id"])
        return Server(created["id"], name, shown["OS-EXT-SRV-ATTR:instance_name"], secs, user=user)

    def pause(self, server: Server) -> None:
        """Pause the guest (its disk stays as it is, its vCPU stops) and wait until Nova says PAUSED."""
        self.openstack("server", "pause", server.id, user=server.user)
        deadline = time.monotonic() + 120
        while (status := self.server(server.id)["status"]) != "PAUSED":
            assert status in ("ACTIVE", "PAUSED") and time.monotonic() < deadline, f"{server.id}: {status}"
            time.sleep(0.5)
        time.sleep(3)  # QEMU's librbd writeback cache flushes what the guest wrote within rbd_cache_max_dirty_age

    def delete(self, server: Server) -> None:
        if not server.deleted:
            self.openstack("server", "delete", "--wait", server.id, user=server.user)
            server.deleted = True

    # --- the hypervisor side -------------------------------------------------------------------------------------
    def domain(self, server: Server) -> Any:
        import libvirt

        conn = libvirt.open(self.env["FASTSNAP_TEST_LIBVIRT_URI"])
        return conn.lookupByName(server.domain)

    def domain_names(self) -> list[str]:
        import libvirt

        conn = libvirt.open(self.env["FASTSNAP_TEST_LIBVIRT_URI"])
        try:
            return [d.name() for d in conn.listAllDomains()]
        finally:
            conn.close()

    def agent(self, server: Server, command: str, timeout: int = 10, **arguments: Any) -> Any:
        return novahost.agent(self.env, server.domain, command, timeout, **arguments)

    def wait_agent(self, server: Server, timeout: float = GUEST_AGENT_TIMEOUT) -> float:
        """Seconds until the guest agent answers guest-ping."""
        import libvirt

        t0 = time.monotonic()
        last: Exception | None = None
        while time.monotonic() - t0 < timeout:
            try:
                self.agent(server, "guest-ping", timeout=5)
                return time.monotonic() - t0
            except libvirt.libvirtError as exc:
                last = exc
                time.sleep(0.5)
        raise AssertionError(f"guest agent of {server.domain} did not answer within {timeout}s: {last}")

    def read_guest_file(self, server: Server, path: str) -> bytes:
        return novahost.read_guest_file(self.env, server.domain, path)

    def counter(self, server: Server) -> int:
        return novahost.counter(self.env, server.domain)
