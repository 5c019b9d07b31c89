"""Charts and tables with titles, units and readable axes: one look for every page.

Charts are Apache ECharts option objects drawn by ``st.echarts_chart``.  A
page of eight Plotly charts and nothing else takes 2.7-3.3 s in a new tab of
headless Chromium here, since every new tab evaluates Plotly's 4.7 MB bundle
again; the same page in ECharts 1.5-1.9 s (docs/performance.md, the
framework floor).  The weekly report's HTML file keeps Plotly: one
self-contained file, opened once.

A time chart takes a series as a DataFrame (``metrics.frames.series_frame``:
one row per bucket, indexed by its start in the configured zone) and the
names of its columns.  Times are drawn as the configured zone's wall-clock
times, whatever the browser's own zone (the chart runs in UTC and is handed
local times), with the zone in the axis title.  Values arrive in the
series' units and are drawn in people's: durations in milliseconds in
seconds, money in minor units in major units with the currency's symbol (an
axis's ``scale``), rates as percentages.  A missing value is a gap in the
line, never 0.

Platform data (a decline code, a currency, a subject) is only ever a value
or a name in the option: ECharts draws it on a canvas as plain text and
escapes it in tooltips.  It never goes into a formatter template, where
``{b}`` and ``%d`` would be read as placeholders and the template's text as
HTML.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import streamlit as st

from metrics.format import SYMBOLS, ZERO_DECIMAL, currency_code
from metrics.frames import column, local_index

HEIGHT = 320
GOOD, BAD, NEUTRAL, MUTED = "#2e9e5b", "#d64545", "#3b6fd4", "#9aa4b2"
TITLE = {"left": 0, "textStyle": {"fontSize": 15}}
# Tick labels of a time axis by what the tick falls on: ``1 Dec`` at a midnight, ``14:00`` within a day.
TIME_LABELS = {"year": "{yyyy}", "month": "{d} {MMM}", "day": "{d} {MMM}", "hour": "{HH}:{mm}", "minute": "{HH}:{mm}",
               "second": "{HH}:{mm}:{ss}"}
GRID = {"left": 10, "right": 24, "top": 64, "bottom": 34, "containLabel": True}  # room below for the axis name
LEGEND = {"top": 26, "right": 0}
MARKERS_UP_TO = 48  # points on a line drawn with a marker each; a longer line is drawn plain

# An axis: ``format`` for the tooltip (Streamlit's printf-style number formats), ``label`` for
# the tick labels (an ECharts template), ``scale`` to divide values by, ``percent`` to multiply by 100.
RATE = {"format": "%.2f%%", "label": "{value}%", "percent": True, "band": True}  # rates near 100%: the top band
FAILURE_RATE = {"format": "%.2f%%", "label": "{value}%", "percent": True}  # rates near 0%: from 0
COUNT = {"format": "%,d", "label": "{value}", "whole": True}
SECONDS = {"format": "%,.2f s", "label": "{value} s", "scale": 1000}  # from milliseconds


@dataclass(frozen=True)
class Chart:
    """An ECharts option object and the height to draw it at."""

    option: dict
    height: int = HEIGHT


def money_axis(currency: object) -> dict:
    """Amounts in minor units (cents) drawn in major units with the currency's symbol ($12.34)."""
    cur = currency_code(currency)
    symbol = SYMBOLS.get(cur, "")
    digits = 0 if cur in ZERO_DECIMAL else 2
    suffix = "" if symbol else f" {_code(cur)}"
    return {"format": f"{symbol}%,.{digits}f{suffix}", "label": f"{symbol}{{value}}{suffix}",
            "scale": minor_units(cur)}


def _code(currency: str) -> str:
    """A currency as it may stand in a template: letters and digits only (``<b>x</b>`` -> ``BXB``)."""
    return re.sub(r"[^A-Za-z0-9]", "", currency).upper()[:8] or "XXX"


def minor_units(currency: object) -> int:
    """Minor units in one major unit: 100 cents in a dollar, 1 for a zero-decimal currency (the yen)."""
    return 1 if currency_code(currency) in ZERO_DECIMAL else 100


def major(minor: float | None, currency: object) -> float | None:
    """Minor units (cents) to the amount people read ($12.34)."""
    return None if minor is None else minor / minor_units(currency)


def drawn(value: float | None, axis: dict) -> float | None:
    """A value in its series' units as the axis draws it (seconds, dollars, percent)."""
    if value is None:
        return None
    value = value / axis.get("scale", 1)
    return value * 100 if axis.get("percent") else value


def wall_clock(moment: datetime) -> str:
    """A local time as the chart takes it: its wall-clock reading marked UTC, in a chart that runs
    in UTC, so a browser in another zone draws the configured zone's time."""
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _value_axis(axis: dict, name: str | None, values: list[float | None], line: float | None) -> dict:
    out = {"type": "value", "name": name, "nameTextStyle": {"align": "left"},
           "axisLabel": {"formatter": axis["label"]}, "splitLine": {"lineStyle": {"color": "rgba(128,128,128,0.15)"}}}
    known = [v for v in values if v is not None]
    if axis.get("whole"):
        out["minInterval"] = 1
    if axis.get("band") and known:
        # Rates near 100% are unreadable on a 0-100% axis; show the band that matters.
        low = min(known + ([line] if line is not None else []))
        bottom = low - (100 - low) * 0.5
        step = next(s for s in (10, 5, 1, 0.5) if 100 - bottom > s * 2 or s == 0.5)
        out.update(min=max(0.0, math.floor(bottom / step) * step), max=100)  # on a tick: no odd label
    else:
        out["min"] = 0
        if line is not None and known and line >= max(known):
            out["max"] = _nice(line * 1.15)  # the target above every value: still on the chart
    return out


def _nice(top: float) -> float:
    """A round upper bound at or above ``top``: 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return 1
    power = 10 ** math.floor(math.log10(top))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= top)


def _target(line: tuple[float, str], axis: dict) -> dict:
    """A dashed line across the chart at a target (value, our own label), in the axis's units."""
    value, text = line
    return {"symbol": "none", "silent": True, "lineStyle": {"type": "dashed", "color": BAD, "width": 1.5},
            "label": {"position": "insideEndTop", "color": BAD, "formatter": _literal(text)},
            "data": [{"yAxis": drawn(value, axis)}]}


def _frame(title: str, series: list[dict], x_axis: dict, y_axis: dict, tooltip: dict, legend: bool,
           **more) -> dict:
    option = {"animation": False, "title": {**TITLE, "text": title}, "grid": GRID, "tooltip": tooltip,
              "xAxis": x_axis, "yAxis": y_axis, "series": series, **more}
    if legend:
        option["legend"] = LEGEND
    return option


def time_chart(frame: pd.DataFrame, traces: list[tuple[str, str, str]], *,
               title: str, y_title: str, axis: dict, kind: str = "line", stacked: bool = False,
               line: tuple[float, str] | None = None) -> Chart:
    """Values per time bucket of a series frame: ``traces`` are (name, column, colour); ``line`` a
    target (value, label).  Values and the target are in the series' units and drawn in the axis's
    (``drawn``); a missing value (or a missing column) is a gap."""
    x = [wall_clock(t) for t in local_index(frame)]
    series, tops = [], []
    for name, key, colour in traces:
        values = [drawn(v, axis) for v in column(frame, key)]
        tops.append(values)
        one = {"type": kind, "name": str(name), "data": [[t, v] for t, v in zip(x, values)],
               "itemStyle": {"color": colour}}
        if kind == "line":
            one.update(showSymbol=len(x) <= MARKERS_UP_TO, symbolSize=4, connectNulls=False,
                       lineStyle={"color": colour, "width": 2})
        if stacked:
            one["stack"] = "total"
        series.append(one)
    everything = [v for values in tops for v in values]
    if stacked and tops:
        everything = [sum(v or 0 for v in col) for col in zip(*tops)]
    target = drawn(line[0], axis) if line else None
    if series and line is not None:
        series[0]["markLine"] = _target(line, axis)
    return Chart(_frame(title, series, time_axis(f"Time ({frame.index.tz})"),
                        _value_axis(axis, y_title, everything, target),
                        {"trigger": "axis", "valueFormatter": axis["format"]}, legend=len(series) > 1, useUTC=True))


def time_axis(name: str, **more) -> dict:
    """A time axis named with its zone (its times are wall-clock times: ``wall_clock``)."""
    return {"type": "time", "name": name, "nameLocation": "middle", "nameGap": 28,
            "axisLabel": {"formatter": TIME_LABELS}, **more}


def _literal(text: str) -> str:
    """Our own text as an ECharts label template that shows it as written: braces (placeholders)
    are dropped.  Never given platform data (see the module docstring)."""
    return str(text).replace("{", "(").replace("}", ")")


def bar_chart(labels: list[str], values: list[float], *, title: str, value_title: str, axis: dict = COUNT,
              colour: str = NEUTRAL, horizontal: bool = True, category_title: str | None = None) -> Chart:
    """One bar per category; horizontal so long labels (decline codes, ids) stay readable, each bar
    with its value written at its end."""
    labels = [str(text) for text in labels]
    bars = {"type": "bar", "name": value_title, "itemStyle": {"color": colour},
            "data": [{"value": v, "label": {"formatter": f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"}}
                     for v in values],
            "label": {"show": horizontal, "position": "right"}, "barMaxWidth": 28}
    categories = {"type": "category", "data": labels, "name": category_title}
    values_axis = _value_axis(axis, value_title, list(values), None)
    tooltip = {"trigger": "axis", "axisPointer": {"type": "shadow"}, "valueFormatter": axis["format"]}
    if horizontal:
        categories.update(inverse=True, nameLocation="start", axisLabel={"width": 220, "overflow": "truncate"})
        values_axis.update(nameLocation="middle", nameGap=28)
        return Chart(_frame(title, [bars], values_axis, categories, tooltip, legend=False),
                     height=max(HEIGHT, 28 * len(labels) + 90))
    # Every band's label (amounts, ages), slanted when there are many, the axis's name below them.
    slanted = len(labels) > 6
    categories.update(nameLocation="middle", nameGap=52 if slanted else 28,
                      axisLabel={"interval": 0, "rotate": 30 if slanted else 0})
    option = _frame(title, [bars], categories, values_axis, tooltip, legend=False)
    if slanted:
        option["grid"] = {**GRID, "bottom": 58}
    return Chart(option)


def funnel_chart(stages: list[tuple[str, int]], *, title: str) -> Chart:
    """Stages of our own naming, each with its count and its share of the first."""
    first = stages[0][1] if stages else 0
    data = [{"name": str(stage), "value": count,
             "label": {"formatter": _literal(f"{stage}: {count:,}" + (f" ({count / first:.0%})" if first else ""))}}
            for stage, count in stages]
    return Chart({"animation": False, "title": {**TITLE, "text": title},
                  "tooltip": {"trigger": "item", "valueFormatter": COUNT["format"]},
                  "series": [{"type": "funnel", "sort": "none", "top": 56, "bottom": 10, "left": "10%",
                              "width": "80%", "minSize": "20%", "gap": 2, "itemStyle": {"color": NEUTRAL},
                              "label": {"position": "inside", "color": "#fff", "textBorderWidth": 0}, "data": data}]})


def show(chart: Chart, key: str | None = None) -> None:
    st.echarts_chart(chart.option, height=chart.height, theme="streamlit", key=key)


def table(frame: pd.DataFrame) -> None:
    """A frame as a table across the page, without its index; every time column as ``26 Nov 14:05:30``
    (in the zone its times are in: ``metrics.frames.records_frame`` puts them in the configured one)."""
    times = {name: st.column_config.DatetimeColumn(format="D MMM HH:mm:ss")
             for name in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[name])}
    st.dataframe(frame, hide_index=True, width="stretch", column_config=times or None)


def empty(title: str, why: str) -> None:
    """Where a chart would be when there is nothing to draw: say so, never an empty frame."""
    with st.container(border=True):
        st.markdown(f"**{title}**")
        st.caption(why)
