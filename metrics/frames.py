"""Series as pandas DataFrames: one row per bucket, indexed by local time in the configured zone.

The series functions (``metrics.series``, answered from the rollups) return
one dict per bucket with nested maps (``revenue: {"usd": …}``).  A chart, a
table or a spreadsheet wants columns: :func:`series_frame` flattens them
(``revenue.usd``), so the dashboard's charts and the report's sheets take
one DataFrame instead of rebuilding lists from the dicts in each place.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pandas as pd


def series_frame(rows: list[dict], tz: ZoneInfo | str, key: str = "bucket") -> pd.DataFrame:
    """``rows`` as a DataFrame indexed by each bucket's start in ``tz`` (named ``key``).

    Nested maps become dotted columns (``revenue.usd``, ``processing_ms.p95``);
    a value that is unknown (``None``) stays missing, never 0.
    """
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
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
    """The index as naive local wall-clock times, which is what Plotly draws."""
    return [t.tz_localize(None).to_pydatetime() for t in frame.index]
