"""``python -m metrics reconcile`` and the snapshot's ``"stripe"`` key, as a user runs them: subprocesses."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from fakes.stripe_extras import localstripe, next_second, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401 (fixtures)
from metrics.stripe.client import StripeOptions
from metrics.stripe.mirror import sync

UTC = timezone.utc
FAST = StripeOptions(max_requests_per_second=0, max_network_retries=1, connect_timeout_s=2, read_timeout_s=10)


@pytest.fixture
def one_payment_lost(shop, stripe_settings, platform_db):
    """Two payments succeeded in Stripe; the platform recorded only the first; the mirror is synced."""
    kept, lost = shop.pay(amount=1500), shop.pay(amount=2500)
    platform_db.payments.insert_one({
        "paymentId": kept["id"], "amount": 1500, "currency": "usd", "status": "completed",
        "customerEmail": "jane.doe@example.com", "createdAt": datetime.fromtimestamp(kept["created"], UTC),
        "completedAt": datetime.fromtimestamp(kept["created"], UTC) + timedelta(seconds=1)})
    enrollment = platform_db.payments.find_one({"paymentId": kept["id"]})["_id"]
    platform_db.enrollments.insert_one({"paymentId": enrollment, "status": "active", "paymentStatus": "paid",
                                        "customerId": "cus_1", "serviceId": "svc-yoga",
                                        "createdAt": datetime.fromtimestamp(kept["created"], UTC)})
    next_second()  # the sync vouches only for seconds before it began
    assert sync(stripe_settings, FAST).ok
    return {"kept": kept, "lost": lost}


def test_help_lists_reconcile_and_its_options(run):
    top = run("--help")
    assert top.returncode == 0 and "reconcile" in top.stdout and "Stripe mirror" in top.stdout
    sub = run("reconcile", "--help")
    assert sub.returncode == 0
    for option in ("--since", "--at", "--json", "--sync"):
        assert option in sub.stdout


def test_reconcile_json_lists_the_payment_stripe_took_and_the_database_lost(run, one_payment_lost):
    at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    result = run("reconcile", "--json", "--at", at)

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["available"] is True
    assert (out["stripe_payment_intents"], out["db_payments"], out["matched"]) == (2, 1, 1)
    (mismatch,) = out["mismatches"]
    assert mismatch["kind"] == "missing_in_db" and mismatch["payment_intent"] == one_payment_lost["lost"]["id"]
    assert mismatch["persisting"] is True  # an hour past it, beyond the 30-minute grace period
    assert out["by_kind"] == {"missing_in_db": 1}


def test_reconcile_as_a_table_names_the_fix(run, one_payment_lost):
    result = run("reconcile")

    assert result.returncode == 0, result.stderr
    assert one_payment_lost["lost"]["id"] in result.stdout and "Fix:" in result.stdout
    assert "(within grace period)" in result.stdout  # made seconds ago


def test_reconcile_before_any_sync_is_unknown_with_exit_1(run):
    result = run("reconcile", "--json")

    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert out["available"] is False and "has not completed a sync" in out["reason"]


def test_reconcile_sync_without_a_key_is_a_usage_error_in_one_line(run):
    result = run("reconcile", "--sync")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "paywatch: STRIPE_API_KEY is not set: the Stripe mirror cannot sync (make run starts localstripe when it is unset)"]


def test_snapshot_without_stripe_says_so_instead_of_zeros(run):
    result = run("snapshot", "--json")

    assert result.returncode == 0, result.stderr
    stripe = json.loads(result.stdout)["stripe"]
    assert stripe["configured"] is False and stripe["available"] is False
    assert "STRIPE_API_KEY" in stripe["reason"]
    assert "24h" not in stripe  # no tree of figures to mistake for data


def test_snapshot_reads_the_mirror_even_where_the_key_is_not_set(run, one_payment_lost):
    next_second()  # the snapshot's instant is a whole second: one after the sync began
    result = run("snapshot", "--json")

    assert result.returncode == 0, result.stderr
    stripe = json.loads(result.stdout)["stripe"]
    assert stripe["configured"] is False  # this process has no key; a worker synced the mirror
    assert stripe["available"] is True
    assert stripe["24h"]["payments"]["succeeded"] == 2
    assert stripe["24h"]["payments"]["amount_succeeded"] == {"usd": 4000}
    assert stripe["sync"]["last_run_ok"] is True
    assert stripe["disputes"]["open"] == 0  # the front serves disputes: a true zero


def test_the_snapshot_table_has_a_stripe_section(run, one_payment_lost):
    result = run("snapshot")

    assert result.returncode == 0, result.stderr
    assert "Stripe (mirror)" in result.stdout
    assert "Succeeded / failed PaymentIntents (24h)" in result.stdout
