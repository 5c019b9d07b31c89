"""Series and tables as pandas DataFrames, with times in the configured zone.

The series functions (``metrics.series``, answered from the rollups) return
one dict per bucket with nested maps (``revenue: {"usd": …}``).  A chart, a
table or a spreadsheet wants columns: :func:`series_frame` flattens them
(``revenue.usd``), so the dashboard's charts and the report's sheets take
one DataFrame instead of rebuilding lists from the dicts in each place.
:func:`records_frame` does the same for documents shown as a table (the
latest events, the recent failed payments).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pandas as pd


def series_frame(rows: list[dict], tz: ZoneInfo | str, key: str = "bucket") -> pd.DataFrame:
    """``rows`` as a DataFrame indexed by each bucket's start in ``tz`` (named ``key``).

    Nested maps become dotted columns (``revenue.usd``, ``processing_ms.p95``);
    a value that is unknown (``None``) stays missing, never 0.
    """
    zone = _zone(tz)
    if not rows:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz=zone, name=key))
    frame = pd.json_normalize(rows, sep=".")
    index = pd.DatetimeIndex(pd.to_datetime(frame.pop(key), utc=True)).tz_convert(zone)
    frame.index = index.rename(key)
    return frame.astype(object).where(frame.notna(), None)


def column(frame: pd.DataFrame, name: str) -> list:
    """One column as a list, ``None`` where missing (or where the frame has no such column)."""
    if name not in frame.columns:
        return [None] * len(frame)
    return [None if pd.isna(v) else v for v in frame[name].tolist()]


def local_index(frame: pd.DataFrame) -> list:
    """The index as naive local wall-clock times, which is what a chart draws (``dashboard.charts.wall_clock``)."""
    return [t.tz_localize(None).to_pydatetime() for t in frame.index]


def columns_under(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The columns a nested map became (``revenue.usd``, ``revenue.eur``), named by their keys (``usd``)."""
    prefix = f"{name}."
    picked = [c for c in frame.columns if c.startswith(prefix)]
    return frame[picked].rename(columns=lambda c: c[len(prefix):])


def records_frame(rows: list[dict], columns: dict[str, str | Callable[[dict], Any]],
                  tz: ZoneInfo | str) -> pd.DataFrame:
    """Documents as a table: one column per heading of ``columns``, in its order, taken from a
    field (a name) or made from the whole document (a function).  Times become local times in
    ``tz`` (a naive one is UTC, as MongoDB stores it); a missing field stays missing."""
    data = {heading: [source(row) if callable(source) else row.get(source) for row in rows]
            for heading, source in columns.items()}
    zone = _zone(tz)
    for heading, values in data.items():
        known = [v for v in values if v is not None]
        if known and all(isinstance(v, datetime) for v in known):
            data[heading] = pd.to_datetime(pd.Series(values, dtype=object), utc=True).dt.tz_convert(zone)
    return pd.DataFrame(data, columns=list(columns))


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
