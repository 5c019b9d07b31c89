"""Webhook health beyond Stripe's own emails, and the Events API's 30 days."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from alerts import engine
from alerts.readings import EvalContext, explain
from alerts.rules import default_rules
from fakes import stripe_objects as so
from fakes.stripe_extras import localstripe, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401 (fixtures)
from fakes.stripe_records import FAST, settle_and_sync
from metrics import db as dbmod
from metrics.stripe import metrics as sm
from metrics.stripe.mirror import UNDELIVERED, sync
from metrics.stripe.reconcile import retention_risk
from metrics.stripe.store import mirror_store

UTC = timezone.utc
GUIDE_EVENTS = list(sm.GUIDE_EVENTS)
HOOK = "https://api.example.com/api/webhooks/stripe"


def evaluate(settings, at: datetime, rule_id: str) -> list:
    ctx = EvalContext(settings, at, dbmod.source(settings), dbmod.state_db(settings))
    rules = [r for r in default_rules(settings) if r.id == rule_id]
    return ctx, rules[0], engine.evaluate(ctx, rules, {})


@pytest.fixture
def outage(stripe_fake, stripe_settings):
    """The platform's endpoint has not taken an event for 8 hours; an old endpoint is switched off."""
    now = int(time.time())
    endpoint = stripe_fake.add_endpoint(HOOK, GUIDE_EVENTS)
    stripe_fake.add_endpoint("https://old.example.com/hook", ["*"], status="disabled")
    paid = so.payment_intent(created=now - 8 * 3600)
    refunded = so.charge(so.payment_intent(created=now - 3 * 3600), amount_refunded=4900)
    first = stripe_fake.add_event("payment_intent.succeeded", paid, created=now - 8 * 3600, pending=1)
    second = stripe_fake.add_event("charge.refunded", refunded, created=now - 2 * 3600, pending=1)
    stripe_fake.add_event("payment_intent.succeeded", so.payment_intent(created=now - 3600), created=now - 3600)
    assert sync(stripe_settings, FAST).ok
    return {"endpoint": endpoint, "events": [first, second], "at": datetime.now(UTC) + timedelta(minutes=1)}


def test_the_events_stripe_failed_to_deliver_are_listed_per_endpoint_with_resend_commands(outage, stripe_fake,
                                                                                          stripe_settings):
    health = sm.webhook_health(mirror_store(stripe_settings), outage["at"])

    asked = [r.query for r in stripe_fake.calls("/v1/events") if "delivery_success" in r.query]
    assert asked and asked[0]["delivery_success"] == "false"
    first, second = outage["events"]
    assert health["undelivered"] == 2
    assert [e["id"] for e in health["events"]] == [first["id"], second["id"]]  # oldest first
    [endpoint] = health["endpoints"]  # the disabled one is not sent anything
    assert (endpoint["url"], endpoint["undelivered"], endpoint["oldest"]["id"]) == (HOOK, 2, first["id"])
    assert endpoint["failing_hours"] == pytest.approx(8, abs=0.1)
    we = outage["endpoint"]["id"]
    assert [r["command"] for r in health["replay"]] == [f"stripe events resend {first['id']} --webhook-endpoint={we}",
                                                       f"stripe events resend {second['id']} --webhook-endpoint={we}"]


def test_an_endpoint_failing_for_more_than_6_hours_alerts_with_what_to_resend(outage, stripe_settings):
    ctx, rule, [ev] = evaluate(stripe_settings, outage["at"], "stripe_endpoint_failing")

    assert ev.subject == HOOK and ev.reading.value == pytest.approx(8, abs=0.1) and ev.summary()["breached"]
    text = "\n".join(explain(ctx, rule, ev.reading))
    assert "Stripe disables an endpoint that keeps failing for days" in text
    assert f"stripe events resend {outage['events'][0]['id']}" in text


def test_five_hours_of_failures_do_not_alert_yet(stripe_fake, stripe_settings):
    stripe_fake.add_endpoint(HOOK, GUIDE_EVENTS)
    stripe_fake.add_event("payment_intent.succeeded", so.payment_intent(created=int(time.time()) - 5 * 3600),
                          created=int(time.time()) - 5 * 3600, pending=1)
    assert sync(stripe_settings, FAST).ok

    _, _, [ev] = evaluate(stripe_settings, datetime.now(UTC), "stripe_endpoint_failing")

    assert ev.reading.value == pytest.approx(5, abs=0.1) and not ev.summary()["breached"]


def test_once_stripe_delivers_them_the_endpoint_is_healthy_again(outage, stripe_fake, stripe_settings):
    for event in outage["events"]:
        stripe_fake.set_pending(event["id"], 0)
    assert sync(stripe_settings, FAST).ok

    health = sm.webhook_health(mirror_store(stripe_settings), datetime.now(UTC) + timedelta(minutes=1))

    assert health["undelivered"] == 0 and health["replay"] == []
    assert health["endpoints"][0]["failing_hours"] == 0
    assert sm.endpoint_failing_hours(mirror_store(stripe_settings), datetime.now(UTC)) == {HOOK: 0}


def test_a_server_that_cannot_list_undelivered_events_leaves_webhook_health_unknown(localstripe, stripe_fake, shop,
                                                                                    make_settings):
    settings = make_settings(STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=localstripe.base_url)
    shop.pay()

    report = sync(settings, FAST)

    assert report.ok and report.resources[UNDELIVERED].status == "unavailable"
    assert "delivery_success=false) cannot be listed" in report.resources[UNDELIVERED].error
    health = sm.webhook_health(mirror_store(settings), datetime.now(UTC))
    assert health["available"] is False and health["undelivered"] is None
    assert sm.endpoint_failing_hours(mirror_store(settings), datetime.now(UTC)) is None


def test_what_is_about_to_leave_stripes_30_days_is_counted_and_alerted(stripe_fake, stripe_settings, platform_db):
    day = 86400
    now = int(time.time())
    stripe_fake.add_endpoint(HOOK, GUIDE_EVENTS)
    lost = stripe_fake.add("payment_intents", so.payment_intent(created=now - 26 * day))
    stripe_fake.add_event("payment_intent.succeeded", lost, created=now - 26 * day)
    recent = stripe_fake.add("payment_intents", so.payment_intent(created=now - 20 * day))
    stripe_fake.add_event("payment_intent.succeeded", recent, created=now - 20 * day)
    old = stripe_fake.add_event("charge.refunded", so.charge(so.payment_intent(created=now - 28 * day)),
                                created=now - 27 * day, pending=1)
    stripe_fake.add_event("charge.refunded", so.charge(so.payment_intent(created=now - 21 * day)),
                          created=now - 20 * day, pending=1)
    settle_and_sync(stripe_settings)
    at = datetime.now(UTC)

    risk = retention_risk(dbmod.source(stripe_settings), mirror_store(stripe_settings), at)

    assert [m["payment_intent"] for m in risk["mismatches"]] == [lost["id"]]
    assert risk["mismatches"][0]["events_expire_at"].startswith(
        datetime.fromtimestamp(now + 4 * day, UTC).strftime("%Y-%m-%d"))
    assert [e["id"] for e in risk["events"]] == [old["id"]]
    assert risk["events"][0]["commands"][0].startswith(f"stripe events resend {old['id']} --webhook-endpoint=we_")
    ctx, rule, [ev] = evaluate(stripe_settings, at, "stripe_events_expiring")
    assert ev.reading.value == 2 and ev.summary()["breached"]
    text = "\n".join(explain(ctx, rule, ev.reading))
    assert lost["id"] in text and f"stripe events resend {old['id']}" in text


def test_retention_is_unknown_before_the_first_sync(stripe_settings):
    _, _, [ev] = evaluate(stripe_settings, datetime.now(UTC), "stripe_events_expiring")

    assert ev.reading is None and ev.note == "no data"


def test_two_endpoints_with_one_url_are_two_alerts(stripe_fake, stripe_settings):
    for _ in range(2):
        stripe_fake.add_endpoint(HOOK, GUIDE_EVENTS)
    stripe_fake.add_event("payment_intent.succeeded", so.payment_intent(), created=int(time.time()) - 7 * 3600,
                          pending=2)
    assert sync(stripe_settings, FAST).ok

    ctx, rule, evaluations = evaluate(stripe_settings, datetime.now(UTC), "stripe_endpoint_failing")

    assert len({ev.subject for ev in evaluations}) == 2 and all(ev.subject.startswith(HOOK) for ev in evaluations)
    assert all("stripe events resend" in "\n".join(explain(ctx, rule, ev.reading)) for ev in evaluations)
