"""The Stripe and Reconciliation pages, run by Streamlit's AppTest over a synced mirror."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bson import ObjectId
from streamlit.testing.v1 import AppTest

from dashboard.common import md
from dashboard.views.reconciliation import to_csv
from fakes.stripe_extras import localstripe, next_second, shop, stripe_fake, stripe_front, stripe_settings  # noqa: F401
from metrics import format as fmt
from metrics.stripe import metrics as sm
from metrics.stripe.client import StripeOptions
from metrics.stripe.mirror import sync
from metrics.stripe.store import mirror_store
from metrics.windows import iso, last

ROOT = Path(__file__).resolve().parent.parent
UTC = timezone.utc
FAST = StripeOptions(max_requests_per_second=0, max_network_retries=1, connect_timeout_s=2, read_timeout_s=10)

# The two pages behind the dashboard's own access check and range picker, as app.py registers them.
SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import streamlit as st
from dashboard import common
from dashboard.views import reconciliation, stripe
settings = common.settings()
if not common.access(settings).allowed:
    st.stop()
common.range_picker(settings)
st.navigation([st.Page(stripe.main, title="Stripe", url_path="stripe", default=True),
               st.Page(reconciliation.main, title="Reconciliation", url_path="reconciliation")]).run()
"""


@pytest.fixture(autouse=True)
def _fresh(fresh_streamlit):
    """Empty caches and re-read settings before and after each test (tests/conftest.py)."""


@pytest.fixture
def synced(stripe_fake, shop, stripe_settings, platform_db, monkeypatch, mongo_uri, db_names, localstripe):
    """A few payments in Stripe, one missing from the database, a dispute; the mirror synced."""
    for name, value in {"MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
                        "STRIPE_API_KEY": localstripe.api_key, "STRIPE_API_BASE": stripe_fake.url}.items():
        monkeypatch.setenv(name, value)
    kept = shop.pay(amount=2500)
    lost = shop.pay(amount=4900)
    shop.authenticate(shop.pay(card=shop.CARD_3DS), success=False)
    oid = ObjectId()
    platform_db.payments.insert_one({"_id": oid, "paymentId": kept["id"], "amount": 2500, "currency": "usd",
                                     "status": "completed", "customerEmail": "=HYPERLINK(\"x\")@example.com",
                                     "createdAt": datetime.fromtimestamp(kept["created"], UTC)})
    platform_db.enrollments.insert_one({"paymentId": oid, "status": "pending", "paymentStatus": "paid",
                                        "createdAt": datetime.fromtimestamp(kept["created"], UTC)})
    stripe_fake.add_dispute(shop.charge(kept))
    next_second()
    assert sync(stripe_settings, FAST).ok
    stripe_fake.requests.clear()
    return {"kept": kept, "lost": lost, "at": datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=45)}


def open_page(tmp_path, at: datetime) -> AppTest:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    app = AppTest.from_file(str(script), default_timeout=60)
    app.query_params["at"] = iso(at)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_stripe_page_shows_the_mirrors_figures_and_calls_no_stripe(synced, tmp_path, stripe_settings, stripe_fake):
    app = open_page(tmp_path, synced["at"])

    tiles = {m.label: m.value for m in app.metric}
    expected = sm.payment_summary(mirror_store(stripe_settings), last(synced["at"], hours=24))
    assert tiles["Success rate (Stripe)"] == fmt.rate(expected["success_rate"])
    assert tiles["Disputes created"] == "1"
    assert tiles["Open disputes"] == "1"
    declines = app.dataframe[0].value
    assert list(declines["Decline code"]) == ["payment_intent_authentication_failure"]
    assert stripe_fake.calls() == []  # the page read the mirror only


def test_the_reconciliation_page_lists_each_mismatch_with_its_link_and_fix(synced, tmp_path, stripe_fake):
    app = open_reconciliation(tmp_path, synced["at"])

    table = app.dataframe[0].value
    assert set(table["Kind"]) == {"Succeeded in Stripe, missing in the database", "Paid, no active enrollment"}
    assert set(table["Payment"]) == {synced["kept"]["id"], synced["lost"]["id"]}
    assert all(link.startswith("https://dashboard.stripe.com/test/payments/pi_") for link in table["Open in Stripe"])
    assert all(table["Fix"])
    # Labels are Markdown: the platform's ids arrive escaped (md), never as links or formatting.
    assert {e.label.split(" · ")[1] for e in app.expander} == {md(pi) for pi in table["Payment"]}
    assert any('db.payments.updateOne(' in c.value and '"$setOnInsert"' in c.value for c in app.code)
    assert list(table["Customer"]) .count("=***@example.com") == 1  # masked on screen
    assert stripe_fake.calls() == []


def open_reconciliation(tmp_path, at: datetime) -> AppTest:
    script = tmp_path / "recon.py"
    script.write_text(SCRIPT.replace("default=True", "default=False").replace(
        'url_path="reconciliation")', 'url_path="reconciliation", default=True)'))
    app = AppTest.from_file(str(script), default_timeout=60)
    app.query_params["at"] = iso(at)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_csv_export_neutralises_spreadsheet_formulas():
    data = to_csv([{"kind": "missing_in_db", "title": "x", "customer": "=HYPERLINK(\"http://evil\")",
                    "detail": "+1", "payment_intent": "pi_1", "fix": "-2", "fix_command": "@SUM(A1)"}])

    row = next(csv.DictReader(io.StringIO(data.decode())))
    assert row["customer"].startswith("'=")
    assert row["detail"] == "'+1" and row["fix"] == "'-2" and row["fix_command"] == "'@SUM(A1)"


def test_the_stripe_page_lists_undelivered_events_per_endpoint_and_how_to_resend_them(
        stripe_fake, stripe_settings, monkeypatch, mongo_uri, db_names, localstripe, tmp_path):
    for name, value in {"MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
                        "STRIPE_API_KEY": localstripe.api_key, "STRIPE_API_BASE": stripe_fake.url}.items():
        monkeypatch.setenv(name, value)
    endpoint = stripe_fake.add_endpoint("https://api.example.com/api/webhooks/stripe", list(sm.GUIDE_EVENTS))
    event = stripe_fake.add_event("payment_intent.succeeded", {"id": "pi_a", "object": "unknown"},
                                  created=int(datetime.now(UTC).timestamp()) - 7 * 3600, pending=1)
    assert sync(stripe_settings, FAST).ok
    stripe_fake.requests.clear()

    app = open_page(tmp_path, datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1))

    warnings = [w.value for w in app.warning]
    assert any(md("https://api.example.com/api/webhooks/stripe") in w and "failing since" in w for w in warnings), warnings
    assert any(f"stripe events resend {event['id']} --webhook-endpoint={endpoint['id']}" in c.value for c in app.code)
    assert stripe_fake.calls() == []


def test_the_reconciliation_page_warns_about_what_leaves_stripes_30_days(stripe_fake, stripe_settings, monkeypatch,
                                                                          mongo_uri, db_names, localstripe, tmp_path):
    from fakes import stripe_objects as so

    for name, value in {"MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
                        "STRIPE_API_KEY": localstripe.api_key, "STRIPE_API_BASE": stripe_fake.url}.items():
        monkeypatch.setenv(name, value)
    old = int(datetime.now(UTC).timestamp()) - 26 * 86400
    lost = stripe_fake.add("payment_intents", so.payment_intent(created=old))
    stripe_fake.add_event("payment_intent.succeeded", lost, created=old)
    next_second()
    assert sync(stripe_settings, FAST).ok

    app = open_reconciliation(tmp_path, datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5))

    assert any("older than 25 days" in w.value for w in app.warning)
    assert lost["id"] in list(app.dataframe[0].value["Object"])
