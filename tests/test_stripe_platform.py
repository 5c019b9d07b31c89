"""The demo platform paying through localstripe, and the mismatches its lost writes leave."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from demo import stripe_platform
from demo.stripe_platform import CARD_3DS, CARD_DECLINED, CARD_OK, Losses, StripePlatform
from fakes.stripe_extras import localstripe, next_second, stripe_fake, stripe_front  # noqa: F401 (fixtures)
from metrics import db as dbmod
from metrics.stripe.client import StripeOptions
from metrics.stripe.mirror import sync
from metrics.stripe.reconcile import reconcile
from metrics.stripe.store import mirror_store
from metrics.windows import Window

UTC = timezone.utc
FAST = StripeOptions(max_requests_per_second=0, max_network_retries=1, connect_timeout_s=2, read_timeout_s=10)


@pytest.fixture
def demo_settings(make_settings, localstripe, stripe_fake):
    return make_settings(STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=localstripe.base_url)


def make_platform(settings, platform_db, losses=Losses.none(), **kwargs) -> StripePlatform:
    return StripePlatform(platform_db, settings.schema, api_key=settings.stripe_api_key.get_secret_value(),
                          api_base=settings.stripe_api_base, losses=losses, rng=random.Random(7), **kwargs)


def reconciled(settings) -> dict:
    next_second()
    assert sync(settings, FAST).ok
    at = datetime.now(UTC) + timedelta(hours=1)
    return reconcile(dbmod.source(settings), mirror_store(settings), Window(at - timedelta(hours=3), at), at)


def test_the_guide_cards_end_as_the_platform_records_them(demo_settings, platform_db, monkeypatch):
    monkeypatch.setattr(stripe_platform, "THREE_DS_PASS_RATE", 1.0)
    platform = make_platform(demo_settings, platform_db)
    now = datetime.now(UTC)
    ok, declined, secure = (platform.checkout(now, card) for card in (CARD_OK, CARD_DECLINED, CARD_3DS))
    platform.receive_webhooks(now + timedelta(seconds=2))

    payments = {d["paymentId"]: d for d in platform_db.payments.find()}
    assert payments[ok]["status"] == payments[secure]["status"] == "completed"
    assert (payments[declined]["status"], payments[declined]["failureCode"]) == ("failed", "card_declined")
    enrollments = {d["paymentId"]: d for d in platform_db.enrollments.find()}
    assert enrollments[payments[ok]["_id"]]["status"] == "active"
    assert enrollments[payments[declined]["_id"]]["paymentStatus"] == "failed"
    logged = {d["type"] for d in platform_db.webhook_events.find()}
    assert logged == {"payment_intent.succeeded"}
    assert platform_db.webhook_events.count_documents({"status": "processed"}) == 2
    assert reconciled(demo_settings)["mismatches"] == []


def test_a_failed_three_d_secure_is_a_failed_payment_on_both_sides(demo_settings, platform_db, monkeypatch):
    monkeypatch.setattr(stripe_platform, "THREE_DS_PASS_RATE", 0.0)
    platform = make_platform(demo_settings, platform_db)

    pi = platform.checkout(datetime.now(UTC), CARD_3DS)

    payment = platform_db.payments.find_one({"paymentId": pi})
    assert (payment["status"], payment["failureCode"]) == ("failed", "payment_intent_authentication_failure")
    assert reconciled(demo_settings)["mismatches"] == []


@pytest.mark.parametrize("loss, card, refund, expected", [
    ("webhook", CARD_OK, False, {"not_completed_in_db"}),
    ("payment_record", CARD_OK, False, {"missing_in_db"}),
    ("enrollment_activation", CARD_OK, False, {"paid_no_active_enrollment"}),
    ("amount", CARD_OK, False, {"amount_or_currency_mismatch"}),
    ("premature_completion", CARD_3DS, False, {"not_succeeded_in_stripe"}),
    ("refund_record", CARD_OK, True, {"refunded_not_in_db", "refunded_enrollment_active"}),
    ("refund_enrollment", CARD_OK, True, {"refunded_enrollment_active"}),
])
def test_each_lost_write_becomes_the_mismatch_reconciliation_finds(demo_settings, platform_db, monkeypatch,
                                                                    loss, card, refund, expected):
    monkeypatch.setattr(stripe_platform, "THREE_DS_PASS_RATE", 0.0)
    platform = make_platform(demo_settings, platform_db, losses=Losses(**{**Losses.none().__dict__, loss: 1.0}))
    now = datetime.now(UTC)
    pi = platform.checkout(now, card)
    platform.receive_webhooks(now + timedelta(seconds=2))
    if refund:
        platform.refund(pi, now + timedelta(minutes=2))

    result = reconciled(demo_settings)

    assert {m["kind"] for m in result["mismatches"]} == expected
    assert {m["payment_intent"] for m in result["mismatches"]} == {pi}


def test_ticks_take_payments_at_the_configured_rate_and_log_their_webhooks(demo_settings, platform_db):
    platform = make_platform(demo_settings, platform_db, rate_per_min=60)
    now = datetime.now(UTC)

    first = platform.tick(now)
    second = platform.tick(now + timedelta(seconds=5))

    checkouts = first.get("checkouts", 0) + second.get("checkouts", 0)
    assert checkouts > 0
    assert platform_db.payments.count_documents({}) == checkouts
    assert platform_db.enrollments.count_documents({}) == checkouts
    assert platform_db.webhook_events.count_documents({}) == platform.stats["webhooks"]
