"""Glance as the deployment tools configure it, beside the stack's own (doc/source/install/glance-shapes.rst).

The stack's glance-api runs with ``show_multiple_locations = False`` and ``show_image_direct_url = True`` (Kolla's
defaults plus the ``show_image_direct_url`` Ceph's guide asks for). A shape is a second glance-api process with
its own two settings, started from a copy of the stack's configuration on a port of its own: the same database,
the same stores and the same Keystone, so an image made through one is the image every other one shows (glance-api
processes hold no other state). fastsnap is pointed at it with ``[glance] endpoint_override``, nova-compute with
``FASTSNAP_TEST_NOVA_COMPUTE_GLANCE_URL`` (ceph-test-env/lib/nova.sh). Starting one takes a few seconds; restarting
the stack's Glance (or the whole stack) per setting would cost far more.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from testkit.env import ROOT, RUN

#: shape -> (show_multiple_locations, show_image_direct_url)
SHAPES = {
    "kolla": (False, False),  # Kolla-Ansible: neither set (its release note: Nova's and Cinder's optimisations off)
    "osa": (True, True),      # OpenStack-Ansible with an rbd store: both on
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ShapedGlance:
    """A second glance-api (one gunicorn worker) with ``show_multiple_locations`` and ``show_image_direct_url``
    of ``shape``; :meth:`stop` ends it and removes its directory."""

    shape: str
    url: str
    proc: subprocess.Popen[bytes]
    work: Path
    started_seconds: float

    @classmethod
    def start(cls, shape: str) -> ShapedGlance:
        multiple, direct = SHAPES[shape]
        src = RUN / "glance/etc"
        work = RUN / f"glance-{shape}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "etc").mkdir(parents=True)
        (work / "log").mkdir()
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        conf = (src / "glance-api.conf").read_text()
        for key, value in (("show_multiple_locations", multiple), ("show_image_direct_url", direct)):
            conf, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", conf)
            assert n == 1, f"{key} not in the stack's glance-api.conf"
        conf = re.sub(r"(?m)^log_file = .*$", f"log_file = {work / 'log/glance-api.log'}", conf)
        conf = re.sub(r"(?m)^worker_self_reference_url = .*$", f"worker_self_reference_url = {url}", conf)
        (work / "etc/glance-api.conf").write_text(conf)
        shutil.copy(src / "glance-api-paste.ini", work / "etc/glance-api-paste.ini")
        t0 = time.monotonic()
        log = open(work / "log/gunicorn.log", "ab")  # noqa: SIM115 - the child writes it until stop()
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/gunicorn"), "--no-control-socket", "-b", f"127.0.0.1:{port}", "-w", "1",
             "--threads", "8", "--timeout", "600", "--keep-alive", "75", "glance.wsgi.api:application"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OS_GLANCE_CONFIG_DIR": str(work / "etc")},
            cwd=work)
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"glance-api ({shape}) exited: {(work / 'log/gunicorn.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/versions", timeout=5).status_code in (200, 300):
                    return cls(shape, url, proc, work, time.monotonic() - t0)
            except requests.RequestException:
                pass
            time.sleep(0.3)
        proc.kill()
        raise AssertionError(f"glance-api ({shape}) did not answer within 120 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # gunicorn's quick shutdown (SIGTERM waits for its workers)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.work, ignore_errors=True)

    def conf(self, base: str, extra: str = "") -> str:
        """fastsnap.conf text ``base`` pointed at this Glance (a later ``[glance]`` section wins)."""
        return f"{base}\n[glance]\nendpoint_override = {self.url}\n{extra}"
