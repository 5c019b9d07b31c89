"""The report as one self-contained HTML file: opened by double-click, offline, printable.

Plotly's JavaScript is inlined once in the page head and every chart is a
``<div>`` drawn by it, so the file needs no network (no CDN, no MathJax).
The page is a Jinja2 template with autoescaping on: platform data (decline
messages, specialist ids) is escaped like any other text, and the charts'
JSON is Plotly's own, which escapes ``<``.  The charts draw the model's
tables; they compute nothing.
"""

from __future__ import annotations

import html

from functools import lru_cache
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from reports.model import WEEKDAYS, Figure, Report, Table, display
from reports.tabular import cell, minor_to_major

TEMPLATES = Path(__file__).with_name("templates")
CHART_CONFIG = {"displaylogo": False, "displayModeBar": False, "responsive": True}
COLOURS = {"ok": "#2E7D32", "bad": "#C62828", "line": "#1F4E79", "previous": "#9AA5B1", "neutral": "#4C78A8"}
STATUS_TEXT = {"met": "met", "at_risk": "at risk", "missed": "missed", "unknown": "no data"}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(display=display, STATUS_TEXT=STATUS_TEXT)
    return env


@lru_cache(maxsize=1)
def plotly_js() -> Markup:
    """The whole plotly.js bundle (about 4.8 MB), inlined once per page."""
    return Markup(plotly.offline.get_plotlyjs())


def render_html(report: Report) -> bytes:
    charts = {section.key: [Markup(_chart_html(fig)) for fig in _section_charts(report, section.key)]
              for section in report.sections}
    page = _environment().get_template("report.html.j2").render(
        report=report, charts=charts, plotly_js=plotly_js(), cells=_display_rows)
    return page.encode("utf-8")


def _display_rows(report: Report, table: Table) -> list[list[str]]:
    """Each row of a table as text for people (money with its symbol, times in the report's zone)."""
    return [[display(row.get(c.key), row.get(c.unit_key, c.unit) if c.unit_key else c.unit,
                     table.currency_of(c, row), report.tz) for c in table.columns] for row in table.rows]


def _chart_html(fig: go.Figure) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config=CHART_CONFIG, default_height="340px")


def _layout(fig: go.Figure, title: str, y_title: str, **more) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0, "font": {"size": 15}}, template="plotly_white",
                      margin={"l": 60, "r": 60, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.18},
                      yaxis_title=y_title, **{"barmode": "stack", **more})
    return fig


def _local(report: Report, values, unit: str) -> list:
    return [cell(v, unit, None, report.tz) for v in values]


def _section_charts(report: Report, key: str) -> list[go.Figure]:
    builders = {
        "payments": (_payments_chart, _revenue_chart),
        "failures": (_decline_chart, _failure_heatmap),
        "webhooks": (_webhook_chart,),
        "enrollments": (_enrollment_chart, _funnel_chart),
    }.get(key, ())
    return [chart for build in builders if (chart := build(report)) is not None]


def _target_line(fig: go.Figure, figure: Figure, axis: str = "y2") -> None:
    if figure.target_value is not None:
        fig.add_hline(y=figure.target_value, yref=axis, line={"dash": "dash", "color": COLOURS["bad"], "width": 1},
                      annotation_text=f"target {figure.target}", annotation_position="top left")


def _payments_chart(report: Report) -> go.Figure:
    table = report.table("payments_by_day")
    days = _local(report, [r["day"] for r in table.rows], "date")
    fig = go.Figure([
        go.Bar(name="Succeeded", x=days, y=[r["succeeded"] for r in table.rows], marker_color=COLOURS["ok"]),
        go.Bar(name="Failed", x=days, y=[r["failed"] for r in table.rows], marker_color=COLOURS["bad"]),
        go.Scatter(name="Success rate", x=days, y=[r["success_rate"] for r in table.rows], yaxis="y2",
                   mode="lines+markers", line={"color": COLOURS["line"]}),
    ])
    target = report.figure("payments.success_rate")
    _target_line(fig, target)
    # The rate axis starts a little below the lowest day (or the target) so a dip is visible.
    lowest = min([r["success_rate"] for r in table.rows if r["success_rate"] is not None] + [target.target_value or 1])
    return _layout(fig, "Payments per day", "payments",
                   yaxis2={"title": "success rate", "overlaying": "y", "side": "right", "tickformat": ".0%",
                           "range": [max(0.0, lowest - 0.05), 1.005], "showgrid": False})


def _revenue_chart(report: Report) -> go.Figure | None:
    table = report.table("payments_by_day")
    money = [c for c in table.columns if c.unit == "money"]
    if not money:
        return None
    days = _local(report, [r["day"] for r in table.rows], "date")
    fig = go.Figure([go.Bar(name=c.currency.upper(), x=days,
                            y=[minor_to_major(r[c.key], c.currency) for r in table.rows]) for c in money])
    return _layout(fig, "Revenue per day by currency (major units, never converted)", "revenue",
                   barmode="group")


def _decline_chart(report: Report) -> go.Figure | None:
    table = report.table("failures_by_decline_code")
    if not table.rows:
        return None
    rows = list(reversed(table.rows))  # largest on top
    # Decline codes are platform data; Plotly draws a subset of HTML in labels, so they are escaped.
    codes = [html.escape(str(r["key"]), quote=False) for r in rows]
    fig = go.Figure([
        go.Bar(name=report.period.previous_label, y=codes, x=[r["previous"] for r in rows], orientation="h",
               marker_color=COLOURS["previous"]),
        go.Bar(name=report.period.label, y=codes, x=[r["count"] for r in rows], orientation="h",
               marker_color=COLOURS["bad"]),
    ])
    return _layout(fig, "Failed payments by decline code", "", barmode="group", xaxis_title="failed payments",
                   height=max(300, 60 + 28 * len(rows)))


def _failure_heatmap(report: Report) -> go.Figure | None:
    table = report.table("failures_by_hour")
    if not table.rows:
        return None
    grid = {(r["weekday"], r["hour"]): r["failed"] for r in table.rows}
    z = [[grid.get((day, hour), 0) for hour in range(24)] for day in WEEKDAYS]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(24)), y=list(WEEKDAYS), colorscale="Reds",
                               colorbar={"title": "failed"}, hovertemplate="%{y} %{x}:00 · %{z} failed<extra></extra>"))
    return _layout(fig, f"Failed payments by weekday and hour ({report.period.timezone})", "",
                   xaxis={"title": "hour of day", "dtick": 2}, yaxis={"autorange": "reversed"})


def _webhook_chart(report: Report) -> go.Figure | None:
    table = next(t for t in report.section("webhooks").tables if t.key.startswith("webhooks_by_"))
    unit = table.columns[0].unit
    x = _local(report, [r["bucket"] for r in table.rows], unit)
    fig = go.Figure([
        go.Bar(name="Processed", x=x, y=[r["processed"] for r in table.rows], marker_color=COLOURS["neutral"]),
        go.Bar(name="Failed", x=x, y=[r["failed"] for r in table.rows], marker_color=COLOURS["bad"]),
        go.Scatter(name="Processing p95 (s)", x=x, yaxis="y2", mode="lines", line={"color": COLOURS["line"]},
                   y=[None if r["processing_p95"] is None else r["processing_p95"] / 1000 for r in table.rows],
                   connectgaps=False),
    ])
    target = report.figure("webhooks.processing_p95")
    if target.target_value is not None:
        fig.add_hline(y=target.target_value / 1000, yref="y2", line={"dash": "dash", "color": COLOURS["bad"], "width": 1},
                      annotation_text=f"target {target.target}", annotation_position="top left")
    return _layout(fig, table.title, "events",
                   yaxis2={"title": "seconds", "overlaying": "y", "side": "right", "showgrid": False,
                           "rangemode": "tozero"})


def _enrollment_chart(report: Report) -> go.Figure:
    table = report.table("enrollments_by_day")
    days = _local(report, [r["day"] for r in table.rows], "date")
    fig = go.Figure([
        go.Bar(name="Created", x=days, y=[r["created"] for r in table.rows], marker_color=COLOURS["previous"]),
        go.Bar(name="Converted", x=days, y=[r["converted"] for r in table.rows], marker_color=COLOURS["ok"]),
        go.Scatter(name="Activation p95 (s)", x=days, yaxis="y2", mode="lines+markers", line={"color": COLOURS["line"]},
                   y=[None if r["activation_p95"] is None else r["activation_p95"] / 1000 for r in table.rows]),
    ])
    return _layout(fig, "Enrollments per day", "enrollments", barmode="group",
                   yaxis2={"title": "seconds", "overlaying": "y", "side": "right", "showgrid": False,
                           "rangemode": "tozero"})


def _funnel_chart(report: Report) -> go.Figure:
    table = report.table("enrollment_funnel")
    fig = go.Figure(go.Funnel(y=[r["stage"] for r in table.rows], x=[r["count"] for r in table.rows],
                              textinfo="value+percent initial", marker={"color": COLOURS["neutral"]}))
    return _layout(fig, "Enrollment funnel", "", height=300)
