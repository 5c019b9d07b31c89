"""Ninety days of platform history for the embedded default, with incidents at known times.

``seed(db, schema)`` writes payments, their enrollments and the webhook log
into the platform database, so that a fresh ``make run`` shows a dashboard,
alerts and a weekly report with something in them.

The traffic has the shape of a real course platform: quiet nights, busy
evenings (UTC), calmer weekends with busier late mornings, slow growth over
the quarter; about 3 % declines with real Stripe codes, a few abandoned
checkouts, about 1.5 % refunds days later, now and then a dispute.

Incidents, placed relative to ``D`` = midnight UTC of ``now`` (the result's
``"incidents"`` holds their exact times; ``docs`` and the tests use that)::

    decline_spike         D-2d 19:00-20:00  >30 % of attempts declined, >10 failed
    webhook_outage        D-3d 14:10-15:20  no webhook received, then a burst of
                                            late deliveries (big lag, some failed)
    amount_spike          D-4d 11:00-12:00  6 USD payments at 10-20x the list price
    duplicate_enrollment  D-5d ~20:15       one customer enrolled twice in a service
    refund_wave           D-6d (whole day)  about 10 % of the day's payments refunded
    malformed             D-1d 09:00-10:00  3 payments, 1 webhook event, 1 enrollment
                                            that the metrics must count as invalid
    stuck_payments        now-90..now-40min 3 payments left in "processing"

A payment also created in the last two minutes is still in flight (pending
or processing), as on a live platform.

Everything is generated in memory first from one ``random.Random(rng_seed)``
(same seed and ``now`` -> same documents), then inserted in unordered batches
before any secondary index exists: SecantusDB inserts about 7,500 documents a
second that way, and maintaining indexes during the load would slow it down.
"""

from __future__ import annotations

import importlib.util
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from pymongo.database import Database

from demo.catalog import CONTROL_COLLECTION, SPIKE_SERVICES, UTC, Ledger, object_id, poisson
from metrics.schema import Schema

DEFAULT_DAYS = 90
DEFAULT_PER_DAY = 300
MIN_DAYS = 8  # the oldest incident (the refund wave) is up to 7 days back
BATCH = 2000

# Relative traffic per UTC hour: quiet nights, a lunch bump, busy evenings.
HOURLY = (0.25, 0.15, 0.10, 0.08, 0.08, 0.10, 0.20, 0.40, 0.70, 0.90, 1.00, 1.05,
          1.10, 1.05, 1.00, 1.00, 1.10, 1.30, 1.60, 1.90, 2.00, 1.70, 1.10, 0.50)
# Weekends: people book in the late morning rather than after work.
WEEKEND_HOURLY = tuple(w * (1.3 if 9 <= h <= 14 else 0.8 if 17 <= h <= 21 else 1.0) for h, w in enumerate(HOURLY))
WEEKDAY = (1.00, 1.05, 1.05, 1.00, 0.90, 0.75, 0.85)  # Monday .. Sunday

DECLINE_RATE = 0.03
CANCEL_RATE = 0.015
REFUND_RATE = 0.015
DISPUTE_RATE = 0.001
IN_FLIGHT = timedelta(minutes=2)  # younger payments are not finished yet

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class History:
    """What ``build_history`` made: the documents per collection and the incidents."""

    documents: dict[str, list[dict]]
    incidents: dict
    start: datetime
    now: datetime


def hourly_rate(slot: datetime, per_day: float) -> float:
    """Expected payments in the hour starting at ``slot`` for an average of ``per_day`` a day."""
    weekday = slot.weekday()
    shape = WEEKEND_HOURLY if weekday >= 5 else HOURLY
    week_total = sum(WEEKDAY[d] * sum(WEEKEND_HOURLY if d >= 5 else HOURLY) for d in range(7)) / 7
    return per_day * WEEKDAY[weekday] * shape[slot.hour] / week_total


def incident_windows(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    """Where the history's incidents sit, relative to midnight UTC of ``now``."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def at(days: int, hour: int, minute: int = 0) -> datetime:
        return day - timedelta(days=days) + timedelta(hours=hour, minutes=minute)

    return {
        "decline_spike": (at(2, 19), at(2, 20)),
        "webhook_outage": (at(3, 14, 10), at(3, 15, 20)),
        "amount_spike": (at(4, 11), at(4, 12)),
        "duplicate_enrollment": (at(5, 20, 15), at(5, 21, 15)),
        "refund_wave": (at(6, 0), at(5, 0)),
        "malformed": (at(1, 9), at(1, 10)),
    }


class _HistoryLedger(Ledger):
    """The ledger with the seed's incidents: webhook outage, refund wave, decline spike."""

    returning = 0.35  # a third of payments come from earlier customers

    def __init__(self, rng: random.Random, now: datetime, windows: dict):
        super().__init__(rng, now)
        self.windows = windows

    def deliver(self, due: datetime) -> tuple[datetime, bool]:
        start, end = self.windows["webhook_outage"]
        if start <= due < end:
            # The endpoint was down: Stripe retries, and the backlog arrives in
            # a burst in the minutes after it comes back.
            return end + timedelta(seconds=self.rng.uniform(1, 360)), True
        return due, False

    def organic(self, created: datetime) -> dict:
        """One ordinary payment at ``created``: its outcome drawn from the usual rates."""
        rng = self.rng
        if created >= self.now - IN_FLIGHT:
            return self.payment(created, rng.choice(("pending", "processing")))
        spike_start, spike_end = self.windows["decline_spike"]
        decline = 0.4 if spike_start <= created < spike_end else DECLINE_RATE
        r = rng.random()
        if r < decline:
            return self.payment(created, "failed")
        if r < decline + CANCEL_RATE and created + timedelta(hours=1) < self.now:
            return self.payment(created, "canceled")
        return self.payment(created, "completed", refund_at=self._refund_time(created),
                            dispute_at=self._dispute_time(created))

    def _refund_time(self, created: datetime) -> datetime | None:
        rng = self.rng
        if rng.random() < REFUND_RATE:
            when = created + timedelta(hours=rng.uniform(2, 240))
            if when < self.now - timedelta(minutes=1):
                return when
        return None

    def _dispute_time(self, created: datetime) -> datetime | None:
        if self.rng.random() < DISPUTE_RATE:
            when = created + timedelta(days=self.rng.uniform(3, 20))
            if when < self.now - timedelta(minutes=1):
                return when
        return None


def _uniform_times(rng: random.Random, start: datetime, end: datetime, n: int) -> list[datetime]:
    span = (end - start).total_seconds()
    return sorted(start + timedelta(seconds=rng.uniform(0, span)) for _ in range(n))


def build_history(schema: Schema, *, days: int = DEFAULT_DAYS, per_day: float = DEFAULT_PER_DAY,
                  now: datetime | None = None, rng_seed: int = 7) -> History:
    """Generate the whole history in memory (no I/O): documents in the platform's field names."""
    if days < MIN_DAYS:
        raise ValueError(f"days must be at least {MIN_DAYS} so that every incident fits (got {days})")
    if per_day <= 0:
        raise ValueError(f"per_day must be positive (got {per_day})")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = now - timedelta(days=days)
    rng = random.Random(rng_seed)
    windows = incident_windows(now)
    ledger = _HistoryLedger(rng, now, windows)
    incidents: dict = {}

    # Ordinary traffic, hour by hour, with a slow growth over the period (0.9x -> 1.1x).
    slot = start.replace(minute=0, second=0, microsecond=0)
    while slot < now:
        lo, hi = max(slot, start), min(slot + timedelta(hours=1), now)
        growth = 0.9 + 0.2 * (slot - start) / (now - start)
        share = (hi - lo) / timedelta(hours=1)
        for created in _uniform_times(rng, lo, hi, poisson(rng, hourly_rate(slot, per_day) * growth * share)):
            ledger.organic(created)
        slot += timedelta(hours=1)

    # A couple of checkouts in flight right now, whatever the volume.
    for created in _uniform_times(rng, now - timedelta(seconds=90), now - timedelta(seconds=5), 2):
        ledger.payment(created, rng.choice(("pending", "processing")))

    # Decline spike: on top of 40 % organic declines, an issuer outage declines
    # a burst of retried attempts (16 of 18), so the hour has >10 failures at any volume.
    spike_start, spike_end = windows["decline_spike"]
    for i, created in enumerate(_uniform_times(rng, spike_start, spike_end, 18)):
        ledger.payment(created, "failed" if i % 9 else "completed")  # 16 failed, 2 completed
    in_spike = [p for p in ledger.payments if spike_start <= p["createdAt"] < spike_end]
    incidents["decline_spike"] = {
        "start": spike_start, "end": spike_end,
        "failed": sum(p["status"] == "failed" for p in in_spike),
        "attempts": sum(p["status"] in ("failed", "completed", "refunded") for p in in_spike),
    }

    # Refund wave: a course was cancelled; its buyers of that day are refunded
    # from two hours after they paid until the end of the day, until the
    # day's refunds reach 10 % of its succeeded payments.
    wave_start, wave_end = windows["refund_wave"]
    day = [p for p in ledger.payments if wave_start <= p["createdAt"] < wave_end]
    succeeded = sum(p["status"] in ("completed", "refunded") for p in day)
    already = sum(1 for p in ledger.payments if wave_start <= p.get("refundedAt", start) < wave_end)
    candidates = [p for p in day if p["status"] == "completed" and p["createdAt"] < wave_end - timedelta(hours=4)]
    for payment in rng.sample(candidates, min(len(candidates), max(0, round(0.10 * succeeded) - already))):
        earliest = payment["createdAt"] + timedelta(hours=2)
        ledger.refund(payment, earliest + rng.random() * (wave_end - timedelta(minutes=1) - earliest))

    # Amount spike: six USD payments at 10-20x the list price (a pricing bug, or fraud).
    amount_start, amount_end = windows["amount_spike"]
    spike_ids = []
    for created in _uniform_times(rng, amount_start, amount_end - timedelta(minutes=5), 6):
        service = rng.choice(SPIKE_SERVICES)
        amount = int(service.price("usd") * rng.uniform(10, 20))
        spike_ids.append(ledger.payment(created, "completed", service=service, currency="usd",
                                        amount=amount)["paymentId"])
    incidents["amount_spike"] = {"start": amount_start, "end": amount_end, "paymentIds": spike_ids}

    # Stuck payments: three left "processing" 40-90 minutes ago (the runbook's query finds them).
    stuck = []
    for low, high in ((40, 50), (55, 70), (75, 90)):
        created = now - timedelta(minutes=rng.uniform(low, high))
        stuck.append(ledger.payment(created, "processing"))
    incidents["stuck_payments"] = {
        "start": min(p["createdAt"] for p in stuck), "end": max(p["createdAt"] for p in stuck),
        "paymentIds": [p["paymentId"] for p in stuck],
    }

    # Duplicate enrollment: a retried webhook created a second active enrollment
    # for the same payment (the idempotency bug the guide's unique index prevents).
    dup_start, dup_end = windows["duplicate_enrollment"]
    original_payment = next((p for p in ledger.payments
                             if p["status"] == "completed" and dup_start <= p["createdAt"] < dup_end), None)
    if original_payment is None:  # a very low volume left that hour empty: make one
        original_payment = ledger.payment(dup_start + timedelta(minutes=1), "completed")
    original = ledger.enrollment_of[original_payment["_id"]]
    shift = timedelta(seconds=rng.uniform(2, 6))
    copy = {**original, "createdAt": original["createdAt"] + shift,
            "activatedAt": original["activatedAt"] + shift,
            "confirmationEmailSentAt": original["confirmationEmailSentAt"] + shift}
    copy["_id"] = object_id(rng, copy["createdAt"])
    ledger.enrollments.append(copy)
    incidents["duplicate_enrollment"] = {
        "start": original["createdAt"], "end": copy["createdAt"],
        "customerId": original["customerId"], "serviceId": original["serviceId"],
        "paymentId": original_payment["paymentId"], "enrollmentIds": [original["_id"], copy["_id"]],
    }

    # Malformed documents: the metrics must count them as invalid and carry on.
    bad_start, bad_end = windows["malformed"]
    t1, t2, t3, t4 = _uniform_times(rng, bad_start, bad_end, 4)
    string_amount = ledger.payment(t1, "completed")
    string_amount["amount"] = "250"  # a string, not a number
    ledger.enrollment_of[string_amount["_id"]].pop("createdAt")
    no_date = ledger.payment(t2, "completed")
    no_date.pop("createdAt")
    weird = ledger.payment(t3, "completed")
    weird["status"] = "weird"
    string_received = ledger.payment(t4, "completed")
    event = next(e for e in ledger.events if e["eventId"] == string_received["stripeEventId"])
    event["receivedAt"] = event["receivedAt"].isoformat()  # a string, not a date
    incidents["malformed"] = {
        "start": bad_start, "end": bad_end,
        "payments": [string_amount["paymentId"], no_date["paymentId"], weird["paymentId"]],
        "webhook_events": [event["eventId"]],
        "enrollments": [ledger.enrollment_of[string_amount["_id"]]["_id"]],
    }

    # The outage and the refund wave, as the data shows them.
    out_start, out_end = windows["webhook_outage"]
    late = [e for e in ledger.events
            if isinstance(e["receivedAt"], datetime) and out_end <= e["receivedAt"] < out_end + timedelta(minutes=10)
            and e["stripeCreatedAt"] < out_end]
    incidents["webhook_outage"] = {
        "start": out_start, "end": out_end,
        "late_deliveries": len(late), "late_failed": sum(e["status"] == "failed" for e in late),
    }
    wave_start, wave_end = windows["refund_wave"]
    incidents["refund_wave"] = {
        "start": wave_start, "end": wave_end,
        "refunds": sum(1 for p in ledger.payments if wave_start <= p.get("refundedAt", start) < wave_end),
        "succeeded": sum(1 for p in ledger.payments if isinstance(p.get("createdAt"), datetime)
                         and wave_start <= p["createdAt"] < wave_end and p["status"] in ("completed", "refunded")),
    }

    return History(documents=ledger.documents(schema), incidents=incidents, start=start, now=now)


def seed(db: Database, schema: Schema, *, days: int = DEFAULT_DAYS, per_day: float = DEFAULT_PER_DAY,
         now: datetime | None = None, rng_seed: int = 7, progress: Progress | None = None,
         indexes: bool = True) -> dict:
    """Write the history into ``db``; return the counts, the incidents and the time taken.

    The collections are expected to be empty (see :func:`seed_if_empty`);
    ``progress(done, total, what)`` is called before the load and after
    every batch.  ``indexes=False`` leaves the metric indexes to
    ``python -m metrics indexes --create``: on SecantusDB building them takes
    about as long as the load itself (10 indexes, 1-3 s each at 27k documents).
    """
    began = time.monotonic()
    report = progress or (lambda done, total, what: None)
    history = build_history(schema, days=days, per_day=per_day, now=now, rng_seed=rng_seed)
    plan = [(getattr(schema, key).name, history.documents[key])
            for key in ("payments", "webhook_events", "enrollments")]
    total = sum(len(docs) for _, docs in plan)
    done = 0
    report(done, total, "generated")
    for name, docs in plan:
        for i in range(0, len(docs), BATCH):
            batch = docs[i:i + BATCH]
            db[name].insert_many(batch, ordered=False)
            done += len(batch)
            report(done, total, name)
    created = _ensure_indexes(db, schema) if indexes else []
    report(done, total, "indexes")
    return {
        "payments": len(history.documents["payments"]),
        "webhook_events": len(history.documents["webhook_events"]),
        "enrollments": len(history.documents["enrollments"]),
        "start": history.start,
        "now": history.now,
        "incidents": history.incidents,
        "indexes": created,
        "seconds": round(time.monotonic() - began, 2),
    }


def _ensure_indexes(db: Database, schema: Schema) -> list[str]:
    """Create the metric queries' indexes once the data is in (cheaper than during the load).

    ``metrics.indexes`` owns which indexes exist; without it there is nothing to do.
    """
    if importlib.util.find_spec("metrics.indexes") is None:
        return []
    from metrics.indexes import ensure_indexes

    return ensure_indexes(db, schema)


def is_empty(db: Database, schema: Schema) -> bool:
    return db[schema.payments.name].find_one({}, {"_id": 1}) is None


def seed_if_empty(db: Database, schema: Schema, **options) -> dict | None:
    """Seed only a platform database with no payments yet; ``None`` when there was something."""
    if not is_empty(db, schema):
        return None
    return seed(db, schema, **options)


def drop(db: Database, schema: Schema) -> None:
    """Remove the demo's collections (``seed --force``), indexes included."""
    for name in (schema.payments.name, schema.webhook_events.name, schema.enrollments.name, CONTROL_COLLECTION):
        db.drop_collection(name)


__all__ = ["History", "build_history", "seed", "seed_if_empty", "drop", "is_empty", "incident_windows",
           "hourly_rate"]
