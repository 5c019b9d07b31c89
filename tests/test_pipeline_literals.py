"""Platform values are data, never expressions: a specialist id or a currency spelled like a field
path ("$specialistId") matches only itself in every pipeline that filters by it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from metrics import series, signals
from metrics.windows import Window

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
HOUR = Window(T0 - timedelta(hours=1), T0)


def payment(specialist: str, currency: str = "usd", status: str = "failed", amount: int = 1000) -> dict:
    doc = {"paymentId": f"pi_{specialist}_{currency}_{status}", "amount": amount, "currency": currency,
           "status": status, "customerEmail": "jane.doe@example.com", "specialistId": specialist,
           "serviceId": "svc-a", "createdAt": T0 - timedelta(minutes=10)}
    if status == "failed":
        doc["failureCode"] = "card_declined"
    else:
        doc["completedAt"] = doc["createdAt"] + timedelta(seconds=1)
    return doc


def test_a_specialist_named_like_a_field_path_matches_only_itself(platform_db, src):
    platform_db.payments.insert_many([payment("spec-a"), {**payment("spec-b"), "paymentId": "pi_b2"},
                                      payment("$specialistId")])
    codes = signals.decline_codes(src, HOUR, 5, "specialist", "$specialistId")
    assert [(c["code"], c["count"]) for c in codes] == [("card_declined", 1)]
    largest = signals.largest_payments(src, HOUR, 5, "specialist", "$specialistId")
    assert largest == []  # none of them succeeded, and the other specialists' payments are not its


def test_a_currency_named_like_a_field_path_matches_only_itself(platform_db, src):
    platform_db.payments.insert_many([payment("spec-a", "usd", "completed"),
                                      payment("spec-b", "usd", "completed", 2000),
                                      payment("spec-c", "$currency", "completed")])
    bands = series.amount_histogram(src, HOUR, "$currency")
    assert sum(b["count"] for b in bands) <= 1
