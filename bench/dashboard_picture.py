"""The picture of the Grafana dashboard in the monitoring docs, from real data of the test stack.

    scripts/dashboard-picture [--out doc/source/admin/images/fastsnap-dashboard.png] [--steady 75]

Grafana cannot be installed here, so this draws etc/grafana/fastsnap-dashboard.json itself, from the dashboard's own
PromQL run by a real Prometheus (Debian's) on a real fastsnap service of the test stack:

1. starts a fastsnap service (testkit.service's, the tests' own, on the stack's Ceph, Keystone and Glance, with a
   journal namespace of its own), a local proxy that adds a Keystone token to ``/metrics`` (bench.metrics_proxy, as
   doc/source/admin/monitoring.rst describes) and a Prometheus scraping it every 2 s (bench.promserver);
2. drives load through the service (bench.dashboard_load: clone, stream and copy snapshots, a burst with 429s,
   duplicates and cancels, failed uploads, queued flattens and a parked disk);
3. runs every panel's queries through ``/api/v1/query_range`` over the load's window, Grafana's variables set as
   Grafana would set them (``$__interval``, ``$__rate_interval`` from the 2 s scrape interval; every cluster and
   service), and draws the panels in the dashboard's grid (bench.dashboard_draw);
4. stops Prometheus, the proxy and the service and removes every disk, image and journal object it made.

Not run by CI: a regeneration script for the docs (doc/source/admin/monitoring.rst says how).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import dashboard_draw as draw
from bench import lib
from bench.dashboard_load import Load
from bench.metrics_proxy import MetricsProxy
from bench.promserver import Prometheus
from testkit import dashboard_panels as dp
from testkit import stack as tk_stack
from testkit.service import Service

DASHBOARD = Path(lib.ROOT) / "etc/grafana/fastsnap-dashboard.json"
OUT = Path(lib.ROOT) / "doc/source/admin/images/fastsnap-dashboard.png"
MAX_POINTS = 900   # a half-width panel's data points (Grafana: its width in pixels) on a 1920 px wide screen


def query_panels(prom: Prometheus, panels: Sequence[dp.Panel], start: float, end: float,
                 variables: dict[str, str], step: float) -> dict[int, list[draw.Result]]:
    out: dict[int, list[draw.Result]] = {}
    for p in panels:
        for t in p.targets:
            expr = dp.substitute(t.expr, variables)
            out.setdefault(p.id, []).append(draw.Result(t, prom.query_range(expr, start, end, step)))
    return out


def stack_env() -> dict[str, str]:
    """The stack's environment (its env.sh, sourced by scripts/dashboard-picture)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("FASTSNAP_", "OS_", "CEPH_"))}
    missing = [k for k in ("CEPH_CONF", "CEPH_CONF_REMOTE", "OS_AUTH_URL", "FASTSNAP_CONFIG_FILE") if k not in env]
    if missing:
        raise SystemExit(f"dashboard-picture: source the stack's env.sh first (missing {', '.join(missing)})")
    return env


def main(argv: Sequence[str] | None = None) -> int:
    ap = lib.arg_parser(__doc__)
    ap.add_argument("--out", default=str(OUT), help="the PNG to write (default: %(default)s)")
    ap.add_argument("--prometheus", default=os.environ.get("FASTSNAP_DASHBOARD_PROMETHEUS", "127.0.0.1:39290"),
                    help="host:port the Prometheus server listens on (default: %(default)s)")
    ap.add_argument("--scrape", type=float, default=2.0, help="scrape interval, seconds (default: %(default)s)")
    ap.add_argument("--steady", type=float, default=75, help="seconds of each steady phase (default: %(default)s)")
    ap.add_argument("--idle", type=float, default=20, help="seconds of quiet before and after (default: %(default)s)")
    ap.add_argument("--budget", type=float, default=900,
                    help="seconds after which no phase starts new work (default: %(default)s)")
    a = ap.parse_args(argv)
    env = stack_env()
    panels = dp.panels(json.loads(DASHBOARD.read_text()))
    t_begin = time.monotonic()
    stack = tk_stack.connect(env)  # the service's and the load's stack; this benchmark breaks nothing
    cleanup = lib.Cleanup(stack)
    tmp = Path(tempfile.mkdtemp(prefix="fastsnap-dashboard-"))
    svc = Service(stack, tmp, slots=3)
    namespace = tk_stack.TEST_NAMESPACE_PREFIX + hashlib.sha1(str(tmp / "state").encode()).hexdigest()[:12]
    load = Load(svc, stack, cleanup, deadline=time.monotonic() + a.budget)
    rc = 1
    try:
        load.make_disks()
        svc.start()
        with MetricsProxy(svc.url, svc.token) as proxy, \
                Prometheus(a.prometheus, proxy.address, a.scrape, labels={"cluster": "ceph-a"}) as prom:
            prom.wait_scraped()
            start = time.time()
            load.idle(a.idle)
            load.steady(a.steady)
            load.burst()
            load.burst(16, retry=True)
            load.failures()
            load.flatten_and_park()
            load.steady(a.steady / 2)
            load.idle(a.idle)
            end = time.time()
            time.sleep(2 * a.scrape)  # the last scrape in
            step = dp.interval(end - start, MAX_POINTS, a.scrape)
            rate = dp.rate_interval(step, a.scrape)
            variables = {"__rate_interval": dp.duration(rate), "__interval": dp.duration(step),
                         "cluster": ".*", "instance": ".*"}
            results = query_panels(prom, panels, start, end, variables, step)
            lib.log(f"{sum(len(r) for r in results.values())} queries over {end - start:.0f} s, step {step:g} s, "
                    f"$__rate_interval {variables['__rate_interval']}; {proxy.scrapes} scrapes")
        day = dt.datetime.fromtimestamp(end, dt.UTC)
        head = draw.Header(
            title="fastsnap",
            subtitle=("Rendered from the dashboard JSON's queries against Prometheus on the test stack, "
                      f"{day:%Y-%m-%d} (not a Grafana screenshot: scripts/dashboard-picture; "
                      f"scrape {a.scrape:g} s, $__rate_interval {variables['__rate_interval']})"),
            variables="Data source: Prometheus    Ceph cluster: All    Service: All",
            window=(f"{dt.datetime.fromtimestamp(start, dt.UTC):%Y-%m-%d %H:%M:%S} to {day:%H:%M:%S} UTC"))
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        size = draw.draw(panels, results, start, end, head, a.out)
        lib.log(f"{a.out}: {size // 1024} KiB; phases: "
                + ", ".join(f"{p.name} {p.end - p.start:.0f} s" for p in load.phases)
                + f"; jobs {load.jobs}")
        for p in load.phases:
            print(json.dumps({"phase": p.name, "seconds": round(p.end - p.start, 1), **p.notes}, default=str))
        # For the caption (doc/source/admin/monitoring.rst): what happened, and what the stat panels show.
        shown = {p.title: dp.fmt(dp.last_not_null([v for r in results.get(p.id, []) for s in r.series[:1]
                                                   for v in s.values]), p.unit, p.decimals)
                 for p in panels if p.type == "stat"}
        print(json.dumps({"jobs": load.jobs, "stat_panels": shown}))
        rc = 0
    finally:
        svc.stop()
        cleanup.all()
        load.remove_parked()
        removed = tk_stack.purge_test_namespaces(env["CEPH_CONF"], prefix=namespace)
        stack.shutdown()
        if rc == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        lib.log(f"cleaned up (journal objects removed: {removed}); {time.monotonic() - t_begin:.0f} s in all"
                + ("" if rc == 0 else f"; the service's log: {tmp / 'service.log'}"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
