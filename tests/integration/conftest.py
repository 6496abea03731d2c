"""Fixtures for tests against the real stack (Ceph A+B, Keystone, Glance).

Two modes, chosen by ``FASTSNAP_TEST_MODE`` (or ``pytest --stack=...``):
  native      (default) the stack ceph-test-env/up runs on this machine; started or reused
  containers  the containers of docker-compose.yml, started and stopped by the session (tests/containers/stack.py)
Tests break services through ``stack.kill/restart/pause/unpause(name)`` with name in glance, keystone, osd-a,
mgr-a: pid files natively, docker in containers.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import glanceclient
import pytest
import rados
import rbd
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from fastsnap import conf as fsconf
from fastsnap import journal as jr

ROOT = Path(__file__).resolve().parents[2]
TEST_NAMESPACE_PREFIX = "t-"   # RADOS namespaces of the tests' own journals (purged at the session's end)


def journal_section(state_dir: Path | str, *, host: str | None = None, lease_seconds: int | None = None,
                    namespace: str | None = None) -> str:
    """A ``[journal]`` section of a test's own: its local state directory, and a RADOS namespace of its own derived
    from it (so that its recover sees only its own operations, as a journal of its own did before). Two
    configurations that share ``namespace`` and differ in ``host`` are two compute hosts of one cluster."""
    ns = namespace or TEST_NAMESPACE_PREFIX + hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]
    lines = [f"\n[journal]\nstate_dir = {state_dir}\nnamespace = {ns}\n"]
    if lease_seconds is not None:
        lines.append(f"lease_seconds = {lease_seconds}\n")
    if host is not None:
        lines.append(f"[DEFAULT]\nhost = {host}\n")
    return "".join(lines)


_JOURNALS: dict[str, jr.Journal] = {}


def journal_for(config_file: str | Path) -> jr.Journal:
    """The journal a fastsnap with this configuration uses (one per file, kept for the session)."""
    key = str(config_file)
    if key not in _JOURNALS:
        _JOURNALS[key] = jr.Journal.from_conf(fsconf.load(key))
    return _JOURNALS[key]


def purge_test_namespaces(ceph_conf: str, pool: str = "vms", prefix: str = TEST_NAMESPACE_PREFIX) -> int:
    """Remove every object of the tests' own journal namespaces (those starting with ``prefix``: one namespace's
    name for just that one); returns how many."""
    for j in _JOURNALS.values():
        j.close()
    _JOURNALS.clear()
    removed = 0
    with rados.Rados(conffile=ceph_conf) as cl, cl.open_ioctx(pool) as io:
        io.set_namespace(rados.LIBRADOS_ALL_NSPACES)
        found = [(o.nspace, o.key) for o in io.list_objects() if o.nspace.startswith(prefix)]
        for ns, key in found:
            io.set_namespace(ns)
            with contextlib.suppress(rados.ObjectNotFound):
                io.remove_object(key)
                removed += 1
    return removed


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = v
    return env


def stack_mode() -> str:
    mode = os.environ.get("FASTSNAP_TEST_MODE", "native")
    if mode not in ("native", "containers"):
        raise pytest.UsageError(f"FASTSNAP_TEST_MODE={mode}: native or containers")
    return mode


@dataclass
class Stack:
    env: dict[str, str]
    admin_a: Any                      # rados.Rados, client.admin on cluster A
    admin_b: Any
    created_images: list[str] = field(default_factory=list)   # session-wide (base images)
    snapshots: list[str] = field(default_factory=list)        # made by a test; deleted after it
    services: Any = None              # NativeServices | tests.containers.stack.ContainerStack
    base_images: dict[str, str] | None = None

    @property
    def mode(self) -> str:
        return str(self.services.mode)

    def kill(self, name: str) -> None:
        """SIGKILL a service (glance, keystone, osd-a, mgr-a); it stays down until restart()."""
        self.services.kill(name)

    def restart(self, name: str) -> None:
        """Bring a killed service back (or restart a running one) and wait until it answers."""
        self.services.restart(name)

    def pause(self, name: str) -> None:
        """Freeze a service (SIGSTOP / docker pause): it stops answering, its connections stay open."""
        self.services.pause(name)

    def unpause(self, name: str) -> None:
        self.services.unpause(name)

    @property
    def state_dir(self) -> str:
        """fastsnap's local state directory ([journal] state_dir of the stack's fastsnap.conf)."""
        cp = configparser.ConfigParser(interpolation=None)
        cp.read(self.config_file)
        return cp.get("journal", "state_dir")

    def journal(self) -> jr.Journal:
        """The journal of the stack's fastsnap.conf (operations in RADOS)."""
        return journal_for(self.config_file)

    def delete_snapshots(self) -> None:
        g = self.glance("admin")
        while self.snapshots:
            image_id = self.snapshots.pop()
            with contextlib.suppress(Exception):
                g.images.delete(image_id)

    @property
    def fsid_a(self) -> str:
        return self.env["FASTSNAP_TEST_FSID_A"]

    @property
    def fsid_b(self) -> str:
        return self.env["FASTSNAP_TEST_FSID_B"]

    @property
    def config_file(self) -> str:
        return self.env["FASTSNAP_CONFIG_FILE"]

    def session(self, user: str = "fastsnap", project: str | None = None) -> ks_session.Session:
        passwords = {"fastsnap": "FASTSNAP_TEST_SERVICE_PASSWORD", "admin": "FASTSNAP_TEST_ADMIN_PASSWORD",
                     "demo": "FASTSNAP_TEST_DEMO_PASSWORD", "demo2": "FASTSNAP_TEST_DEMO_PASSWORD"}
        projects = {"fastsnap": "service", "admin": "admin", "demo": "demo", "demo2": "demo2"}
        auth = v3.Password(auth_url=self.env["OS_AUTH_URL"], username=user, password=self.env[passwords[user]],
                           project_name=project or projects[user], user_domain_name="Default",
                           project_domain_name="Default")
        return ks_session.Session(auth=auth, timeout=120)

    def glance(self, user: str = "fastsnap") -> Any:
        return glanceclient.Client("2", session=self.session(user))

    def ioctx(self, pool: str, cluster: str = "a") -> Any:
        return (self.admin_a if cluster == "a" else self.admin_b).open_ioctx(pool)

    def rbd_images(self, pool: str, cluster: str = "a") -> list[str]:
        with self.ioctx(pool, cluster) as io:
            return sorted(rbd.RBD().list(io))

    def snaps(self, pool: str, image: str) -> list[tuple[str, int]]:
        """All snapshots of an image including the trash namespace: (name, namespace)."""
        with self.ioctx(pool) as io, rbd.Image(io, image, read_only=True) as img:
            return sorted((s["name"], int(s.get("namespace", 0))) for s in img.list_snaps())

    def image_ids(self) -> set[str]:
        return {i["id"] for i in self.glance("admin").images.list()}

    def upload_base(self, store: str, data: bytes, user: str = "fastsnap", **props: Any) -> str:
        g = self.glance(user)
        img = g.images.create(name=f"base-{store}-{uuid.uuid4().hex[:6]}", disk_format="raw",
                              container_format="bare", **props)
        self.created_images.append(img["id"])
        import io

        g.images.upload(img["id"], io.BytesIO(data), image_size=len(data), backend=store)
        return str(img["id"])

    def glance_sha256(self, image_id: str, user: str = "fastsnap") -> str:
        h = hashlib.sha256()
        for chunk in self.glance(user).images.data(image_id):
            h.update(chunk)
        return h.hexdigest()

    def disk_sha256(self, pool: str, image: str, snapshot: str | None = None) -> str:
        h = hashlib.sha256()
        with self.ioctx(pool) as io, rbd.Image(io, image, snapshot=snapshot, read_only=True) as img:
            size = img.size()
            off = 0
            while off < size:
                n = min(8 << 20, size - off)
                h.update(img.read(off, n))
                off += n
        return h.hexdigest()

    def fastsnap(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the fastsnap CLI. With ``FASTSNAP_TEST_CRASH_AT`` in ``env`` it runs through tests/crashing_cli.py,
        the only place the kill-at-point hook is installed."""
        full = {**os.environ, **self.env, **(env or {})}
        cmd = [str(ROOT / ".venv/bin/fastsnap")]
        if "FASTSNAP_TEST_CRASH_AT" in (env or {}):
            cmd = [str(ROOT / ".venv/bin/python"), "-m", "tests.crashing_cli"]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, env=full, timeout=timeout,
                              check=False, cwd=ROOT)


RUN = ROOT / "ceph-test-env/run"
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
            env = _read_env(services.up())
        except Exception:
            services.down()
            raise
    else:
        services = NativeServices()
        stack_up()
        env = _read_env(RUN / "env.sh")
    a = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    b = rados.Rados(conffile=env["CEPH_CONF_REMOTE"], rados_id="admin")
    a.connect(timeout=30)
    b.connect(timeout=30)
    return Stack(env, a, b, services=services)


def _stop_stack(st: Stack) -> None:
    try:
        g = st.glance("admin")
        for image_id in st.created_images:
            with contextlib.suppress(Exception):
                g.images.delete(image_id)
        with contextlib.suppress(Exception):
            purge_test_namespaces(st.env["CEPH_CONF"])
        st.admin_a.shutdown()
        st.admin_b.shutdown()
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
def make_disk(stack: Stack) -> Iterator[Writer]:
    """Create instance disks in pool vms with data at a few offsets and holes elsewhere."""
    made: list[str] = []

    def make(size: int = 64 << 20, chunks: tuple[int, ...] = (0, 5 << 20, 40 << 20),
             chunk_len: int = 1 << 20) -> str:
        name = f"disk-{uuid.uuid4().hex[:10]}"
        with stack.ioctx("vms") as io:
            rbd.RBD().create(io, name, size, old_format=False)
            with rbd.Image(io, name) as img:
                for off in chunks:
                    if off + chunk_len <= size:
                        img.write(os.urandom(chunk_len), off)
        made.append(name)
        return name

    yield make
    stack.delete_snapshots()
    with stack.ioctx("vms") as io:
        for name in made:
            remove_disk(io, name)


def remove_snaps(io: Any, name: str) -> None:
    """Remove an image's user snapshots (those in the trash namespace stay: purged with their last clone)."""
    with rbd.Image(io, name) as img:
        for s in list(img.list_snaps()):
            if int(s.get("namespace", 0)) == 0:
                img.remove_snap2(s["name"], rbd.RBD_SNAP_REMOVE_UNPROTECT)


def remove_disk(io: Any, name: str) -> None:
    """Remove a test's disk from the pool ``io`` with its snapshots (those in the trash namespace stay: purged with
    their last clone); gone already is fine."""
    try:
        remove_snaps(io, name)
        rbd.RBD().remove(io, name)
    except rbd.ImageNotFound:
        pass
    except (rbd.ImageBusy, rbd.ImageHasSnapshots):
        pass  # still has clones (a test's Glance image); the stack's teardown removes those


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
