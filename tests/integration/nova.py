"""The stack's Nova compute host (ceph-test-env/up --nova), for tests marked ``nova``.

Tests drive Nova the way a user does, with the ``openstack`` CLI of the Nova venv and the member user ``demo``
of env.sh, and look at the hypervisor through libvirt (python3-libvirt: the guest agent) and at Ceph through
librbd. Guests run under QEMU TCG on a shared 2-core machine: the session boots one server (``nova_server``)
and the tests share it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import rados
import rbd

from testkit.cleanup import remove_snaps
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
        import libvirt_qemu

        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        return json.loads(libvirt_qemu.qemuAgentCommand(self.domain(server), json.dumps(msg), timeout, 0))["return"]

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
        handle = self.agent(server, "guest-file-open", path=path)
        try:
            return base64.b64decode(self.agent(server, "guest-file-read", handle=handle, count=4096)["buf-b64"])
        finally:
            self.agent(server, "guest-file-close", handle=handle)

    def counter(self, server: Server) -> int:
        return int(self.read_guest_file(server, "/disk/data/counter").strip() or b"0")


@pytest.fixture(scope="session")
def nova(stack: Stack) -> Nova:
    return Nova(stack)


@pytest.fixture(scope="session")
def nova_server(nova: Nova) -> Iterator[Server]:
    """One server booted from FASTSNAP_NOVA_IMAGE (store fast) for the whole session, deleted at its end unless a
    test deleted it."""
    server = nova.boot(f"fastsnap-test-{os.getpid()}")
    try:
        yield server
    finally:
        if not server.deleted:
            try:
                nova.delete(server)
            except AssertionError as exc:
                print(f"nova_server teardown: {exc}")


@pytest.fixture(scope="session")
def tenant_servers(nova: Nova) -> Iterator[dict[str, Server]]:
    """One server per member project, booted by its user (``demo``, ``demo2``) and paused at once (a stable disk and
    no CPU under TCG): the disks that snapshots taken on behalf of those users may name (fastsnap.ownership).
    Deleted at the session's end, after their fastsnap snapshots (the tests delete their images)."""
    servers: dict[str, Server] = {}
    try:
        for user in ("demo", "demo2"):
            servers[user] = nova.boot(f"fastsnap-tenant-{user}-{os.getpid()}", user=user)
            nova.pause(servers[user])
        yield servers
    finally:
        for server in servers.values():
            try:
                with nova.stack.ioctx("vms") as io:
                    remove_snaps(io, f"{server.id}_disk")
                nova.delete(server)
            except (AssertionError, rbd.Error, rados.Error) as exc:
                print(f"tenant_servers teardown: {exc}")
