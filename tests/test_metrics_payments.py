"""Payment metrics (spec section 4) against hand-worked values on small datasets.

Every expected number is worked out in the comments from the documents the
test writes; nothing is computed by the code under test and compared to itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from bson import Decimal128, Int64

from metrics import payments
from metrics.snapshot import build_snapshot
from metrics.windows import last, month, today, week

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday
DAY = last(AT, hours=24)  # [2026-11-25T12:00Z, 2026-11-26T12:00Z)
MS = timedelta(milliseconds=1)


def pay(status: str, amount, created: datetime | None, currency: str = "usd", **extra) -> dict:
    doc = {"paymentId": f"pi_{status}_{amount}_{currency}", "amount": amount, "currency": currency,
           "status": status, **extra}
    if created is not None:
        doc["createdAt"] = created
    return doc


def test_a_payment_at_the_window_start_counts_and_one_at_at_does_not(platform_db, src):
    platform_db.payments.insert_many([
        pay("completed", 1, AT - timedelta(hours=24)),        # exactly the start: counts
        pay("completed", 10, AT - timedelta(hours=24) - MS),  # 1 ms before the start: out
        pay("completed", 100, AT - MS),                       # 1 ms before at: counts
        pay("completed", 1000, AT),                           # exactly at: out
        pay("completed", 10000, AT + timedelta(hours=2)),     # after at: out
        pay("failed", 5, AT),                                 # a failure at at: out
    ])
    block = payments.window_summary(src, DAY, ("usd",))
    # succeeded: the 1 and the 100 -> 2, revenue 101; failed: none before at.
    assert block["succeeded"] == 2
    assert block["revenue"] == {"usd": 101}
    assert block["failed"] == 0
    assert block["success_rate"] == 1.0


def test_three_currencies_are_summed_apart_and_never_converted(platform_db, src):
    platform_db.payments.insert_many([
        pay("completed", 1000, AT - timedelta(hours=1)),
        pay("completed", 2500, AT - timedelta(hours=2)),
        pay("refunded", 700, AT - timedelta(hours=3), "eur", refundedAt=AT - timedelta(hours=1)),
        pay("completed", 300, AT - timedelta(hours=4), "EUR"),  # upper case is the same currency
        pay("completed", 5000, AT - timedelta(hours=5), "jpy"),
        pay("failed", 999, AT - timedelta(hours=6)),
        pay("pending", 100, AT - timedelta(hours=7), "eur"),
    ])
    block = payments.window_summary(src, DAY, ("usd",))
    # usd: 1000 + 2500 = 3500 over 2 -> avg 1750
    # eur: 700 (refunded still captured) + 300 = 1000 over 2 -> avg 500
    # jpy: 5000 over 1 -> avg 5000 (no minor unit, never divided by 100 here)
    assert block["revenue"] == {"eur": 1000, "jpy": 5000, "usd": 3500}
    assert block["avg_transaction_value"] == {"eur": 500, "jpy": 5000, "usd": 1750}
    # succeeded 5, failed 1 -> 5/6; the pending one is in neither count.
    assert block["succeeded"] == 5
    assert block["failed"] == 1
    assert block["success_rate"] == pytest.approx(5 / 6)
    # one refundedAt in the window / 5 succeeded
    assert block["refunds"] == 1
    assert block["refund_rate"] == pytest.approx(1 / 5)


def test_configured_currencies_are_present_with_zero_when_nothing_was_taken(platform_db, src):
    platform_db.payments.insert_one(pay("completed", 400, AT - timedelta(hours=1), "eur"))
    block = payments.window_summary(src, DAY, ("usd", "jpy"))
    # usd and jpy configured but unused: 0 in both maps; eur appears because it was taken.
    assert block["revenue"] == {"eur": 400, "jpy": 0, "usd": 0}
    assert block["avg_transaction_value"] == {"eur": 400, "jpy": 0, "usd": 0}


def test_a_payment_without_a_currency_is_counted_under_unknown_not_an_empty_key(platform_db, src):
    platform_db.payments.insert_many([
        pay("completed", 400, AT - timedelta(hours=1)) | {"currency": None},
        {k: v for k, v in pay("completed", 600, AT - timedelta(hours=2)).items() if k != "currency"},
    ])
    block = payments.window_summary(src, DAY, ("usd",))
    # 400 + 600 under "unknown"; usd configured, so present with 0.
    assert block["revenue"] == {"unknown": 1000, "usd": 0}


def test_success_rate_leaves_out_pending_processing_and_canceled(platform_db, src):
    hour = timedelta(hours=1)
    platform_db.payments.insert_many([
        pay("completed", 100, AT - 1 * hour), pay("completed", 100, AT - 2 * hour),
        pay("completed", 100, AT - 3 * hour), pay("refunded", 100, AT - 4 * hour),
        pay("failed", 100, AT - 5 * hour),
        pay("pending", 100, AT - 6 * hour), pay("processing", 100, AT - 7 * hour),
        pay("canceled", 100, AT - 8 * hour),
    ])
    block = payments.window_summary(src, DAY, ("usd",))
    # succeeded = 3 completed + 1 refunded = 4; failed = 1; rate = 4 / 5
    assert (block["succeeded"], block["failed"], block["success_rate"]) == (4, 1, 0.8)
    assert block["by_status"] == {"canceled": 1, "completed": 3, "failed": 1, "pending": 1,
                                  "processing": 1, "refunded": 1}


def test_rates_are_null_not_zero_when_there_is_nothing_to_divide(platform_db, src):
    platform_db.payments.insert_many([
        pay("pending", 100, AT - timedelta(hours=1)),
        pay("canceled", 100, AT - timedelta(hours=2)),
    ])
    block = payments.window_summary(src, DAY, ("usd",))
    assert block["success_rate"] is None  # 0 succeeded + 0 failed
    assert block["refund_rate"] is None  # 0 succeeded
    assert block["processing_ms"] == {"avg": None, "p95": None}
    assert block["revenue"] == {"usd": 0}


@pytest.mark.parametrize("stored, expected", [
    (42, 42),                             # int32
    (Int64(3_000_000_123), 3_000_000_123),  # int64 beyond int32
    (250.0, 250),                         # integral double
    (Decimal128("1234.00"), 1234),        # Decimal128 with a zero fraction
])
def test_each_numeric_type_of_amount_is_summed_exactly(platform_db, src, stored, expected):
    platform_db.payments.insert_one(pay("completed", stored, AT - timedelta(hours=1)))
    block = payments.window_summary(src, DAY, ("usd",))
    assert block["revenue"] == {"usd": expected}
    assert isinstance(block["revenue"]["usd"], int)


def test_amounts_of_all_four_numeric_types_add_up_in_one_sum(platform_db, src):
    platform_db.payments.insert_many([
        pay("completed", 100, AT - timedelta(hours=1)),
        pay("completed", Int64(3_000_000_000), AT - timedelta(hours=2)),
        pay("completed", 250.0, AT - timedelta(hours=3)),
        pay("completed", Decimal128("1234"), AT - timedelta(hours=4)),
    ])
    # 100 + 3,000,000,000 + 250 + 1,234 = 3,000,001,584 over 4 -> avg 750,000,396
    block = payments.window_summary(src, DAY, ("usd",))
    assert block["revenue"] == {"usd": 3_000_001_584}
    assert block["avg_transaction_value"] == {"usd": 750_000_396}
    periods = payments.revenue_by_period(src, {"today": today(AT, ZoneInfo("UTC"))}, ("usd",))
    assert periods == {"today": {"usd": 3_000_001_584}}


def test_refunds_count_by_refunded_at_whatever_the_payment_was_created(platform_db, src):
    platform_db.payments.insert_many([
        # created 10 days ago, refunded 2 h ago: a refund of this window
        pay("refunded", 100, AT - timedelta(days=10), refundedAt=AT - timedelta(hours=2)),
        # refunded exactly at the window start: counts
        pay("refunded", 100, AT - timedelta(days=3), refundedAt=AT - timedelta(hours=24)),
        # refunded exactly at at, and after at: neither counts
        pay("refunded", 100, AT - timedelta(hours=5), refundedAt=AT),
        pay("refunded", 100, AT - timedelta(hours=6), refundedAt=AT + timedelta(minutes=1)),
        # refunded 1 ms before the window start: not a refund of this window
        pay("refunded", 100, AT - timedelta(days=4), refundedAt=AT - timedelta(hours=24) - MS),
        pay("completed", 100, AT - timedelta(hours=8)),
        pay("completed", 100, AT - timedelta(hours=9)),
    ])
    block = payments.window_summary(src, DAY, ("usd",))
    # refunds: the 10-days-old one and the one at the start = 2
    # succeeded in W (by createdAt): the refunded ones created 5 and 6 h ago + 2 completed = 4
    assert block["refunds"] == 2
    assert block["succeeded"] == 4
    assert block["refund_rate"] == 0.5  # 2 / 4


def test_processing_time_is_the_average_and_nearest_rank_p95_of_succeeded_payments(platform_db, src):
    docs = []
    for i in range(1, 21):  # 20 payments taking 100, 200, ..., 2000 ms
        created = AT - timedelta(hours=1, minutes=i)
        docs.append(pay("completed" if i % 2 else "refunded", 100, created,
                        completedAt=created + timedelta(milliseconds=100 * i)))
    # A failed payment with a completedAt and a completed one without: neither counts.
    docs.append(pay("failed", 100, AT - timedelta(hours=2), completedAt=AT - timedelta(hours=1)))
    docs.append(pay("completed", 100, AT - timedelta(hours=3)))
    platform_db.payments.insert_many(docs)
    block = payments.window_summary(src, DAY, ("usd",))
    # avg = 100 * (1 + ... + 20) / 20 = 100 * 210 / 20 = 1050
    # p95 nearest rank: rank ceil(0.95 * 20) = 19 -> the 19th smallest = 1900
    assert block["processing_ms"] == {"avg": 1050, "p95": 1900}


def test_p95_of_a_handful_of_values_is_the_largest_by_nearest_rank(platform_db, src):
    for i, ms in enumerate((300, 100, 200)):
        created = AT - timedelta(hours=1 + i)
        platform_db.payments.insert_one(pay("completed", 1, created, completedAt=created + timedelta(milliseconds=ms)))
    # avg (100 + 200 + 300) / 3 = 200; p95 rank ceil(0.95 * 3) = 3 -> 300
    assert payments.window_summary(src, DAY, ("usd",))["processing_ms"] == {"avg": 200, "p95": 300}


def test_stuck_payments_are_pending_or_processing_and_older_than_the_threshold(platform_db, src):
    platform_db.payments.insert_many([
        pay("processing", 1, AT - timedelta(minutes=31)),            # stuck
        pay("pending", 2, AT - timedelta(hours=2)),                  # stuck
        pay("pending", 3, AT - timedelta(minutes=30)),               # exactly 30 min: not "earlier than"
        pay("processing", 4, AT - timedelta(minutes=5)),             # young: in flight
        pay("completed", 5, AT - timedelta(hours=2)),                # finished
        pay("failed", 6, AT - timedelta(hours=2)),                   # finished
        pay("processing", 7, AT - timedelta(days=40)),               # stuck for weeks: still stuck
    ])
    assert payments.stuck_count(src, AT, 30) == 3  # amounts 1, 2, 7
    stuck = payments.stuck_payments(src, AT, 30)
    assert [p["amount"] for p in stuck] == [7, 2, 1]  # oldest first
    # A 60-minute threshold leaves the 2-hour and the 40-day ones.
    assert payments.stuck_count(src, AT, 60) == 2


def test_the_snapshot_uses_the_configured_stuck_minutes(platform_db, make_settings):
    from metrics.db import source

    platform_db.payments.insert_many([
        pay("processing", 1, AT - timedelta(minutes=45)),
        pay("pending", 2, AT - timedelta(minutes=15)),
    ])
    default = make_settings()
    assert build_snapshot(source(default), default, AT, system=False)["payments"]["stuck"] == 1  # only 45 min
    short = make_settings(stuck_minutes=10)
    assert build_snapshot(source(short), short, AT, system=False)["payments"]["stuck"] == 2  # 45 and 15 min


# Calendar periods: (zone, local midnight today, Monday 00:00, the 1st 00:00) for AT, all in UTC.
# New York on 2026-11-26 is EST (UTC-5), but on 2026-11-01 at 00:00 it was still EDT (UTC-4):
# DST ended at 02:00 that day, so the month starts at 04:00Z while the day and week start at 05:00Z.
# Tokyo is UTC+9 all year: every local midnight is 15:00Z of the previous day.
CALENDAR_CASES = [
    ("America/New_York", datetime(2026, 11, 26, 5, tzinfo=UTC), datetime(2026, 11, 23, 5, tzinfo=UTC),
     datetime(2026, 11, 1, 4, tzinfo=UTC)),
    ("Asia/Tokyo", datetime(2026, 11, 25, 15, tzinfo=UTC), datetime(2026, 11, 22, 15, tzinfo=UTC),
     datetime(2026, 10, 31, 15, tzinfo=UTC)),
]


@pytest.mark.parametrize("zone, day_start, week_start, month_start", CALENDAR_CASES)
def test_revenue_today_week_and_month_start_at_local_midnight_monday_and_the_first(
        platform_db, make_settings, zone, day_start, week_start, month_start):
    from metrics.db import source

    platform_db.payments.insert_many([
        pay("completed", 1, day_start),               # today, week, month
        pay("completed", 10, day_start - MS),         # yesterday evening local: week, month
        pay("completed", 100, week_start),            # Monday 00:00 local: week, month
        pay("completed", 1000, week_start - MS),      # Sunday 23:59:59.999 local: month
        pay("completed", 10000, month_start),         # the 1st 00:00 local: month
        pay("completed", 100000, month_start - MS),   # the last day of last month: none
        pay("completed", 1000000, AT),                # at: none
        pay("failed", 7, day_start + timedelta(hours=1)),  # not succeeded: none
    ])
    settings = make_settings(timezone=zone)
    revenue = build_snapshot(source(settings), settings, AT, system=False)["payments"]["revenue"]
    # today 1; week 1 + 10 + 100 = 111; month 111 + 1000 + 10000 = 11111
    assert revenue == {"today": {"usd": 1}, "week": {"usd": 111}, "month": {"usd": 11111}}


def test_revenue_periods_keep_currencies_apart(platform_db, src):
    tz = ZoneInfo("UTC")
    platform_db.payments.insert_many([
        pay("completed", 100, AT - timedelta(hours=1)),                  # today (UTC)
        pay("completed", 2000, AT - timedelta(days=2), "eur"),           # Tue 24th: week
        pay("refunded", 30000, AT - timedelta(days=20), "jpy"),          # Nov 6th: month
    ])
    periods = {"today": today(AT, tz), "week": week(AT, tz), "month": month(AT, tz)}
    assert payments.revenue_by_period(src, periods, ("usd",)) == {
        "today": {"usd": 100},
        "week": {"eur": 2000, "usd": 100},
        "month": {"eur": 2000, "jpy": 30000, "usd": 100},
    }
