"""The mirror and reconciliation fed Stripe's real object shapes, statuses and answers.

Each test serves objects built like Stripe's API fixtures (``tests/fakes/stripe_objects.py``)
through a fake that answers as Stripe does, for one way the mirror used to get Stripe wrong.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from fakes import stripe_objects as so
from fakes.stripe_extras import localstripe, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401 (fixtures)
from fakes.stripe_records import FAST, kinds_by_pi, platform, run_reconcile, settle_and_sync  # noqa: F401 (fixture)
from metrics.stripe import metrics as sm, store
from metrics.stripe.client import StripeAPI, StripeCallError, StripeOptions
from metrics.stripe.mirror import sync
from metrics.stripe.store import mirror_store
from metrics.windows import Window

UTC = timezone.utc
GUIDE_EVENTS = list(sm.GUIDE_EVENTS)


def _money_moving(command: str) -> bool:
    return "/v1/refunds" in command and ("curl" in command or "stripe refunds create" in command)


# --- 1. A refund Stripe has not finished is not a missing refund -----------------------

@pytest.mark.parametrize("status", ["pending", "requires_action"])
def test_a_refund_still_in_progress_in_stripe_never_proposes_refunding_again(status, shop, platform, stripe_fake,
                                                                             stripe_settings):
    pi = shop.pay()
    stripe_fake.add("refunds", so.refund(charge_id=shop.charge(pi)["id"], payment_intent=pi["id"],
                                         amount=pi["amount"], status=status))
    platform.record(pi, status="refunded", enrollment="refunded")
    settle_and_sync(stripe_settings)

    result = run_reconcile(stripe_settings)

    kinds = kinds_by_pi(result).get(pi["id"], set())
    assert "refund_missing_in_stripe" not in kinds
    assert kinds == {"refund_pending_in_stripe"}
    assert not any(_money_moving(m["fix_command"]) for m in result["mismatches"])


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_a_failed_refund_is_reported_as_failed_and_checked_before_any_new_refund(status, shop, platform, stripe_fake,
                                                                                stripe_settings):
    pi = shop.pay()
    stripe_fake.add("refunds", so.refund(charge_id=shop.charge(pi)["id"], payment_intent=pi["id"],
                                         amount=pi["amount"], status=status))
    platform.record(pi, status="refunded", enrollment="refunded")
    settle_and_sync(stripe_settings)

    [mismatch] = run_reconcile(stripe_settings)["mismatches"]

    assert mismatch["kind"] == "refund_failed_in_stripe"
    assert not _money_moving(mismatch["fix_command"])
    assert status in mismatch["detail"]


def test_a_refund_is_proposed_only_when_stripe_has_none_and_with_an_idempotency_key(shop, platform, stripe_settings):
    pi = shop.pay()
    platform.record(pi, status="refunded", enrollment="refunded")
    settle_and_sync(stripe_settings)

    [mismatch] = run_reconcile(stripe_settings)["mismatches"]

    assert mismatch["kind"] == "refund_missing_in_stripe"
    assert _money_moving(mismatch["fix_command"])
    assert f'-H "Idempotency-Key: paywatch-refund-{pi["id"]}"' in mismatch["fix_command"]


# --- 2. Delivery success needs someone to deliver to ------------------------------------

def test_with_every_endpoint_disabled_delivery_success_is_unknown_not_100_percent(stripe_fake, shop, stripe_settings):
    shop.pay()
    stripe_fake.add_event("payment_intent.succeeded", so.payment_intent(), created=int(time.time()) - 900)
    stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe", GUIDE_EVENTS, status="disabled")
    assert sync(stripe_settings, FAST).ok
    at = datetime.now(UTC) + timedelta(minutes=10)

    delivery = sm.webhook_delivery(mirror_store(stripe_settings), Window(at - timedelta(hours=24), at), at)

    assert delivery["delivery_success"] is None
    assert "no enabled endpoint" in delivery["reason"]


def test_delivery_success_counts_only_events_an_enabled_endpoint_is_subscribed_to(stripe_fake, stripe_settings):
    old = int(time.time()) - 900
    stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe", ["payment_intent.succeeded"])
    stripe_fake.add_event("payment_intent.succeeded", so.payment_intent(), created=old, pending=1)
    stripe_fake.add_event("payment_intent.succeeded", so.payment_intent(), created=old)
    stripe_fake.add_event("charge.refunded", {"id": "ch_x", "object": "charge"}, created=old)  # nobody receives it
    assert sync(stripe_settings, FAST).ok
    at = datetime.now(UTC) + timedelta(minutes=10)

    delivery = sm.webhook_delivery(mirror_store(stripe_settings), Window(at - timedelta(hours=24), at), at)

    assert (delivery["events"], delivery["delivery_success"]) == (2, pytest.approx(0.5))


# --- 3. The fix for a missing record makes a valid one -----------------------------------

def test_the_missing_record_fix_is_an_upsert_with_every_field_from_stripe(stripe_fake, stripe_settings):
    now = int(time.time())
    pi = stripe_fake.add("payment_intents", so.payment_intent(created=now - 120, receipt_email="jane.doe@example.com"))
    stripe_fake.add("charges", so.charge(pi, created=now - 60))
    event = stripe_fake.add_event("payment_intent.succeeded", pi, created=now - 60)
    settle_and_sync(stripe_settings)

    [mismatch] = run_reconcile(stripe_settings, mask=False)["mismatches"]

    command = mismatch["fix_command"]
    assert "insertOne" not in command
    assert command.startswith(f'db.payments.updateOne({{"paymentId": "{pi["id"]}"}}, {{"$setOnInsert": {{')
    assert command.endswith('{"upsert": true})')
    for field, value in (("amount", "4900"), ("currency", '"usd"'), ("status", '"completed"'),
                         ("customerId", f'"{pi["customer"]}"'), ("customerEmail", '"jane.doe@example.com"'),
                         ("stripeEventId", f'"{event["id"]}"'),
                         ("createdAt", f'new Date("{datetime.fromtimestamp(now - 120, UTC):%Y-%m-%dT%H:%M:%SZ}")'),
                         ("completedAt", f'new Date("{datetime.fromtimestamp(now - 60, UTC):%Y-%m-%dT%H:%M:%SZ}")')):
        assert f'"{field}": {value}' in command, field


def test_with_emails_masked_the_missing_record_fix_leaves_the_email_out_and_says_how_to_get_it(stripe_fake,
                                                                                              stripe_settings):
    pi = stripe_fake.add("payment_intents", so.payment_intent(receipt_email="jane.doe@example.com"))
    stripe_fake.add_event("payment_intent.succeeded", pi)
    settle_and_sync(stripe_settings)

    [mismatch] = run_reconcile(stripe_settings)["mismatches"]

    assert "jane.doe" not in mismatch["fix_command"] and "customerEmail" not in mismatch["fix_command"]
    assert "PAYWATCH_MASK_EMAILS=false" in mismatch["fix"]


# --- 4. The grace period runs from success, not creation ---------------------------------

def test_a_payment_that_succeeded_seconds_ago_is_within_the_grace_period_however_old(stripe_fake, stripe_settings):
    now = int(time.time())
    pi = stripe_fake.add("payment_intents", so.payment_intent(created=now - 90 * 60))  # 3-D Secure took 90 minutes
    stripe_fake.add("charges", so.charge(pi, created=now - 2))
    stripe_fake.add_event("payment_intent.succeeded", pi, created=now - 2)
    settle_and_sync(stripe_settings)

    result = run_reconcile(stripe_settings, grace=timedelta(minutes=30))

    [mismatch] = result["mismatches"]
    assert mismatch["kind"] == "missing_in_db"
    assert mismatch["persisting"] is False
    assert mismatch["since"] == datetime.fromtimestamp(now - 2, UTC).isoformat().replace("+00:00", "Z")


# --- 5. The appeal stages are open disputes ------------------------------------------------

def test_appeal_stages_are_open_disputes(stripe_fake, shop, stripe_settings):
    charges = [shop.charge(shop.pay()) for _ in range(3)]
    stripe_fake.add_dispute(charges[0], status="appeal_needs_response")
    stripe_fake.add_dispute(charges[1], status="appeal_under_review")
    stripe_fake.add_dispute(charges[2], status="won")
    assert sync(stripe_settings, FAST).ok
    at = datetime.now(UTC) + timedelta(seconds=2)

    disputes = sm.dispute_summary(mirror_store(stripe_settings), Window(at - timedelta(hours=1), at))

    assert disputes["open"] == 2


# --- 6. Retry-After is obeyed ---------------------------------------------------------------

def test_a_429_is_retried_no_sooner_than_stripe_asks(stripe_fake, localstripe, shop):
    shop.pay()
    stripe_fake.fail_next("/v1/payment_intents", 429, headers={"Retry-After": "2"})
    api = StripeAPI(localstripe.api_key, api_base=stripe_fake.url,
                    options=StripeOptions(max_requests_per_second=0, max_network_retries=2))

    page = api.list_page("payment_intents", {})

    first, retry = stripe_fake.calls("/v1/payment_intents")
    assert (first.status, retry.status, len(page.data)) == (429, 200, 1)
    assert retry.at - first.at >= 2


def test_a_retry_after_longer_than_a_sync_can_wait_ends_the_call_as_transient(stripe_fake, localstripe):
    stripe_fake.fail_next("/v1/charges", 429, headers={"Retry-After": "3600"})
    api = StripeAPI(localstripe.api_key, api_base=stripe_fake.url,
                    options=StripeOptions(max_requests_per_second=0, max_network_retries=3))

    with pytest.raises(StripeCallError) as failure:
        api.list_page("charges", {})

    assert len(stripe_fake.calls("/v1/charges")) == 1  # not retried within this sync
    assert failure.value.permanent is False and failure.value.kind == "rate_limited"
    assert "3600" in str(failure.value)


def test_stripes_real_429_body_is_a_transient_rate_limit(stripe_fake, localstripe):
    stripe_fake.fail_next("/v1/refunds", 429, times=5)
    api = StripeAPI(localstripe.api_key, api_base=stripe_fake.url,
                    options=StripeOptions(max_requests_per_second=0, max_network_retries=0))

    with pytest.raises(StripeCallError) as failure:
        api.list_page("refunds", {})

    assert (failure.value.kind, failure.value.permanent, failure.value.status) == ("rate_limited", False, 429)


def test_a_wrong_key_is_a_permanent_401(stripe_fake):
    api = StripeAPI("sk_test_not_the_right_key", api_base=stripe_fake.url, options=FAST)

    with pytest.raises(StripeCallError) as failure:
        api.list_page("payment_intents", {})

    assert failure.value.permanent and failure.value.status == 401
    assert "sk_test_not_the_right_key" not in str(failure.value)


# --- 7. Events rendered in an older API version -----------------------------------------------

def test_an_event_in_an_older_api_version_keeps_the_latest_charge_and_refunds_by_charge_still_match(
        stripe_fake, shop, platform, stripe_settings):
    pi = shop.pay()
    ch = shop.charge(pi)
    settle_and_sync(stripe_settings)
    legacy = so.legacy_payment_intent({**pi, "latest_charge": ch["id"]}, [ch])
    # Newer than any listing of it: the event is what the mirror keeps.
    stripe_fake.add_event("payment_intent.succeeded", legacy, created=int(time.time()) + 60,
                          api_version=so.LEGACY_API_VERSION)
    stripe_fake.add("refunds", so.refund(charge_id=ch["id"], payment_intent=None, amount=pi["amount"]))
    platform.record(pi, status="refunded", enrollment="refunded")
    settle_and_sync(stripe_settings)

    mirrored = mirror_store(stripe_settings).find_one(store.PAYMENT_INTENTS, {"_id": pi["id"]})
    result = run_reconcile(stripe_settings, at=datetime.now(UTC) + timedelta(seconds=3))

    assert mirrored["latest_charge"] == ch["id"]
    assert result["mismatches"] == []


# --- 8. Smaller problems -----------------------------------------------------------------------

def test_one_stuck_event_does_not_make_every_sync_reread_every_event_since(stripe_fake, stripe_settings):
    now = int(time.time())
    stuck = stripe_fake.add_event("payment_intent.succeeded", so.payment_intent(created=now - 2 * 86400),
                                  created=now - 2 * 86400, pending=1)
    for i in range(450):  # two days of events after it
        stripe_fake.add_event("charge.succeeded", {"id": f"ch_{i}", "object": "unknown"}, created=now - 2 * 86400 + 300 * i + 1)
    assert sync(stripe_settings, FAST).ok
    stripe_fake.requests.clear()

    assert sync(stripe_settings, FAST).ok

    assert len(stripe_fake.calls("/v1/events")) == 2  # new events, and the ones Stripe has not delivered
    ms = mirror_store(stripe_settings)
    assert sm.webhook_backlog_count(ms, datetime.now(UTC)) == 1
    stripe_fake.set_pending(stuck["id"], 0)  # delivered at last
    assert sync(stripe_settings, FAST).ok
    assert sm.webhook_backlog_count(ms, datetime.now(UTC)) == 0


def test_metadata_is_not_copied_into_the_mirror(stripe_fake, stripe_settings):
    pi = stripe_fake.add("payment_intents", so.payment_intent(metadata={"customer_phone": "+1 555 0100",
                                                                        "email": "jane@example.com"}))
    assert sync(stripe_settings, FAST).ok

    doc = mirror_store(stripe_settings).find_one(store.PAYMENT_INTENTS, {"_id": pi["id"]})

    assert "metadata" not in doc
    assert "555" not in str(doc)


def test_matched_counts_only_pairs_that_agree(shop, platform, stripe_settings):
    fine, off = shop.pay(), shop.pay(amount=4900)
    platform.record(fine)
    platform.record(off, amount=4000)
    settle_and_sync(stripe_settings)

    result = run_reconcile(stripe_settings)

    assert (result["stripe_payment_intents"], result["matched"], len(result["mismatches"])) == (2, 1, 1)


def test_a_disabled_legacy_endpoint_is_no_problem_when_another_receives_every_guide_event(stripe_fake, stripe_settings):
    stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe", GUIDE_EVENTS)
    stripe_fake.add_endpoint("https://old.example.com/hook", ["*"], status="disabled")
    assert sync(stripe_settings, FAST).ok
    ms = mirror_store(stripe_settings)

    status = sm.endpoint_status(ms)

    assert sm.endpoint_problem_count(ms) == 0
    assert status["problems"] == []
    assert any("old.example.com/hook is disabled" in note for note in status["notes"])


def test_the_mirror_sends_stripe_only_parameters_it_accepts(stripe_fake, shop, stripe_settings):
    shop.pay()
    stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe", GUIDE_EVENTS)

    report = sync(stripe_settings, FAST)

    assert report.ok and all(r.status == "ok" for r in report.resources.values()), report.resources
    assert all(r.status == 200 for r in stripe_fake.calls())
    assert all(int(r.query.get("limit", 10)) <= 100 for r in stripe_fake.calls())


def test_metadata_an_earlier_version_copied_is_removed_at_the_next_sync(stripe_fake, stripe_settings):
    ms = mirror_store(stripe_settings)
    ms.db[store.PAYMENT_INTENTS].insert_one({"_id": "pi_old", "status": "succeeded", "metadata": {"phone": "555"}})

    assert sync(stripe_settings, FAST).ok

    assert "metadata" not in ms.db[store.PAYMENT_INTENTS].find_one({"_id": "pi_old"})
    assert "mirror_format" not in sm.sync_summary(ms, datetime.now(UTC))["resources"]
