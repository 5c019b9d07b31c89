"""Reconciliation: the Stripe mirror against the platform's payments and enrollments.

The guide's runbook "Reconciliation After Outage" (section 5) and its monthly
review (section 9) compare Stripe with the database and fix the database.
This module does the comparison and *proposes* each fix (the runbook's own
MongoDB commands, with the real ids filled in); it never writes to the
platform's database.

It compares the PaymentIntents created in a window with the payments the
platform created in it, and finds:

``missing_in_db``                 succeeded in Stripe, no payment record
``not_completed_in_db``           succeeded in Stripe, the record is not completed
``not_succeeded_in_stripe``       completed (or refunded) in the database, not succeeded in Stripe
``amount_or_currency_mismatch``   both succeeded, different amount or currency
``refunded_not_in_db``            fully refunded in Stripe, the record is not refunded
``refund_missing_in_stripe``      refunded in the database, no refund in Stripe
``refunded_enrollment_active``    refunded, the enrollment is still active
``paid_no_active_enrollment``     paid and completed, no active enrollment

The window is cut to what the mirror covers: from its first sync's backfill
start to the start of its last complete sync (``synced_through``), so a
payment made since the last sync is not reported as missing from Stripe.
Each mismatch says since when it holds; one older than the grace period
(``reconcile_grace_minutes``, webhooks and retries usually settle well within
it) is ``persisting``, which is what the alert rule counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

from decimal import Decimal, InvalidOperation

from bson import Decimal128, ObjectId

from metrics.db import Source
from metrics.format import mask_email
from metrics.quality import valid_filter
from metrics.schema import SUCCEEDED_STATUSES, Schema
from metrics.stripe import store
from metrics.stripe.metrics import dashboard_url
from metrics.stripe.store import MirrorStore
from metrics.windows import Window, iso, utc

BATCH = 500

KINDS: dict[str, str] = {
    "missing_in_db": "Succeeded in Stripe, missing in the database",
    "not_completed_in_db": "Succeeded in Stripe, not completed in the database",
    "not_succeeded_in_stripe": "Completed in the database, not succeeded in Stripe",
    "amount_or_currency_mismatch": "Amount or currency differs",
    "refunded_not_in_db": "Refunded in Stripe, not in the database",
    "refund_missing_in_stripe": "Refunded in the database, no refund in Stripe",
    "refunded_enrollment_active": "Refunded, enrollment still active",
    "paid_no_active_enrollment": "Paid, no active enrollment",
}


@dataclass
class _Payment:
    """One platform payment record, in our field names."""

    oid: Any
    payment_id: str | None
    amount: Any
    currency: str | None
    status: str | None
    email: str | None
    created: datetime | None
    completed: datetime | None
    refunded: datetime | None


def _chunks(items: list, size: int = BATCH) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _js(value: Any) -> str:
    """A value written as mongosh reads it (strings quoted and escaped, ids and dates wrapped)."""
    if isinstance(value, ObjectId):
        return f'ObjectId("{value}")'
    if isinstance(value, datetime):
        return f'new Date("{iso(value)}")'
    return json.dumps(value)


class _Fixes:
    """The runbook's commands for one schema, with real collection and field names."""

    def __init__(self, schema: Schema):
        self.p, self.e = schema.payments, schema.enrollments

    def _set_payment(self, pi: str, **fields) -> str:
        sets = ", ".join(f"{self.p[k]}: {_js(v)}" for k, v in fields.items())
        return f"db.{self.p.name}.updateOne({{{self.p['paymentId']}: {_js(pi)}}}, {{$set: {{{sets}}}}})"

    def _set_enrollment(self, payment_oid: Any, **fields) -> str:
        sets = ", ".join(f"{self.e[k]}: {_js(v)}" for k, v in fields.items())
        target = _js(payment_oid) if payment_oid is not None else "<the payment's _id>"
        return f"db.{self.e.name}.updateOne({{{self.e['paymentId']}: {target}}}, {{$set: {{{sets}}}}})"

    def command(self, kind: str, pi: dict | None, pay: _Payment | None, refund_at: datetime | None) -> tuple[str, str]:
        """(what to do, the command) for one mismatch."""
        pid = (pi or {}).get("_id") or (pay.payment_id if pay else None)
        oid = pay.oid if pay else None
        if kind == "missing_in_db":
            insert = ", ".join(f"{self.p[k]}: {_js(v)}" for k, v in (
                ("paymentId", pid), ("amount", pi.get("amount")), ("currency", pi.get("currency")),
                ("status", "completed"), ("completedAt", pi.get("created"))))
            return ("Create the missing payment record as the runbook's reconcile-payments.js does, then create "
                    "or activate the customer's enrollment for it.",
                    f"db.{self.p.name}.insertOne({{{insert}}})")
        if kind == "not_completed_in_db":
            return ("Mark the payment completed (the runbook's dbPayment.status = 'completed'), then activate "
                    "its enrollment.",
                    self._set_payment(pid, status="completed") + "\n"
                    + self._set_enrollment(oid, status="active", paymentStatus="paid"))
        if kind == "not_succeeded_in_stripe":
            return ("Stripe has no successful charge for this payment: check the PaymentIntent in Stripe; if the "
                    "money was never taken, mark the payment failed and suspend the enrollment.",
                    self._set_payment(pid, status="failed") + "\n"
                    + self._set_enrollment(oid, status="pending", paymentStatus="failed"))
        if kind == "amount_or_currency_mismatch":
            return ("Stripe is the record of what was charged: correct the payment's amount and currency to "
                    "Stripe's (or refund the difference in Stripe if the database is right).",
                    self._set_payment(pid, amount=pi.get("amount"), currency=pi.get("currency")))
        if kind == "refunded_not_in_db":
            when = refund_at or datetime.now(timezone.utc)
            return ("Record the refund as the runbook's \"Process Refund Manually\" steps 4 and 5 do.",
                    self._set_payment(pid, status="refunded", refundedAt=when) + "\n"
                    + self._set_enrollment(oid, status="refunded", paymentStatus="refunded"))
        if kind == "refund_missing_in_stripe":
            return ("The customer may not have their money back: issue the refund in Stripe (the runbook's step 3) "
                    "or, if no refund was due, set the payment back to completed.",
                    f"curl https://api.stripe.com/v1/refunds -u \"$STRIPE_SECRET_KEY:\" -d payment_intent={pid}")
        if kind == "refunded_enrollment_active":
            return ("Close the enrollment as the runbook's \"Process Refund Manually\" step 5 does.",
                    self._set_enrollment(oid, status="refunded", paymentStatus="refunded"))
        if kind == "paid_no_active_enrollment":
            return ("The customer paid but cannot access the course: activate (or create) the enrollment.",
                    self._set_enrollment(oid, status="active", paymentStatus="paid"))
        raise ValueError(kind)


def coverage(ms: MirrorStore) -> dict:
    """What the mirror can vouch for: ``{"start", "end"}`` (``None`` before a complete sync)."""
    state = ms.find_one(store.SYNC_STATE, {"_id": "payment_intents"}) or {}
    run = ms.find_one(store.SYNC_RUNS, {"ok": True, "synced_through": {"$ne": None}}, sort=[("started_at", -1)])
    return {"start": state.get("coverage_start"), "end": run["synced_through"] if run else None}


def _mirror_pis(ms: MirrorStore, query: dict) -> list[dict]:
    return ms.find(store.PAYMENT_INTENTS, query, projection={
        "amount": 1, "currency": 1, "status": 1, "created": 1, "livemode": 1, "latest_charge": 1})


def _payments(src: Source, query: dict) -> list[_Payment]:
    p = src.schema.payments
    fields = ("paymentId", "amount", "currency", "status", "customerEmail", "createdAt", "completedAt", "refundedAt")
    docs = src.find("payments", query, projection={p[f]: 1 for f in fields})

    def get(doc: dict, ours: str):
        value: Any = doc
        for part in p[ours].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return [_Payment(d["_id"], get(d, "paymentId"), get(d, "amount"), get(d, "currency"), get(d, "status"),
                     get(d, "customerEmail"), get(d, "createdAt"), get(d, "completedAt"), get(d, "refundedAt"))
            for d in docs]


def _refunds(ms: MirrorStore, pis: dict[str, dict]) -> dict[str, dict]:
    """Succeeded refunds per PaymentIntent id: ``{"amount", "latest", "count"}``.

    A refund names its PaymentIntent, or only its charge (older API versions,
    localstripe): those are matched through the PaymentIntent's latest charge.
    """
    by_charge = {pi["latest_charge"]: pid for pid, pi in pis.items() if pi.get("latest_charge")}
    found: dict[str, dict] = {}
    seen: set[str] = set()
    queries = [{"payment_intent": {"$in": chunk}} for chunk in _chunks(list(pis))]
    queries += [{"charge": {"$in": chunk}} for chunk in _chunks(list(by_charge))]
    for query in queries:
        for r in ms.find(store.REFUNDS, {**query, "status": "succeeded"},
                         projection={"amount": 1, "created": 1, "payment_intent": 1, "charge": 1}):
            if r["_id"] in seen:
                continue
            seen.add(r["_id"])
            pid = r.get("payment_intent") or by_charge.get(r.get("charge"))
            if pid not in pis:
                continue
            entry = found.setdefault(pid, {"amount": 0, "latest": None, "count": 0})
            entry["amount"] += int(r.get("amount") or 0)
            entry["count"] += 1
            created = r.get("created")
            if created and (entry["latest"] is None or created > entry["latest"]):
                entry["latest"] = created
    return found


def _enrollments(src: Source, payment_oids: list) -> dict[Any, list[dict]]:
    e = src.schema.enrollments
    out: dict[Any, list[dict]] = {}
    for chunk in _chunks(payment_oids):
        for d in src.find("enrollments", {e["paymentId"]: {"$in": chunk}},
                          projection={e["paymentId"]: 1, e["status"]: 1, e["paymentStatus"]: 1}):
            out.setdefault(d.get(e["paymentId"]), []).append({"_id": d["_id"], "status": d.get(e["status"])})
    return out


def _minor_units(value: Any) -> int | None:
    """An amount in minor units as an int, whatever BSON number type holds it."""
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return int(number) if number == number.to_integral_value() else None


def reconcile(src: Source, ms: MirrorStore, window: Window, at: datetime | None = None, *,
              grace: timedelta = timedelta(minutes=30), mask: bool = True) -> dict:
    """Every mismatch between the mirror and the platform for payments created in ``window``."""
    at = utc(at) if at else datetime.now(timezone.utc)
    cover = coverage(ms)
    if cover["start"] is None or cover["end"] is None:
        return {"available": False, "reason": "the Stripe mirror has not completed a sync yet",
                "window": {"start": iso(window.start), "end": iso(window.end)}, "mismatches": [], "by_kind": {}}
    start = max(window.start, utc(cover["start"]))
    end = min(window.end, utc(cover["end"]), at)
    checked = Window(start, max(start, end))
    schema = src.schema

    # Both sides of the window, then each side's strays looked up on the other side by id
    # (a payment created a second before the window in one system and after it in the other).
    pis = {pi["_id"]: pi for pi in _mirror_pis(ms, {"created": checked.range()})}
    payments = _payments(src, valid_filter("payments", schema, checked.range()))
    by_pi = {pay.payment_id: pay for pay in payments if pay.payment_id}
    strays = [pid for pid in pis if pid not in by_pi]
    for chunk in _chunks(strays):
        for pay in _payments(src, {**valid_filter("payments", schema), schema.payments["paymentId"]: {"$in": chunk}}):
            by_pi.setdefault(pay.payment_id, pay)
    unknown = [pay.payment_id for pay in payments if pay.payment_id and pay.payment_id not in pis]
    for chunk in _chunks(unknown):
        for pi in _mirror_pis(ms, {"_id": {"$in": chunk}}):
            pis.setdefault(pi["_id"], pi)

    refunds = _refunds(ms, pis)
    enrollments = _enrollments(src, [pay.oid for pay in by_pi.values()] + [pay.oid for pay in payments if not pay.payment_id])
    fixes = _Fixes(schema)
    mismatches: list[dict] = []

    def add(kind: str, pi: dict | None, pay: _Payment | None, since: datetime | None, detail: str) -> None:
        refund = refunds.get((pi or {}).get("_id"), {})
        fix, command = fixes.command(kind, pi, pay, refund.get("latest"))
        enr = enrollments.get(pay.oid, []) if pay else []
        since = utc(since) if since else None
        pid = (pi or {}).get("_id") or (pay.payment_id if pay else None)
        mismatches.append({
            "kind": kind, "title": KINDS[kind], "detail": detail,
            "payment_intent": pid, "payment_id": str(pay.oid) if pay else None,
            "enrollment_ids": [str(x["_id"]) for x in enr],
            "stripe_status": (pi or {}).get("status"), "db_status": pay.status if pay else None,
            "enrollment_status": ", ".join(sorted({str(x["status"]) for x in enr})) or None,
            "stripe_amount": (pi or {}).get("amount"), "db_amount": pay.amount if pay else None,
            "currency": (pi or {}).get("currency") or (pay.currency if pay else None),
            "db_currency": pay.currency if pay else None,
            "refunded_amount": refund.get("amount", 0),
            "customer": (mask_email(pay.email) if mask else pay.email) if pay else None,
            "created": iso((pi or {}).get("created") or (pay.created if pay else None)),
            "since": iso(since),
            "persisting": since is not None and since <= at - grace,
            "stripe_url": dashboard_url("payment_intent", pid, (pi or {}).get("livemode")),
            "fix": fix, "fix_command": command,
        })

    pairs: dict[str, tuple[dict | None, _Payment | None]] = {pid: (pi, by_pi.get(pid)) for pid, pi in pis.items()}
    for pay in payments:
        key = pay.payment_id or f"db:{pay.oid}"
        pairs.setdefault(key, (pis.get(pay.payment_id), pay))

    for pid, (pi, pay) in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        stripe_ok = pi is not None and pi.get("status") == "succeeded"
        db_ok = pay is not None and pay.status in SUCCEEDED_STATUSES
        refund = refunds.get(pid, {})
        refunded_in_stripe = stripe_ok and refund.get("amount", 0) >= int(pi.get("amount") or 0) > 0
        if not stripe_ok:
            if db_ok:
                state = f"Stripe status {pi.get('status')}" if pi else "not found in Stripe"
                add("not_succeeded_in_stripe", pi, pay, pay.completed or pay.created,
                    f"database status {pay.status}; {state}")
            continue
        if pay is None:
            add("missing_in_db", pi, None, pi["created"], "no payment record with this PaymentIntent id")
            continue
        if not db_ok:
            add("not_completed_in_db", pi, pay, pi["created"], f"database status {pay.status}")
            continue
        if _minor_units(pay.amount) != pi.get("amount") or str(pay.currency or "").lower() != pi.get("currency"):
            add("amount_or_currency_mismatch", pi, pay, pi["created"],
                f"database {pay.amount} {pay.currency}, Stripe {pi.get('amount')} {pi.get('currency')}")
        if refunded_in_stripe and pay.status != "refunded":
            add("refunded_not_in_db", pi, pay, refund.get("latest") or pi["created"],
                f"{refund.get('count')} refund(s) of {refund.get('amount')} in Stripe; database status {pay.status}")
        if pay.status == "refunded" and not refund:
            add("refund_missing_in_stripe", pi, pay, pay.refunded or pay.completed or pay.created,
                "database status refunded; Stripe has no refund")
        refunded = refunded_in_stripe or pay.status == "refunded"
        active = any(x["status"] == "active" for x in enrollments.get(pay.oid, []))
        if refunded and active:
            add("refunded_enrollment_active", pi, pay, refund.get("latest") or pay.refunded or pi["created"],
                "the payment is refunded; the enrollment is active")
        elif not refunded and pay.status == "completed" and not active:
            statuses = sorted({str(x["status"]) for x in enrollments.get(pay.oid, [])})
            add("paid_no_active_enrollment", pi, pay, pay.completed or pi["created"],
                "enrollment " + (", ".join(statuses) if statuses else "missing"))

    by_kind = {kind: sum(1 for m in mismatches if m["kind"] == kind) for kind in KINDS}
    return {
        "available": True,
        "window": {"start": iso(window.start), "end": iso(window.end)},
        "checked": {"start": iso(checked.start), "end": iso(checked.end)},
        "coverage": {"start": iso(cover["start"]), "end": iso(cover["end"])},
        "stripe_payment_intents": len(pis),
        "db_payments": len(payments),
        "matched": sum(1 for pi, pay in pairs.values() if pi is not None and pay is not None),
        "mismatches": mismatches,
        "by_kind": {k: v for k, v in by_kind.items() if v},
        "persisting": sum(1 for m in mismatches if m["persisting"]),
        "grace_minutes": grace.total_seconds() / 60,
    }


def persistent_mismatch_count(src: Source, ms: MirrorStore, at: datetime, *, window: timedelta = timedelta(hours=24),
                              grace: timedelta = timedelta(minutes=30)) -> int | None:
    """Mismatches older than the grace period over the last ``window`` (the reconciliation rule).

    ``None`` when the mirror has not completed a sync (unknown, never "all clear").
    """
    result = reconcile(src, ms, Window(at - window, at), at, grace=grace)
    return result["persisting"] if result["available"] else None


def rows_for_export(mismatches: Iterable[dict]) -> list[dict]:
    """Flat rows for CSV (the caller neutralises spreadsheet formulas)."""
    columns = ("kind", "title", "detail", "payment_intent", "payment_id", "stripe_status", "db_status",
               "enrollment_status", "stripe_amount", "db_amount", "currency", "db_currency", "refunded_amount",
               "customer", "created", "since", "persisting", "stripe_url", "fix", "fix_command")
    return [{c: m.get(c) for c in columns} for m in mismatches]
