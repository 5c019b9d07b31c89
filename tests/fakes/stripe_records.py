"""The platform's side of the Stripe tests: records written as its webhook handler would, and reconcile runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bson import ObjectId

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
