"""Series rows as DataFrames: local-time index, flattened maps, unknown stays unknown."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from metrics.frames import column, columns_under, local_index, records_frame, series_frame


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


def test_a_nested_map_is_its_columns_named_by_their_keys():
    frame = series_frame([{"bucket": datetime(2026, 11, 1, tzinfo=timezone.utc), "revenue": {"usd": 5, "eur": 0}}], "UTC")
    assert columns_under(frame, "revenue").sum().to_dict() == {"usd": 5, "eur": 0}


def test_documents_become_a_table_with_headings_in_order_and_local_times():
    docs = [{"createdAt": datetime(2026, 11, 20, 18, 30, tzinfo=timezone.utc), "paymentId": "pay_1", "amount": 1234},
            {"createdAt": datetime(2026, 11, 20, 19, 0), "paymentId": "pay_2"}]  # naive: UTC, as MongoDB stores it
    table = records_frame(docs, {"Created": "createdAt", "Payment": "paymentId",
                                 "Amount": lambda d: d.get("amount", "none")}, "Asia/Kolkata")
    assert list(table.columns) == ["Created", "Payment", "Amount"]
    assert [t.isoformat() for t in table["Created"]] == ["2026-11-21T00:00:00+05:30", "2026-11-21T00:30:00+05:30"]
    assert table["Created"].dt.tz == ZoneInfo("Asia/Kolkata")
    assert list(table["Payment"]) == ["pay_1", "pay_2"] and list(table["Amount"]) == [1234, "none"]


def test_no_documents_are_an_empty_table_that_still_has_its_headings():
    assert list(records_frame([], {"Customer": "customerId", "Service": "serviceId"}, "UTC").columns) == [
        "Customer", "Service"]
