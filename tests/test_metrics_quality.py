"""Invalid documents (spec section 3): excluded from every metric and counted in data_quality.

Each case adds one kind of malformed document to a small valid dataset whose
metrics are worked out by hand below; the malformed documents are placed so
that, were they counted, they would change every metric they could touch.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from bson import Decimal128, ObjectId

from metrics.quality import data_quality
from metrics.snapshot import build_snapshot

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
MIN = timedelta(minutes=1)
PAYMENT_ID = ObjectId()


def valid_platform(platform_db) -> None:
    platform_db.payments.insert_many([
        {"_id": PAYMENT_ID, "paymentId": "pi_ok", "amount": 1000, "currency": "usd", "status": "completed",
         "createdAt": AT - H, "completedAt": AT - H + timedelta(seconds=2)},
        {"paymentId": "pi_declined", "amount": 500, "currency": "usd", "status": "failed", "createdAt": AT - 2 * H},
    ])
    platform_db.webhook_events.insert_many([
        {"eventId": "evt_ok", "type": "payment_intent.succeeded", "status": "processed",
         "stripeCreatedAt": AT - 2 * H - timedelta(seconds=1), "receivedAt": AT - 2 * H,
         "processedAt": AT - 2 * H + timedelta(milliseconds=200)},
    ])
    platform_db.enrollments.insert_many([
        {"customerId": "c1", "serviceId": "s1", "status": "active", "paymentStatus": "paid", "paymentId": PAYMENT_ID,
         "createdAt": AT - 2 * H, "activatedAt": AT - H + timedelta(seconds=3),
         "confirmationEmailSentAt": AT - H + timedelta(seconds=4)},
    ])


# The valid dataset's metrics, by hand:
# payments: today/week/month revenue 1000 usd (created 11:00Z today, UTC); 24h: 1 succeeded, 1 failed,
#   rate 1/2, avg 1000, no refunds -> rate 0/1 = 0.0, processing 2000 ms; stuck 0.
# webhooks: 1 received & processed, failure_rate 0/1 = 0.0, processing 200 ms, lag 1000 ms,
#   last_received_at 10:00Z, latest = [evt_ok].
# enrollments: new_today 1, created 1, converted 1, rate 1.0, refunded 0, activation 3000 - 2000 = 1000 ms,
#   email 1000 ms, pending_payments 0, duplicates 0.
EXPECTED_PAYMENTS = {
    "revenue": {"today": {"usd": 1000}, "week": {"usd": 1000}, "month": {"usd": 1000}},
    "24h": {"succeeded": 1, "failed": 1, "success_rate": 0.5, "revenue": {"usd": 1000},
            "avg_transaction_value": {"usd": 1000}, "refunds": 0, "refund_rate": 0.0,
            "processing_ms": {"avg": 2000, "p95": 2000}, "by_status": {"completed": 1, "failed": 1}},
    "stuck": 0,
}
EXPECTED_WEBHOOKS = {
    "24h": {"received": 1, "processed": 1, "failed": 0, "failure_rate": 0.0,
            "processing_ms": {"avg": 200, "p95": 200}, "delivery_lag_ms": {"avg": 1000, "p95": 1000}},
    "last_received_at": "2026-11-26T10:00:00Z",
}
EXPECTED_ENROLLMENTS = {
    "new_today": 1,
    "24h": {"created": 1, "converted": 1, "conversion_rate": 1.0, "refunded": 0,
            "activation_ms": {"avg": 1000, "p95": 1000}, "email_ms": {"avg": 1000, "p95": 1000}},
    "pending_payments": 0,
    "duplicates": 0,
}


def bad_payment(**changes) -> list[dict]:
    """Two payments that would touch every payment metric: a refunded one in all windows, and a stuck one."""
    docs = [
        {"paymentId": "pi_bad", "amount": 250, "currency": "usd", "status": "refunded", "createdAt": AT - 30 * MIN,
         "completedAt": AT - 29 * MIN, "refundedAt": AT - 10 * MIN},
        {"paymentId": "pi_bad_stuck", "amount": 250, "currency": "usd", "status": "processing", "createdAt": AT - 2 * H},
    ]
    for doc in docs:
        for field, value in changes.items():
            if value is ...:
                del doc[field]
            else:
                doc[field] = value
    return docs


PAYMENT_CASES = {
    "missing createdAt": bad_payment(createdAt=...),
    "createdAt as a string": bad_payment(createdAt="2026-11-26T11:30:00Z"),
    "amount as the string 250": bad_payment(amount="250"),
    "non-integral amount": bad_payment(amount=250.5),
    "non-integral Decimal128 amount": bad_payment(amount=Decimal128("250.5")),
    "amount NaN": bad_payment(amount=float("nan")),
    "amount infinite": bad_payment(amount=float("inf")),
    "missing amount": bad_payment(amount=...),
    "amount beyond 2^53 minor units": bad_payment(amount=2**62),
    "amount in an array": bad_payment(amount=[250]),
    # A query condition matches an array holding a matching value; a document must not pass that way.
    "status in an array": [bad_payment(status=["refunded"])[0], bad_payment(status=["processing"])[1]],
    "createdAt in an array": [bad_payment(createdAt=[AT - 30 * MIN])[0], bad_payment(createdAt=[AT - 2 * H])[1]],
    # A status outside the list: a "succeeded" one in every window, and an old "stuck" one.
    "unknown status": [bad_payment(status="succeeded")[0], bad_payment(status="stuck")[1]],
}


@pytest.mark.parametrize("docs", PAYMENT_CASES.values(), ids=PAYMENT_CASES.keys())
def test_a_malformed_payment_is_excluded_from_every_metric_and_counted(platform_db, src, settings, docs):
    valid_platform(platform_db)
    platform_db.payments.insert_many(docs)
    snap = build_snapshot(src, settings, AT, system=False)
    assert snap["payments"] == EXPECTED_PAYMENTS
    assert snap["data_quality"] == {"payments": {"invalid": len(docs)}, "enrollments": {"invalid": 0},
                                    "webhook_events": {"invalid": 0}}


def test_a_completed_payment_with_a_malformed_twin_still_activates_its_enrollment(platform_db, src, settings):
    # The lookup for activation time only accepts valid payments; the valid one is still found.
    valid_platform(platform_db)
    platform_db.payments.insert_many(bad_payment(amount="250"))
    assert build_snapshot(src, settings, AT, system=False)["enrollments"] == EXPECTED_ENROLLMENTS


WEBHOOK_CASES = {
    "receivedAt as a string": {"receivedAt": "2026-11-26T11:50:00Z"},
    "missing receivedAt": {"receivedAt": ...},
    "unknown status": {"status": "done"},
    "status in an array": {"status": ["failed"]},
    "receivedAt in an array": {"receivedAt": [AT - 10 * MIN]},
}


@pytest.mark.parametrize("change", WEBHOOK_CASES.values(), ids=WEBHOOK_CASES.keys())
def test_a_malformed_webhook_event_is_excluded_from_every_metric_and_counted(platform_db, src, settings, change):
    valid_platform(platform_db)
    # Newer than evt_ok and failed: counted, it would change every webhook metric and the latest list.
    doc = {"eventId": "evt_bad", "type": "charge.refunded", "status": "failed", "receivedAt": AT - 10 * MIN,
           "stripeCreatedAt": AT - 20 * MIN, "processedAt": AT - 5 * MIN, "error": "boom"}
    for field, value in change.items():
        doc.pop(field) if value is ... else doc.__setitem__(field, value)
    platform_db.webhook_events.insert_one(doc)
    snap = build_snapshot(src, settings, AT, system=False)
    assert {k: v for k, v in snap["webhooks"].items() if k != "latest"} == EXPECTED_WEBHOOKS
    assert [e["eventId"] for e in snap["webhooks"]["latest"]] == ["evt_ok"]
    assert snap["data_quality"]["webhook_events"] == {"invalid": 1}
    assert snap["payments"] == EXPECTED_PAYMENTS and snap["enrollments"] == EXPECTED_ENROLLMENTS


ENROLLMENT_CASES = {
    "missing createdAt": {"createdAt": ...},
    "createdAt as a string": {"createdAt": "2026-11-26T11:00:00Z"},
    "unknown status": {"status": "archived"},
    "status in an array": {"status": ["active"]},
    "createdAt in an array": {"createdAt": [AT - H]},
}


@pytest.mark.parametrize("change", ENROLLMENT_CASES.values(), ids=ENROLLMENT_CASES.keys())
def test_a_malformed_enrollment_is_excluded_from_every_metric_and_counted(platform_db, src, settings, change):
    valid_platform(platform_db)
    # Counted, these two would add to created, converted, refunded, pending, activation, email and duplicates.
    docs = [
        {"customerId": "c1", "serviceId": "s1", "status": "active", "paymentStatus": "paid", "paymentId": PAYMENT_ID,
         "createdAt": AT - H, "activatedAt": AT - 30 * MIN, "confirmationEmailSentAt": AT - 20 * MIN,
         "refundedAt": AT - 10 * MIN},
        {"customerId": "c2", "serviceId": "s1", "status": "pending", "paymentStatus": "pending", "createdAt": AT - H},
    ]
    for doc in docs:
        for field, value in change.items():
            doc.pop(field) if value is ... else doc.__setitem__(field, value)
    platform_db.enrollments.insert_many(docs)
    snap = build_snapshot(src, settings, AT, system=False)
    assert snap["enrollments"] == EXPECTED_ENROLLMENTS
    assert snap["data_quality"]["enrollments"] == {"invalid": 2}


def test_invalid_documents_are_counted_over_the_whole_collection_whatever_their_date(platform_db, src):
    platform_db.payments.insert_many([
        {"amount": "1", "status": "completed", "createdAt": AT - timedelta(days=400)},  # long ago
        {"amount": 1, "status": "completed", "createdAt": AT + timedelta(days=1)},       # valid, in the future
        {"amount": 1, "status": "completed", "createdAt": "later"},
    ])
    platform_db.enrollments.insert_one({"status": "active"})
    assert data_quality(src) == {"payments": {"invalid": 2}, "enrollments": {"invalid": 1},
                                 "webhook_events": {"invalid": 0}}


def test_the_valid_dataset_alone_has_the_hand_worked_metrics(platform_db, src, settings):
    # The baseline the cases above compare with: checked on its own so a wrong baseline cannot hide.
    valid_platform(platform_db)
    snap = build_snapshot(src, settings, AT, system=False)
    assert snap["payments"] == EXPECTED_PAYMENTS
    assert snap["enrollments"] == EXPECTED_ENROLLMENTS
    assert snap["data_quality"] == {"payments": {"invalid": 0}, "enrollments": {"invalid": 0},
                                    "webhook_events": {"invalid": 0}}
