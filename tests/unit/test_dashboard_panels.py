"""testkit.dashboard_panels: the Grafana semantics scripts/dashboard-picture draws the dashboard with (its grid,
variables, legends, units, thresholds), on the shipped dashboard JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from testkit import dashboard_panels as dp

DASHBOARD = Path(__file__).resolve().parents[2] / "etc/grafana/fastsnap-dashboard.json"


def _panels() -> list[dp.Panel]:
    return dp.panels(json.loads(DASHBOARD.read_text()))


def test_the_dashboard_panels_tile_the_grid() -> None:
    panels = _panels()
    assert [p.title for p in panels if p.type == "row"] == [
        "Overview", "Snapshots", "Hosts", "Backlog and recovery", "Errors and limits"]
    assert {p.type for p in panels} == {"row", "stat", "timeseries"}
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        assert p.x >= 0 and p.x + p.w <= dp.GRID_COLUMNS, p
        for x in range(p.x, p.x + p.w):
            for y in range(p.y, p.y + p.h):
                assert (x, y) not in cells, f"{p.title} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p.title
    assert dp.grid_rows(panels) == 57
    assert [(p.y, p.x) for p in panels] == sorted((p.y, p.x) for p in panels)
    assert all(p.targets for p in panels if p.type != "row")


def test_panel_options_as_the_json_says() -> None:
    by_title = {p.title: p for p in _panels()}
    failed = by_title["Failed (10 min)"]
    assert failed.unit == "short" and failed.decimals == 0
    assert failed.thresholds == (dp.Threshold(dp.NAMED_COLORS["green"], None), dp.Threshold(dp.NAMED_COLORS["red"], 1))
    latency = by_title["Snapshot latency by path (p50, p95)"]
    assert latency.unit == "s" and latency.stacking == "none" and latency.fill_opacity == pytest.approx(0.1)
    assert [t.legend for t in latency.targets] == ["p50 {{path}}", "p95 {{path}}"]
    assert by_title["Snapshots by path"].stacking == "normal"
    assert by_title["Bytes streamed into Glance"].unit == "Bps"


def test_grafana_intervals() -> None:
    # The picture: a 6-minute window, 2 s scrapes: $__interval is the scrape interval, $__rate_interval 4 of them.
    step = dp.interval(360, 900, 2)
    assert step == 2 and dp.rate_interval(step, 2) == 8
    # The dashboard's own 6 h default with a 15 s scrape interval.
    step = dp.interval(6 * 3600, 900, 15)
    assert step == 24 and dp.rate_interval(step, 15) == 60
    assert dp.duration(8.0) == "8s" and dp.duration(0.2) == "1s"


def test_substitute_longest_variable_first() -> None:
    expr = 'rate(x{cluster=~"$cluster", instance=~"${instance}"}[$__rate_interval]) offset $__interval'
    out = dp.substitute(expr, {"__rate_interval": "8s", "__interval": "2s", "cluster": ".*", "instance": ".*"})
    assert out == 'rate(x{cluster=~".*", instance=~".*"}[8s]) offset 2s'


def test_legend() -> None:
    assert dp.legend("p95 {{path}}", {"path": "clone"}, "e") == "p95 clone"
    assert dp.legend("{{limit}} {{ instance }}", {"limit": "host"}, "e") == "host"
    assert dp.legend("__auto", {}, "sum(x)") == "sum(x)"
    assert dp.legend("", {"__name__": "x", "b": "2", "a": "1"}, "x") == '{a="1", b="2"}'


@pytest.mark.parametrize(("value", "unit", "decimals", "text"), [
    (None, "short", None, "No data"), (math.nan, "s", None, "No data"),
    (0, "short", 0, "0"), (19.0, "short", 0, "19"), (1500, "short", None, "1.5 K"), (2.5e6, "short", None, "2.5 Mil"),
    (0.25, "s", None, "250 ms"), (1.5, "s", None, "1.5 s"), (90, "s", None, "1.5 min"), (0, "s", None, "0 s"),
    (4.5e6, "Bps", None, "4.5 MB/s"), (800, "Bps", None, "800 B/s"), (0.123, "short", None, "0.123"),
])
def test_fmt(value: float | None, unit: str, decimals: int | None, text: str) -> None:
    assert dp.fmt(value, unit, decimals) == text


def test_threshold_color_and_reduction() -> None:
    steps = (dp.Threshold("#green", None), dp.Threshold("#orange", 50))
    assert dp.threshold_color(steps, 0) == "#green"
    assert dp.threshold_color(steps, 50) == "#orange"
    assert dp.threshold_color(steps, None) == dp.NAMED_COLORS["text"]
    assert dp.last_not_null([1.0, 2.0, math.nan]) == 2.0
    assert dp.last_not_null([math.nan]) is None
