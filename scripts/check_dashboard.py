"""Check the Grafana dashboard and the alert rules against the service's metrics (run by scripts/check-alerts).

- every ``fastsnap_*`` metric that etc/grafana/fastsnap-dashboard.json or etc/prometheus/fastsnap-alerts.yml
  queries is one that fastsnap/service/metrics.py defines (a histogram's ``_bucket``/``_count``/``_sum``, a
  counter's ``_total``);
- every metric metrics.py defines appears on the dashboard;
- every panel query is valid PromQL: they are written, with Grafana's variables replaced, into a rule file
  that ``promtool check rules`` parses (the path is printed; pass it to promtool).

Standard library only: ``python3 scripts/check_dashboard.py OUT_RULE_FILE``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "etc/grafana/fastsnap-dashboard.json"
RULES = ROOT / "etc/prometheus/fastsnap-alerts.yml"
METRICS = ROOT / "fastsnap/service/metrics.py"
# Grafana's variables, as a query would see them.
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$cluster": ".*", "$instance": ".*"}


def defined_metrics() -> dict[str, str]:
    """name -> kind, from the prometheus_client constructors of metrics.py."""
    text = METRICS.read_text()
    return {name: kind for kind, name in re.findall(r"\b(Histogram|Counter|Gauge)\(\s*\"(fastsnap_\w+)\"", text)}


def series_names(defined: dict[str, str]) -> dict[str, str]:
    """Every series name a query may use -> the metric it belongs to."""
    names = {}
    for name, kind in defined.items():
        if kind == "Histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                names[name + suffix] = name
        else:
            names[name] = name
    return names


def exprs(panels: list[dict]) -> list[tuple[str, str]]:
    out = []
    for panel in panels:
        out += exprs(panel.get("panels", []))
        for t in panel.get("targets", []):
            out.append((panel["title"], t["expr"]))
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else None
    defined = defined_metrics()
    names = series_names(defined)
    dash = json.loads(DASHBOARD.read_text())
    queries = exprs(dash["panels"])
    errors = []
    for source, text in [*(("dashboard: " + t, e) for t, e in queries), ("alert rules", RULES.read_text())]:
        for name in re.findall(r"\bfastsnap_\w+", text):
            if name not in names:
                errors.append(f"{source}: {name} is not a metric of fastsnap/service/metrics.py")
    dash_used = {names[n] for _, e in queries for n in re.findall(r"\bfastsnap_\w+", e) if n in names}
    errors += [f"dashboard: no panel shows {m}" for m in sorted(set(defined) - dash_used)]
    if out is not None:
        rules = []
        for i, (title, expr) in enumerate(queries):
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            rules.append({"record": f"dashboard:panel_{i}", "expr": expr, "labels": {"panel": title}})
        out.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
    for e in errors:
        print(e, file=sys.stderr)
    print(f"dashboard: {len(queries)} queries over {len(dash_used)} of the {len(defined)} metrics; alert rules "
          f"checked against them; {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
