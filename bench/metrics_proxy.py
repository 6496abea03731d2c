"""A local proxy that serves only the fastsnap service's ``/metrics``, adding a Keystone token.

Prometheus cannot fetch Keystone tokens, and over TCP every call to fastsnap needs one (doc/source/admin/
monitoring.rst, "Scraping": "a proxy in front of fastsnap's TCP listener that adds a current X-Auth-Token of a
monitoring user with the service role"). This is that proxy, for ``scripts/dashboard-picture``: a thread in the
calling process, on 127.0.0.1 and a port of the kernel's choice; anything but ``GET /metrics`` is a 404.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class MetricsProxy:
    """``with MetricsProxy(service_url, token) as proxy:`` ``proxy.address`` is the ``host:port`` to scrape."""

    def __init__(self, service_url: str, token: Callable[[], str]) -> None:
        self.service_url = service_url
        self.token = token
        self.scrapes = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404, "only /metrics")
                    return
                try:
                    r = requests.get(proxy.service_url + "/metrics", headers={"X-Auth-Token": proxy.token()},
                                     timeout=30)
                    code, body, ctype = r.status_code, r.content, r.headers.get("Content-Type", "text/plain")
                except requests.RequestException as exc:
                    code, body, ctype = 502, f"fastsnap service: {exc}\n".encode(), "text/plain"
                proxy.scrapes += 1
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per scrape every 2 s: not wanted

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self.server.server_address[:2]
        self.address = f"{host!s}:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-proxy", daemon=True)

    def __enter__(self) -> MetricsProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
