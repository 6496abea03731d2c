"""The stack's connections as the tests and benchmarks use them: Ceph A and B as client.admin (and cluster A's
pools ``vms`` and ``images`` kept open), Glance and Keystone as the stack's users (and one Glance client as the
fastsnap user kept for the stack's life), the fastsnap CLI with the stack's environment, and the clean-up of what a
test or a benchmark made (its disks, its images, its snapshots, its journal namespaces).

The values come from the stack's env.sh (``Stack.env``), never from the test process's environment.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import io
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import glanceclient
import rados
import rbd
from keystoneauth1 import session as ks_session

from fastsnap import conf as fsconf
from fastsnap import journal as jr
from testkit import keystone
from testkit.cleanup import delete_image, glance_image, remove_disk
from testkit.env import ROOT

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


def has_parent(pool: Any, name: str) -> bool:
    """Whether RBD image ``name`` of ``pool`` (an ioctx) is a clone still depending on its parent; False when the
    image is gone."""
    try:
        with rbd.Image(pool, name, read_only=True) as img:
            try:
                img.get_parent_image_spec()
                return True
            except rbd.ImageNotFound:
                return False
    except rbd.ImageNotFound:
        return False


class EnvValue:
    """A read-only attribute of :class:`Stack`: one value of the stack's env.sh."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, stack: Stack | None, owner: type[Stack] | None = None) -> str:
        if stack is None:
            raise AttributeError(f"{self.key} is a value of a stack's env.sh")
        return stack.env[self.key]


@dataclass
class Stack:
    env: dict[str, str]
    admin_a: Any                      # rados.Rados, client.admin on cluster A
    admin_b: Any
    created_images: list[str] = field(default_factory=list)   # session-wide (base images)
    snapshots: list[str] = field(default_factory=list)        # made by a test; deleted after it
    services: Any = None              # tests' NativeServices | tests.containers.stack.ContainerStack
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

    def shutdown(self) -> None:
        """Close the pools kept open (:attr:`vms`, :attr:`images`) and the Ceph connections :func:`connect`
        opened."""
        for name in ("vms", "images"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()
        self.admin_a.shutdown()
        self.admin_b.shutdown()

    def delete_snapshots(self) -> None:
        g = self.glance("admin")
        while self.snapshots:
            image_id = self.snapshots.pop()
            with contextlib.suppress(Exception):
                g.images.delete(image_id)

    fsid_a = EnvValue("FASTSNAP_TEST_FSID_A")
    fsid_b = EnvValue("FASTSNAP_TEST_FSID_B")
    config_file = EnvValue("FASTSNAP_CONFIG_FILE")
    ceph_conf = EnvValue("CEPH_CONF")   # cluster A's ceph.conf

    @property
    def run_dir(self) -> str:
        """The stack's run directory (where its fastsnap.conf, env.sh and services' files are)."""
        return os.path.dirname(self.config_file)

    def session(self, user: str = "fastsnap", project: str | None = None) -> ks_session.Session:
        passwords = {"fastsnap": "FASTSNAP_TEST_SERVICE_PASSWORD", "admin": "FASTSNAP_TEST_ADMIN_PASSWORD",
                     "demo": "FASTSNAP_TEST_DEMO_PASSWORD", "demo2": "FASTSNAP_TEST_DEMO_PASSWORD"}
        projects = {"fastsnap": "service", "admin": "admin", "demo": "demo", "demo2": "demo2"}
        return keystone.session(self.env["OS_AUTH_URL"], user, self.env[passwords[user]], project or projects[user],
                                timeout=120)

    def glance(self, user: str = "fastsnap") -> Any:
        return glanceclient.Client("2", session=self.session(user))

    def ioctx(self, pool: str, cluster: str = "a") -> Any:
        return (self.admin_a if cluster == "a" else self.admin_b).open_ioctx(pool)

    # -- kept open for the stack's life (the benchmarks: no new connection or token per call) ---------------------

    @cached_property
    def vms(self) -> Any:
        """Cluster A's pool ``vms`` (an ioctx), open until :meth:`shutdown`."""
        return self.ioctx("vms")

    @cached_property
    def images(self) -> Any:
        """Cluster A's pool ``images`` (an ioctx), open until :meth:`shutdown`."""
        return self.ioctx("images")

    @cached_property
    def fastsnap_session(self) -> ks_session.Session:
        """fastsnap's own identity (user fastsnap, project service, with the service role), one session (one
        token) for the stack's life; :meth:`session` makes a new one each call."""
        return keystone.session(self.env["OS_AUTH_URL"], "fastsnap", self.env["FASTSNAP_TEST_SERVICE_PASSWORD"],
                                "service")

    @cached_property
    def fastsnap_glance(self) -> Any:
        """Glance as the fastsnap user, on :attr:`fastsnap_session`."""
        return glanceclient.Client("2", session=self.fastsnap_session)

    def token(self) -> str:
        """The token of :attr:`fastsnap_session`."""
        return str(self.fastsnap_session.get_token())

    # -- images and disks (through :attr:`fastsnap_glance`, on cluster A) ----------------------------------------

    def create_image(self, name: str) -> str:
        """A queued raw Glance image; its id."""
        img = self.fastsnap_glance.images.create(name=name, disk_format="raw", container_format="bare")
        return str(img["id"])

    def image(self, image_id: str) -> dict[str, Any] | None:
        return glance_image(self.fastsnap_glance, image_id)

    def wait_active(self, image_id: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            img = self.image(image_id) or {}
            if img.get("status") == "active":
                return img
            if time.monotonic() > deadline:
                raise RuntimeError(f"image {image_id} still {img.get('status')} after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def delete_image(self, image_id: str, timeout: float = 300) -> None:
        """Delete a Glance image; retried while its RBD image is busy (e.g. a flatten still holds it)."""
        delete_image(self.fastsnap_glance, image_id, timeout, poll=1)

    def has_parent(self, pool: Any, name: str) -> bool:
        return has_parent(pool, name)

    def wait_no_parent(self, pool: Any, name: str, timeout: float = 900) -> float:
        """Wait until an image is independent of its parent (a background flatten finished); seconds waited."""
        t0 = time.monotonic()
        while self.has_parent(pool, name):
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{name} still has a parent after {timeout}s")
            time.sleep(0.25)
        return time.monotonic() - t0

    def remove_disk(self, name: str, pool: Any | None = None) -> None:
        """Remove an RBD image (default: of :attr:`vms`), waiting up to 300 s while it is busy."""
        remove_disk(pool if pool is not None else self.vms, name, wait=300)

    def rbd_images(self, pool: str, cluster: str = "a") -> list[str]:
        with self.ioctx(pool, cluster) as io:
            return sorted(rbd.RBD().list(io))

    def snaps(self, pool: str, image: str) -> list[tuple[str, int]]:
        """All snapshots of an image including the trash namespace: (name, namespace)."""
        with self.ioctx(pool) as io, rbd.Image(io, image, read_only=True) as img:
            return sorted((s["name"], int(s.get("namespace", 0))) for s in img.list_snaps())

    def image_ids(self) -> set[str]:
        return {i["id"] for i in self.glance("admin").images.list()}

    def copy_image(self, image_id: str, store: str = "remote", timeout: float = 120) -> None:
        """Copy an active image into another store with Glance's copy-image import (as admin) and wait until the
        image lists that store."""
        admin = self.glance("admin")
        admin.images.image_import(image_id, method="copy-image", stores=[store])
        deadline = time.monotonic() + timeout
        while store not in str(admin.images.get(image_id).get("stores", "")).split(","):
            assert time.monotonic() < deadline, f"copy-image into {store} did not finish in {timeout:.0f} s"
            time.sleep(0.5)

    def upload_base(self, store: str, data: bytes, user: str = "fastsnap", **props: Any) -> str:
        g = self.glance(user)
        img = g.images.create(name=f"base-{store}-{uuid.uuid4().hex[:6]}", disk_format="raw",
                              container_format="bare", **props)
        self.created_images.append(img["id"])
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


def connect(env: dict[str, str], services: Any = None) -> Stack:
    """The stack of this env.sh (:func:`testkit.env.read_env`), connected to Ceph A and B as client.admin;
    ``services``: what breaks and restarts its services (the tests' native or container stack; None for a
    benchmark that breaks nothing). Shut the connections down with :meth:`Stack.shutdown`."""
    a = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    b = rados.Rados(conffile=env["CEPH_CONF_REMOTE"], rados_id="admin")
    a.connect(timeout=30)
    b.connect(timeout=30)
    return Stack(env, a, b, services=services)
