"""A test's own fastsnap REST service: ``fastsnap serve`` on a free port of 127.0.0.1, configured from the stack's
fastsnap.conf with a journal namespace of its own, and driven as the stack's users with real Keystone tokens. The
integration tests and the dashboard benchmark (bench/dashboard_load.py) run this one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from testkit.env import ROOT
from testkit.stack import Stack, journal_section


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, stack: Stack, tmp: Path, slots: int = 3, extra: str = "",
                 operator_roles: str | None = "admin,service", host: str | None = None,
                 lease_seconds: int | None = None, namespace: str | None = None, port: int | None = None,
                 flatten_poll_interval: int = 2) -> None:
        """``operator_roles``: as the stack's fastsnap.conf (the tests drive it as fastsnap's own user); None
        leaves fastsnap's default (admin). ``host``, ``lease_seconds``, ``namespace``: its [DEFAULT] host and
        journal (default: the hostname, and a journal namespace of its own); two services sharing a namespace
        with different hosts are two compute hosts of one cluster. ``port``: default a free one (the catalogue's
        fastsnap endpoint names the stack's [service] bind_port)."""
        self.stack = stack
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = tmp / "fastsnap.conf"
        base = Path(stack.config_file).read_text()
        base = base.replace("[journal]\n", "[journal_unused]\n").replace("[service]\n", "[service_unused]\n")
        if "[keystone_authtoken]" not in base:  # the service validates tokens as fastsnap's service user
            base += "\n[keystone_authtoken]\n" + "\n".join(
                f"{k} = {v}" for k, v in (
                    ("www_authenticate_uri", stack.env["OS_AUTH_URL"]), ("auth_url", stack.env["OS_AUTH_URL"]),
                    ("auth_type", "password"), ("username", "fastsnap"),
                    ("password", stack.env["FASTSNAP_TEST_SERVICE_PASSWORD"]), ("project_name", "service"),
                    ("user_domain_name", "Default"), ("project_domain_name", "Default"))) + "\n"
        self.conf.write_text(base + journal_section(tmp / "state", host=host, lease_seconds=lease_seconds,
                                                    namespace=namespace)
                             + "[service]\nbind_host = 127.0.0.1\n"
                             f"bind_port = {self.port}\nflatten_poll_interval = {flatten_poll_interval}\n"
                             + (f"operator_roles = {operator_roles}\n" if operator_roles else "") +
                             f"{extra}\n[snapshot]\nmax_concurrent = {slots}\n")
        self.proc: subprocess.Popen[str] | None = None
        self.tokens: dict[str, str] = {}

    def start(self) -> None:
        log = open(self.conf.parent / "service.log", "a")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), "--config-file", str(self.conf), "serve"],
                                     stdout=log, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **self.stack.env})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/openapi.json", timeout=2)
                return
            except requests.ConnectionError:
                assert self.proc.poll() is None, (self.conf.parent / "service.log").read_text()[-3000:]
                time.sleep(0.2)
        raise AssertionError("service did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def token(self, user: str = "fastsnap") -> str:
        if user not in self.tokens:
            token = self.stack.session(user).get_token()
            assert token, f"no token for {user}"
            self.tokens[user] = token
        return self.tokens[user]

    def call(self, method: str, path: str, user: str | None = "fastsnap", **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if user:
            headers["X-Auth-Token"] = self.token(user)
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.call("GET", f"/v1/snapshots/{job_id}").json()
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish")
