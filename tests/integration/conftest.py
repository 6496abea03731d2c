"""Fixtures for tests against the real stack (Ceph A+B, Keystone, Glance).

Two modes, chosen by ``FASTSNAP_TEST_MODE`` (or ``pytest --stack=...``):
  native      (default) the stack ceph-test-env/up runs on this machine; started or reused
  containers  the containers of docker-compose.yml, started and stopped by the session (tests/containers/stack.py)
Tests break services through ``stack.kill/restart/pause/unpause(name)`` with name in glance, keystone, osd-a,
mgr-a: pid files natively, docker in containers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rbd

from testkit.cleanup import remove_disk
from testkit.env import ROOT, RUN, read_env
from testkit.stack import Stack, connect, purge_test_namespaces


def stack_mode() -> str:
    mode = os.environ.get("FASTSNAP_TEST_MODE", "native")
    if mode not in ("native", "containers"):
        raise pytest.UsageError(f"FASTSNAP_TEST_MODE={mode}: native or containers")
    return mode


PIDFILES = {
    "glance": RUN / "glance/gunicorn.pid",
    "keystone": RUN / "keystone/gunicorn.pid",
    "osd-a": RUN / "ceph-a/run/osd.0.pid",
    "mgr-a": RUN / "ceph-a/run/mgr.x.pid",
}
# Tests that only make sense on the native stack (they run ceph-test-env/up or read its pid files): skipped in
# container mode. Prefer stack.kill/restart/pause(name), which work in both.
NATIVE_ONLY = {
    "test_up_is_idempotent_and_fast_when_running": "runs ceph-test-env/up",
    "test_mgr_stopped_falls_back_to_local_flatten": "kills the native mgr by its pid file",
    "test_patch_registers_in_one_request": "restarts the native Glance with show_multiple_locations (up)",
}


def _native_only(what: str) -> None:
    if stack_mode() != "native":
        pytest.fail(f"{what} is for the native stack only (FASTSNAP_TEST_MODE=containers): use stack.kill/restart")


def service_pid(name: str) -> int:
    _native_only("service_pid()")
    return int(PIDFILES[name].read_text().strip())


def stack_up() -> None:
    """(Re)start whatever part of the stack is not running."""
    _native_only("stack_up()")
    up = subprocess.run([str(ROOT / "ceph-test-env/up")], capture_output=True, text=True, check=False,
                        timeout=1200)
    if up.returncode != 0:
        pytest.fail(f"ceph-test-env/up failed:\n{up.stderr[-4000:]}")


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its children (gunicorn's workers); return once it is gone (or a zombie)."""
    subprocess.run(["pkill", "-9", "-P", str(pid)], check=False)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)


class NativeServices:
    """The services of ceph-test-env/up, by pid file."""

    mode = "native"

    def kill(self, name: str) -> None:
        kill_tree(service_pid(name))

    def restart(self, name: str) -> None:
        stack_up()  # starts whatever is not running

    def pause(self, name: str) -> None:
        os.kill(service_pid(name), signal.SIGSTOP)

    def unpause(self, name: str) -> None:
        os.kill(service_pid(name), signal.SIGCONT)

    def down(self) -> None:
        pass  # the native stack outlives the session (ceph-test-env/down stops it)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if stack_mode() == "native":
        return
    for item in items:
        why = NATIVE_ONLY.get(getattr(item, "originalname", item.name))
        if item.get_closest_marker("nova"):
            why = "the container stack has no Nova"
        if why:
            item.add_marker(pytest.mark.skip(reason=f"native stack only: {why}"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Tests marked ``nova`` among the selected ones: the session's ceph-test-env/up brings the Nova part too."""
    if stack_mode() == "native" and any(item.get_closest_marker("nova") for item in session.items):
        os.environ["FASTSNAP_TEST_NOVA"] = "1"


def _start_stack() -> Stack:
    services: Any
    if stack_mode() == "containers":
        try:
            from tests.containers.stack import ContainerStack
        except ImportError as exc:
            pytest.fail(f"container mode needs testcontainers: pip install -r tests/containers/requirements.txt "
                        f"({exc})")
        services = ContainerStack()
        try:
            env = read_env(services.up())
        except Exception:
            services.down()
            raise
    else:
        services = NativeServices()
        stack_up()
        env = read_env(RUN / "env.sh")
    return connect(env, services)


def _stop_stack(st: Stack) -> None:
    try:
        g = st.glance("admin")
        for image_id in st.created_images:
            with contextlib.suppress(Exception):
                g.images.delete(image_id)
        with contextlib.suppress(Exception):
            purge_test_namespaces(st.env["CEPH_CONF"])
        st.shutdown()
    finally:
        st.services.down()


# One stack per session, even when another conftest (tests/containers) re-exports this fixture.
_session: dict[str, Any] = {"stack": None, "users": 0, "services": None}


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The session's stack. Native: the running one, started first when it is not (ceph-test-env/up is
    idempotent). Containers: started now, stopped (and its volumes removed) at the end."""
    if _session["stack"] is None:
        started = _start_stack()
        _session["stack"], _session["services"] = started, started.services
    _session["users"] += 1
    try:
        yield _session["stack"]
    finally:
        _session["users"] -= 1
        if _session["users"] == 0:
            st, _session["stack"] = _session["stack"], None
            _stop_stack(st)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    timings = getattr(_session["services"], "timings", None)
    if timings and not _session.get("summarised"):  # once, though tests/containers re-exports this hook
        _session["summarised"] = True
        terminalreporter.write_line("container stack: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


Writer = Callable[..., str]


@pytest.fixture
def make_disk(stack: Stack, disks: list[str]) -> Writer:
    """Create instance disks in pool vms with data at a few offsets and holes elsewhere (removed afterwards, as
    :func:`disks` removes them)."""

    def make(size: int = 64 << 20, chunks: tuple[int, ...] = (0, 5 << 20, 40 << 20),
             chunk_len: int = 1 << 20) -> str:
        name = f"disk-{uuid.uuid4().hex[:10]}"
        with stack.ioctx("vms") as io:
            rbd.RBD().create(io, name, size, old_format=False)
            with rbd.Image(io, name) as img:
                for off in chunks:
                    if off + chunk_len <= size:
                        img.write(os.urandom(chunk_len), off)
        disks.append(name)
        return name

    return make


@pytest.fixture
def disks(stack: Stack) -> Iterator[list[str]]:
    """Names of instance disks (pool vms) a test made itself: removed afterwards, with the snapshots it took."""
    made: list[str] = []
    yield made
    stack.delete_snapshots()
    with stack.ioctx("vms") as io:
        for name in made:
            remove_disk(io, name)


@pytest.fixture(scope="session")
def bases(stack: Stack) -> dict[str, str]:
    """One small active base image per store."""
    if stack.base_images is None:
        data = os.urandom(1 << 20)
        stack.base_images = {store: stack.upload_base(store, data, os_distro="debian", hw_disk_bus="scsi")
                             for store in ("fast", "cheap", "remote")}
    return stack.base_images


# The Nova compute host's fixtures (tests marked ``nova``).
from tests.integration.nova import nova, nova_server, tenant_servers  # noqa: E402,F401
