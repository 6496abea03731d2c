"""The containerized test stack (docker-compose.yml) for the integration tests: ``FASTSNAP_TEST_MODE=containers``.

Started and stopped with testcontainers' ``DockerCompose``. testcontainers is pinned to 3.7
(tests/containers/requirements.txt): the last release that drives Compose v1, ``docker-compose``, the one Debian 12
ships and this machine has. testcontainers 4 runs ``docker compose`` (the v2 plugin: not packaged in Debian 12,
and no other source is reachable here) and starts its Ryuk reaper from an image it pulls from a registry.

Each run uses its own compose project and subnet (``FASTSNAP_TEST_COMPOSE_PROJECT``, default ``fastsnap-test``;
``FASTSNAP_TEST_NET``, default ``172.29.8``), so it can run beside a developer's ``docker-compose up`` (project
``main``, ``172.29.7``). ``FASTSNAP_TEST_KEEP_CONTAINERS=1`` leaves the stack running at the end; the next run
reuses it (seconds instead of a minute).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from testcontainers.compose import DockerCompose

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "ceph-test-env/containers"
# Services and the last byte of their fixed address on the compose network.
ADDRESSES = {"ceph-a": 11, "ceph-b": 12, "postgres": 13, "mgr-a": 14, "osd-a": 15, "keystone": 20, "glance": 21,
             "fastsnap": 30}
SERVICES = tuple(ADDRESSES)


class _Compose(DockerCompose):  # type: ignore[misc]
    """testcontainers' DockerCompose, but a failing docker-compose command raises (3.7 ignores its exit code)."""

    def _call_command(self, cmd: list[str], filepath: str | None = None) -> None:
        out = subprocess.run(cmd, cwd=filepath or self.filepath, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-4000:]}")


class ContainerStack:
    """Start, stop and break the containers of the test stack. Service names are docker-compose.yml's."""

    mode = "containers"

    def __init__(self, project: str | None = None, net: str | None = None, keep: bool | None = None) -> None:
        self.project = project or os.environ.get("FASTSNAP_TEST_COMPOSE_PROJECT", "fastsnap-test")
        self.net = net or os.environ.get("FASTSNAP_TEST_NET", "172.29.8")
        self.keep = os.environ.get("FASTSNAP_TEST_KEEP_CONTAINERS") == "1" if keep is None else keep
        self.run_dir = CONTAINERS / "run" / self.project
        self.env_file = self.run_dir / "compose.env"
        self.network = f"{self.project}_stack"
        self.compose = _Compose(str(ROOT), env_file=str(self.env_file))
        self.timings: dict[str, float] = {}
        self._ids: dict[str, str] = {}

    # -- life cycle ----------------------------------------------------------------------------------------

    def _timed(self, what: str, fn: Callable[[], object]) -> None:
        t = time.monotonic()
        fn()
        self.timings[what] = time.monotonic() - t

    def build(self) -> None:
        """Build the images (offline; cached, so seconds when nothing changed)."""
        out = subprocess.run([str(CONTAINERS / "build")], capture_output=True, text=True,
                             check=False, timeout=3600)
        if out.returncode != 0:
            raise RuntimeError(f"ceph-test-env/containers/build failed:\n{out.stderr[-4000:]}")

    def up(self) -> Path:
        """Build, start and wait until every service is healthy; returns the env.sh written for this host."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.env_file.write_text(f"COMPOSE_PROJECT_NAME={self.project}\nFASTSNAP_NET={self.net}\n"
                                 f"FASTSNAP_BASE_IMAGE=fastsnap/debian-base:bookworm\n"
                                 f"FASTSNAP_TEST_IMAGE_TAG={os.environ.get('FASTSNAP_TEST_IMAGE_TAG', 'latest')}\n")
        if os.environ.get("FASTSNAP_TEST_CONTAINERS_BUILD", "1") == "1":
            self._timed("build", self.build)
        t = time.monotonic()
        self.compose.start()
        self.wait_healthy(SERVICES, timeout=900)
        self.timings["up"] = time.monotonic() - t
        out = subprocess.run([str(CONTAINERS / "client-env"), str(self.run_dir)], capture_output=True, text=True,
                             check=False, env={**os.environ, "COMPOSE_PROJECT_NAME": self.project,
                                               "FASTSNAP_NET": self.net})
        if out.returncode != 0:
            raise RuntimeError(f"client-env failed:\n{out.stderr[-4000:]}")
        return Path(out.stdout.strip())

    def down(self) -> None:
        if self.keep:
            return
        self._timed("down", self.compose.stop)   # docker-compose down -v: containers, network and volumes

    def logs(self, tail: int = 40) -> str:
        out = subprocess.run([*self.compose.docker_compose_command(), "logs", "--no-color", f"--tail={tail}"],
                             cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout

    # -- one service ---------------------------------------------------------------------------------------

    def container(self, service: str) -> str:
        if service not in self._ids:
            out = subprocess.run([*self.compose.docker_compose_command(), "ps", "-q", service], cwd=ROOT,
                                 capture_output=True, text=True, check=True)
            cid = out.stdout.strip()
            if not cid:
                raise RuntimeError(f"service {service} has no container")
            self._ids[service] = cid
        return self._ids[service]

    def _docker(self, *args: str, timeout: float = 120) -> str:
        out = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def address(self, service: str) -> str:
        return f"{self.net}.{ADDRESSES[service]}"

    def state(self, service: str) -> tuple[str, str]:
        """(container state, health): e.g. ("running", "healthy"), ("exited", "unhealthy")."""
        out = self._docker("inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                           self.container(service))
        status, _, health = out.strip().partition(" ")
        return status, health

    def wait_healthy(self, services: tuple[str, ...] | list[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            status, health = self.state(pending[0])
            if status == "running" and health == "healthy":
                pending.pop(0)
                continue
            if status in ("exited", "dead") or time.monotonic() > deadline:
                raise RuntimeError(f"{pending[0]} is {status}/{health or '-'}, not healthy; logs:\n{self.logs()}")
            time.sleep(0.5)

    def kill(self, service: str) -> None:
        """SIGKILL the whole container (every process in it)."""
        self._docker("kill", self.container(service))

    def stop(self, service: str, timeout: int = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self._docker("stop", "-t", str(timeout), self.container(service), timeout=timeout + 60)

    def start(self, service: str, wait: bool = True) -> None:
        self._docker("start", self.container(service))
        if wait:
            self.wait_healthy([service])

    def restart(self, service: str) -> None:
        """Bring a killed, stopped or running service back (running: stop, then start) and wait until healthy."""
        self._docker("restart", "-t", "30", self.container(service), timeout=120)
        self.wait_healthy([service])

    def pause(self, service: str) -> None:
        """Freeze every process of the container (cgroup freezer): the daemon stops answering, sockets stay."""
        self._docker("pause", self.container(service))

    def unpause(self, service: str) -> None:
        self._docker("unpause", self.container(service))

    def disconnect(self, service: str) -> None:
        """Cut the service off the stack's network (its processes keep running)."""
        self._docker("network", "disconnect", "-f", self.network, self.container(service))

    def connect(self, service: str) -> None:
        """Put it back, on its fixed address."""
        self._docker("network", "connect", "--ip", self.address(service), self.network, self.container(service))
