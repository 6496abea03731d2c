"""Draw the dashboard's panels, as Grafana lays them out, from the series their queries returned (matplotlib).

The grid is Grafana's: 24 columns, a grid unit of height per ``gridPos.h``; row panels are headers, ``stat`` panels
a big number (their reduction, ``lastNotNull``) coloured by the panel's thresholds over a sparkline,
``timeseries`` panels lines (stacked where the panel stacks), filled with the panel's fill opacity, in the units
and legend format the JSON gives; a panel whose queries returned nothing says "No data", as Grafana does. The colours
are Grafana's dark theme. This is a substitute for a Grafana screenshot, and the picture says so in its header.

matplotlib comes from bench/requirements.txt (not a runtime dependency of fastsnap).
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator
from PIL import Image  # matplotlib's own dependency

from bench.promserver import Series
from testkit import dashboard_panels as dp

BACKGROUND = "#111217"
PANEL = "#181B1F"
BORDER = "#2C3235"
TEXT = "#CCCCDC"
WEAK = "#8E8E8E"
COL_PX = 75            # one of the 24 grid columns
ROW_PX = 32            # one grid unit of height (Grafana: 30 px and a margin)
GAP_PX = 6
HEADER_PX = 96
DPI = 100


@dataclass(frozen=True)
class Result:
    """What one target of a panel returned."""

    target: dp.Target
    series: list[Series]


@dataclass(frozen=True)
class Header:
    title: str
    subtitle: str        # the honest label: what this picture is
    variables: str       # "Data source: ...  Ceph cluster: All ..."
    window: str          # the time range shown


def _finite(values: Sequence[float]) -> list[float]:
    return [math.nan if (math.isnan(v) or math.isinf(v)) else v for v in values]


def _minutes(start: float, end: float) -> list[float]:
    """Whole minutes (Unix seconds) from ``start`` to ``end``: the time axis' ticks, labelled HH:MM UTC."""
    first = math.ceil(start / 60) * 60
    return [float(t) for t in range(first, int(end) + 1, 60)]


def _hhmm(t: float, _pos: object = None) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M")


class Canvas:
    """The figure and the pixel geometry of the grid."""

    def __init__(self, rows: int) -> None:
        self.width = dp.GRID_COLUMNS * COL_PX
        self.height = HEADER_PX + rows * ROW_PX + GAP_PX
        # A Figure of its own (not pyplot's): no GUI backend, nothing global.
        self.fig = Figure(figsize=(self.width / DPI, self.height / DPI), dpi=DPI, facecolor=BACKGROUND)

    def rect(self, left: float, top: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Figure coordinates of a box given in pixels from the top left."""
        return (left / self.width, 1 - (top + h) / self.height, w / self.width, h / self.height)

    def box(self, p: dp.Panel) -> tuple[float, float, float, float]:
        """The panel's box in pixels (left, top, width, height), gaps taken off."""
        return (p.x * COL_PX + GAP_PX, HEADER_PX + p.y * ROW_PX + GAP_PX, p.w * COL_PX - GAP_PX,
                p.h * ROW_PX - GAP_PX)

    def text(self, x: float, y: float, s: str, **kw: Any) -> None:
        self.fig.text(x / self.width, 1 - y / self.height, s, **kw)


def header(c: Canvas, h: Header) -> None:
    c.text(GAP_PX + 4, 26, h.title, color=TEXT, fontsize=17, fontweight="bold", va="center")
    c.text(c.width - GAP_PX - 4, 26, h.window, color=TEXT, fontsize=11, ha="right", va="center")
    c.text(GAP_PX + 4, 54, h.variables, color=TEXT, fontsize=10, va="center")
    c.text(GAP_PX + 4, 78, h.subtitle, color="#FADE2A", fontsize=10, va="center", style="italic")


def panel_frame(c: Canvas, p: dp.Panel) -> tuple[float, float, float, float]:
    left, top, w, h = c.box(p)
    ax = c.fig.add_axes(c.rect(left, top, w, h))
    ax.set_facecolor(PANEL)
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_color(BORDER)
    c.text(left + 8, top + 14, p.title, color=TEXT, fontsize=10, fontweight="bold", va="center")
    return left, top, w, h


def row(c: Canvas, p: dp.Panel) -> None:
    left, top, _, h = c.box(p)
    c.text(left + 2, top + h / 2, "\u25be " + p.title, color=TEXT, fontsize=13, fontweight="bold", va="center")


def stat(c: Canvas, p: dp.Panel, results: Sequence[Result]) -> None:
    left, top, w, h = panel_frame(c, p)
    series = [s for r in results for s in r.series]
    values = _finite(series[0].values) if series else []
    value = dp.last_not_null(values)
    colour = dp.threshold_color(p.thresholds, value)
    if value is not None and p.options.get("graphMode", "area") == "area" and len(values) > 1:
        spark = c.fig.add_axes(c.rect(left + 1, top + h * 0.55, w - 2, h * 0.45 - 1))
        spark.set_axis_off()
        times = series[0].times
        top_value = max((v for v in values if not math.isnan(v)), default=0.0)
        spark.fill_between(times, [0 if math.isnan(v) else v for v in values], color=colour, alpha=0.18, lw=0)
        spark.plot(times, values, color=colour, lw=1, alpha=0.6)
        spark.set_ylim(0, top_value * 1.1 if top_value > 0 else 1)
        spark.set_xlim(times[0], times[-1])
    c.text(left + w / 2, top + h * 0.58, dp.fmt(value, p.unit, p.decimals),
           color=colour if value is not None else WEAK, fontsize=30 if value is not None else 14,
           fontweight="bold", ha="center", va="center")


def _entry_px(name: str) -> float:
    """The width of a legend entry: its colour mark and its name (DejaVu Sans at 9 pt, 100 dpi)."""
    return 30 + 7.4 * len(name)


def _legend(c: Canvas, left: float, top: float, width: float, entries: Sequence[tuple[str, str]]) -> int:
    """Grafana's list legend below the plot, wrapped over lines; returns the number of lines."""
    x, line = left, 0
    for name, colour in entries:
        need = _entry_px(name)
        if x + need > left + width and x > left:
            x, line = left, line + 1
        y = top + line * 17
        c.fig.add_artist(Line2D([(x) / c.width, (x + 14) / c.width], [1 - y / c.height] * 2, color=colour,
                                    lw=3, transform=c.fig.transFigure))
        c.text(x + 19, y, name, color=TEXT, fontsize=9, va="center")
        x += need
    return line + 1


def timeseries(c: Canvas, p: dp.Panel, results: Sequence[Result], start: float, end: float) -> None:
    left, top, w, h = panel_frame(c, p)
    drawn = [(dp.legend(r.target.legend, s.labels, r.target.expr), s) for r in results for s in r.series]
    drawn = [(name, s) for name, s in drawn if any(not math.isnan(v) for v in _finite(s.values))]
    if not drawn:
        c.text(left + w / 2, top + h / 2, "No data", color=WEAK, fontsize=14, ha="center", va="center")
        return
    colours = [dp.CLASSIC_PALETTE[i % len(dp.CLASSIC_PALETTE)] for i in range(len(drawn))]
    # The legend's height first: the plot takes the rest.
    probe_lines = 1
    x = 0.0
    for name, _ in drawn:
        need = _entry_px(name)
        if x + need > w - 20 and x > 0:
            probe_lines, x = probe_lines + 1, 0.0
        x += need
    legend_h = 17 * probe_lines + 8
    plot = c.fig.add_axes(c.rect(left + 62, top + 30, w - 62 - 14, h - 30 - 22 - legend_h))
    plot.set_facecolor(PANEL)
    base = [0.0] * len(drawn[0][1].times)
    top_value = 0.0
    for (_, s), colour in zip(drawn, colours, strict=True):
        times = s.times
        values = _finite(s.values)
        if p.stacking == "normal":
            low = list(base)
            high = [b + (0.0 if math.isnan(v) else v) for b, v in zip(base, values, strict=True)]
            line = [math.nan if math.isnan(v) else hv for v, hv in zip(values, high, strict=True)]
            base = high
        else:
            low = [0.0] * len(values)
            line = values
        plot.plot(times, line, color=colour, lw=1.2)
        if p.fill_opacity > 0:
            plot.fill_between(times, low, [lo if math.isnan(v) else v for lo, v in zip(low, line, strict=True)],
                              color=colour, alpha=p.fill_opacity, lw=0)
        top_value = max([top_value, *(v for v in line if not math.isnan(v))])
    plot.set_xlim(start, end)
    plot.set_ylim(p.min if p.min is not None else 0, top_value * 1.1 if top_value > 0 else 1)
    plot.yaxis.set_major_locator(MaxNLocator(4))
    plot.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: dp.fmt(v, p.unit)))
    plot.set_xticks(_minutes(start, end))
    plot.xaxis.set_major_formatter(FuncFormatter(_hhmm))
    plot.tick_params(colors=WEAK, labelsize=8, length=0)
    plot.grid(color=BORDER, lw=0.6)
    for spine in plot.spines.values():
        spine.set_visible(False)
    _legend(c, left + 10, top + h - legend_h + 4, w - 20, [(n, col) for (n, _), col in zip(drawn, colours,
                                                                                          strict=True)])


def draw(all_panels: Sequence[dp.Panel], results: dict[int, list[Result]], start: float, end: float,
         head: Header, out: str) -> int:
    """Draw the dashboard into ``out`` (a PNG, in a 256-colour palette to stay small); returns its size."""
    c = Canvas(dp.grid_rows(list(all_panels)))
    header(c, head)
    for p in all_panels:
        if p.type == "row":
            row(c, p)
        elif p.type == "stat":
            stat(c, p, results.get(p.id, []))
        elif p.type == "timeseries":
            timeseries(c, p, results.get(p.id, []), start, end)
        else:
            panel_frame(c, p)
            c.text(*c.box(p)[:2], f"(panel type {p.type} not drawn)", color=WEAK)
    buf = io.BytesIO()
    c.fig.savefig(buf, format="png", dpi=DPI, facecolor=BACKGROUND)
    buf.seek(0)
    with Image.open(buf) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    with open(out, "rb") as f:
        return len(f.read())
