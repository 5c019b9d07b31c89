"""The guide's targets as data (metrics/targets.py): verdicts, overrides, and what they read."""

from __future__ import annotations

import pytest

from metrics.targets import DEFAULTS, TargetsError, evaluate_snapshot, targets

T = targets()


@pytest.mark.parametrize(("key", "value", "verdict"), [
    ("payment_success_rate", 0.995, "met"),
    ("payment_success_rate", 0.983, "at_risk"),  # above 98%, within half a point of it
    ("payment_success_rate", 0.98, "missed"),  # the guide says "> 98%"
    ("payment_success_rate", 0.90, "missed"),
    ("payment_success_rate", None, "unknown"),  # nothing to divide by, or no answer: never "met"
    ("refund_rate", 0.01, "met"),
    ("refund_rate", 0.017, "at_risk"),
    ("refund_rate", 0.02, "missed"),
    ("webhook_delivery_rate", 1.0, "met"),
    ("webhook_delivery_rate", 0.991, "at_risk"),
    ("webhook_delivery_rate", 0.95, "missed"),
    ("payment_processing_ms", 800, "met"),
    ("payment_processing_ms", 1800, "at_risk"),
    ("payment_processing_ms", 2000, "missed"),
    ("activation_ms", 2500, "missed"),
    ("email_ms", 3000, "met"),
    ("email_ms", 4500, "at_risk"),
    ("duplicate_enrollments", 0, "met"),
    ("duplicate_enrollments", 1, "missed"),
    ("webhook_processing_ms", 12_000, "missed"),
])
def test_a_value_is_met_at_risk_or_missed_against_the_guides_target(key, value, verdict):
    assert T[key].evaluate(value) == verdict


def test_each_target_reads_as_the_guide_writes_it():
    assert {k: t.describe() for k, t in T.items()} == {
        "payment_success_rate": "> 98%", "refund_rate": "< 2%", "webhook_delivery_rate": "> 99%",
        "payment_processing_ms": "< 2 s", "activation_ms": "< 2 s", "email_ms": "< 5 s",
        "duplicate_enrollments": "= 0", "webhook_processing_ms": "< 10 s",
    }
    assert all(t.source and t.label for t in DEFAULTS)


def test_settings_move_a_target_and_its_margin():
    moved = targets({"payment_success_rate": 0.95, "payment_success_rate_margin": 0.01})
    assert moved["payment_success_rate"].evaluate(0.955) == "at_risk"
    assert moved["payment_success_rate"].evaluate(0.97) == "met"
    assert targets()["payment_success_rate"].target == 0.98  # the defaults are untouched


@pytest.mark.parametrize(("overrides", "message"), [
    ({"sucess_rate": 0.9}, "unknown key 'sucess_rate'"),
    ({"refund_rate": 2}, "is a fraction"),
    ({"email_ms": -1}, "must be a number >= 0"),
    ({"email_ms": "fast"}, "must be a number >= 0"),
])
def test_a_bad_target_setting_is_one_clear_error(overrides, message):
    with pytest.raises(TargetsError, match=message):
        targets(overrides)


def test_targets_are_evaluated_on_a_snapshot():
    snapshot = {
        "payments": {"24h": {"success_rate": 0.99, "refund_rate": None, "processing_ms": {"avg": 2500, "p95": 4000}}},
        "webhooks": {"24h": {"failure_rate": 0.002, "processing_ms": {"avg": 100, "p95": 300}}},
        "enrollments": {"24h": {"activation_ms": {"avg": 300, "p95": 900}, "email_ms": {"avg": 1000, "p95": None}},
                        "duplicates": 0},
    }
    verdicts = {row["key"]: (row["value"], row["status"]) for row in evaluate_snapshot(snapshot)}
    assert verdicts == {
        "payment_success_rate": (0.99, "met"),
        "refund_rate": (None, "unknown"),
        "webhook_delivery_rate": (pytest.approx(0.998), "met"),
        "payment_processing_ms": (2500, "missed"),
        "activation_ms": (900, "met"),
        "email_ms": (None, "unknown"),
        "duplicate_enrollments": (0, "met"),
        "webhook_processing_ms": (300, "met"),
    }
