"""Counting the HTTP requests a process makes to Glance and Keystone, by kind.

Two ways, both independent of fastsnap's own code:

- :class:`Counter` wraps ``requests.adapters.HTTPAdapter.send`` in this process (every keystoneauth1 and
  glanceclient request goes through it, retries included). The cost benchmark uses it for in-process snapshots;
  ``bench/_count/sitecustomize.py`` installs it in a child process (the CLI) and writes the counts at exit.
- :class:`CountingProxy` is a small forwarding HTTP proxy on 127.0.0.1 in front of the real Glance (or Keystone):
  point ``[glance] endpoint_override`` (or ``auth_url``) at it and every request that reaches the server is
  counted. The integration tests use it for the service, which runs in its own process.

A request's kind is its method and path with ids replaced: ``GET /v2/images/{id}``, ``POST /v3/auth/tokens``.
"""

from __future__ import annotations

import http.client
import json
import re
import socketserver
import threading
from collections import Counter as _Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

_ID = re.compile(r"/(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-f]{32})"
                 r"(?=/|$)")


def kind(method: str, url_or_path: str) -> str:
    """``GET /v2/images/{id}`` for ``GET http://host/v2/images/<uuid>?x=y``."""
    path = urlsplit(url_or_path).path or "/"
    return f"{method.upper()} {_ID.sub('/{id}', path)}"


class Counter:
    """Requests this process sends, by (service, kind); ``services`` maps ``host:port`` to a service name."""

    def __init__(self, services: dict[str, str]) -> None:
        self.services = dict(services)
        self.counts: _Counter[tuple[str, str]] = _Counter()
        self._lock = threading.Lock()
        self._orig: Any = None

    def install(self) -> Counter:
        import requests.adapters

        if self._orig is not None:
            return self
        orig = requests.adapters.HTTPAdapter.send
        counter = self

        def send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            counter.record(str(request.method), str(request.url))
            return orig(adapter, request, *args, **kwargs)

        self._orig = orig
        setattr(requests.adapters.HTTPAdapter, "send", send)  # noqa: B010 - patching a method on purpose
        return self

    def uninstall(self) -> None:
        import requests.adapters

        if self._orig is not None:
            setattr(requests.adapters.HTTPAdapter, "send", self._orig)  # noqa: B010
            self._orig = None

    def record(self, method: str, url: str) -> None:
        netloc = urlsplit(url).netloc
        service = self.services.get(netloc, netloc)
        with self._lock:
            self.counts[(service, kind(method, url))] += 1

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{service: {kind: n}}."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for (service, k), n in sorted(self.counts.items()):
                out.setdefault(service, {})[k] = n
        return out


def total(counts: dict[str, dict[str, int]], service: str) -> int:
    return sum(counts.get(service, {}).values())


def services_from_env(env: dict[str, str]) -> dict[str, str]:
    """host:port → "glance" / "keystone" for the stack described by env.sh's variables."""
    out = {}
    if env.get("FASTSNAP_TEST_GLANCE_URL"):
        out[urlsplit(env["FASTSNAP_TEST_GLANCE_URL"]).netloc] = "glance"
    if env.get("OS_AUTH_URL"):
        out[urlsplit(env["OS_AUTH_URL"]).netloc] = "keystone"
    return out


def write_counts(path: str, counter: Counter) -> None:
    with open(path, "w") as f:
        json.dump(counter.snapshot(), f)


# -- a counting forwarding proxy ------------------------------------------------------------------------------


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class CountingProxy:
    """``http://127.0.0.1:<port>`` forwarding every request to ``upstream`` (keep-alive on both sides), counting
    requests by kind. Bodies are passed through (Content-Length or chunked); for small API calls, not streams.
    ``fail[kind] = n``: the next n requests of that kind are answered 503 by the proxy itself, not forwarded (a
    Glance that is briefly overloaded or restarting, for tests)."""

    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)
        self.upstream_host = up.hostname or "127.0.0.1"
        self.upstream_port = up.port or 80
        self.prefix = up.path.rstrip("/")
        self.counts: _Counter[str] = _Counter()
        self.fail: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _forward(self) -> None:
                what = kind(self.command, self.path)
                with proxy._lock:
                    proxy.counts[what] += 1
                    refuse = proxy.fail.get(what, 0) > 0
                    if refuse:
                        proxy.fail[what] -= 1
                length = self.headers.get("Content-Length")
                body: bytes | None = None
                if length is not None:
                    body = self.rfile.read(int(length))
                elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    body = b"".join(parts)
                if refuse:
                    self._answer(503, "Service Unavailable", [("Content-Type", "text/plain")], b"injected by the proxy")
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "transfer-encoding", "connection", "content-length")}
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self._answer(resp.status, resp.reason, resp.getheaders(), data)

            def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response_only(status, reason)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}{self.prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))


@contextmanager
def counting_proxy(upstream: str) -> Iterator[CountingProxy]:
    proxy = CountingProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
