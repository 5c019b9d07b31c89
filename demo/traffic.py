"""Live traffic: the simulated platform keeps taking payments, so the numbers move.

Each payment is a little timeline drawn when the customer arrives::

    t0          payment "pending" + enrollment pending/pending
    t0+0.2-0.6s payment "processing"
    t0+0.5-3s   payment "completed" (or "failed", about 3 %)
      +50-800ms   Stripe's webhook arrives ("received"), then is handled
                  100-3000 ms later ("processed", rarely "failed")
      +0.2-1.5s   enrollment active/paid, then the confirmation email 0.5-4 s later

``tick(now)`` carries out every step due by ``now`` and writes it with its
own timestamp, so a step due after ``now`` waits for a later tick: status
moves across ticks, while the recorded durations stay realistic whatever the
tick interval.

``inject(db, schema, kind, now)`` writes an incident at once (what ``python
-m demo incident KIND`` does).  A webhook outage is a switch in the
``demo_control`` collection of the platform database, so the ``run`` loop of
another process honours it: no webhook arrives until ``until``, then Stripe's
retries arrive late.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Callable

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.database import Database

from demo.catalog import (
    CONTROL_COLLECTION, SPIKE_SERVICES, UTC, WEBHOOK_ERRORS, WEBHOOK_OUTAGE_ID, Builder, Customers, Ledger,
    activation_delay, charge_amount, confirm_delay, delivery_lag, email_delay, enrollment_outcome,
    handling_time, ms, pick_currency, pick_decline, pick_service, poisson, stripe_id,
)
from metrics.schema import SUCCEEDED_STATUSES, Schema
from metrics.windows import utc

log = logging.getLogger(__name__)

# About twice the history's busiest hours: enough that the dashboard moves between refreshes
# without live traffic drowning the 24 h comparisons against the seeded history.
DEFAULT_RATE_PER_MIN = 1.0
FAILURE_RATE = 0.03
MAX_CATCH_UP = timedelta(seconds=60)  # after a pause (laptop asleep) do not invent a rush
ADOPT_WITHIN = timedelta(minutes=10)  # an earlier run's unfinished payments younger than this are finished


class LiveTraffic:
    """Writes new payments, webhook events and enrollments as the platform would."""

    def __init__(self, db: Database, schema: Schema, rate_per_min: float = DEFAULT_RATE_PER_MIN,
                 rng_seed: int | None = None, failure_rate: float = FAILURE_RATE):
        if rate_per_min < 0:
            raise ValueError("rate_per_min must not be negative")
        self.db, self.schema = db, schema
        self.rate_per_min = rate_per_min
        self.failure_rate = failure_rate
        # A seed of its own: live ids must not repeat the history's (seeded with the same number).
        self.rng = random.Random(None if rng_seed is None else f"live-{rng_seed}")
        self.customers = Customers(self.rng)
        self.p, self.e, self.w = Builder(schema.payments), Builder(schema.enrollments), Builder(schema.webhook_events)
        self.payments = db[schema.payments.name]
        self.enrollments = db[schema.enrollments.name]
        self.events = db[schema.webhook_events.name]
        self.control = db[CONTROL_COLLECTION]
        self.stats: Counter = Counter()
        self._steps: list = []  # heap of (when, seq, step, args)
        self._seq = itertools.count()
        self._last: datetime | None = None
        self._outage: dict | None = None

    # --- the loop -------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> dict:
        """Start the payments that arrived since the last tick and carry out every step due by ``now``."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        before = Counter(self.stats)
        if self._last is None:
            self._adopt(now)
            since = now - timedelta(seconds=5)
        else:
            since = max(self._last, now - MAX_CATCH_UP)
        if now > since and self.rate_per_min > 0:
            seconds = (now - since).total_seconds()
            arrivals = poisson(self.rng, self.rate_per_min * seconds / 60)
            for offset in sorted(self.rng.uniform(0, seconds) for _ in range(arrivals)):
                self._at(since + timedelta(seconds=offset), self._create)
        self._outage = self.control.find_one({"_id": WEBHOOK_OUTAGE_ID})
        while self._steps and self._steps[0][0] <= now:
            when, _, step, args = heapq.heappop(self._steps)
            step(when, *args)
        self._last = now
        return dict(self.stats - before)

    def run(self, interval_s: float = 5, stop_event: threading.Event | None = None,
            on_tick: Callable[[dict], None] | None = None) -> None:
        """Tick every ``interval_s`` seconds until ``stop_event`` is set (or forever)."""
        stop = stop_event or threading.Event()
        next_log = time.monotonic() + 60
        while not stop.is_set():
            wrote = self.tick()
            if on_tick:
                on_tick(wrote)
            if time.monotonic() >= next_log:
                next_log += 60
                log.info("live traffic so far: %s", ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())))
            stop.wait(interval_s)

    @property
    def in_flight(self) -> int:
        """Steps scheduled but not yet due (0 once everything started has finished)."""
        return len(self._steps)

    def _at(self, when: datetime, step: Callable, *args) -> None:
        heapq.heappush(self._steps, (when, next(self._seq), step, args))

    def _adopt(self, now: datetime) -> None:
        """Finish what an earlier run (or the seed's last minutes) left in flight.

        Their steps are scheduled when they would have happened, so this
        tick writes them with realistic timestamps (a payment adopted a
        minute late must not show a minute of processing time).  Older
        unfinished payments are left alone: they are the stuck payments the
        runbook is about, and the history plants three on purpose.
        """
        p, w = self.schema.payments, self.schema.webhook_events
        recent = {"$gte": now - ADOPT_WITHIN, "$lt": now}
        for doc in self.payments.find({p["status"]: {"$in": ["pending", "processing"]}, p["createdAt"]: recent},
                                      {p["createdAt"]: 1}):
            created = utc(self.p.get(doc, "createdAt"))
            self._at(created + confirm_delay(self.rng), self._finish, doc["_id"],
                     self.rng.random() < self.failure_rate)
        for doc in self.events.find({w["status"]: "received", w["receivedAt"]: recent}, {w["receivedAt"]: 1}):
            received = utc(self.w.get(doc, "receivedAt"))
            self._at(received + handling_time(self.rng), self._handle, doc["_id"], False)

    # --- one payment's steps ----------------------------------------------------

    def _create(self, t0: datetime) -> None:
        rng = self.rng
        service, currency = pick_service(rng), pick_currency(rng)
        customer = self.customers.new()  # a new customer each time: no accidental duplicate enrollments
        payment_id = ObjectId()
        self.payments.insert_one(self.p(
            _id=payment_id, paymentId=stripe_id(rng, "pi_3"), amount=charge_amount(rng, service, currency),
            currency=currency, status="pending", **customer, specialistId=service.specialist_id,
            serviceId=service.id, createdAt=t0,
        ))
        self.enrollments.insert_one(self.e(
            customerId=customer["customerId"], specialistId=service.specialist_id, serviceId=service.id,
            paymentId=payment_id, status="pending", paymentStatus="pending", createdAt=t0 + ms(rng, 5, 80),
        ))
        self.stats["payments"] += 1
        self._at(t0 + ms(rng, 200, 600), self._processing, payment_id)
        self._at(t0 + confirm_delay(rng), self._finish, payment_id, rng.random() < self.failure_rate)

    def _processing(self, when: datetime, payment_id: ObjectId) -> None:
        self.payments.update_one({"_id": payment_id, self.p.name("status"): "pending"}, self.p.set(status="processing"))

    def _finish(self, when: datetime, payment_id: ObjectId, failed: bool) -> None:
        rng = self.rng
        event_id = stripe_id(rng, "evt_")
        if failed:
            code, message = pick_decline(rng)
            update = self.p.set(status="failed", failureCode=code, failureMessage=message, stripeEventId=event_id)
            event_type = "payment_intent.payment_failed"
            self._at(when + ms(rng, 200, 1500), self._enrollment_failed, payment_id)
            self.stats["failed"] += 1
        else:
            update = self.p.set(status="completed", completedAt=when, stripeEventId=event_id)
            event_type = "payment_intent.succeeded"
            self._at(when + activation_delay(rng), self._activate, payment_id)
            self.stats["completed"] += 1
        # Only a payment still in flight is finished (an incident may have touched it meanwhile).
        self.payments.update_one(
            {"_id": payment_id, self.p.name("status"): {"$in": ["pending", "processing"]}}, update)
        stripe_created = when + ms(rng, 0, 40)
        self._at(stripe_created + delivery_lag(rng), self._deliver, event_id, event_type, stripe_created, False)

    def _enrollment_failed(self, when: datetime, payment_id: ObjectId) -> None:
        status, payment_status = enrollment_outcome("failed", self.rng)
        self.enrollments.update_one({self.e.name("paymentId"): payment_id},
                                    self.e.set(status=status, paymentStatus=payment_status))

    def _activate(self, when: datetime, payment_id: ObjectId) -> None:
        self.enrollments.update_one({self.e.name("paymentId"): payment_id},
                                    self.e.set(status="active", paymentStatus="paid", activatedAt=when))
        self.stats["enrollments_activated"] += 1
        self._at(when + email_delay(self.rng), self._email, payment_id)

    def _email(self, when: datetime, payment_id: ObjectId) -> None:
        self.enrollments.update_one({self.e.name("paymentId"): payment_id},
                                    self.e.set(confirmationEmailSentAt=when))

    def _deliver(self, when: datetime, event_id: str, event_type: str, stripe_created: datetime, late: bool) -> None:
        since, until = self._outage_window()
        if since is not None and since <= when < until:
            # Our endpoint is down: Stripe retries, and the retry lands after it is back.
            retry = until + timedelta(seconds=self.rng.uniform(5, 120))
            self._at(retry, self._deliver, event_id, event_type, stripe_created, True)
            self.stats["webhooks_held"] += 1
            return
        doc_id = ObjectId()
        self.events.insert_one(self.w(
            _id=doc_id, eventId=event_id, type=event_type, stripeCreatedAt=stripe_created,
            receivedAt=when, status="received",
        ))
        self.stats["webhooks"] += 1
        took = ms(self.rng, 500, 6000) if late else handling_time(self.rng)
        self._at(when + took, self._handle, doc_id, late)

    def _outage_window(self) -> tuple[datetime | None, datetime | None]:
        """The current ``demo_control`` outage as aware UTC datetimes, or ``(None, None)``."""
        doc = self._outage or {}
        since, until = doc.get("since"), doc.get("until")
        if not isinstance(since, datetime) or not isinstance(until, datetime):
            return None, None
        return utc(since), utc(until)

    def _handle(self, when: datetime, doc_id: ObjectId, late: bool) -> None:
        if self.rng.random() < (0.12 if late else 0.003):
            update = self.w.set(status="failed", processedAt=when, error=self.rng.choice(WEBHOOK_ERRORS))
            self.stats["webhooks_failed"] += 1
        else:
            update = self.w.set(status="processed", processedAt=when)
        self.events.update_one({"_id": doc_id}, update)


# --- Incidents on demand --------------------------------------------------------

def _write(db: Database, schema: Schema, ledger: Ledger) -> dict:
    """Insert a ledger's documents; return how many of each."""
    counts = {}
    for key, docs in ledger.documents(schema).items():
        if docs:
            db[getattr(schema, key).name].insert_many(docs, ordered=False)
        counts[key] = len(docs)
    return counts


def _recent_times(rng: random.Random, now: datetime, n: int, minutes: float = 10) -> list[datetime]:
    """``n`` instants in the last ``minutes``, early enough that their whole story is before ``now``."""
    return sorted(now - timedelta(seconds=rng.uniform(20, minutes * 60)) for _ in range(n))


def inject_decline_spike(db: Database, schema: Schema, now: datetime, rng: random.Random, **_) -> dict:
    """Failed payments in the last 10 minutes: 15, or enough for the last hour to pass 35 % declines."""
    p = schema.payments
    hour = {p["createdAt"]: {"$gte": now - timedelta(hours=1), "$lt": now}}
    succeeded = db[p.name].count_documents({**hour, p["status"]: {"$in": list(SUCCEEDED_STATUSES)}})
    failed = db[p.name].count_documents({**hour, p["status"]: "failed"})
    needed = math.ceil((0.35 * (succeeded + failed) - failed) / 0.65)
    count = min(2000, max(15, needed))
    ledger = Ledger(rng, now)
    for created in _recent_times(rng, now, count):
        ledger.payment(created, "failed")
    return {"failed_payments": count, **_write(db, schema, ledger)}


def inject_amount_spike(db: Database, schema: Schema, now: datetime, rng: random.Random, **_) -> dict:
    """Six completed USD payments at 15x the list price of a dearer service, in the last 10 minutes."""
    ledger = Ledger(rng, now)
    for created in _recent_times(rng, now, 6):
        service = rng.choice(SPIKE_SERVICES)
        ledger.payment(created, "completed", service=service, currency="usd", amount=service.price("usd") * 15)
    return {"paymentIds": [r["paymentId"] for r in ledger.payments], **_write(db, schema, ledger)}


def inject_refund_wave(db: Database, schema: Schema, now: datetime, rng: random.Random, **_) -> dict:
    """Refund about 10 % (at least one) of the last 24 h's completed payments, in the last few minutes."""
    p, e, w = schema.payments, schema.enrollments, schema.webhook_events
    pb, eb, wb = Builder(p), Builder(e), Builder(w)
    day = {p["createdAt"]: {"$gte": now - timedelta(hours=24), "$lt": now}, p["status"]: "completed"}
    candidates = list(db[p.name].find(day, {"_id": 1, p["completedAt"]: 1}))
    chosen = rng.sample(candidates, min(len(candidates), max(1, round(0.10 * len(candidates)))))
    payment_ops, enrollment_ops, events = [], [], []
    for doc in chosen:
        refunded = now - timedelta(seconds=rng.uniform(5, 300))
        completed = pb.get(doc, "completedAt")
        if isinstance(completed, datetime):
            refunded = max(refunded, utc(completed) + timedelta(seconds=1))
        payment_ops.append(UpdateOne({"_id": doc["_id"]}, pb.set(status="refunded", refundedAt=refunded)))
        enrollment_ops.append(UpdateOne({e["paymentId"]: doc["_id"]}, eb.set(
            status="refunded", paymentStatus="refunded", refundedAt=refunded + ms(rng, 200, 2000))))
        received = refunded + delivery_lag(rng)
        events.append(wb(eventId=stripe_id(rng, "evt_"), type="charge.refunded", stripeCreatedAt=refunded,
                         receivedAt=received, processedAt=received + handling_time(rng), status="processed"))
    if chosen:
        db[p.name].bulk_write(payment_ops, ordered=False)
        db[e.name].bulk_write(enrollment_ops, ordered=False)
        db[w.name].insert_many(events, ordered=False)
    return {"refunded_payments": len(chosen), "of_completed_24h": len(candidates)}


def inject_webhook_outage(db: Database, schema: Schema, now: datetime, rng: random.Random,
                          minutes: float = 15, **_) -> dict:
    """The endpoint starts failing, then stops answering for ``minutes``.

    A few deliveries of the last three minutes fail; from ``now`` to
    ``until`` no webhook arrives (``LiveTraffic`` holds them and delivers
    them late afterwards).
    """
    until = now + timedelta(minutes=minutes)
    db[CONTROL_COLLECTION].replace_one({"_id": WEBHOOK_OUTAGE_ID}, {"since": now, "until": until}, upsert=True)
    wb = Builder(schema.webhook_events)
    events = []
    for _ in range(5):
        stripe_created = now - timedelta(seconds=rng.uniform(30, 180))
        received = stripe_created + delivery_lag(rng)
        events.append(wb(eventId=stripe_id(rng, "evt_"), type="payment_intent.succeeded",
                         stripeCreatedAt=stripe_created, receivedAt=received,
                         processedAt=received + ms(rng, 5000, 9000), status="failed",
                         error=rng.choice(WEBHOOK_ERRORS[:1] + WEBHOOK_ERRORS[3:])))
    db[schema.webhook_events.name].insert_many(events, ordered=False)
    return {"since": now, "until": until, "failed_webhook_events": len(events)}


INCIDENTS: dict[str, Callable[..., dict]] = {
    "decline-spike": inject_decline_spike,
    "webhook-outage": inject_webhook_outage,
    "refund-wave": inject_refund_wave,
    "amount-spike": inject_amount_spike,
}


class IncidentRotation:
    """Injects the incidents in turn while the demo runs, so alerts fire and resolve live.

    The first comes ``first`` after the start (so a new user sees an alert
    within minutes), then one every ``every``.  Each alert resolves once its
    incident has left the rule's window (an hour for most rules).
    """

    ORDER = ("decline-spike", "webhook-outage", "amount-spike", "refund-wave")

    def __init__(self, every: timedelta, first: timedelta = timedelta(minutes=3), start: datetime | None = None):
        if every <= timedelta(0):
            raise ValueError("every must be positive")
        self.every = every
        self.next_at = (start or datetime.now(UTC)) + first
        self._turn = itertools.cycle(self.ORDER)

    def due(self, now: datetime) -> str | None:
        """The incident to inject at ``now``, if one is due (each is returned once)."""
        if now < self.next_at:
            return None
        self.next_at = now + self.every
        return next(self._turn)


def inject(db: Database, schema: Schema, kind: str, now: datetime | None = None, *,
           rng_seed: int | None = None, **options) -> dict:
    """Write the incident ``kind`` (a key of ``INCIDENTS``) as of ``now``; return what was written."""
    try:
        action = INCIDENTS[kind]
    except KeyError:
        raise ValueError(f"unknown incident {kind!r}; known: {', '.join(INCIDENTS)}") from None
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return action(db, schema, now, random.Random(rng_seed), **options)


def clear_outage(db: Database) -> None:
    """End a webhook outage early."""
    db[CONTROL_COLLECTION].delete_one({"_id": WEBHOOK_OUTAGE_ID})
