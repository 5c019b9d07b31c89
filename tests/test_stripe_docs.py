"""docs/stripe.md cannot drift: every mismatch kind, snapshot key, rule metric and permission is in it."""

from __future__ import annotations

import inspect
from pathlib import Path

from metrics.stripe import metrics, reconcile
from metrics.stripe.client import RESOURCES

DOC = (Path(__file__).resolve().parent.parent / "docs" / "stripe.md").read_text()


def test_every_mismatch_kind_is_described_with_its_fix():
    missing = [kind for kind in reconcile.KINDS if f"| `{kind}` |" not in DOC]
    assert not missing, f"mismatch kinds without a row in docs/stripe.md: {missing}"


def test_every_key_of_the_snapshot_is_named():
    keys = ("configured", "available", "sync", "24h", "payments", "refunds", "disputes", "webhooks", "endpoints", "api",
            "unreachable_minutes")
    assert [k for k in keys if f"`{k}`" not in DOC] == []
    source = inspect.getsource(metrics.stripe_snapshot) + inspect.getsource(metrics._snapshot)
    assert all(f'"{k}"' in source for k in keys)


def test_every_rule_metric_is_documented():
    for fn in (metrics.disputes_created_count, metrics.webhook_backlog_count, metrics.endpoint_problem_count,
               metrics.api_unreachable_minutes, reconcile.persistent_mismatch_count, metrics.endpoint_failing_hours,
               reconcile.retention_risk_count):
        assert f"{fn.__name__}(" in DOC, fn.__name__


def test_every_resource_the_client_reads_needs_a_named_permission():
    names = {"payment_intents": "PaymentIntents", "charges": "Charges", "refunds": "Refunds", "disputes": "Disputes",
             "events": "Events", "webhook_endpoints": "Webhook Endpoints"}
    assert set(names) == set(RESOURCES)
    assert [n for n in names.values() if f"| {n}" not in DOC] == []


def test_the_delivery_retention_and_safety_rules_are_explained():
    for words in ("Delivery success is **unknown**", "30 days", "25 days", "How each proposed fix was made safe",
                  "Idempotency-Key", "$setOnInsert", "stripe events resend", "delivery_success=false"):
        assert words in DOC, words
    assert f"{metrics.RETENTION_WARN_DAYS} days" in DOC and f"{metrics.ENDPOINT_FAILING_HOURS} hours" in DOC
