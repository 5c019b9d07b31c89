"""Webhook metrics (spec section 4) against hand-worked values: events belong to a window by receivedAt."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from metrics import webhooks
from metrics.windows import last

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = last(AT, hours=24)
MS = timedelta(milliseconds=1)


def event(event_id: str, status: str, received, *, lag_ms: int | None = None, took_ms: int | None = None, **extra) -> dict:
    doc = {"eventId": event_id, "type": "payment_intent.succeeded", "status": status, "receivedAt": received, **extra}
    if lag_ms is not None:
        doc["stripeCreatedAt"] = received - timedelta(milliseconds=lag_ms)
    if took_ms is not None:
        doc["processedAt"] = received + timedelta(milliseconds=took_ms)
    return doc


def seed_window(platform_db) -> None:
    platform_db.webhook_events.insert_many([
        event("evt_start", "processed", AT - timedelta(hours=24), lag_ms=2000, took_ms=100),  # at the start: in
        event("evt_1h", "processed", AT - timedelta(hours=1), lag_ms=4000, took_ms=300),
        event("evt_30m", "failed", AT - timedelta(minutes=30), lag_ms=1000, took_ms=500, error="boom"),
        event("evt_1m", "received", AT - timedelta(minutes=1), lag_ms=3000),  # in flight: no processedAt
        event("evt_at", "processed", AT, lag_ms=10, took_ms=10),  # exactly at: out
        event("evt_later", "failed", AT + timedelta(hours=1), lag_ms=10, took_ms=10),  # after at: out
        event("evt_before", "processed", AT - timedelta(hours=24) - MS, lag_ms=10, took_ms=10),  # 1 ms early: out
    ])


def test_webhook_counts_rates_and_durations_over_the_last_24_hours(platform_db, src):
    seed_window(platform_db)
    block = webhooks.window_summary(src, DAY)
    # In W: evt_start, evt_1h (processed), evt_30m (failed), evt_1m (received) -> 4 received
    # failure_rate = failed / (processed + failed) = 1 / 3 (the in-flight one is in neither)
    # processing over events with processedAt: 100, 300, 500 -> avg 300, p95 rank ceil(2.85) = 3 -> 500
    # delivery lag: 2000, 4000, 1000, 3000 -> avg 2500, p95 rank ceil(3.8) = 4 -> 4000
    assert block == {
        "received": 4, "processed": 2, "failed": 1, "failure_rate": 1 / 3,
        "processing_ms": {"avg": 300, "p95": 500},
        "delivery_lag_ms": {"avg": 2500, "p95": 4000},
    }


def test_latest_events_are_newest_first_before_at_and_limited(platform_db, src):
    seed_window(platform_db)
    latest = webhooks.latest_events(src, AT, 3)
    # Before at, newest first: evt_1m, evt_30m, evt_1h, evt_start, evt_before; limit 3.
    assert [e["eventId"] for e in latest] == ["evt_1m", "evt_30m", "evt_1h"]
    assert [e["processing_ms"] for e in latest] == [None, 500, 300]
    assert latest[1]["error"] == "boom"
    # A limit larger than the last day's events reaches further back (evt_before is 24 h + 1 ms old).
    assert [e["eventId"] for e in webhooks.latest_events(src, AT, 10)] == [
        "evt_1m", "evt_30m", "evt_1h", "evt_start", "evt_before"]


def test_last_received_at_is_the_latest_receipt_before_at(platform_db, src):
    seed_window(platform_db)
    # evt_at (exactly at) and evt_later do not count; evt_1m is the latest before at.
    assert webhooks.last_received_at(src, AT) == AT - timedelta(minutes=1)


def test_last_received_at_looks_back_beyond_the_last_day(platform_db, src):
    platform_db.webhook_events.insert_many([
        event("evt_old", "processed", AT - timedelta(days=3)),
        event("evt_older", "processed", AT - timedelta(days=30)),
    ])
    assert webhooks.last_received_at(src, AT) == AT - timedelta(days=3)
    assert [e["eventId"] for e in webhooks.latest_events(src, AT, 5)] == ["evt_old", "evt_older"]


def test_nothing_received_gives_nulls_not_zeros(platform_db, src):
    block = webhooks.window_summary(src, DAY)
    assert block == {"received": 0, "processed": 0, "failed": 0, "failure_rate": None,
                     "processing_ms": {"avg": None, "p95": None}, "delivery_lag_ms": {"avg": None, "p95": None}}
    assert webhooks.last_received_at(src, AT) is None
    assert webhooks.latest_events(src, AT, 10) == []


def test_only_received_events_give_a_null_failure_rate(platform_db, src):
    platform_db.webhook_events.insert_one(event("evt_a", "received", AT - timedelta(minutes=5)))
    block = webhooks.window_summary(src, DAY)
    assert (block["received"], block["failure_rate"]) == (1, None)  # 0 processed + 0 failed


def test_a_latest_event_s_processing_time_is_exact_to_the_millisecond(platform_db, src):
    # 1001 ms is 1.001 s, which as a float times 1000 is 1000.9999...; it must still read 1001.
    platform_db.webhook_events.insert_one(event("evt_x", "processed", AT - timedelta(minutes=1), took_ms=1001))
    assert [e["processing_ms"] for e in webhooks.latest_events(src, AT, 1)] == [1001]


def test_the_latest_events_are_read_from_the_last_minutes_when_these_hold_enough(platform_db, src, monkeypatch):
    """The Overview, the Webhooks page, the snapshot and every alert cycle ask for the newest events:
    at a year of history a read of the whole last day (3,000 events a day here) cost 0.3 s a page."""
    platform_db.webhook_events.insert_many(
        [event(f"evt_{m}", "processed", AT - timedelta(minutes=m)) for m in range(1, 13)]
        + [event("evt_day", "processed", AT - timedelta(hours=20))])
    lower_bounds = []
    real = type(src).aggregate

    def recording(self, key, pipeline):
        if key == "webhook_events":
            match = next(s["$match"] for s in pipeline if "$match" in s)
            lower_bounds.append(match["receivedAt"].get("$gte"))
        return real(self, key, pipeline)

    monkeypatch.setattr(type(src), "aggregate", recording)
    assert [e["eventId"] for e in webhooks.latest_events(src, AT, 10)] == [f"evt_{m}" for m in range(1, 11)]
    assert webhooks.last_received_at(src, AT) == AT - timedelta(minutes=1)
    assert lower_bounds and all(b is not None and AT - b <= timedelta(minutes=15) for b in lower_bounds)
    # The day-old one is still found when the limit reaches it, by wider reads.
    assert webhooks.latest_events(src, AT, 13)[-1]["eventId"] == "evt_day"
