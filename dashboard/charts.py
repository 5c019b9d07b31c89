"""Plotly figures and tables with titles, units and readable axes: one look for every page.

A time chart takes a series as a DataFrame (``metrics.frames.series_frame``:
one row per bucket, indexed by its start in the configured zone) and the
names of its columns.  Times are drawn as local wall-clock times (Plotly
ignores offsets), with the zone in the axis title.  Values arrive in the
series' units and are drawn in people's: durations in milliseconds are drawn
in seconds, money in minor units in major units with the currency's symbol
(the axis says how: its ``scale``), rates as percentages.  A missing value
is a gap in the line, never 0.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from metrics.format import SYMBOLS, ZERO_DECIMAL, currency_code
from metrics.frames import column, local_index

HEIGHT = 320
CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}
GOOD, BAD, NEUTRAL, MUTED = "#2e9e5b", "#d64545", "#3b6fd4", "#9aa4b2"

RATE = {"tickformat": ".0%", "hover": ".2%"}  # rates near 100% (success): the axis shows the top band
FAILURE_RATE = {"tickformat": ".1%", "hover": ".2%"}  # rates near 0%: the axis starts at 0
COUNT = {"tickformat": ",d", "hover": ",d"}
SECONDS = {"tickformat": ",.1f", "ticksuffix": " s", "hover": ",.2f", "scale": 1000}  # from milliseconds


def label(text: object) -> str:
    """Platform data as a Plotly label: Plotly draws a subset of HTML in every label, title, trace
    name and hover text (links, bold), so ``<a href=...>`` is escaped and shown as text."""
    return html.escape(str(text), quote=False)


def money_axis(currency: object) -> dict:
    """Amounts in minor units (cents) drawn in major units with the currency's symbol ($12.34)."""
    cur = currency_code(currency)
    symbol = SYMBOLS.get(cur, "")
    digits = 0 if cur in ZERO_DECIMAL else 2
    return {"tickformat": ",.0f", "tickprefix": symbol, "hover": f",.{digits}f", "hoverprefix": symbol,
            "ticksuffix": "" if symbol else f" {label(cur.upper())}", "scale": minor_units(cur)}


def minor_units(currency: object) -> int:
    """Minor units in one major unit: 100 cents in a dollar, 1 for a zero-decimal currency (the yen)."""
    return 1 if currency_code(currency) in ZERO_DECIMAL else 100


def major(minor: float | None, currency: object) -> float | None:
    """Minor units (cents) to the amount people read ($12.34)."""
    return None if minor is None else minor / minor_units(currency)


def _layout(fig: go.Figure, title: str, y_title: str, axis: dict, x_title: str | None,
            values: list[float | None], line: float | None = None) -> go.Figure:
    yaxis = {"title": {"text": label(y_title)}, "tickformat": axis.get("tickformat"),
             "ticksuffix": axis.get("ticksuffix"), "tickprefix": axis.get("tickprefix"),
             "rangemode": "tozero", "gridcolor": "rgba(128,128,128,0.15)"}
    known = [v for v in values if v is not None]
    if line is not None:
        known.append(line)
    if axis is RATE and known:
        # Rates near 100% are unreadable on a 0-100% axis; show the band that matters.
        low = min(known)
        yaxis.update(rangemode=None, range=[max(0.0, low - (1 - low) * 0.5 - 0.005), 1.002], tickformat=".1%")
    elif known:
        yaxis["range"] = [0, max(known) * 1.15 or 1]
        if axis is COUNT:
            yaxis.update(_count_ticks(max(known)))
    fig.update_layout(
        title={"text": label(title), "x": 0, "xanchor": "left", "font": {"size": 15}},
        height=HEIGHT,
        margin={"l": 10, "r": 10, "t": 48, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        hovermode="x unified",
        yaxis=yaxis,
        xaxis={"title": {"text": label(x_title)} if x_title else None},
        bargap=0.15,
    )
    return fig


def _count_ticks(top: float) -> dict:
    """Whole-number ticks: without a step Plotly labels 0, 0.5, 1 ... as 0, 1, 1."""
    return {"dtick": 1} if top <= 8 else {"dtick": 2} if top <= 16 else {}


def time_chart(frame: pd.DataFrame, traces: list[tuple[str, str, str]], *,
               title: str, y_title: str, axis: dict, kind: str = "line", stacked: bool = False,
               line: tuple[float, str] | None = None) -> go.Figure:
    """Values per time bucket of a series frame: ``traces`` are (name, column, colour); ``line`` a
    target (value, label).  Values and the target are in the series' units, divided by the axis's
    ``scale`` to draw; a missing value (or a missing column) is a gap."""
    x = local_index(frame)
    scale = axis.get("scale", 1)
    traces = [(name, [None if v is None else v / scale for v in column(frame, key)], colour)
              for name, key, colour in traces]
    if line is not None:
        line = (line[0] / scale, line[1])
    fig = go.Figure()
    hover = f"%{{y:{axis['hover']}}}"
    if axis.get("hoverprefix"):
        hover = axis["hoverprefix"] + hover
    if axis.get("ticksuffix"):
        hover += axis["ticksuffix"]
    for name, values, colour in traces:
        name = label(name)  # a currency, a status: platform data
        if kind == "bar":
            fig.add_bar(x=x, y=values, name=name, marker_color=colour, hovertemplate=hover)
        else:
            fig.add_scatter(x=x, y=values, name=name, mode="lines+markers" if len(x) <= 48 else "lines",
                            line={"color": colour, "width": 2}, marker={"size": 4},
                            connectgaps=False, hovertemplate=hover)
    if stacked:
        fig.update_layout(barmode="stack")
    everything = [v for _, values, _ in traces for v in values]
    if stacked and traces:
        everything = [sum(v or 0 for v in col) for col in zip(*(values for _, values, _ in traces))]
    if line is not None:
        value, text = line
        fig.add_hline(y=value, line_dash="dash", line_color=BAD, line_width=1.5,
                      annotation_text=label(text), annotation_position="bottom right",
                      annotation_font_color=BAD)
    _layout(fig, title, y_title, axis, f"Time ({frame.index.tz})", everything, line[0] if line else None)
    return fig


def bar_chart(labels: list[str], values: list[float], *, title: str, value_title: str, axis: dict = COUNT,
              colour: str = NEUTRAL, horizontal: bool = True, category_title: str | None = None) -> go.Figure:
    """One bar per category; horizontal so long labels (decline codes, ids) stay readable.

    Labels are platform data and Plotly draws a subset of HTML in them (links,
    bold): they are escaped, so ``<a href=...>`` in a decline code is shown as text.
    """
    labels = [label(text) for text in labels]
    fig = go.Figure()
    hover = f"%{{{'x' if horizontal else 'y'}:{axis['hover']}}}<extra></extra>"
    if horizontal:
        fig.add_bar(y=labels, x=values, orientation="h", marker_color=colour, hovertemplate="%{y}: " + hover,
                    text=[f"{v:,}" for v in values], textposition="auto")
        fig.update_yaxes(autorange="reversed", title={"text": label(category_title)} if category_title else None)
        fig.update_layout(title={"text": label(title), "x": 0, "xanchor": "left", "font": {"size": 15}},
                          height=max(HEIGHT, 28 * len(labels) + 90),
                          margin={"l": 10, "r": 10, "t": 48, "b": 10},
                          xaxis={"title": {"text": label(value_title)}, "tickformat": axis.get("tickformat"),
                                 "rangemode": "tozero", **(_count_ticks(max(values, default=0))
                                                           if axis is COUNT else {})})
        return fig
    fig.add_bar(x=labels, y=values, marker_color=colour, hovertemplate="%{x}: " + hover)
    _layout(fig, title, value_title, axis, category_title, list(values))
    fig.update_layout(hovermode="closest")
    return fig


def funnel_chart(stages: list[tuple[str, int]], *, title: str) -> go.Figure:
    fig = go.Figure(go.Funnel(y=[label(s) for s, _ in stages], x=[v for _, v in stages],
                              textinfo="value+percent initial", marker={"color": NEUTRAL},
                              hovertemplate="%{y}: %{x:,d}<extra></extra>"))
    fig.update_layout(title={"text": label(title), "x": 0, "xanchor": "left", "font": {"size": 15}},
                      height=HEIGHT, margin={"l": 10, "r": 10, "t": 48, "b": 10})
    return fig


def show(fig: go.Figure, key: str | None = None) -> None:
    st.plotly_chart(fig, config=CONFIG, theme="streamlit", key=key)


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
