"""The Grafana dashboard's panels as Grafana would read them, for drawing it without Grafana.

``scripts/dashboard-picture`` renders etc/grafana/fastsnap-dashboard.json from its own queries against a real
Prometheus (Grafana cannot be installed here). This module is the part of that which is Grafana's semantics and
needs neither Prometheus nor matplotlib: the panels and their grid positions, the query variables
(``$__interval``, ``$__rate_interval``, ``$cluster``, ``$instance``) with Grafana's own formulas, legend formats,
the value formats of the units the dashboard uses and the threshold colours. Pure, so its unit tests need no stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

# Grafana's dark theme: the named colours of thresholds and the "classic palette" of time series.
NAMED_COLORS = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A",
                "blue": "#5794F2", "purple": "#B877D9", "text": "#CCCCDC"}
CLASSIC_PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
                   "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477")
GRID_COLUMNS = 24


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str          # legendFormat: "{{label}}" templates, "__auto", or ""
    ref_id: str


@dataclass(frozen=True)
class Threshold:
    color: str           # a hex colour
    value: float | None  # None: the base step (from minus infinity)


@dataclass(frozen=True)
class Panel:
    """One panel: a row header, a stat or a time series, where the grid puts it and what it queries."""

    id: int
    type: str            # "row", "stat", "timeseries"
    title: str
    x: int
    y: int
    w: int
    h: int
    targets: tuple[Target, ...] = ()
    unit: str = "short"
    decimals: int | None = None
    min: float | None = None
    stacking: str = "none"   # "none" or "normal" (stacked)
    fill_opacity: float = 0.0
    thresholds: tuple[Threshold, ...] = ()
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def color(name: str) -> str:
    """A Grafana colour name (or a hex or rgba colour, returned as it is) as a hex colour."""
    return NAMED_COLORS.get(name, name)


def panels(dashboard: dict[str, Any]) -> list[Panel]:
    """Every panel of a dashboard, those of collapsed rows too, in the order of the grid (top to bottom, left to
    right)."""
    out: list[Panel] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for p in items:
            out.append(panel(p))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    return sorted(out, key=lambda p: (p.y, p.x))


def panel(p: dict[str, Any]) -> Panel:
    grid = p["gridPos"]
    defaults = p.get("fieldConfig", {}).get("defaults", {})
    custom = defaults.get("custom", {})
    steps = defaults.get("thresholds", {}).get("steps", [])
    return Panel(
        id=int(p["id"]), type=str(p["type"]), title=str(p.get("title", "")),
        x=int(grid["x"]), y=int(grid["y"]), w=int(grid["w"]), h=int(grid["h"]),
        targets=tuple(Target(str(t["expr"]), str(t.get("legendFormat", "")), str(t.get("refId", "")))
                      for t in p.get("targets", []) if not t.get("hide")),
        unit=str(defaults.get("unit", "short")), decimals=defaults.get("decimals"), min=defaults.get("min"),
        stacking=str(custom.get("stacking", {}).get("mode", "none")),
        fill_opacity=float(custom.get("fillOpacity", 0)) / 100,
        thresholds=tuple(Threshold(color(str(s["color"])), s.get("value")) for s in steps),
        description=str(p.get("description", "")), options=dict(p.get("options", {})))


# -- query variables ----------------------------------------------------------------------------------------


def interval(range_seconds: float, max_points: int, scrape_seconds: float) -> float:
    """Grafana's ``$__interval``: the range over the panel's data points, not below the data source's scrape
    interval (its "min interval")."""
    return max(scrape_seconds, range_seconds / max(1, max_points))


def rate_interval(interval_seconds: float, scrape_seconds: float) -> float:
    """Grafana's ``$__rate_interval``: ``max($__interval + scrape interval, 4 * scrape interval)``, the shortest
    window a ``rate()`` can be trusted over."""
    return max(interval_seconds + scrape_seconds, 4 * scrape_seconds)


def duration(seconds: float) -> str:
    """A PromQL duration (whole seconds)."""
    return f"{max(1, round(seconds))}s"


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana's variables (``$name`` and ``${name}``), the longest names first (``$__rate_interval``
    before ``$__interval``)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def legend(fmt: str, labels: dict[str, str], expr: str) -> str:
    """A series' name as Grafana shows it: ``legendFormat`` with ``{{label}}`` filled in (a missing label is
    empty); ``__auto`` or none: the series' labels, or the expression for a series without labels."""
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    if not shown:
        return expr
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"


# -- values -----------------------------------------------------------------------------------------------


def threshold_color(steps: tuple[Threshold, ...], value: float | None) -> str:
    """The colour of the highest step whose value the value reaches (the base step's below all of them)."""
    chosen = NAMED_COLORS["green"]
    if value is None or math.isnan(value):
        return NAMED_COLORS["text"]
    for s in steps:
        if s.value is None or value >= s.value:
            chosen = s.color
    return chosen


def _number(v: float, decimals: int | None) -> str:
    if decimals is not None:
        return f"{v:.{decimals}f}"
    if v == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(v)))) if abs(v) < 100 else 0
    text = f"{v:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt(value: float | None, unit: str, decimals: int | None = None) -> str:
    """A value in one of the dashboard's units as Grafana writes it: ``short`` (K, Mil, Bil), ``s`` (ms below a
    second, min, hour), ``Bps`` (decimal B/s, kB/s, MB/s, GB/s); anything else as a number."""
    if value is None or math.isnan(value):
        return "No data"
    v = float(value)
    if unit == "s":
        if v != 0 and abs(v) < 1:
            return f"{_number(v * 1000, decimals)} ms"
        if abs(v) >= 3600:
            return f"{_number(v / 3600, decimals)} hour"
        if abs(v) >= 60:
            return f"{_number(v / 60, decimals)} min"
        return f"{_number(v, decimals)} s"
    if unit == "Bps":
        for div, suffix in ((1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
            if abs(v) >= div:
                return f"{_number(v / div, decimals)} {suffix}"
        return f"{_number(v, decimals)} B/s"
    if unit == "short":
        for div, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
            if abs(v) >= div:
                return f"{_number(v / div, decimals)}{suffix}"
    return _number(v, decimals)


def last_not_null(values: list[float]) -> float | None:
    """The stat panels' reduction (``lastNotNull``)."""
    for v in reversed(values):
        if not math.isnan(v):
            return v
    return None


def grid_rows(all_panels: list[Panel]) -> int:
    """The dashboard's height in grid units."""
    return max((p.y + p.h for p in all_panels), default=0)
