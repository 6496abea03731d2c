"""The stack's Nova compute host (``ceph-test-env/up --nova``) as the Nova demo (``scripts/demo --nova``) and the
Nova benchmark (``python -m bench.nova``) drive it (Nova's REST API: :mod:`testkit.novaapi`): the fastsnap service
on the compute host's unix socket, nova-compute's ``compute_driver`` switched through ``ceph-test-env/up``, and the
guest through libvirt (its state, its agent, the counter it writes).

Run with the stack's ``env.sh`` sourced (``FASTSNAP_TEST_RUN_DIR`` for a stack elsewhere than
``ceph-test-env/run``)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from testkit.cleanup import stop_process
from testkit.env import ROOT, run_dir

RUN = run_dir()
HOOK_DRIVER = "fastsnap.FastsnapLibvirtDriver"
STOCK_DRIVER = "libvirt.LibvirtDriver"


def up_nova(settings: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """``ceph-test-env/up --nova`` with these ``FASTSNAP_TEST_NOVA_*`` settings (``..._DRIVER``: nova-compute's
    compute_driver, ``..._SNAPSHOT_FORMAT``: its snapshot_image_format): it rewrites nova.conf and restarts
    nova-compute when it changed, and returns once nova-compute consumes RPC again. The caller judges the exit."""
    env = {**os.environ, "FASTSNAP_TEST_NOVA": "1", **settings}
    return subprocess.run([str(ROOT / "ceph-test-env/up"), "--nova"], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def switch_driver(driver: str) -> float:
    """nova-compute on ``driver`` (:func:`up_nova`); seconds it took."""
    t0 = time.monotonic()
    up = up_nova({"FASTSNAP_TEST_NOVA_DRIVER": driver})
    if up.returncode != 0:
        raise RuntimeError(f"ceph-test-env/up --nova (compute_driver {driver}) failed:\n{up.stderr[-4000:]}")
    return time.monotonic() - t0


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class FastsnapService:
    """``fastsnap serve`` on the unix socket nova.conf's ``[fastsnap] unix_socket`` names (``socket``; default
    ``FASTSNAP_TEST_NOVA_FASTSNAP_SOCKET``), configured from the stack's fastsnap.conf with its own journal
    (``work/state``), its output in ``work/service.log`` and, with ``log_file``, its oslo.log there too (instead of
    the stack's log_dir). tests/integration/test_nova.py's service is this one."""

    def __init__(self, env: dict[str, str], work: Path, extra_conf: str = "", socket: Path | None = None,
                 log_file: Path | None = None) -> None:
        self.env = env
        self.socket = socket or Path(env["FASTSNAP_TEST_NOVA_FASTSNAP_SOCKET"])
        self.work = work
        self.conf = work / "fastsnap.conf"
        self.log = work / "service.log"
        base = Path(env["FASTSNAP_CONFIG_FILE"]).read_text()
        base = base.replace("[journal]\n", "[journal_unused]\n").replace("[service]\n", "[service_unused]\n")
        own_log = f"\n[DEFAULT]\nlog_file = {log_file}" if log_file else ""
        work.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(base + f"{own_log}\n[journal]\nstate_dir = {work / 'state'}\n"
                             f"namespace = t-{hashlib.sha1(str(work).encode()).hexdigest()[:12]}\n[service]\n"
                             f"unix_socket = {self.socket}\nunix_socket_mode = 0660\n{extra_conf}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the service (stopping the one this object started: never two on one socket) and wait until it
        answers."""
        self.launch([str(ROOT / ".venv/bin/fastsnap")], {})

    def launch(self, cmd: list[str], extra_env: dict[str, str]) -> None:
        """:meth:`start` with ``cmd`` before ``--config-file ... serve`` and ``extra_env`` in its environment."""
        self.stop()
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*cmd, "--config-file", str(self.conf), "serve"], stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, **self.env, **extra_env},
                                         cwd=ROOT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("fastsnap service exited: " + self.log.read_text()[-3000:])
            with contextlib.suppress(OSError):
                if self.call("GET", "/v1/stores")[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("fastsnap service did not answer: " + self.log.read_text()[-3000:])

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def call(self, method: str, path: str) -> tuple[int, Any]:
        conn = UnixHTTPConnection(str(self.socket))
        try:
            conn.request(method, path)
            r = conn.getresponse()
            body = r.read()
            return r.status, json.loads(body) if body else None
        finally:
            conn.close()

    def job_for(self, image_id: str) -> dict[str, Any] | None:
        code, body = self.call("GET", f"/v1/snapshots?image_id={image_id}")
        jobs = body.get("snapshots", []) if code == 200 and body else []
        return dict(jobs[0]) if jobs else None


# -- the guest, through libvirt ------------------------------------------------------------------------------


def _conn(env: dict[str, str]) -> Any:
    import libvirt  # Debian's python3-libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors are raised; don't also print them
    return libvirt.open(env.get("FASTSNAP_TEST_LIBVIRT_URI", "qemu:///system"))


def agent(env: dict[str, str], domain: str, command: str, timeout: int = 5, **arguments: Any) -> Any:
    import libvirt_qemu

    msg: dict[str, Any] = {"execute": command}
    if arguments:
        msg["arguments"] = arguments
    conn = _conn(env)
    try:
        return json.loads(libvirt_qemu.qemuAgentCommand(conn.lookupByName(domain), json.dumps(msg), timeout,
                                                       0))["return"]
    finally:
        conn.close()


def read_guest_file(env: dict[str, str], domain: str, path: str, count: int = 4096) -> bytes:
    """The first ``count`` bytes of a file inside the guest, read through its agent."""
    h = agent(env, domain, "guest-file-open", path=path)
    try:
        return base64.b64decode(agent(env, domain, "guest-file-read", handle=h, count=count)["buf-b64"])
    finally:
        agent(env, domain, "guest-file-close", handle=h)


def counter(env: dict[str, str], domain: str) -> int:
    """The guest's counter, read inside the guest through its agent."""
    return int(read_guest_file(env, domain, "/disk/data/counter").strip() or b"0")


def wait_counter(env: dict[str, str], domain: str, timeout: float = 300) -> tuple[float, int]:
    """Seconds until the guest agent answers and the counter can be read; the counter then."""
    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - t0 < timeout:
        try:
            return time.monotonic() - t0, counter(env, domain)
        except Exception as exc:  # agent not up yet
            last = exc
            time.sleep(1)
    raise RuntimeError(f"guest agent of {domain} did not answer within {timeout}s: {last}")


STATE_NAMES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
               6: "crashed", 7: "pmsuspended"}


class Watch:
    """While a snapshot runs: the libvirt state of the guest's domain (every 50 ms; time spent in each state) and
    the guest's counter (every ``counter_every`` s, through the agent; the longest time it did not advance)."""

    def __init__(self, env: dict[str, str], domain: str, counter_every: float = 1.0) -> None:
        self.env = env
        self.domain = domain
        self.counter_every = counter_every
        self.state_seconds: dict[str, float] = {}
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._states, daemon=True),
                         threading.Thread(target=self._counter, daemon=True)]

    def _states(self) -> None:
        import libvirt

        libvirt.registerErrorHandler(lambda *_: None, None)
        conn = libvirt.openReadOnly(self.env.get("FASTSNAP_TEST_LIBVIRT_URI", "qemu:///system"))
        try:
            last = time.monotonic()
            while not self._stop.is_set():
                try:
                    st = STATE_NAMES.get(conn.lookupByName(self.domain).state()[0], "?")
                except libvirt.libvirtError:
                    st = "undefined"
                now = time.monotonic()
                self.state_seconds[st] = self.state_seconds.get(st, 0.0) + (now - last)
                last = now
                time.sleep(0.05)
        finally:
            conn.close()

    def _counter(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # agent busy (frozen guest) or domain not running
                self.samples.append((time.monotonic(), counter(self.env, self.domain)))
            self._stop.wait(self.counter_every)

    def __enter__(self) -> Watch:
        self.t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        self.t1 = time.monotonic()

    def summary(self) -> dict[str, Any]:
        """States seen (seconds in each), counter at start/end and the longest stall of the counter (from the
        start of the watch to its end, counting a stretch without any successful read as a stall)."""
        pts = [(self.t0, None), *self.samples, (self.t1, None)]
        stall = 0.0
        last_change = self.t0
        prev: int | None = None
        for t, v in pts:
            if v is not None and v != prev:
                if prev is not None:
                    stall = max(stall, t - last_change)
                last_change, prev = t, v
        stall = max(stall, self.t1 - last_change)
        vals = [v for _, v in self.samples]
        return {
            "domain_states": {k: round(v, 2) for k, v in sorted(self.state_seconds.items())},
            "never_left_running": set(self.state_seconds) <= {"running"},
            "counter_first": vals[0] if vals else None, "counter_last": vals[-1] if vals else None,
            "counter_reads": len(vals), "counter_max_stall_s": round(stall, 2),
        }
