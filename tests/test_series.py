"""Time series and breakdowns (metrics/series.py) over hand-made documents on the real server."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from bson import ObjectId

from metrics import series
from metrics.payments import revenue_by_period
from metrics.windows import Window

UTC = timezone.utc
T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)  # a Friday
DAY = Window(T0, T0 + timedelta(days=1))


def at(hours: float, minutes: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


def payment(created: datetime, status: str = "completed", amount=1000, currency: str = "usd", **more) -> dict:
    doc = {"_id": ObjectId(), "paymentId": f"pi_{ObjectId()}", "amount": amount, "currency": currency,
           "status": status, "customerEmail": "jane.doe@example.com", "specialistId": "spec-a",
           "serviceId": "svc-a", "createdAt": created}
    if status in ("completed", "refunded"):
        doc["completedAt"] = created + timedelta(seconds=1)
    doc.update(more)
    return doc


def event(received: datetime, status: str = "processed", processing_s: float | None = 1, lag_s: float = 0.5,
          type_: str = "payment_intent.succeeded", **more) -> dict:
    doc = {"eventId": f"evt_{ObjectId()}", "type": type_, "status": status, "receivedAt": received,
           "stripeCreatedAt": received - timedelta(seconds=lag_s)}
    if processing_s is not None:
        doc["processedAt"] = received + timedelta(seconds=processing_s)
    doc.update(more)
    return doc


def enrollment(created: datetime, payment_status: str = "paid", status: str = "active", **more) -> dict:
    doc = {"customerId": "cus_1", "serviceId": "svc-a", "specialistId": "spec-a", "status": status,
           "paymentStatus": payment_status, "createdAt": created}
    doc.update(more)
    return doc


# -- buckets -----------------------------------------------------------------------

@pytest.mark.parametrize(("length", "unit"), [
    (timedelta(hours=24), "hour"), (timedelta(days=7), "hour"), (timedelta(days=30), "day"),
    (timedelta(days=90), "day"), (timedelta(days=365), "week"), (timedelta(days=1000), "month"),
])
def test_the_bucket_size_follows_the_window_length(length, unit):
    assert series.bucket_unit(Window(T0, T0 + length)) == unit


@pytest.mark.parametrize(("zone", "unit", "start", "days"), [
    ("Europe/Berlin", "day", datetime(2026, 3, 26, tzinfo=UTC), 6),   # spring forward on 29 March
    ("Europe/Berlin", "hour", datetime(2026, 10, 24, 22, tzinfo=UTC), 2),  # fall back on 25 October
    ("Asia/Kolkata", "hour", datetime(2026, 11, 20, tzinfo=UTC), 1),  # a half-hour offset
    ("America/New_York", "week", datetime(2026, 10, 1, tzinfo=UTC), 60),
    ("UTC", "month", datetime(2026, 1, 15, tzinfo=UTC), 120),
])
def test_bucket_starts_are_the_instants_date_trunc_gives(platform_db, src, zone, unit, start, days):
    """The zero-filled grid and the database's $dateTrunc agree, across DST changes too."""
    window = Window(start, start + timedelta(days=days))
    step = {"hour": timedelta(minutes=13), "day": timedelta(hours=1)}.get(unit, timedelta(hours=7))  # < any part-bucket
    count = math.ceil(window.length / step)
    platform_db.payments.insert_many([payment(start + i * step) for i in range(count)])
    rows = src.aggregate("payments", series.payment_series_pipeline(window, src.schema, zone, unit))
    from_db = sorted({row["_id"]["bucket"].astimezone(UTC) for row in rows})
    grid = series.bucket_starts(window, unit, zone)
    assert set(from_db) <= set(grid)
    assert grid == sorted(grid) and len(set(grid)) == len(grid)
    if unit in ("hour", "day"):
        assert from_db == grid  # a payment in every bucket, even the part-buckets at the edges


def test_a_local_day_starts_at_local_midnight():
    berlin = ZoneInfo("Europe/Berlin")
    starts = series.bucket_starts(Window(datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)),
                                  "day", berlin)
    assert [s.astimezone(berlin).hour for s in starts] == [0, 0, 0, 0]
    assert starts[2] - starts[1] == timedelta(hours=23)  # the day the clocks go forward


# -- payments ------------------------------------------------------------------------

def test_payment_series_counts_each_hour_and_fills_empty_hours_with_zero(platform_db, src):
    platform_db.payments.insert_many([
        payment(at(1, 5), "completed", 1000), payment(at(1, 20), "refunded", 3000),
        payment(at(1, 30), "failed", 500), payment(at(1, 40), "pending", 700), payment(at(1, 50), "canceled"),
        payment(at(3, 0), "completed", 2500, "eur"),
        payment(at(3, 10), "completed", "250"),  # a string amount: invalid, never 0
        payment(at(25), "completed", 9999),  # outside the window
    ])
    rows = series.payment_series(src, DAY, "UTC", currencies=("usd",))
    assert len(rows) == 24 and rows[0]["bucket"] == T0
    one, two, three = rows[1], rows[2], rows[3]
    assert (one["succeeded"], one["failed"], one["success_rate"]) == (2, 1, 2 / 3)
    assert one["revenue"] == {"eur": 0, "usd": 4000}
    assert one["avg_transaction_value"] == {"eur": None, "usd": 2000}
    assert (two["succeeded"], two["failed"], two["success_rate"], two["revenue"]) == (0, 0, None, {"eur": 0, "usd": 0})
    assert three["revenue"] == {"eur": 2500, "usd": 0} and three["succeeded"] == 1


def test_failures_are_grouped_by_decline_code_or_specialist(platform_db, src):
    platform_db.payments.insert_many([
        payment(at(1), "failed", failureCode="card_declined", specialistId="spec-a"),
        payment(at(2), "failed", failureCode="card_declined", specialistId="spec-b"),
        payment(at(3), "failed", failureCode="expired_card", specialistId="spec-b"),
        payment(at(4), "failed", specialistId="spec-b"),  # no decline code
        payment(at(5), "completed", failureCode="card_declined"),  # not failed
        payment(at(30), "failed", failureCode="card_declined"),  # outside
    ])
    assert series.failures_by(src, DAY) == [
        {"key": "card_declined", "count": 2}, {"key": None, "count": 1}, {"key": "expired_card", "count": 1}]
    assert series.failures_by(src, DAY, "specialistId") == [
        {"key": "spec-b", "count": 3}, {"key": "spec-a", "count": 1}]
    assert series.failures_by(src, DAY, limit=1) == [{"key": "card_declined", "count": 2}]


def test_failures_by_an_unknown_field_is_an_error_not_an_empty_chart(src):
    with pytest.raises(KeyError):
        series.failures_by(src, DAY, "cardNumber")


def test_refunds_are_placed_by_refund_time_whatever_the_creation_time(platform_db, src):
    platform_db.payments.insert_many([
        payment(at(-48), "refunded", 1000, refundedAt=at(2, 30)),
        payment(at(1), "refunded", 2000, "eur", refundedAt=at(2, 45)),
        payment(at(1), "refunded", 500, refundedAt=at(26)),  # refunded after the window
    ])
    rows = series.refund_series(src, DAY, "UTC")
    assert rows[2]["refunds"] == 2 and rows[2]["amount"] == {"usd": 1000, "eur": 2000}
    assert sum(r["refunds"] for r in rows) == 2


def test_amount_histogram_puts_each_succeeded_payment_in_its_band(platform_db, src):
    platform_db.payments.insert_many([
        payment(at(1), "completed", 999), payment(at(1), "completed", 1000), payment(at(1), "refunded", 4999),
        payment(at(1), "completed", 900_000), payment(at(1), "failed", 1500),
        payment(at(1), "completed", 1500, "eur"),
    ])
    bands = series.amount_histogram(src, DAY, "usd")
    counts = {(b["lower"], b["upper"]): b["count"] for b in bands}
    assert counts[(0, 1000)] == 1 and counts[(1000, 2500)] == 1 and counts[(2500, 5000)] == 1
    assert counts[(500_000, None)] == 1
    assert sum(counts.values()) == 4
    assert len(bands) == len(series.AMOUNT_EDGES_MAJOR)


def test_zero_decimal_currencies_get_edges_in_whole_units():
    assert series.amount_edges("jpy")[:3] == [0, 10, 25]
    assert series.amount_edges("usd")[:3] == [0, 1000, 2500]


def test_recent_failed_payments_are_newest_first_with_what_support_needs(platform_db, src):
    platform_db.payments.insert_many([
        payment(at(1), "failed", failureCode="a"), payment(at(3), "failed", failureCode="c"),
        payment(at(2), "failed", failureCode="b"), payment(at(4), "completed"),
    ])
    rows = series.recent_failed_payments(src, DAY, limit=2)
    assert [r["failureCode"] for r in rows] == ["c", "b"]
    assert rows[0]["customerEmail"] == "jane.doe@example.com"  # masking is the screen's job
    assert set(rows[0]) >= {"paymentId", "createdAt", "amount", "currency", "failureMessage", "specialistId"}


def test_revenue_with_previous_compares_each_period_with_the_one_before(platform_db, src):
    platform_db.payments.insert_many([
        payment(at(10), "completed", 1000), payment(at(-2), "completed", 300), payment(at(-30), "completed", 7),
    ])
    periods = {"today": Window(T0, at(12)), "last_hour": Window(at(9, 30), at(10, 30))}
    out = series.revenue_with_previous(src, periods, ("usd",))
    assert out["today"] == {"current": {"usd": 1000}, "previous": {"usd": 300}}
    assert out["last_hour"] == {"current": {"usd": 1000}, "previous": {"usd": 0}}
    assert out["today"]["current"] == revenue_by_period(src, {"today": periods["today"]}, ("usd",))["today"]


# -- webhooks ------------------------------------------------------------------------

def test_webhook_series_counts_statuses_and_times_each_hour(platform_db, src):
    platform_db.webhook_events.insert_many([
        event(at(5, 1), processing_s=1, lag_s=2), event(at(5, 2), processing_s=3, lag_s=4),
        event(at(5, 3), "failed", processing_s=None, error="boom"), event(at(5, 4), "received", processing_s=None),
        event(at(6), processing_s=20),
        {"eventId": "evt_bad", "type": "x", "status": "processed", "receivedAt": "yesterday"},  # invalid
    ])
    rows = series.webhook_series(src, DAY, "UTC")
    five = rows[5]
    assert (five["received"], five["processed"], five["failed"]) == (4, 2, 1)
    assert five["failure_rate"] == 1 / 3
    assert five["processing_ms"]["avg"] == 2000
    assert five["delivery_lag_ms"]["avg"] == (2 + 4 + 0.5 + 0.5) / 4 * 1000  # every event has a lag
    assert rows[6]["processing_ms"] == {"avg": 20000, "p95": 20000}
    assert rows[7]["received"] == 0 and rows[7]["failure_rate"] is None
    assert rows[7]["processing_ms"] == {"avg": None, "p95": None}


def test_webhook_types_are_counted_most_first(platform_db, src):
    platform_db.webhook_events.insert_many([
        event(at(1), type_="charge.refunded"), event(at(2)), event(at(3)), event(at(4), "failed", type_="charge.refunded"),
        event(at(5)),
    ])
    assert series.webhook_types(src, DAY) == [
        {"type": "payment_intent.succeeded", "received": 3, "failed": 0},
        {"type": "charge.refunded", "received": 2, "failed": 1},
    ]


# -- enrollments -----------------------------------------------------------------------

def test_enrollment_series_places_new_ones_by_creation_and_refunds_by_refund_time(platform_db, src):
    platform_db.enrollments.insert_many([
        enrollment(at(1)), enrollment(at(1, 30), "pending", "pending"),
        enrollment(at(-30), "refunded", "refunded", refundedAt=at(1, 45)),
        enrollment(at(2), "refunded", "refunded", refundedAt=at(30)),
    ])
    rows = series.enrollment_series(src, DAY, "UTC")
    assert (rows[1]["created"], rows[1]["converted"], rows[1]["refunded"]) == (2, 1, 1)
    assert rows[1]["conversion_rate"] == 0.5
    assert (rows[2]["created"], rows[2]["converted"], rows[2]["refunded"]) == (1, 1, 0)


def test_latency_series_measures_activation_from_the_payments_completion(platform_db, src):
    paid = payment(at(3), "completed")  # completedAt = created + 1 s
    platform_db.payments.insert_one(paid)
    platform_db.enrollments.insert_many([
        enrollment(at(3), paymentId=paid["_id"], activatedAt=paid["completedAt"] + timedelta(milliseconds=1500),
                   confirmationEmailSentAt=paid["completedAt"] + timedelta(seconds=5)),
        enrollment(at(3), paymentId=ObjectId(), activatedAt=at(3, 10)),  # its payment is unknown
    ])
    rows = series.latency_series(src, DAY, "UTC")
    three = rows[3]
    assert three["activated"] == 2
    assert three["activation_ms"] == {"avg": 1500, "p95": 1500}
    assert three["email_ms"] == {"avg": 3500, "p95": 3500}


def test_the_funnel_counts_how_far_each_new_enrollment_got(platform_db, src):
    platform_db.enrollments.insert_many([
        enrollment(at(1), "pending", "pending"),
        enrollment(at(2), "failed", "cancelled"),
        enrollment(at(3), "paid", "pending"),
        enrollment(at(4), "paid", activatedAt=at(4, 1)),
        enrollment(at(5), "refunded", "refunded", activatedAt=at(5, 1), confirmationEmailSentAt=at(5, 2)),
        enrollment(at(-5), "paid", activatedAt=at(1)),  # created before the window
    ])
    assert series.enrollment_funnel(src, DAY) == {"created": 5, "paid": 3, "activated": 2, "emailed": 1}


def test_an_empty_window_has_an_empty_funnel(src):
    assert series.enrollment_funnel(src, DAY) == {"created": 0, "paid": 0, "activated": 0, "emailed": 0}


def test_pending_payments_are_banded_by_how_long_they_have_waited(platform_db, src):
    now = at(12)
    platform_db.enrollments.insert_many([
        enrollment(now - timedelta(minutes=m), "pending", "pending") for m in (1, 10, 29, 45, 300, 3000)
    ] + [enrollment(now - timedelta(minutes=2), "paid"), enrollment(now + timedelta(minutes=1), "pending", "pending")])
    bands = series.pending_by_age(src, now)
    assert [(b["lower_min"], b["upper_min"], b["count"]) for b in bands] == [
        (0, 5, 1), (5, 30, 2), (30, 60, 1), (60, 240, 0), (240, 1440, 1), (1440, None, 1)]
