"""Reconciliation of the Stripe mirror with the platform's payments and enrollments."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from datetime import datetime, timedelta, timezone

from fakes.stripe_extras import localstripe, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401 (fixtures)
from fakes.stripe_records import FAST, Platform, kinds_by_pi, messy, platform, run_reconcile, settle_and_sync  # noqa: F401
from metrics import db as dbmod
from metrics.stripe import cli
from metrics.stripe.mirror import sync
from metrics.stripe.reconcile import KINDS, persistent_mismatch_count, rows_for_export
from metrics.stripe.store import mirror_store

UTC = timezone.utc


def test_each_kind_of_mismatch_is_found_on_its_payment(messy, stripe_settings):
    result = run_reconcile(stripe_settings)

    found = kinds_by_pi(result)
    assert "fine" not in {k for k, pi in messy.items() if pi["id"] in found}
    for kind in KINDS:
        assert found[messy[kind]["id"]] == {kind}, kind
    assert result["by_kind"] == dict.fromkeys(KINDS, 1)


def test_a_completed_payment_stripe_never_heard_of_is_not_succeeded_in_stripe(shop, platform, stripe_settings):
    shop.pay()
    platform.record(None, payment_id="pi_unknown_to_stripe", amount=4900, currency="usd",
                    created=datetime.now(UTC) - timedelta(minutes=5))
    settle_and_sync(stripe_settings)

    result = run_reconcile(stripe_settings)

    [mismatch] = [m for m in result["mismatches"] if m["payment_intent"] == "pi_unknown_to_stripe"]
    assert mismatch["kind"] == "not_succeeded_in_stripe"
    assert "not found in Stripe" in mismatch["detail"]


def test_a_clean_dataset_has_no_mismatches(shop, platform, stripe_settings):
    platform.record(shop.pay())
    refunded = shop.pay(currency="eur", amount=2500)
    shop.refund(refunded["id"])
    platform.record(refunded, status="refunded", enrollment="refunded")
    failed = shop.authenticate(shop.pay(card=shop.CARD_3DS), success=False)
    platform.record(failed, status="failed", enrollment="cancelled")
    partly = shop.pay(amount=6000)
    shop.refund(partly["id"], amount=1000)  # a partial refund: the course goes on
    platform.record(partly)
    settle_and_sync(stripe_settings)

    result = run_reconcile(stripe_settings)

    assert result["available"]
    assert result["mismatches"] == []
    assert (result["stripe_payment_intents"], result["db_payments"], result["matched"]) == (4, 4, 4)


def test_each_mismatch_links_to_stripe_and_proposes_the_runbook_fix(messy, stripe_settings):
    result = run_reconcile(stripe_settings)

    by_kind = {m["kind"]: m for m in result["mismatches"]}
    missing = by_kind["missing_in_db"]
    assert missing["stripe_url"] == f"https://dashboard.stripe.com/test/payments/{messy['missing_in_db']['id']}"
    assert missing["fix_command"].startswith(f'db.payments.updateOne({{"paymentId": "{messy["missing_in_db"]["id"]}"}}, '
                                             '{"$setOnInsert": ')
    assert '"status": "completed"' in missing["fix_command"]
    refunded = by_kind["refunded_not_in_db"]
    assert '"status": "refunded"' in refunded["fix_command"] and '"refundedAt": new Date(' in refunded["fix_command"]
    assert by_kind["paid_no_active_enrollment"]["customer"] == "j***@example.com"
    assert all(m["fix"] for m in result["mismatches"])


def test_mismatches_persist_only_after_the_grace_period(messy, stripe_settings):
    now = datetime.now(UTC) + timedelta(seconds=2)

    fresh = run_reconcile(stripe_settings, at=now)
    later = run_reconcile(stripe_settings, at=now + timedelta(hours=1))

    assert fresh["persisting"] == 0
    assert later["persisting"] == len(later["mismatches"]) == len(KINDS)
    count = persistent_mismatch_count(dbmod.source(stripe_settings), mirror_store(stripe_settings),
                                      now + timedelta(hours=1))
    assert count == len(KINDS)


def test_payments_made_after_the_last_sync_are_not_judged(shop, platform, stripe_settings):
    sync(stripe_settings, FAST)
    late = shop.pay()
    platform.record(late, status="completed")

    result = run_reconcile(stripe_settings, at=datetime.now(UTC) + timedelta(minutes=5))

    assert result["mismatches"] == []
    assert result["checked"]["end"] == result["coverage"]["end"]


def test_before_the_first_sync_reconciliation_is_unknown(stripe_settings):
    result = run_reconcile(stripe_settings)

    assert result["available"] is False and "not completed a sync" in result["reason"]
    assert persistent_mismatch_count(dbmod.source(stripe_settings), mirror_store(stripe_settings),
                                     datetime.now(UTC)) is None


def test_reconciliation_never_writes_to_the_platform_database(messy, stripe_settings, platform_db):
    before = {name: list(platform_db[name].find().sort("_id")) for name in platform_db.list_collection_names()}

    run_reconcile(stripe_settings)

    after = {name: list(platform_db[name].find().sort("_id")) for name in platform_db.list_collection_names()}
    assert after == before


def test_renamed_fields_and_collections_are_used_in_queries_and_fixes(shop, make_settings, stripe_fake, localstripe, platform_db):
    settings = make_settings(STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=stripe_fake.url,
                             schema={"payments": {"collection": "transactions", "paymentId": "stripePaymentIntent",
                                                  "status": "state"}})
    renamed = Platform(platform_db, settings.schema)
    renamed.record(shop.pay())
    behind = shop.pay()
    renamed.record(behind, status="processing", enrollment="pending")
    settle_and_sync(settings)

    result = run_reconcile(settings)

    [mismatch] = result["mismatches"]
    assert (mismatch["kind"], mismatch["payment_intent"]) == ("not_completed_in_db", behind["id"])
    assert mismatch["fix_command"].startswith(f'db.transactions.updateOne({{"stripePaymentIntent": "{behind["id"]}", '
                                              '"state": "processing"}, {"$set": {"state": "completed", ')


def test_the_cli_prints_json_and_a_readable_list(messy, stripe_settings):
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    out = io.StringIO()
    args = Namespace(since=None, at=datetime.fromisoformat(at), json=True, sync=False)

    assert cli.run(args, stripe_settings, out=out) == 0
    printed = json.loads(out.getvalue())
    assert printed["by_kind"] == dict.fromkeys(KINDS, 1)

    table = io.StringIO()
    assert cli.run(Namespace(since=None, at=args.at, json=False, sync=False), stripe_settings, out=table) == 0
    text = table.getvalue()
    assert f"{len(KINDS)} mismatch(es), {len(KINDS)} older than the 30-minute grace period" in text
    assert text.count("  Fix: ") == text.count("  Check first: ") == len(KINDS)


def test_the_cli_says_unknown_and_exits_1_before_any_sync(stripe_settings):
    out = io.StringIO()

    code = cli.run(Namespace(since=None, at=None, json=False, sync=False), stripe_settings, out=out)

    assert code == 1 and "unknown" in out.getvalue()


def test_export_rows_carry_every_column_a_person_needs(messy, stripe_settings):
    rows = rows_for_export(run_reconcile(stripe_settings)["mismatches"])

    assert len(rows) == len(KINDS)
    assert {"kind", "payment_intent", "stripe_url", "fix", "fix_command", "customer"} <= set(rows[0])
