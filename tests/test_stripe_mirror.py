"""The Stripe mirror: incremental copies, updates through events, resuming after a crash."""

from __future__ import annotations

import io
import logging
import re
from argparse import Namespace
from datetime import datetime, timedelta, timezone

import pytest
import stripe

from fakes.stripe_extras import localstripe, next_second, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401
from metrics import db as dbmod
from metrics.stripe import cli, store
from metrics.stripe.client import StripeAPI, StripeOptions
from metrics.stripe.mirror import LEASE_ID, Mirror, acquire_lease, sync, sync_job

FAST = StripeOptions(max_requests_per_second=0, max_network_retries=1, connect_timeout_s=2, read_timeout_s=10)


@pytest.fixture
def mirror_db(stripe_settings):
    return dbmod.state_db(stripe_settings)


def run_sync(fake, localstripe, db, **options) -> object:
    opts = StripeOptions(**{**FAST.__dict__, **options})
    return Mirror(StripeAPI(localstripe.api_key, api_base=fake.url, options=opts), db, opts).run()


def ids(db, collection: str) -> set[str]:
    return {d["_id"] for d in db[collection].find({}, {"_id": 1})}


def test_the_first_sync_copies_payment_intents_charges_refunds_and_events(stripe_fake, localstripe, shop, mirror_db):
    paid = [shop.pay(amount=1000 + i) for i in range(3)]
    refund = shop.refund(paid[0]["id"])

    report = run_sync(stripe_fake, localstripe, mirror_db)

    assert report.ok
    assert ids(mirror_db, store.PAYMENT_INTENTS) == {p["id"] for p in paid}
    assert ids(mirror_db, store.CHARGES) == {shop.charge(p)["id"] for p in paid}
    assert ids(mirror_db, store.REFUNDS) == {refund["id"]}
    assert {d["type"] for d in mirror_db[store.EVENTS].find()} >= {"payment_intent.succeeded"}
    pi = mirror_db[store.PAYMENT_INTENTS].find_one({"_id": paid[1]["id"]})
    assert (pi["amount"], pi["currency"], pi["status"]) == (1001, "usd", "succeeded")
    assert pi["created"] == datetime.fromtimestamp(paid[1]["created"], timezone.utc)


def test_an_incremental_sync_asks_only_for_objects_created_since_the_cursor(stripe_fake, localstripe, shop, mirror_db):
    old = [shop.pay() for _ in range(3)]
    run_sync(stripe_fake, localstripe, mirror_db)
    next_second()
    new = [shop.pay() for _ in range(2)]
    stripe_fake.requests.clear()

    report = run_sync(stripe_fake, localstripe, mirror_db)

    newest_old = max(p["created"] for p in old)
    asked = stripe_fake.calls("/v1/payment_intents")
    assert [r.query["created[gte]"] for r in asked] == [str(newest_old)]
    fetched = report.resources["payment_intents"].fetched
    same_second = sum(1 for p in old if p["created"] == newest_old)
    assert fetched == len(new) + same_second  # the new ones, and the cursor's own second again
    assert ids(mirror_db, store.PAYMENT_INTENTS) == {p["id"] for p in old + new}
    assert mirror_db[store.PAYMENT_INTENTS].count_documents({}) == 5


def test_events_update_objects_created_before_the_cursor(stripe_fake, localstripe, shop, mirror_db):
    waiting = shop.pay(card=shop.CARD_3DS)
    next_second()
    shop.pay()
    run_sync(stripe_fake, localstripe, mirror_db)
    assert mirror_db[store.PAYMENT_INTENTS].find_one({"_id": waiting["id"]})["status"] == "requires_action"

    shop.authenticate(waiting, success=True)  # Stripe emits payment_intent.succeeded for it
    report = run_sync(stripe_fake, localstripe, mirror_db)

    listed = report.resources["payment_intents"].fetched
    assert listed == 1  # the list only saw the newest second; the event carried the update
    updated = mirror_db[store.PAYMENT_INTENTS].find_one({"_id": waiting["id"]})
    assert (updated["status"], updated["source"]) == ("succeeded", "event")


def test_an_older_event_never_overwrites_a_newer_listing(stripe_fake, localstripe, shop, mirror_db):
    pi = shop.pay()
    charge = shop.charge(pi)
    dispute = stripe_fake.add_dispute(charge, status="under_review")
    stripe_fake.add_event("charge.dispute.updated", {**dispute, "status": "needs_response"},
                          created=dispute["created"] - 60)

    run_sync(stripe_fake, localstripe, mirror_db)

    assert mirror_db[store.DISPUTES].find_one({"_id": dispute["id"]})["status"] == "under_review"


def test_dispute_changes_arrive_through_their_events(stripe_fake, localstripe, shop, mirror_db):
    charge = shop.charge(shop.pay())
    dispute = stripe_fake.add_dispute(charge, created=charge["created"] - 5)
    next_second()
    stripe_fake.add_dispute(shop.charge(shop.pay()))
    run_sync(stripe_fake, localstripe, mirror_db)
    next_second()

    stripe_fake.update_dispute(dispute["id"], status="won")
    run_sync(stripe_fake, localstripe, mirror_db)

    assert mirror_db[store.DISPUTES].find_one({"_id": dispute["id"]})["status"] == "won"
    assert mirror_db[store.DISPUTES].count_documents({}) == 2


def test_a_sync_that_crashes_mid_listing_resumes_after_the_last_stored_page(stripe_fake, localstripe, shop, mirror_db):
    paid = [shop.pay(amount=500 + i) for i in range(7)]
    # The third page fails and Stripe says not to retry: the sync stops there.
    stripe_fake.fail_next("/v1/payment_intents", 500, after=2, headers={"Stripe-Should-Retry": "false"})

    crashed = run_sync(stripe_fake, localstripe, mirror_db, page_size=3)

    assert not crashed.ok and crashed.resources["payment_intents"].status == "error"
    state = mirror_db[store.SYNC_STATE].find_one({"_id": "payment_intents"})
    assert state["checkpoint"]["starting_after"]
    assert mirror_db[store.PAYMENT_INTENTS].count_documents({}) == 6
    stripe_fake.requests.clear()

    resumed = run_sync(stripe_fake, localstripe, mirror_db, page_size=3)

    assert resumed.ok and resumed.resources["payment_intents"].resumed
    asked = stripe_fake.calls("/v1/payment_intents")
    assert asked[0].query["starting_after"] == state["checkpoint"]["starting_after"]
    assert len(asked) == 1  # only the page that was missing
    assert ids(mirror_db, store.PAYMENT_INTENTS) == {p["id"] for p in paid}
    assert mirror_db[store.PAYMENT_INTENTS].count_documents({}) == len(paid)  # no duplicates


def test_running_the_same_sync_twice_changes_nothing(stripe_fake, localstripe, shop, mirror_db):
    shop.refund(shop.pay()["id"])
    run_sync(stripe_fake, localstripe, mirror_db)
    bookkeeping = {"synced_at": 0, "as_of": 0, "source": 0}  # when and how we last wrote it
    before = {name: list(mirror_db[name].find({}, bookkeeping).sort("_id"))
              for name in (store.PAYMENT_INTENTS, store.CHARGES, store.REFUNDS)}

    run_sync(stripe_fake, localstripe, mirror_db)

    after = {name: list(mirror_db[name].find({}, bookkeeping).sort("_id")) for name in before}
    assert after == before


def test_a_server_without_disputes_or_endpoints_marks_them_unavailable_not_empty(localstripe, stripe_fake, shop, mirror_db):
    shop.pay()
    opts = FAST
    report = Mirror(StripeAPI(localstripe.api_key, api_base=localstripe.base_url, options=opts), mirror_db, opts).run()

    assert report.ok
    assert report.resources["disputes"].status == "unavailable"
    assert report.resources["webhook_endpoints"].status == "unavailable"
    assert "404" in mirror_db[store.SYNC_STATE].find_one({"_id": "disputes"})["error"]


def test_webhook_endpoints_are_copied_whole_and_a_deleted_one_disappears(stripe_fake, localstripe, mirror_db):
    kept = stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe?token=s3cret", ["payment_intent.succeeded"])
    gone = stripe_fake.add_endpoint("https://old.example.com/hook", ["*"], status="disabled")
    run_sync(stripe_fake, localstripe, mirror_db)
    assert ids(mirror_db, store.WEBHOOK_ENDPOINTS) == {kept["id"], gone["id"]}

    stripe_fake.endpoints.remove(gone)
    run_sync(stripe_fake, localstripe, mirror_db)

    assert ids(mirror_db, store.WEBHOOK_ENDPOINTS) == {kept["id"]}
    assert mirror_db[store.WEBHOOK_ENDPOINTS].find_one()["url"] == "https://api.example.com/api/webhooks/stripe"


def test_each_sync_records_its_api_calls(stripe_fake, localstripe, shop, mirror_db):
    shop.pay()
    stripe_fake.requests.clear()

    report = run_sync(stripe_fake, localstripe, mirror_db)

    sent = [r for r in stripe_fake.requests if r.path.startswith("/v1/")]
    assert report.calls == len(sent)
    run = mirror_db[store.SYNC_RUNS].find_one(sort=[("started_at", -1)])
    assert run["calls"] == report.calls and run["ok"] is True
    assert mirror_db[store.API_CALLS].count_documents({}) == report.calls


def test_a_second_worker_does_not_sync_while_the_lease_is_held(stripe_fake, localstripe, mirror_db):
    assert acquire_lease(mirror_db, "other-worker", datetime.now(timezone.utc), 600)
    stripe_fake.requests.clear()

    report = run_sync(stripe_fake, localstripe, mirror_db)

    assert report.skipped and not report.ok
    assert stripe_fake.calls() == []
    assert mirror_db[store.SYNC_STATE].find_one({"_id": LEASE_ID})["owner"] == "other-worker"


def test_an_expired_lease_is_taken_over(stripe_fake, localstripe, mirror_db):
    acquire_lease(mirror_db, "dead-worker", datetime.now(timezone.utc) - timedelta(hours=1), 60)

    report = run_sync(stripe_fake, localstripe, mirror_db)

    assert report.ok


def test_the_key_never_appears_in_logs_output_or_stored_state(stripe_settings, stripe_fake, localstripe, shop,
                                                               mirror_db, caplog, capsys, monkeypatch):
    key = localstripe.api_key
    monkeypatch.setattr(stripe, "log", "debug")  # stripe-python's own request log, to stderr
    caplog.set_level(logging.DEBUG)
    shop.pay()
    stripe_fake.requests.clear()
    stripe_fake.fail_next("/v1/refunds", 401)
    stripe_fake.fail_next("/v1/charges", 503, times=2)  # the first try and its one retry

    failed = sync(stripe_settings, FAST)
    ok = sync(stripe_settings, FAST)
    out = io.StringIO()
    cli.run(Namespace(since=None, at=None, json=True, sync=True), stripe_settings, out=out, err=out)

    assert not failed.ok and ok.ok
    assert any(r.authorization == f"Bearer {key}" for r in stripe_fake.requests)  # it was really used
    captured = capsys.readouterr()
    stored = [list(mirror_db[name].find()) for name in (store.SYNC_RUNS, store.SYNC_STATE, store.API_CALLS)]
    for text in (caplog.text, captured.out, captured.err, out.getvalue(), repr(failed), repr(stored)):
        assert key not in text
    # Stripe's own 401 names the key masked ("sk_test_****1234"); nothing unmasked may appear.
    assert not re.search(r"sk_test_[A-Za-z0-9]", caplog.text + captured.err)


def test_the_worker_job_without_a_key_logs_and_returns_nothing(settings, caplog):
    caplog.set_level(logging.INFO)

    assert sync_job(settings) is None
    assert "STRIPE_API_KEY is not set" in caplog.text


def test_the_worker_job_syncs_with_the_configured_key(stripe_settings, shop):
    shop.pay()

    report = sync_job(stripe_settings)

    assert report is not None and report.ok
