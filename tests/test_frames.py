"""Series rows as DataFrames: local-time index, flattened maps, unknown stays unknown."""

from __future__ import annotations

from datetime import datetime, timezone

from metrics.frames import column, local_index, series_frame


def test_a_series_becomes_a_frame_indexed_by_local_time_with_flat_columns():
    rows = [
        {"bucket": datetime(2026, 11, 1, 4, 0, tzinfo=timezone.utc), "succeeded": 3, "success_rate": 0.75,
         "revenue": {"usd": 1200, "eur": 0}, "processing_ms": {"avg": 900.5, "p95": None}},
        {"bucket": datetime(2026, 11, 2, 5, 0, tzinfo=timezone.utc), "succeeded": 0, "success_rate": None,
         "revenue": {"usd": 0, "eur": 300}, "processing_ms": {"avg": None, "p95": None}},
    ]
    frame = series_frame(rows, "America/New_York")
    assert [t.isoformat() for t in frame.index] == ["2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"]
    assert column(frame, "revenue.usd") == [1200, 0]
    assert column(frame, "success_rate") == [0.75, None]
    assert column(frame, "processing_ms.p95") == [None, None]
    assert column(frame, "no.such") == [None, None]
    assert local_index(frame) == [datetime(2026, 11, 1), datetime(2026, 11, 2)]


def test_an_empty_series_is_an_empty_frame():
    frame = series_frame([], "UTC")
    assert frame.empty and str(frame.index.tz) == "UTC"
