"""A throw-away Prometheus server (Debian's ``prometheus`` binary) scraping one target, and its range queries.

``scripts/dashboard-picture`` needs a real Prometheus to run the dashboard's PromQL on: this starts one with its
own configuration and TSDB in a temporary directory (nothing of the machine's ``/etc/prometheus`` or
``/var/lib/prometheus`` is used or touched), waits until it has scraped its target, answers
``/api/v1/query_range`` and stops it again, removing the directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import requests

from bench import lib
from testkit.cleanup import stop_process


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    times: list[float]       # one per step of the query, start to end
    values: list[float]      # NaN where the series had no sample at that step


def config(target: str, scrape_seconds: float, labels: dict[str, str]) -> str:
    """The configuration (YAML is a superset of JSON): one ``fastsnap`` job scraping ``target``'s /metrics."""
    every = f"{scrape_seconds:g}s"
    return json.dumps({
        "global": {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every},
        "scrape_configs": [{"job_name": "fastsnap", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target], "labels": labels}]}],
    }, indent=1)


class PortInUse(RuntimeError):
    """The server could not bind its listen address."""


def reserve_port(port: int, path: str = "/proc/sys/net/ipv4/ip_local_reserved_ports") -> None:
    """Keep the kernel from handing ``port`` out as the local port of outgoing connections, as ceph-test-env does
    for the stack's ports (machine-wide, harmless, kept); skipped where the file is read-only."""
    try:
        with open(path) as f:
            have = f.read().strip()
        ports = [p for p in have.split(",") if p]
        if any(int(lo) <= port <= int(hi or lo) for lo, _, hi in (p.partition("-") for p in ports)):
            return
        with open(path, "w") as f:
            f.write(",".join([*ports, str(port)]))
    except (OSError, ValueError):
        pass


class Prometheus:
    """``with Prometheus(listen, target) as prom: ...``: a running server; stopped and removed on exit."""

    def __init__(self, listen: str, target: str, scrape_seconds: float = 2.0,
                 labels: dict[str, str] | None = None, binary: str = "prometheus") -> None:
        self.url = f"http://{listen}"
        self.listen = listen
        self.target = target
        self.scrape_seconds = scrape_seconds
        self.labels = labels or {}
        self.binary = binary
        self.dir = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60, tries: int = 3) -> None:
        """Start the server; a start that lost its port to another process's outgoing connection (the port lies in
        the kernel's ephemeral range) is tried again."""
        reserve_port(int(self.listen.rsplit(":", 1)[1]))
        for attempt in range(1, tries + 1):
            try:
                self._start(timeout)
                return
            except PortInUse:
                self.stop()
                if attempt == tries:
                    raise
                time.sleep(2)
            except BaseException:
                self.stop()  # nothing left running or on disk
                raise

    def _start(self, timeout: float) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise RuntimeError(f"{self.binary} is not installed (Debian package prometheus)")
        self.dir = tempfile.mkdtemp(prefix="fastsnap-prometheus-")
        conf = os.path.join(self.dir, "prometheus.yml")
        with open(conf, "w") as f:
            f.write(config(self.target, self.scrape_seconds, self.labels))
        log = open(os.path.join(self.dir, "prometheus.log"), "w")  # noqa: SIM115 - as long as the server runs
        self.proc = subprocess.Popen(
            [path, f"--config.file={conf}", f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address={self.listen}", "--storage.tsdb.retention.time=1d"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                kind = PortInUse if "address already in use" in tail else RuntimeError
                raise kind(f"prometheus exited {self.proc.returncode} at start: {tail}")
            try:
                if requests.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready on {self.listen} after {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.2)
        lib.log(f"prometheus {self.url} (data in {self.dir}) scraping {self.target} every {self.scrape_seconds:g} s")

    def wait_scraped(self, timeout: float = 60) -> None:
        """Until the target has been scraped and was up."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            targets = self.api("targets")["activeTargets"]
            if any(t.get("health") == "up" for t in targets):
                return
            last = "; ".join(f"{t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError')}" for t in targets)
            time.sleep(0.5)
        raise RuntimeError(f"prometheus never scraped its target up: {last}")

    def api(self, path: str, **params: Any) -> Any:
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=60)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"prometheus /api/v1/{path} {params}: {r.status_code} {body.get('error', r.text)}")
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """``expr`` at every ``step`` from ``start`` to ``end`` (Unix seconds), each series on that common grid."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        n = math.floor((end - start) / step + 1e-9) + 1
        times = [start + i * step for i in range(n)]
        out = []
        for r in data["result"]:
            values = [math.nan] * n
            for t, v in r["values"]:
                i = round((float(t) - start) / step)
                if 0 <= i < n:
                    values[i] = float(v)
            out.append(Series(dict(r["metric"]), times, values))
        return out

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(os.path.join(self.dir, "prometheus.log")) as f:
                return f.read()[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""
