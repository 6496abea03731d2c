"""Fixtures for tests against the real stack started by ceph-test-env/up (Ceph A+B, Keystone, Glance)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
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

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.stack


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = v
    return env


@dataclass
class Stack:
    env: dict[str, str]
    admin_a: Any                      # rados.Rados, client.admin on cluster A
    admin_b: Any
    created_images: list[str] = field(default_factory=list)   # session-wide (base images)
    snapshots: list[str] = field(default_factory=list)        # made by a test; deleted after it

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
        full = {**os.environ, **self.env, **(env or {})}
        return subprocess.run([str(ROOT / ".venv/bin/fastsnap"), *args], capture_output=True, text=True,
                              env=full, timeout=timeout, check=False)


RUN = ROOT / "ceph-test-env/run"
PIDFILES = {
    "glance": RUN / "glance/gunicorn.pid",
    "keystone": RUN / "keystone/gunicorn.pid",
    "osd-a": RUN / "ceph-a/run/osd.0.pid",
}


def service_pid(name: str) -> int:
    return int(PIDFILES[name].read_text().strip())


def stack_up() -> None:
    """(Re)start whatever part of the stack is not running."""
    up = subprocess.run([str(ROOT / "ceph-test-env/up")], capture_output=True, text=True, check=False,
                        timeout=600)
    if up.returncode != 0:
        pytest.fail(f"ceph-test-env/up failed:\n{up.stderr[-4000:]}")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Use the running stack, starting it first when it is not (ceph-test-env/up is idempotent)."""
    stack_up()
    env = _read_env(ROOT / "ceph-test-env/run/env.sh")
    a = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    b = rados.Rados(conffile=env["CEPH_CONF_REMOTE"], rados_id="admin")
    a.connect(timeout=30)
    b.connect(timeout=30)
    st = Stack(env, a, b)
    try:
        yield st
    finally:
        g = st.glance("admin")
        for image_id in st.created_images:
            with contextlib.suppress(Exception):
                g.images.delete(image_id)
        a.shutdown()
        b.shutdown()


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
            _remove_disk(io, name)


def _remove_disk(io: Any, name: str) -> None:
    try:
        with rbd.Image(io, name) as img:
            for s in list(img.list_snaps()):
                if int(s.get("namespace", 0)) == 0:
                    img.remove_snap2(s["name"], rbd.RBD_SNAP_REMOVE_UNPROTECT)
        rbd.RBD().remove(io, name)
    except rbd.ImageNotFound:
        pass
    except (rbd.ImageBusy, rbd.ImageHasSnapshots):
        pass  # still has clones (a test's Glance image); the stack's teardown removes those


@pytest.fixture(scope="session")
def bases(stack: Stack) -> dict[str, str]:
    """One small active base image per store."""
    data = os.urandom(1 << 20)
    return {store: stack.upload_base(store, data, os_distro="debian", hw_disk_bus="scsi")
            for store in ("fast", "cheap", "remote")}
