"""Nova's REST API of the stack (``ceph-test-env/up --nova``), as the tests (tests/integration/test_nova*.py,
test_lifecycle.py), the Nova benchmark (``python -m bench.nova``) and the Nova demo drive it: a member user
(``demo``) and admin (flavors, the hypervisor side, instance actions), the servers it boots (deleted with
:meth:`NovaAPI.delete_servers`), the images Nova makes (Glance as admin) and the compute host's files (nova.conf,
nova-compute's log, its snapshots directory)."""

from __future__ import annotations

import configparser
import re
import time
import uuid
from pathlib import Path
from typing import Any

import glanceclient
import requests
from keystoneauth1 import session as ks_session

from testkit import keystone
from testkit.cleanup import delete_image, glance_image

MICROVERSION = "2.95"


def read_ini(path: Path) -> dict[str, dict[str, str]]:
    """An ini file (nova.conf) as {section: {option: value}}, its defaults under ``DEFAULT``."""
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.read(path)
    return {s: dict(cp[s]) for s in cp.sections()} | {"DEFAULT": dict(cp.defaults())}


def wait_image(glance: Any, image_id: str, timeout: float = 1800, poll: float = 0.25) -> dict[str, Any]:
    """The image once Glance shows it ``active``; RuntimeError when it ends otherwise (killed, deleted, deactivated)
    or not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    img: dict[str, Any] = {}
    while time.monotonic() < deadline:
        img = glance_image(glance, image_id) or {"status": "deleted"}
        if img["status"] == "active":
            return img
        if img["status"] in ("killed", "deleted", "deactivated"):
            break
        time.sleep(poll)
    raise RuntimeError(f"image {image_id} is {img.get('status')} after up to {timeout}s")


class NovaAPI:
    """Nova as the member user (``sess``; default the env's ``OS_USERNAME``) and as admin (``admin``), Glance as
    admin, on the stack of ``env`` (its env.sh values, :func:`testkit.env.read_env`; the dict is kept, so that a
    caller's update after ``up --nova`` is seen). Servers booted here are remembered in :attr:`servers`."""

    def __init__(self, env: dict[str, str], sess: ks_session.Session | None = None,
                 admin: ks_session.Session | None = None, boot_timeout: float = 600) -> None:
        self.env = env
        self.sess = sess or keystone.session(env["OS_AUTH_URL"], env["OS_USERNAME"], env["OS_PASSWORD"],
                                             env["OS_PROJECT_NAME"])
        self.admin = admin or keystone.session(env["OS_AUTH_URL"], "admin", env["FASTSNAP_TEST_ADMIN_PASSWORD"],
                                               "admin")
        self.glance = glanceclient.Client("2", session=self.admin)
        self.boot_timeout = boot_timeout
        self.servers: list[str] = []

    # -- the compute host's files ---------------------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return Path(self.env["FASTSNAP_TEST_NOVA_CONF"])

    @property
    def compute_log(self) -> Path:
        return self.conf.parent / "log/nova-compute.log"

    @property
    def snapshots_dir(self) -> Path:
        """nova.conf's ``[libvirt] snapshots_directory`` (Nova's default: ``<instances_path>/snapshots``)."""
        ini = read_ini(self.conf)
        instances = Path(ini["DEFAULT"].get("instances_path", self.conf.parent / "instances"))
        return Path(ini.get("libvirt", {}).get("snapshots_directory") or instances / "snapshots")

    @property
    def libvirt_uri(self) -> str:
        return self.env.get("FASTSNAP_TEST_LIBVIRT_URI", "qemu:///system")

    def log_size(self) -> int:
        return self.compute_log.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.compute_log, errors="replace") as f:
            f.seek(offset)
            return f.read()

    # -- requests -------------------------------------------------------------------------------------------------

    def call(self, method: str, path: str, admin: bool = False, **kw: Any) -> requests.Response:
        """One request to Nova at our microversion, whatever its answer."""
        s = self.admin if admin else self.sess
        headers = {"OpenStack-API-Version": f"compute {MICROVERSION}", **kw.pop("headers", {})}
        r: requests.Response = s.request(path, method, endpoint_filter={"service_type": "compute",
                                                                        "interface": "public"},
                                         headers=headers, raise_exc=False, **kw)
        return r

    def checked(self, method: str, path: str, admin: bool = False, ok: tuple[int, ...] = (200, 202, 204),
                **kw: Any) -> requests.Response:
        """:meth:`call`; RuntimeError unless Nova answers with one of ``ok``."""
        r = self.call(method, path, admin, **kw)
        if r.status_code not in ok:
            raise RuntimeError(f"nova {method} {path}: {r.status_code} {r.text[:800]}")
        return r

    def get(self, path: str, admin: bool = False) -> Any:
        return self.checked("GET", path, admin, ok=(200,)).json()

    # -- flavors and servers --------------------------------------------------------------------------------------

    def flavor(self, name: str | None = None, ram: int = 256, vcpus: int = 1, disk: int = 1) -> str:
        """The id of flavor ``name`` (its name or id; default the stack's ``FASTSNAP_NOVA_FLAVOR``), created
        (public, as admin) when missing."""
        name = name or self.env["FASTSNAP_NOVA_FLAVOR"]
        for f in self.get("/flavors", admin=True)["flavors"]:
            if name in (f["name"], f["id"]):
                return str(f["id"])
        body = {"flavor": {"name": name, "ram": ram, "vcpus": vcpus, "disk": disk}}
        return str(self.checked("POST", "/flavors", admin=True, json=body).json()["flavor"]["id"])

    def create(self, image: str, name: str | None = None, flavor: str | None = None) -> str:
        """Ask Nova for a server (without waiting for it), remembered in :attr:`servers`; returns its id."""
        body = {"server": {"name": name or f"fs-{uuid.uuid4().hex[:6]}", "imageRef": image,
                           "flavorRef": flavor or self.flavor(), "networks": "none"}}
        sid = str(self.checked("POST", "/servers", ok=(202,), json=body).json()["server"]["id"])
        self.servers.append(sid)
        return sid

    def boot(self, image: str, name: str | None = None, flavor: str | None = None) -> dict[str, Any]:
        """A server, once ACTIVE (within :attr:`boot_timeout`)."""
        return self.wait_server(self.create(image, name, flavor), "ACTIVE", self.boot_timeout)

    def server(self, sid: str, admin: bool = False) -> dict[str, Any]:
        return dict(self.get(f"/servers/{sid}", admin)["server"])

    def wait_server(self, sid: str, status: str, timeout: float = 600, idle: bool = True) -> dict[str, Any]:
        """The server once in ``status`` (and, with ``idle``, without a task); RuntimeError when it goes to ERROR
        or not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        srv: dict[str, Any] = {}
        while time.monotonic() < deadline:
            srv = self.server(sid)
            if srv["status"] == "ERROR":
                raise RuntimeError(f"server {sid} in ERROR: {srv.get('fault')}")
            if srv["status"] == status and (not idle or srv.get("OS-EXT-STS:task_state") is None):
                return srv
            time.sleep(1)
        raise RuntimeError(f"server {sid} not {status} after {timeout}s: {srv.get('status')} "
                           f"task {srv.get('OS-EXT-STS:task_state')}")

    def domain(self, sid: str) -> str:
        """The server's libvirt domain name."""
        return str(self.server(sid, admin=True)["OS-EXT-SRV-ATTR:instance_name"])

    def console(self, sid: str) -> str:
        r = self.checked("POST", f"/servers/{sid}/action", ok=(200,), json={"os-getConsoleOutput": {"length": -1}})
        return str(r.json()["output"])

    def ready_counter(self, sid: str, timeout: float = 180) -> int:
        """The counter the guest found on its disk at boot (its FASTSNAP-GUEST-READY console line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"FASTSNAP-GUEST-READY counter=(\d+)", self.console(sid))
            if m:
                return int(m.group(1))
            time.sleep(2)
        raise RuntimeError(f"server {sid}: no FASTSNAP-GUEST-READY line on its console")

    def delete_servers(self, only: str | None = None, timeout: float = 300) -> None:
        """Delete the servers booted here (or only ``only``, booted here or not) and wait until Nova has removed
        them; RuntimeError for those still there after ``timeout`` seconds."""
        asked = [only] if only else list(self.servers)
        for sid in asked:
            self.call("DELETE", f"/servers/{sid}")
        left = asked
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            left = [s for s in left if self.call("GET", f"/servers/{s}").status_code != 404]
            if left:
                time.sleep(2)
        self.servers = [s for s in self.servers if s not in asked or s in left]
        if left:
            raise RuntimeError(f"servers not deleted after {timeout}s: {left}")

    # -- actions --------------------------------------------------------------------------------------------------

    def action(self, sid: str, body: dict[str, Any]) -> requests.Response:
        """A server action (``{"os-stop": None}``, ...), accepted."""
        return self.checked("POST", f"/servers/{sid}/action", json=body)

    def image_action(self, sid: str, body: dict[str, Any]) -> tuple[str, str]:
        """A server action that makes an image; (image id, request id)."""
        r = self.checked("POST", f"/servers/{sid}/action", ok=(202,), json=body)
        return str(r.json()["image_id"]), r.headers.get("x-openstack-request-id", "")

    def image_create(self, sid: str, name: str, **metadata: str) -> tuple[str, str]:
        return self.image_action(sid, {"createImage": {"name": name, "metadata": metadata}})

    def backup(self, sid: str, name: str, backup_type: str, rotation: int) -> tuple[str, str]:
        return self.image_action(sid, {"createBackup": {"name": name, "backup_type": backup_type,
                                                        "rotation": rotation}})

    def events(self, sid: str, request_id: str) -> list[dict[str, Any]]:
        action = self.get(f"/servers/{sid}/os-instance-actions/{request_id}", admin=True)["instanceAction"]
        return list(action.get("events") or [])

    # -- images (Glance, as admin) --------------------------------------------------------------------------------

    def image(self, image_id: str) -> dict[str, Any] | None:
        return glance_image(self.glance, image_id)

    def wait_image(self, image_id: str, timeout: float = 1800, poll: float = 0.25) -> dict[str, Any]:
        return wait_image(self.glance, image_id, timeout, poll)

    def delete_image(self, image_id: str, timeout: float = 600) -> None:
        delete_image(self.glance, image_id, timeout, poll=2)
