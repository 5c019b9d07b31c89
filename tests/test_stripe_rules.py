"""The worker's Stripe rules: read from the mirror, unknown (never all clear) when Stripe cannot tell."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from alerts import engine
from alerts import store as alert_store
from alerts.readings import EvalContext, explain
from alerts.rules import default_rules
from alerts.state import FIRING, INACTIVE
from fakes.fixtures import slack, worker_for  # noqa: F401 - fixtures
from fakes.stripe_extras import localstripe, next_second, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401 (fixtures)
from metrics import db as dbmod
from metrics.settings import load_settings
from metrics.stripe import store
from metrics.stripe.client import StripeOptions
from metrics.stripe.mirror import sync

UTC = timezone.utc
FAST = StripeOptions(max_requests_per_second=0, max_network_retries=1, connect_timeout_s=2, read_timeout_s=10)
GUIDE_EVENTS = ["payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded", "charge.dispute.created"]
STRIPE_RULES = ("stripe_disputes_created", "stripe_webhook_backlog", "stripe_webhook_endpoint",
                "stripe_api_unreachable", "stripe_reconciliation", "stripe_endpoint_failing", "stripe_events_expiring")


def stripe_rules(settings):
    return [r for r in default_rules(settings) if r.id.startswith("stripe_")]


def evaluate(settings, at: datetime) -> dict[str, dict]:
    """Each Stripe rule's evaluation summary at ``at`` (what ``python -m alerts evaluate`` prints)."""
    ctx = EvalContext(settings, at, dbmod.source(settings), dbmod.state_db(settings))
    return {e.rule.id: {**e.summary(), "reading": e.reading} for e in engine.evaluate(ctx, stripe_rules(settings), {})}


def record(settings, pi: dict, *, status: str = "completed") -> None:
    """The platform's payment record and active enrollment for ``pi``, as its webhook handler writes them."""
    created = datetime.fromtimestamp(pi["created"], UTC)
    platform = dbmod.source(settings).db
    oid = platform.payments.insert_one({"paymentId": pi["id"], "amount": pi["amount"], "currency": pi["currency"],
                                        "status": status, "createdAt": created,
                                        "completedAt": created + timedelta(seconds=1)}).inserted_id
    platform.enrollments.insert_one({"paymentId": oid, "status": "active", "paymentStatus": "paid",
                                     "customerId": "cus_1", "serviceId": "svc-yoga", "createdAt": created})


@pytest.fixture
def trouble(stripe_fake, shop, stripe_settings):
    """A dispute, an event Stripe has failed to deliver for 10 minutes, a disabled endpoint,
    and a succeeded payment the platform never recorded; the mirror synced."""
    recorded, lost = shop.pay(amount=1000), shop.pay(amount=2000)
    record(stripe_settings, recorded)
    dispute = stripe_fake.add_dispute(shop.charge(recorded), status="needs_response")
    stripe_fake.add_event("payment_intent.succeeded", {"id": lost["id"], "object": "unknown"},
                          created=int(time.time()) - 600, pending=1)
    stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe", GUIDE_EVENTS)
    stripe_fake.add_endpoint("https://old.example.com/hook", ["*"], status="disabled")
    next_second()
    assert sync(stripe_settings, FAST).ok
    return {"dispute": dispute, "lost": lost}


def test_every_stripe_rule_has_an_id_starting_with_stripe_and_the_guides_runbook():
    rules = {r.id: r for r in stripe_rules(load_settings())}
    assert set(rules) == set(STRIPE_RULES)
    for rule in rules.values():
        assert rule.runbook.section.startswith(("Emergency Response", "Runbook:"))
        assert len(rule.runbook.steps) >= 2


def test_without_a_key_every_stripe_rule_is_not_applicable_neither_firing_nor_clear(make_settings):
    settings = make_settings()  # no STRIPE_API_KEY

    results = evaluate(settings, datetime.now(UTC))

    assert set(results) == set(STRIPE_RULES)
    for rule_id, r in results.items():
        assert r["reading"] is None and r["value"] is None, rule_id  # no value at all, not a 0
        assert r["note"] == "needs STRIPE_API_KEY", rule_id
        assert r["state"] == INACTIVE and not r["breached"], rule_id


def test_each_stripe_rule_fires_on_what_the_mirror_shows(trouble, stripe_settings):
    at = datetime.now(UTC) + timedelta(hours=1) - timedelta(minutes=30)  # the lost payment is past its grace period

    results = evaluate(stripe_settings, at)

    assert results["stripe_disputes_created"]["value"] == 1 and results["stripe_disputes_created"]["breached"]
    assert results["stripe_webhook_backlog"]["value"] == 1 and results["stripe_webhook_backlog"]["breached"]
    # The disabled one is a legacy endpoint: the other receives every guide event, so no problem.
    assert results["stripe_webhook_endpoint"]["value"] == 0
    assert results["stripe_reconciliation"]["value"] == 1
    # Stripe answered every call: reachable, a real 0.
    assert results["stripe_api_unreachable"]["value"] == 0 and not results["stripe_api_unreachable"]["breached"]


def test_each_firing_message_explains_what_is_wrong(trouble, stripe_settings):
    at = datetime.now(UTC) + timedelta(minutes=31)
    ctx = EvalContext(stripe_settings, at, dbmod.source(stripe_settings), dbmod.state_db(stripe_settings))
    rules = {r.id: r for r in stripe_rules(stripe_settings)}
    readings = {e.rule.id: e.reading for e in engine.evaluate(ctx, list(rules.values()), {})}

    def details(rule_id: str) -> str:
        lines = explain(ctx, rules[rule_id], readings[rule_id])
        assert lines and not any(line.startswith("(details unavailable") for line in lines), lines
        return "\n".join(lines)

    assert trouble["dispute"]["id"] in details("stripe_disputes_created")
    assert "payment_intent.succeeded" in details("stripe_webhook_backlog")
    assert trouble["lost"]["id"] in details("stripe_reconciliation")
    assert "missing_in_db ×1" in details("stripe_reconciliation")
    assert "Last good sync" in details("stripe_api_unreachable")


def test_a_mismatch_within_the_grace_period_does_not_count(trouble, stripe_settings):
    results = evaluate(stripe_settings, datetime.now(UTC) + timedelta(seconds=2))

    assert results["stripe_reconciliation"]["value"] == 0


def test_an_endpoint_missing_a_guide_event_is_a_problem(stripe_fake, stripe_settings):
    stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe", GUIDE_EVENTS[:3])  # no disputes
    stripe_fake.add_event("charge.refunded", {"id": "ch_1", "object": "unknown"}, created=int(time.time()) - 600)
    assert sync(stripe_settings, FAST).ok

    results = evaluate(stripe_settings, datetime.now(UTC) + timedelta(seconds=1))

    assert results["stripe_webhook_endpoint"]["value"] == 1 and results["stripe_webhook_endpoint"]["breached"]
    assert results["stripe_webhook_backlog"]["value"] == 0  # deliveries reported, none pending: a real 0


def test_a_server_without_disputes_endpoints_or_deliveries_gives_no_data_not_zero(localstripe, stripe_fake, shop,
                                                                                  make_settings):
    settings = make_settings(STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=localstripe.base_url)
    shop.pay()
    assert sync(settings, FAST).ok

    results = evaluate(settings, datetime.now(UTC) + timedelta(seconds=2))

    for rule_id in ("stripe_disputes_created", "stripe_webhook_backlog", "stripe_webhook_endpoint"):
        assert results[rule_id]["value"] is None and results[rule_id]["note"] == "no data", rule_id
    assert results["stripe_api_unreachable"]["value"] == 0


def test_before_the_first_sync_the_rules_have_no_data(stripe_settings):
    results = evaluate(stripe_settings, datetime.now(UTC))

    for rule_id, r in results.items():
        assert r["value"] is None and r["note"] == "no data", rule_id


def test_stripe_failing_for_20_minutes_fires_the_unreachable_rule(stripe_settings):
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=25)
    calls = [{"at": t0, "kind": "ok", "ms": 120.0, "status": 200, "method": "GET", "path": "/v1/events"}]
    calls += [{"at": t0 + timedelta(minutes=m), "kind": "network_error", "ms": 5000.0, "status": None,
               "method": "GET", "path": "/v1/payment_intents"} for m in range(1, 21)]
    dbmod.state_db(stripe_settings)[store.API_CALLS].insert_many(calls)

    results = evaluate(stripe_settings, t0 + timedelta(minutes=21))

    assert results["stripe_api_unreachable"]["value"] == 20 and results["stripe_api_unreachable"]["breached"]
    assert results["stripe_api_unreachable"]["value_text"] == "20 min"


def test_an_unreadable_mirror_makes_the_rules_unknown_without_blaming_the_platforms_database(make_settings):
    settings = make_settings(STRIPE_API_KEY="sk_test_x", state_uri="mongodb://127.0.0.1:1/?directConnection=true",
                             server_selection_timeout_ms=200)
    ctx = EvalContext(settings, datetime.now(UTC), dbmod.source(settings), dbmod.state_db(settings))

    evaluations = engine.evaluate(ctx, [r for r in stripe_rules(settings) if r.id == "stripe_webhook_backlog"], {})

    (ev,) = evaluations
    assert ev.unknown and "Stripe mirror could not be read" in ev.note
    assert ctx.source_error is None  # the platform's database answered; its rule must not fire


def test_a_dispute_posts_a_message_with_the_dispute_and_the_runbook(trouble, worker_for, slack, stripe_settings,
                                                                   localstripe, stripe_fake):
    rules = [r for r in stripe_rules(stripe_settings) if r.id == "stripe_disputes_created"]
    worker = worker_for(rules, STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=stripe_fake.url)

    worker.cycle(datetime.now(UTC) + timedelta(seconds=1))

    (posted,) = slack.wait_for(1)
    body = str(posted.body)
    assert "Dispute opened in Stripe" in posted.text
    assert trouble["dispute"]["id"] in body and "fraudulent" in body
    assert "evidence" in body  # the runbook's steps travel with the alert
    assert worker.state[alert_store.STATE].find_one({"rule_id": "stripe_disputes_created"})["state"] == FIRING
