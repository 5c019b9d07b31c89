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
``refund_missing_in_stripe``      refunded in the database, no refund at all in Stripe
``refund_pending_in_stripe``      refunded in the database, Stripe's refund still pending or requiring action
``refund_failed_in_stripe``       refunded in the database, Stripe's refund failed or was canceled
``refunded_enrollment_active``    refunded, the enrollment is still active
``paid_no_active_enrollment``     paid and completed, no active enrollment

The window is cut to what the mirror covers: from its first sync's backfill
start to the start of its last complete sync (``synced_through``), so a
payment made since the last sync is not reported as missing from Stripe.
Each mismatch says since when it holds (for a payment Stripe shows as
succeeded: since it succeeded, not since it was created, so a 3-D Secure or
delayed payment gets the whole grace period); one older than the grace period
(``reconcile_grace_minutes``, webhooks and retries usually settle well within
it) is ``persisting``, which is what the alert rule counts.

Each mismatch also says what to check first, and its proposed fix is safe to
paste (``docs/stripe.md``, "How each proposed fix was made safe"):

* a database fix is an ``updateOne`` keyed by ``paymentId`` (the enrollment's
  ``paymentId`` for an enrollment), whose filter also holds the values the
  mismatch was found on, so running it twice, or after the platform fixed
  the record itself, changes nothing; a missing record is an upsert with
  ``$setOnInsert`` only, never an insert, and carries every field the spec
  needs, each from Stripe's objects;
* a Stripe call that moves money (a refund) is proposed only when Stripe
  shows no refund at all for the payment, and carries an ``Idempotency-Key``
  derived from the PaymentIntent, so pasting it twice refunds once;
* where no command is safe (a refund still in progress, a PaymentIntent
  still processing) the command is a comment saying why.
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
from metrics.stripe.metrics import RETENTION_WARN_DAYS, dashboard_url, webhook_health
from metrics.stripe.store import EVENTS_KEEP_DAYS
from metrics.stripe.store import MirrorStore
from metrics.windows import Window, iso, parse_instant, utc

BATCH = 500

KINDS: dict[str, str] = {
    "missing_in_db": "Succeeded in Stripe, missing in the database",
    "not_completed_in_db": "Succeeded in Stripe, not completed in the database",
    "not_succeeded_in_stripe": "Completed in the database, not succeeded in Stripe",
    "amount_or_currency_mismatch": "Amount or currency differs",
    "refunded_not_in_db": "Refunded in Stripe, not in the database",
    "refund_missing_in_stripe": "Refunded in the database, no refund in Stripe",
    "refund_pending_in_stripe": "Refunded in the database, refund still in progress in Stripe",
    "refund_failed_in_stripe": "Refunded in the database, refund failed in Stripe",
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
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_js(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Decimal128):
        return f'NumberDecimal("{value}")'
    return json.dumps(value)


# Refund statuses (API 2026-10-28): succeeded moved the money; pending and requires_action are on
# their way (requires_action: the customer must give Stripe details); failed and canceled did not.
REFUND_IN_PROGRESS = ("pending", "requires_action")
REFUND_FAILED = ("failed", "canceled")
# PaymentIntent statuses after which no success will come without a new attempt.
PI_FINAL_FAILURE = ("canceled", "requires_payment_method")


@dataclass
class Fix:
    """What to check first, what to do, and the command to paste (its statements, and as text)."""

    check_first: str
    fix: str
    command: str


def _comment(*lines: str) -> str:
    return "\n".join(f"// {line}" for line in lines)


class _Fixes:
    """The runbook's fixes for one schema, with real collection and field names, each safe to paste."""

    def __init__(self, schema: Schema):
        self.p, self.e = schema.payments, schema.enrollments

    def _update(self, collection: str, where: dict, update: dict, upsert: bool = False) -> str:
        options = ', {"upsert": true}' if upsert else ""
        return f"db.{collection}.updateOne({_js(where)}, {_js(update)}{options})"

    def _payment(self, pid: str, was: dict, sets: dict) -> str:
        """``$set`` on the payment with this PaymentIntent id, only while it still holds ``was``."""
        where = {self.p["paymentId"]: pid, **{self.p[k]: v for k, v in was.items()}}
        return self._update(self.p.name, where, {"$set": {self.p[k]: v for k, v in sets.items() if v is not None}})

    def _enrollment(self, payment_oid: Any, was_status: str | None, sets: dict) -> str:
        where = {self.e["paymentId"]: payment_oid}
        if was_status is not None:
            where[self.e["status"]] = was_status
        return self._update(self.e.name, where, {"$set": {self.e[k]: v for k, v in sets.items() if v is not None}})

    def build(self, kind: str, pi: dict | None, pay: "_Payment | None", facts: dict, mask: bool) -> Fix:
        pid = (pi or {}).get("_id") or (pay.payment_id if pay else None)
        oid = pay.oid if pay else None
        enrollment = facts.get("enrollment")  # the payment's one enrollment status, None if none or several
        succeeded_at = facts.get("succeeded_at")
        if kind == "missing_in_db":
            return self._missing(pid, pi, facts, mask)
        if kind == "not_completed_in_db":
            cmd = self._payment(pid, {"status": pay.status}, {"status": "completed", "completedAt": succeeded_at})
            if enrollment is not None:
                cmd += "\n" + self._enrollment(oid, enrollment, {"status": "active", "paymentStatus": "paid"})
            return Fix(f"The platform's webhook log for {facts.get('event_id') or 'the payment_intent.succeeded event'}: "
                       "a webhook that failed or is still being retried explains it.",
                       "Mark the payment completed (the runbook's dbPayment.status = 'completed'), then activate its "
                       "enrollment" + ("." if enrollment is not None else " (none found: create it in the platform)."),
                       cmd)
        if kind == "not_succeeded_in_stripe":
            status = (pi or {}).get("status")
            if pi is not None and status not in PI_FINAL_FAILURE:
                return Fix(f"Open the PaymentIntent in Stripe: it is {status}, so the money may still come "
                           "(3-D Secure, a delayed payment method).",
                           "Wait for Stripe to finish; change nothing while the PaymentIntent is in progress.",
                           _comment(f"nothing to run: {pid} is {status} in Stripe, not failed.",
                                    "Re-run the reconciliation once Stripe has settled it."))
            failed = "canceled" if status == "canceled" else "failed"
            code = ((pi or {}).get("last_payment_error") or {}).get("decline_code") or \
                ((pi or {}).get("last_payment_error") or {}).get("code")
            cmd = self._payment(pid, {"status": pay.status}, {"status": failed, "failureCode": code})
            if enrollment is not None:
                cmd += "\n" + self._enrollment(oid, enrollment, {"status": "pending", "paymentStatus": "failed"})
            where = ("not in this Stripe account: check the other mode (test or live) and account first"
                     if pi is None else f"{status} in Stripe")
            return Fix(f"Confirm the PaymentIntent is {where}; check the customer was not charged by another "
                       "PaymentIntent before failing this one.",
                       "Stripe has no successful charge for this payment: mark it failed and suspend the enrollment.",
                       cmd)
        if kind == "amount_or_currency_mismatch":
            cmd = self._payment(pid, {"amount": pay.amount, "currency": pay.currency},
                                {"amount": pi.get("amount"), "currency": pi.get("currency")})
            return Fix("Compare with the price the platform shows for the service: if the database is right, the "
                       "customer was charged the wrong amount (refund the difference in the Stripe Dashboard).",
                       "Stripe is the record of what was charged: correct the payment's amount and currency to Stripe's.",
                       cmd)
        if kind == "refunded_not_in_db":
            when = facts.get("refunded_at")
            cmd = self._payment(pid, {"status": pay.status}, {"status": "refunded", "refundedAt": when})
            if enrollment is not None:
                cmd += "\n" + self._enrollment(oid, enrollment, {"status": "refunded", "paymentStatus": "refunded",
                                                                 "refundedAt": when})
            return Fix(f"Who refunded it in Stripe ({', '.join(facts.get('refund_ids') or []) or 'the refund'}): "
                       "a refund made in the Dashboard skips the platform.",
                       "Record the refund as the runbook's \"Process Refund Manually\" steps 4 and 5 do.", cmd)
        if kind == "refund_missing_in_stripe":
            key = f"paywatch-refund-{pid}"
            return Fix("Confirm in the Stripe Dashboard that the payment has no refund at all (pending ones "
                       "included) and that a refund was really promised; the key must be a secret key allowed to "
                       "refund (Paywatch's is read-only).",
                       "The customer may not have their money back: issue the refund in Stripe (the runbook's "
                       "step 3), or, if no refund was due, set the payment back to completed. The Idempotency-Key "
                       "makes a second paste return the first refund instead of refunding twice (Stripe keeps "
                       "keys 24 hours).",
                       f'curl https://api.stripe.com/v1/refunds -u "$STRIPE_SECRET_KEY:" '
                       f'-H "Idempotency-Key: {key}" -d payment_intent={pid}')
        if kind == "refund_pending_in_stripe":
            ids = ", ".join(facts.get("refund_ids") or []) or "the refund"
            return Fix(f"Open {ids} in Stripe: pending refunds settle by themselves; requires_action means the "
                       "customer must give Stripe the details it asked for.",
                       "Do not refund again: Stripe already has a refund on its way. Nothing to change unless it fails.",
                       _comment(f"nothing to run: {ids} is {facts.get('refund_status')} in Stripe.",
                                "A new refund now would refund twice."))
        if kind == "refund_failed_in_stripe":
            ids = ", ".join(facts.get("refund_ids") or []) or "the refund"
            return Fix(f"Open {ids} in Stripe and read its failure reason ({facts.get('failure_reason') or 'none given'}): "
                       "the customer has not got the money back.",
                       "Contact the customer and refund again in the Stripe Dashboard once the cause is fixed (a new "
                       "card, bank details); the database stays refunded.",
                       _comment(f"nothing to run: {ids} {facts.get('refund_status')} in Stripe; "
                                "a refund is a decision for a person, in the Dashboard."))
        if kind == "refunded_enrollment_active":
            return Fix("Whether the customer was given access again on purpose (a goodwill gesture).",
                       "Close the enrollment as the runbook's \"Process Refund Manually\" step 5 does.",
                       self._enrollment(oid, "active", {"status": "refunded", "paymentStatus": "refunded",
                                                        "refundedAt": facts.get("refunded_at") or (pay.refunded if pay else None)}))
        if kind == "paid_no_active_enrollment":
            if enrollment is None:
                return Fix("Whether the enrollment exists under another payment (a retried checkout) before creating one.",
                           "The customer paid but cannot access the course: create the enrollment in the platform "
                           "(Stripe does not know the service).",
                           _comment("nothing to run here: no single enrollment of this payment to activate.",
                                    f"Payment _id {oid}."))
            return Fix("Whether the enrollment was cancelled on purpose (a customer who asked to stop).",
                       "The customer paid but cannot access the course: activate the enrollment.",
                       self._enrollment(oid, enrollment, {"status": "active", "paymentStatus": "paid"}))
        raise ValueError(kind)

    def _missing(self, pid: str, pi: dict, facts: dict, mask: bool) -> Fix:
        email = facts.get("email")
        fields = {"paymentId": pid, "amount": pi.get("amount"), "currency": pi.get("currency"), "status": "completed",
                  "customerId": pi.get("customer"), "customerEmail": None if mask else email,
                  "createdAt": pi.get("created"), "completedAt": facts.get("succeeded_at"),
                  "stripeEventId": facts.get("event_id")}
        insert = {self.p[k]: v for k, v in fields.items() if v is not None}
        cmd = self._update(self.p.name, {self.p["paymentId"]: pid}, {"$setOnInsert": insert}, upsert=True)
        check = (f"The platform's webhook log for {facts.get('event_id') or 'the payment_intent.succeeded event'} "
                 "(a failed or retried webhook), and whether a record holds this PaymentIntent under another field.")
        notes = []
        if email and mask:
            notes.append("customerEmail is left out because emails are masked here: PAYWATCH_MASK_EMAILS=false "
                         "python -m metrics reconcile prints it filled in from Stripe.")
        elif not email:
            notes.append("Stripe has no receipt or billing email for it: customerEmail is left out.")
        if not facts.get("event_id"):
            # The guide's unique index on stripeEventId would collide on the second record without one.
            return Fix(check + " Its payment_intent.succeeded event is not in the mirror: find its id in the Stripe "
                       "Dashboard (Developers → Events) and add it as stripeEventId before running the command.",
                       "Create the missing payment record (the runbook's reconcile-payments.js), then create or "
                       "activate the customer's enrollment in the platform.",
                       _comment("stripeEventId unknown: add it, then remove the // to run:", cmd))
        return Fix(check, "Create the missing payment record as the runbook's reconcile-payments.js does (an upsert: "
                   "nothing happens if it exists by now), then create or activate the customer's enrollment in the "
                   "platform." + (" " + " ".join(notes) if notes else ""), cmd)


def coverage(ms: MirrorStore) -> dict:
    """What the mirror can vouch for: ``{"start", "end"}`` (``None`` before a complete sync)."""
    state = ms.find_one(store.SYNC_STATE, {"_id": "payment_intents"}) or {}
    run = ms.find_one(store.SYNC_RUNS, {"ok": True, "synced_through": {"$ne": None}}, sort=[("started_at", -1)])
    return {"start": state.get("coverage_start"), "end": run["synced_through"] if run else None}


def _mirror_pis(ms: MirrorStore, query: dict) -> list[dict]:
    return ms.find(store.PAYMENT_INTENTS, query, projection={
        "amount": 1, "currency": 1, "status": 1, "created": 1, "livemode": 1, "latest_charge": 1, "customer": 1,
        "email": 1, "last_payment_error": 1, "as_of": 1})


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


def _charges(ms: MirrorStore, pis: dict[str, dict]) -> dict[str, dict]:
    """Every mirrored charge of these PaymentIntents (by ``payment_intent`` or as their latest charge)."""
    found: dict[str, dict] = {}
    latest = [pi["latest_charge"] for pi in pis.values() if pi.get("latest_charge")]
    queries = [{"payment_intent": {"$in": chunk}} for chunk in _chunks(list(pis))]
    queries += [{"_id": {"$in": chunk}} for chunk in _chunks(latest)]
    for query in queries:
        for c in ms.find(store.CHARGES, query, projection={"payment_intent": 1, "created": 1, "status": 1, "email": 1}):
            found[c["_id"]] = c
    return found


def _succeeded_events(ms: MirrorStore, pids: list[str]) -> dict[str, dict]:
    """The first ``payment_intent.succeeded`` event of each PaymentIntent: when it succeeded, and its id."""
    out: dict[str, dict] = {}
    for chunk in _chunks(pids):
        for ev in ms.find(store.EVENTS, {"object_id": {"$in": chunk}, "type": "payment_intent.succeeded"},
                          sort=[("created", 1)], projection={"object_id": 1, "created": 1}):
            out.setdefault(ev["object_id"], ev)
    return out


def _refunds(ms: MirrorStore, pis: dict[str, dict], charges: dict[str, dict]) -> dict[str, dict]:
    """Refunds per PaymentIntent id, every status: ``{"amount", "latest", "count"}`` for the succeeded
    ones, and ``in_progress`` / ``failed`` lists of the others.

    A refund names its PaymentIntent, or only its charge (older API versions,
    localstripe): those are matched through the mirrored charges and each
    PaymentIntent's latest charge.
    """
    by_charge = {cid: c.get("payment_intent") for cid, c in charges.items() if c.get("payment_intent") in pis}
    by_charge.update({pi["latest_charge"]: pid for pid, pi in pis.items() if pi.get("latest_charge")})
    found: dict[str, dict] = {}
    seen: set[str] = set()
    queries = [{"payment_intent": {"$in": chunk}} for chunk in _chunks(list(pis))]
    queries += [{"charge": {"$in": chunk}} for chunk in _chunks(list(by_charge))]
    for query in queries:
        for r in ms.find(store.REFUNDS, query, projection={"amount": 1, "created": 1, "payment_intent": 1, "charge": 1,
                                                           "status": 1, "failure_reason": 1}):
            if r["_id"] in seen:
                continue
            seen.add(r["_id"])
            pid = r.get("payment_intent") or by_charge.get(r.get("charge"))
            if pid not in pis:
                continue
            entry = found.setdefault(pid, {"amount": 0, "latest": None, "count": 0, "in_progress": [], "failed": [],
                                           "ids": []})
            entry["ids"].append(r["_id"])
            if r.get("status") in REFUND_IN_PROGRESS:
                entry["in_progress"].append(r)
                continue
            if r.get("status") != "succeeded":
                entry["failed"].append(r)
                continue
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


def _latest(*whens: datetime | None) -> datetime | None:
    """The latest of the instants given (``None`` ones skipped), in UTC."""
    known = [utc(w) for w in whens if w is not None]
    return max(known) if known else None


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

    charges = _charges(ms, pis)
    refunds = _refunds(ms, pis, charges)
    succeeded_events = _succeeded_events(ms, [pid for pid, pi in pis.items() if pi.get("status") == "succeeded"])
    enrollments = _enrollments(src, [pay.oid for pay in by_pi.values()] + [pay.oid for pay in payments if not pay.payment_id])
    fixes = _Fixes(schema)
    mismatches: list[dict] = []

    def succeeded_at(pi: dict) -> datetime | None:
        """When Stripe says it succeeded: its payment_intent.succeeded event, else its latest charge,
        else when the mirror first saw it succeeded; never its creation (3-D Secure can take an hour)."""
        event = succeeded_events.get(pi["_id"])
        if event:
            return event["created"]
        charge = charges.get(pi.get("latest_charge") or "")
        if charge and charge.get("status") == "succeeded" and charge.get("created"):
            return charge["created"]
        if isinstance(pi.get("as_of"), (int, float)):
            return datetime.fromtimestamp(pi["as_of"], timezone.utc)
        return pi.get("created")

    def add(kind: str, pi: dict | None, pay: _Payment | None, since: datetime | None, detail: str) -> None:
        pid = (pi or {}).get("_id") or (pay.payment_id if pay else None)
        refund = refunds.get(pid, {})
        enr = enrollments.get(pay.oid, []) if pay else []
        charge = charges.get((pi or {}).get("latest_charge") or "", {})
        unsettled = refund.get("in_progress") or refund.get("failed") or []
        facts = {
            "succeeded_at": succeeded_at(pi) if pi and pi.get("status") == "succeeded" else None,
            "event_id": (succeeded_events.get(pid) or {}).get("_id"),
            "email": (pi or {}).get("email") or charge.get("email"),
            "enrollment": enr[0]["status"] if len(enr) == 1 else None,
            "refunded_at": refund.get("latest"), "refund_ids": refund.get("ids"),
            "refund_status": ", ".join(sorted({str(r.get("status")) for r in unsettled})) or None,
            "failure_reason": ", ".join(sorted({str(r["failure_reason"]) for r in unsettled if r.get("failure_reason")})) or None,
        }
        fix = fixes.build(kind, pi, pay, facts, mask)
        since = utc(since) if since else None
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
            "check_first": fix.check_first, "fix": fix.fix, "fix_command": fix.command,
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
        success = succeeded_at(pi)
        if pay is None:
            add("missing_in_db", pi, None, success, "no payment record with this PaymentIntent id")
            continue
        if not db_ok:
            add("not_completed_in_db", pi, pay, success, f"database status {pay.status}")
            continue
        if _minor_units(pay.amount) != pi.get("amount") or str(pay.currency or "").lower() != pi.get("currency"):
            add("amount_or_currency_mismatch", pi, pay, success,
                f"database {pay.amount} {pay.currency}, Stripe {pi.get('amount')} {pi.get('currency')}")
        if refunded_in_stripe and pay.status != "refunded":
            add("refunded_not_in_db", pi, pay, refund.get("latest") or success,
                f"{refund.get('count')} refund(s) of {refund.get('amount')} in Stripe; database status {pay.status}")
        if pay.status == "refunded" and not refund.get("count"):
            db_since = pay.refunded or pay.completed or pay.created
            if refund.get("in_progress"):
                r = max(refund["in_progress"], key=lambda x: x.get("created") or at)
                add("refund_pending_in_stripe", pi, pay, _latest(r.get("created"), db_since),
                    f"database status refunded; Stripe's refund {r['_id']} has status {r.get('status')}")
            elif refund.get("failed"):
                r = max(refund["failed"], key=lambda x: x.get("created") or at)
                add("refund_failed_in_stripe", pi, pay, _latest(r.get("created"), db_since),
                    f"database status refunded; Stripe's refund {r['_id']} has status {r.get('status')}"
                    + (f" ({r['failure_reason']})" if r.get("failure_reason") else ""))
            else:
                add("refund_missing_in_stripe", pi, pay, db_since, "database status refunded; Stripe has no refund")
        refunded = refunded_in_stripe or pay.status == "refunded"
        active = any(x["status"] == "active" for x in enrollments.get(pay.oid, []))
        if refunded and active:
            add("refunded_enrollment_active", pi, pay, refund.get("latest") or pay.refunded or success,
                "the payment is refunded; the enrollment is active")
        elif not refunded and pay.status == "completed" and not active:
            statuses = sorted({str(x["status"]) for x in enrollments.get(pay.oid, [])})
            add("paid_no_active_enrollment", pi, pay, _latest(pay.completed, success),
                "enrollment " + (", ".join(statuses) if statuses else "missing"))

    by_kind = {kind: sum(1 for m in mismatches if m["kind"] == kind) for kind in KINDS}
    mismatched = {m["payment_intent"] for m in mismatches}
    return {
        "available": True,
        "window": {"start": iso(window.start), "end": iso(window.end)},
        "checked": {"start": iso(checked.start), "end": iso(checked.end)},
        "coverage": {"start": iso(cover["start"]), "end": iso(cover["end"])},
        "stripe_payment_intents": len(pis),
        "db_payments": len(payments),
        # Pairs found on both sides that agree (a pair with a mismatch is not "matched").
        "matched": sum(1 for key, (pi, pay) in pairs.items() if pi is not None and pay is not None
                       and key not in mismatched),
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


def retention_risk(src: Source, ms: MirrorStore, at: datetime, *, grace: timedelta = timedelta(minutes=30),
                   mask: bool = True) -> dict:
    """What is about to leave Stripe's 30 days of events (the retention rule).

    Stripe keeps events 30 days (https://docs.stripe.com/api/events): after
    that an event can be neither listed nor resent.  Counted here, once older
    than 25 days (``RETENTION_WARN_DAYS``):

    * ``mismatches``: unreconciled mismatches of payments created 25 to 30
      days ago that have held for more than 25 days, whose events (the
      ``payment_intent.succeeded`` or ``charge.refunded`` that would have
      fixed the record) are about to go;
    * ``events``: events Stripe has still not delivered, created 25 to 30 days
      ago, with the command to resend each before it goes.

    The monthly review's reconciliation reads PaymentIntents and Charges,
    which Stripe keeps for good, so a mismatch older than 30 days is still
    found there; only replaying its events becomes impossible.
    ``available: False`` before the mirror's first complete sync.
    """
    at = utc(at)
    keep, warn = timedelta(days=EVENTS_KEEP_DAYS), timedelta(days=RETENTION_WARN_DAYS)
    result = reconcile(src, ms, Window(at - keep, at - warn), at, grace=grace, mask=mask)
    if not result["available"]:
        return {"available": False, "reason": result["reason"], "count": None, "mismatches": [], "events": []}
    old = [{**m, "events_expire_at": iso(parse_instant(m["since"]) + keep)} for m in result["mismatches"]
           if m["since"] and parse_instant(m["since"]) < at - warn]
    health = webhook_health(ms, at, limit=500)
    events = [e for e in health["events"] if parse_instant(e["created"]) < at - warn] if health["available"] else []
    for e in events:
        e["commands"] = [r["command"] for r in health["replay"] if r["event"] == e["id"]]
    return {"available": True, "reason": None, "count": len(old) + len(events), "mismatches": old, "events": events,
            "warn_days": RETENTION_WARN_DAYS, "keep_days": EVENTS_KEEP_DAYS}


def retention_risk_count(src: Source, ms: MirrorStore, at: datetime, *,
                         grace: timedelta = timedelta(minutes=30)) -> int | None:
    """Mismatches and undelivered events older than 25 days (the retention rule); ``None`` when unknown."""
    return retention_risk(src, ms, at, grace=grace)["count"]


def rows_for_export(mismatches: Iterable[dict]) -> list[dict]:
    """Flat rows for CSV (the caller neutralises spreadsheet formulas)."""
    columns = ("kind", "title", "detail", "payment_intent", "payment_id", "stripe_status", "db_status",
               "enrollment_status", "stripe_amount", "db_amount", "currency", "db_currency", "refunded_amount",
               "customer", "created", "since", "persisting", "stripe_url", "check_first", "fix", "fix_command")
    return [{c: m.get(c) for c in columns} for m in mismatches]
