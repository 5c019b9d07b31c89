"""The platform's side of the Stripe tests: records written as its webhook handler would, and reconcile runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import re

import pytest
from bson import ObjectId, json_util

from fakes import stripe_objects as so

from fakes.stripe_extras import next_second
from metrics import db as dbmod
from metrics.stripe.client import StripeOptions
from metrics.stripe.mirror import sync
from metrics.stripe.reconcile import reconcile
from metrics.stripe.store import mirror_store
from metrics.windows import Window

UTC = timezone.utc
FAST = StripeOptions(max_requests_per_second=0, max_network_retries=1, connect_timeout_s=2, read_timeout_s=10)


class Platform:
    """Writes the platform's records as its code would (default field names unless mapped)."""

    def __init__(self, db, schema):
        self.db, self.p, self.e = db, schema.payments, schema.enrollments

    def record(self, pi: dict | None, *, status: str = "completed", amount: int | None = None,
               currency: str | None = None, enrollment: str | None = "active", payment_id: str | None = None,
               created: datetime | None = None) -> ObjectId:
        created = created or datetime.fromtimestamp(pi["created"], UTC)
        oid = ObjectId()
        p = self.p
        doc = {"_id": oid, p["paymentId"]: payment_id or pi["id"],
               p["amount"]: amount if amount is not None else pi["amount"],
               p["currency"]: currency or pi["currency"], p["status"]: status, p["customerId"]: "cus_1",
               p["customerEmail"]: "jane.doe@example.com", p["serviceId"]: "svc-yoga", p["createdAt"]: created,
               p["stripeEventId"]: f"evt_platform_{oid}"}
        if status in ("completed", "refunded"):
            doc[p["completedAt"]] = created + timedelta(seconds=1)
        if status == "refunded":
            doc[p["refundedAt"]] = created + timedelta(seconds=2)
        self.db[p.name].insert_one(doc)
        if enrollment:
            paid = {"active": "paid", "refunded": "refunded", "pending": "pending", "cancelled": "failed"}[enrollment]
            self.db[self.e.name].insert_one({self.e["paymentId"]: oid, self.e["status"]: enrollment,
                                             self.e["paymentStatus"]: paid, self.e["customerId"]: "cus_1",
                                             self.e["serviceId"]: "svc-yoga", self.e["createdAt"]: created})
        return oid


def settle_and_sync(settings, options: StripeOptions = FAST) -> None:
    """Sync once the clock has left the second of the last payment (the mirror vouches for whole seconds)."""
    next_second()
    assert sync(settings, options).ok


def run_reconcile(settings, at: datetime | None = None, *, hours: float = 2, **kwargs) -> dict:
    at = at or datetime.now(UTC) + timedelta(seconds=2)
    return reconcile(dbmod.source(settings), mirror_store(settings), Window(at - timedelta(hours=hours), at), at, **kwargs)


def kinds_by_pi(result: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in result["mismatches"]:
        out.setdefault(m["payment_intent"], set()).add(m["kind"])
    return out


@pytest.fixture
def platform(platform_db, stripe_settings):
    return Platform(platform_db, stripe_settings.schema)


@pytest.fixture
def messy(shop, platform, stripe_settings, stripe_fake):
    """One payment per mismatch kind, and one that is fine."""
    cases = {}
    cases["fine"] = shop.pay()
    platform.record(cases["fine"])
    cases["missing_in_db"] = shop.pay()
    cases["not_completed_in_db"] = shop.pay()
    platform.record(cases["not_completed_in_db"], status="processing", enrollment="pending")
    cases["not_succeeded_in_stripe"] = shop.pay(card=shop.CARD_3DS)  # still waiting for 3-D Secure
    platform.record(cases["not_succeeded_in_stripe"])
    cases["amount_or_currency_mismatch"] = shop.pay(amount=4900)
    platform.record(cases["amount_or_currency_mismatch"], amount=4000)
    cases["refunded_not_in_db"] = shop.pay()
    shop.refund(cases["refunded_not_in_db"]["id"])
    platform.record(cases["refunded_not_in_db"], enrollment=None)
    cases["refund_missing_in_stripe"] = shop.pay()
    platform.record(cases["refund_missing_in_stripe"], status="refunded", enrollment="refunded")
    cases["refund_pending_in_stripe"] = shop.pay()
    stripe_fake.add("refunds", so.refund(charge_id=shop.charge(cases["refund_pending_in_stripe"])["id"],
                                         payment_intent=cases["refund_pending_in_stripe"]["id"], amount=4900,
                                         status="pending"))
    platform.record(cases["refund_pending_in_stripe"], status="refunded", enrollment="refunded")
    cases["refund_failed_in_stripe"] = shop.pay()
    stripe_fake.add("refunds", so.refund(charge_id=shop.charge(cases["refund_failed_in_stripe"])["id"],
                                         payment_intent=cases["refund_failed_in_stripe"]["id"], amount=4900,
                                         status="failed"))
    platform.record(cases["refund_failed_in_stripe"], status="refunded", enrollment="refunded")
    cases["refunded_enrollment_active"] = shop.pay()
    shop.refund(cases["refunded_enrollment_active"]["id"])
    platform.record(cases["refunded_enrollment_active"], status="refunded", enrollment="active")
    cases["paid_no_active_enrollment"] = shop.pay()
    platform.record(cases["paid_no_active_enrollment"], enrollment="pending")
    settle_and_sync(stripe_settings)
    return cases


# --- Applying a proposed fix as a person would paste it into mongosh ----------------------

_STATEMENT = re.compile(r"^db\.([A-Za-z0-9_.-]+)\.(updateOne)\((.*)\)$")


def statements(command: str) -> list[tuple[str, str, list]]:
    """The mongosh statements of a proposed fix: ``(collection, method, arguments)``; comments skipped.

    The fix is written in the subset of mongosh that ``metrics/stripe/reconcile.py`` emits
    (JSON with ``ObjectId(...)``, ``new Date(...)``, ``NumberDecimal(...)``), read here as
    Extended JSON, so the test runs the very text a person would paste.
    """
    out = []
    for line in command.splitlines():
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        match = _STATEMENT.match(line)
        assert match, f"not a statement this test can run: {line}"
        args = match.group(3)
        args = re.sub(r'ObjectId\("([0-9a-f]{24})"\)', r'{"$oid": "\1"}', args)
        args = re.sub(r'new Date\("([^"]+)"\)', r'{"$date": "\1"}', args)
        args = re.sub(r'NumberDecimal\("([^"]+)"\)', r'{"$numberDecimal": "\1"}', args)
        out.append((match.group(1), match.group(2), json_util.loads(f"[{args}]")))
    return out


def apply_fix(db, command: str) -> int:
    """Run the fix's statements on ``db``; how many documents they inserted or changed."""
    changed = 0
    for collection, method, args in statements(command):
        where, update, *options = args
        result = db[collection].update_one(where, update, upsert=bool(options and options[0].get("upsert")))
        changed += result.modified_count + (1 if result.upserted_id is not None else 0)
    return changed
