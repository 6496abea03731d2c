"""The stack's Nova compute host (ceph-test-env/up --nova), for tests marked ``nova``.

Tests drive Nova the way a user does (testkit.nova: the ``openstack`` CLI of the Nova venv as the member user
``demo`` of env.sh, the hypervisor through libvirt) and look at Ceph through librbd. Guests run under QEMU TCG on
a shared 2-core machine: the session boots one server (``nova_server``) and the tests share it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import rados
import rbd

from testkit.cleanup import remove_snaps
from testkit.nova import Nova, Server
from testkit.stack import Stack


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
