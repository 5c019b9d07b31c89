"""Stripe-side metrics, read from a mirror synced from localstripe and the fake front."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from fakes.stripe_extras import localstripe, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401 (fixtures)
from metrics import db as dbmod
from metrics.snapshot import to_json
from metrics.stripe import metrics as sm, store
from metrics.stripe.client import StripeOptions
from metrics.stripe.mirror import sync
from metrics.stripe.store import MirrorStore, mirror_store
from metrics.windows import Window

FAST = StripeOptions(max_requests_per_second=0, max_network_retries=1, connect_timeout_s=2, read_timeout_s=10)
UTC = timezone.utc


@pytest.fixture
def ms(stripe_settings) -> MirrorStore:
    return mirror_store(stripe_settings)


@pytest.fixture
def scenario(stripe_fake, shop, stripe_settings):
    """Three successes (one refunded), a failed 3-D Secure, one awaiting it, two disputes,
    an old event still undelivered, and two endpoints (one disabled)."""
    ok = [shop.pay(amount=1000), shop.pay(amount=2000), shop.pay(amount=3000, currency="eur")]
    shop.refund(ok[0]["id"])
    shop.authenticate(shop.pay(amount=700, card=shop.CARD_3DS), success=False)
    shop.pay(amount=800, card=shop.CARD_3DS)
    now = int(time.time())
    open_dispute = stripe_fake.add_dispute(shop.charge(ok[1]), status="needs_response")
    stripe_fake.add_dispute(shop.charge(ok[2]), status="lost", created=now - 3 * 86400)
    stripe_fake.add_event("payment_intent.succeeded", {"id": "pi_old", "object": "unknown"}, created=now - 600, pending=2)
    stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe",
                             ["payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded"])
    stripe_fake.add_endpoint("https://old.example.com/hook", ["*"], status="disabled")
    report = sync(stripe_settings, FAST)
    assert report.ok
    return {"ok": ok, "open_dispute": open_dispute, "at": datetime.now(UTC) + timedelta(minutes=10)}


def test_payment_figures_are_those_stripe_records(ms, scenario):
    day = Window(scenario["at"] - timedelta(hours=24), scenario["at"])

    payments = sm.payment_summary(ms, day)

    assert (payments["created"], payments["succeeded"], payments["failed"]) == (5, 3, 1)
    assert payments["success_rate"] == pytest.approx(3 / 4)
    assert payments["decline_codes"] == {"payment_intent_authentication_failure": 1}
    assert payments["amount_succeeded"] == {"eur": 3000, "usd": 3000}
    assert payments["by_status"]["requires_action"] == 1


def test_refunds_count_and_amount_per_currency(ms, scenario):
    day = Window(scenario["at"] - timedelta(hours=24), scenario["at"])

    refunds = sm.refund_summary(ms, day, succeeded=3)

    assert refunds == {"count": 1, "amount": {"usd": 1000}, "refund_rate": pytest.approx(1 / 3)}


def test_disputes_created_in_the_window_and_open_now(ms, scenario):
    day = Window(scenario["at"] - timedelta(hours=24), scenario["at"])

    disputes = sm.dispute_summary(ms, day)

    assert (disputes["created"], disputes["created_amount"]) == (1, {"usd": 2000})
    assert (disputes["open"], disputes["open_amount"]) == (1, {"usd": 2000})
    assert disputes["by_status"] == {"lost": 1, "needs_response": 1}
    assert sm.disputes_created_count(ms, day) == 1
    listed = sm.recent_disputes(ms, day)
    assert listed[0]["stripe_url"] == f"https://dashboard.stripe.com/test/disputes/{scenario['open_dispute']['id']}"


def test_the_delivery_backlog_counts_events_older_than_five_minutes_still_pending(ms, scenario):
    at = scenario["at"]

    delivery = sm.webhook_delivery(ms, Window(at - timedelta(hours=24), at), at)

    assert delivery["backlog"] == 1
    assert sm.webhook_backlog_count(ms, at) == 1
    # The guide's events older than 5 min that an enabled endpoint receives: localstripe's 3 successes
    # (delivered) and the pending one. The dispute's event is left out: no enabled endpoint receives
    # charge.dispute.created, so its pending_webhooks = 0 says nothing about delivery.
    assert delivery["events"] == 4
    assert delivery["delivery_success"] == pytest.approx(3 / 4)


def test_endpoint_problems_name_the_disabled_endpoint_and_the_missing_dispute_event(ms, scenario):
    endpoints = sm.endpoint_status(ms)

    assert endpoints["enabled"] == 1
    assert endpoints["missing_guide_events"] == ["charge.dispute.created"]
    assert endpoints["problems"] == ["endpoint https://old.example.com/hook is disabled",
                                     "no enabled endpoint receives charge.dispute.created"]
    assert sm.endpoint_problem_count(ms) == 2


def test_api_health_counts_calls_errors_and_latency(ms, scenario, stripe_fake, stripe_settings):
    stripe_fake.fail_next("/v1/payment_intents", 429)
    sync(stripe_settings, FAST)
    at = datetime.now(UTC) + timedelta(seconds=1)

    api = sm.api_summary(ms, Window(at - timedelta(hours=1), at))

    stored = ms.db[store.API_CALLS].count_documents({})
    assert api["calls"] == stored
    assert api["errors"] == 1 and api["by_kind"]["rate_limited"] == 1
    assert api["error_rate"] == pytest.approx(1 / stored)
    assert api["latency_ms"]["avg"] > 0 and api["latency_ms"]["p95"] >= api["latency_ms"]["avg"] * 0.5


def test_unreachable_minutes_run_from_the_last_answer_to_the_last_failure(stripe_settings):
    db = dbmod.state_db(stripe_settings)
    ms = MirrorStore(db, 5000)
    t0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    db[store.API_CALLS].insert_many([
        {"at": t0, "kind": "ok", "ms": 50.0},
        {"at": t0 + timedelta(minutes=5), "kind": "network_error", "ms": 5000.0},
        {"at": t0 + timedelta(minutes=20), "kind": "server_error", "ms": 80.0},
    ])

    assert sm.api_unreachable_minutes(ms, t0 + timedelta(minutes=21)) == 20.0
    assert sm.api_unreachable_minutes(ms, t0 + timedelta(minutes=1)) == 0.0
    assert sm.api_unreachable_minutes(ms, t0 + timedelta(hours=3)) is None  # no call for an hour: unknown


def test_before_any_sync_every_figure_is_unknown_not_zero(stripe_settings):
    snap = sm.stripe_snapshot(dbmod.state_db(stripe_settings), stripe_settings)

    assert snap["24h"]["payments"] is None
    assert snap["24h"]["refunds"] is None
    assert snap["24h"]["disputes"] is None
    assert snap["disputes"]["open"] is None
    assert snap["webhooks"]["backlog"] is None
    assert snap["endpoints"]["count"] is None
    assert snap["sync"]["last_run_at"] is None


def test_a_server_without_disputes_gives_unknown_disputes_with_the_reason(localstripe, stripe_fake, shop, make_settings):
    settings = make_settings(STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=localstripe.base_url)
    shop.pay()
    sync(settings, FAST)
    ms = mirror_store(settings)

    snap = sm.stripe_snapshot(ms.db, settings, datetime.now(UTC) + timedelta(seconds=2))

    assert snap["24h"]["payments"]["succeeded"] == 1
    assert snap["disputes"]["open"] is None and "404" in snap["disputes"]["reason"]
    assert snap["webhooks"]["backlog"] is None and "pending_webhooks" in snap["webhooks"]["reason"]


def test_an_unreadable_mirror_makes_the_stripe_key_unknown(make_settings):
    settings = make_settings(state_uri="mongodb://127.0.0.1:1/?directConnection=true", server_selection_timeout_ms=200)

    snap = sm.stripe_snapshot(dbmod.state_db(settings), settings)

    assert snap["available"] is False and "could not be read" in snap["reason"]


def test_the_snapshot_is_plain_json_with_every_key(ms, scenario, stripe_settings):
    snap = sm.stripe_snapshot(ms.db, stripe_settings, scenario["at"])

    text = json.dumps(to_json(snap))
    assert set(snap) == {"configured", "available", "reason", "sync", "24h", "disputes", "webhooks", "endpoints", "api"}
    assert set(snap["24h"]) == {"payments", "refunds", "disputes", "webhooks", "api"}
    assert snap["sync"]["calls_last"] > 0
    assert snap["endpoints"]["count"] == 2
    assert "api.example.com" in text
