"""Enrollment metrics (spec section 4) against hand-worked values on small datasets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from metrics import enrollments
from metrics.db import source
from metrics.snapshot import build_snapshot
from metrics.windows import last

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = last(AT, hours=24)
MS = timedelta(milliseconds=1)
H = timedelta(hours=1)


def enrollment(customer: str, service: str, status: str, payment_status: str, created, **extra) -> dict:
    doc = {"customerId": customer, "specialistId": "sp_1", "serviceId": service, "status": status,
           "paymentStatus": payment_status, **extra}
    if created is not None:
        doc["createdAt"] = created
    return doc


def test_created_and_converted_count_by_created_at_in_a_half_open_window(platform_db, src):
    platform_db.enrollments.insert_many([
        enrollment("c1", "s1", "active", "paid", AT - 24 * H),        # at the start: in, converted
        enrollment("c2", "s1", "refunded", "refunded", AT - 2 * H),   # in, converted (refunded was paid)
        enrollment("c3", "s1", "pending", "pending", AT - 3 * H),     # in, not converted
        enrollment("c4", "s1", "cancelled", "failed", AT - MS),        # in, not converted
        enrollment("c5", "s1", "active", "paid", AT),                  # exactly at: out
        enrollment("c6", "s1", "active", "paid", AT - 24 * H - MS),   # 1 ms early: out
    ])
    block = enrollments.window_summary(src, DAY)
    # created 4, converted 2 -> 0.5
    assert (block["created"], block["converted"], block["conversion_rate"]) == (4, 2, 0.5)


def test_conversion_rate_is_null_with_no_enrollments(platform_db, src):
    block = enrollments.window_summary(src, DAY)
    assert block == {"created": 0, "converted": 0, "conversion_rate": None, "refunded": 0,
                     "activation_ms": {"avg": None, "p95": None}, "email_ms": {"avg": None, "p95": None}}


def test_refunded_enrollments_count_by_refunded_at_whatever_their_creation(platform_db, src):
    platform_db.enrollments.insert_many([
        enrollment("c1", "s1", "refunded", "refunded", AT - 40 * H, refundedAt=AT - 23 * H),  # in
        enrollment("c2", "s1", "refunded", "refunded", AT - 3 * H, refundedAt=AT - H),        # in
        enrollment("c3", "s1", "refunded", "refunded", AT - 3 * H, refundedAt=AT),            # at: out
        enrollment("c4", "s1", "refunded", "refunded", AT - 90 * H, refundedAt=AT - 25 * H),  # before W: out
    ])
    assert enrollments.window_summary(src, DAY)["refunded"] == 2


def test_pending_payments_are_enrollments_created_before_at_with_a_pending_payment(platform_db, src):
    platform_db.enrollments.insert_many([
        enrollment("c1", "s1", "pending", "pending", AT - 30 * H),     # old, still pending: counts
        enrollment("c2", "s1", "pending", "pending", AT - MS),         # counts
        enrollment("c3", "s1", "pending", "pending", AT),              # exactly at: not yet
        enrollment("c4", "s1", "active", "paid", AT - H),              # paid: no
        enrollment("c5", "s1", "cancelled", "failed", AT - H),         # failed: no
    ])
    assert enrollments.pending_payments_count(src, AT) == 2


def test_activation_and_email_latency_join_each_enrollment_to_its_payment(platform_db, src):
    def paid(pid, completed, amount=100):
        return {"_id": pid, "paymentId": f"pi_{pid}", "amount": amount, "currency": "usd",
                "status": "completed", "createdAt": completed - timedelta(seconds=5), "completedAt": completed}

    p1, p2, p3, p4, p5 = (ObjectId() for _ in range(5))
    a1, a2, a3, a4 = AT - H, AT - 2 * H, AT - 19 * H, AT - 24 * H
    platform_db.payments.insert_many([
        paid(p1, a1 - timedelta(milliseconds=1500)),
        paid(p2, a2 - timedelta(milliseconds=500)),
        paid(p3, a3 - timedelta(milliseconds=3000)),
        paid(p4, a4 - timedelta(milliseconds=1000)),
        paid(p5, AT - 6 * H - timedelta(milliseconds=700), amount="250"),  # invalid payment: no activation time
    ])
    platform_db.enrollments.insert_many([
        enrollment("c1", "s1", "active", "paid", a1 - H, paymentId=p1, activatedAt=a1,
                   confirmationEmailSentAt=a1 + timedelta(milliseconds=2000)),
        enrollment("c2", "s1", "active", "paid", a2 - H, paymentId=p2, activatedAt=a2,
                   confirmationEmailSentAt=a2 + timedelta(milliseconds=4000)),
        enrollment("c3", "s1", "refunded", "refunded", a3 - H, paymentId=p3, activatedAt=a3),  # no email sent
        enrollment("c4", "s1", "active", "paid", a4 - 2 * H, paymentId=p4, activatedAt=a4,  # activated at the start
                   confirmationEmailSentAt=a4 + timedelta(milliseconds=1000)),
        enrollment("c5", "s1", "active", "paid", AT - 7 * H, paymentId=ObjectId(), activatedAt=AT - 5 * H,  # no payment
                   confirmationEmailSentAt=AT - 5 * H + timedelta(milliseconds=6000)),
        enrollment("c6", "s1", "active", "paid", AT - 7 * H, paymentId=p5, activatedAt=AT - 6 * H),
        enrollment("c7", "s1", "active", "paid", AT - 2 * H, paymentId=p1, activatedAt=AT,  # activated at at: out
                   confirmationEmailSentAt=AT + timedelta(seconds=30)),
    ])
    block = enrollments.window_summary(src, DAY)
    # activation (activatedAt in W, valid payment with completedAt): 1500, 500, 3000, 1000
    #   avg 6000 / 4 = 1500; p95 rank ceil(3.8) = 4 -> 3000
    # email (same enrollments, with confirmationEmailSentAt): 2000, 4000, 1000, 6000
    #   avg 13000 / 4 = 3250; p95 rank 4 -> 6000
    assert block["activation_ms"] == {"avg": 1500, "p95": 3000}
    assert block["email_ms"] == {"avg": 3250, "p95": 6000}


def test_duplicates_count_customer_service_pairs_with_more_than_one_active_or_pending(platform_db, src):
    platform_db.enrollments.insert_many([
        enrollment("c1", "s1", "active", "paid", AT - 5 * H),
        enrollment("c1", "s1", "pending", "pending", AT - 4 * H),      # (c1, s1) twice: a duplicate
        enrollment("c1", "s2", "active", "paid", AT - 4 * H),          # another service: fine
        enrollment("c2", "s1", "active", "paid", AT - 90 * H),
        enrollment("c2", "s1", "active", "paid", AT - 80 * H),
        enrollment("c2", "s1", "active", "paid", AT - 70 * H),         # (c2, s1) three times: one pair
        enrollment("c3", "s1", "active", "paid", AT - 5 * H),
        enrollment("c3", "s1", "cancelled", "failed", AT - 4 * H),     # cancelled: not a duplicate
        enrollment("c4", "s1", "active", "paid", AT - 5 * H),
        enrollment("c4", "s1", "refunded", "refunded", AT - 4 * H),    # refunded: not a duplicate
        enrollment("c5", "s1", "active", "paid", AT - 5 * H),
        enrollment("c5", "s1", "pending", "pending", AT),              # created at at: not yet
    ])
    # pairs (c1, s1) and (c2, s1) -> 2
    assert enrollments.duplicate_count(src, AT) == 2
    pairs = enrollments.duplicate_pairs(src, AT)
    assert [(p["customerId"], p["serviceId"], p["count"]) for p in pairs] == [("c2", "s1", 3), ("c1", "s1", 2)]
    # An hour later the (c5, s1) pair exists too.
    assert enrollments.duplicate_count(src, AT + H) == 3


# (zone, local midnight of AT's day in UTC); see test_metrics_payments for the arithmetic.
@pytest.mark.parametrize("zone, day_start", [
    ("America/New_York", datetime(2026, 11, 26, 5, tzinfo=UTC)),
    ("Asia/Tokyo", datetime(2026, 11, 25, 15, tzinfo=UTC)),
    ("UTC", datetime(2026, 11, 26, 0, tzinfo=UTC)),
])
def test_new_today_starts_at_local_midnight(platform_db, make_settings, zone, day_start):
    platform_db.enrollments.insert_many([
        enrollment("c1", "s1", "active", "paid", day_start),            # midnight local: today
        enrollment("c2", "s1", "pending", "pending", AT - MS),          # today
        enrollment("c3", "s1", "active", "paid", day_start - MS),       # yesterday local
        enrollment("c4", "s1", "active", "paid", AT),                   # at: not yet
    ])
    settings = make_settings(timezone=zone)
    assert build_snapshot(source(settings), settings, AT, system=False)["enrollments"]["new_today"] == 2


def test_recent_duplicates_are_the_pairs_enrolled_twice_within_the_window_newest_first(platform_db, src):
    """The duplicate-enrollment rule reads this every minute; from the rollups it is their pair set,
    not a read of the window's enrollments, and both answer alike."""
    from metrics import signals
    platform_db.enrollments.insert_many([
        enrollment("c1", "s1", "active", "paid", AT - 5 * H, _id=ObjectId("000000000000000000000001")),
        enrollment("c1", "s1", "pending", "pending", AT - 4 * H, _id=ObjectId("000000000000000000000002")),
        enrollment("c2", "s1", "active", "paid", AT - 30 * H),   # before W: c2's pair is not recent
        enrollment("c2", "s1", "active", "paid", AT - 2 * H),
        enrollment("c3", "s2", "active", "paid", AT - 3 * H, _id=ObjectId("000000000000000000000003")),
        enrollment("c3", "s2", "active", "paid", AT - 1 * H, _id=ObjectId("000000000000000000000004")),
        enrollment("c3", "s2", "active", "paid", AT - 1 * H, _id=ObjectId("000000000000000000000005")),
        enrollment("c4", "s1", "active", "paid", AT - 2 * H),
        enrollment("c4", "s1", "cancelled", "failed", AT - 1 * H),  # cancelled does not count
        enrollment("c5", "s1", "active", "paid", AT - 1 * H),
        enrollment("c5", "s1", "active", "paid", AT),               # exactly at: out
        enrollment("c6", "s1", "active", "paid", AT - 6 * H, _id=ObjectId("000000000000000000000006")),
        enrollment("c6", "s1", "active", "paid", AT - 6 * H, _id=ObjectId("000000000000000000000007")),
    ])
    recent = signals.recent_duplicates(src, DAY)
    assert [(r["customerId"], r["serviceId"], r["count"], r["enrollment_ids"], r["latest"]) for r in recent] == [
        ("c3", "s2", 3, ["000000000000000000000003", "000000000000000000000004", "000000000000000000000005"],
         AT - 1 * H),
        ("c1", "s1", 2, ["000000000000000000000001", "000000000000000000000002"], AT - 4 * H),
        ("c6", "s1", 2, ["000000000000000000000006", "000000000000000000000007"], AT - 6 * H),
    ]
    assert [r["customerId"] for r in signals.recent_duplicates(src, DAY, limit=1)] == ["c3"]


def test_recent_duplicates_come_from_the_rollups_pair_set_not_the_window_s_enrollments(platform_db, settings,
                                                                                       monkeypatch):
    from metrics import signals
    from metrics.db import Source
    from metrics.rollups import attach
    platform_db.enrollments.insert_many([enrollment("c1", "s1", "active", "paid", AT - h * H) for h in (1, 2)])
    rolled = attach(source(settings), settings)
    sent, real = [], Source.aggregate
    monkeypatch.setattr(Source, "aggregate", lambda self, key, pipeline: sent.append(key) or real(self, key, pipeline))
    assert [r["count"] for r in signals.recent_duplicates(rolled, DAY)] == [2]
    assert "enrollments" not in sent
