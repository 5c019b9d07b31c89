"""Breakdowns only the weekly and monthly review needs (guide section 9).

"Review all failed payments for patterns": when in the week they fail (hour
of day and weekday, in the configured time zone), which failures cost the
most, and the webhook hour that went worst.  The breakdowns the dashboard
also shows (decline code, specialist, time buckets) live in
``metrics/series.py``; these are the ones nobody else draws.

Same shape as the other metric modules: a named ``*_pipeline`` builder per
query, computed in the database, starting from ``valid_stages``.  The two
hourly breakdowns answer from the rollups when the Source carries them
(``metrics/rollups/figures.py``); the largest failed payments are an indexed
read of the week's failed payments, which grows with the week, not the history.
"""

from __future__ import annotations

from metrics.db import Source
from metrics.payments import _currency, _minor_units
from metrics.quality import valid_stages
from metrics.rollups import rolled_up
from metrics.schema import SUCCEEDED_STATUSES, Schema
from metrics.stats import PERCENTILE, duration_ms, ratio
from metrics.stats import _number as stat_number
from metrics.windows import Window, utc

LARGEST_FAILED_FIELDS = ("paymentId", "amount", "currency", "failureCode", "failureMessage",
                         "specialistId", "customerEmail", "createdAt")


def failures_by_hour_pipeline(window: Window, schema: Schema, tz: str) -> list[dict]:
    """Failed and decided (succeeded + failed) payments per local (weekday, hour) created in W."""
    p = schema.payments
    created = {"date": p.ref("createdAt"), "timezone": tz}
    return [
        *valid_stages("payments", schema, {p["createdAt"]: window.range()}),
        {"$match": {p["status"]: {"$in": [*SUCCEEDED_STATUSES, "failed"]}}},
        {"$group": {
            "_id": {"weekday": {"$isoDayOfWeek": created}, "hour": {"$hour": created}},
            "decided": {"$sum": 1},
            "failed": {"$sum": {"$cond": [{"$eq": [p.ref("status"), "failed"]}, 1, 0]}},
        }},
        {"$sort": {"_id.weekday": 1, "_id.hour": 1}},
    ]


@rolled_up
def failures_by_hour(src: Source, window: Window, tz: str) -> list[dict]:
    """``[{"weekday": 1..7 (Monday = 1), "hour": 0..23, "failed", "decided", "failure_rate"}]``,
    only the (weekday, hour) cells that had a decided payment."""
    rows = src.aggregate("payments", failures_by_hour_pipeline(window, src.schema, tz))
    return [{"weekday": r["_id"]["weekday"], "hour": r["_id"]["hour"], "failed": r["failed"],
             "decided": r["decided"], "failure_rate": ratio(r["failed"], r["decided"])} for r in rows]


def largest_failed_pipeline(window: Window, schema: Schema, limit: int) -> list[dict]:
    """The ``limit`` largest failed payments created in W, per currency (amounts never mix currencies)."""
    p = schema.payments
    return [
        # (status, createdAt) is an index the metrics already ask for.
        *valid_stages("payments", schema, {p["status"]: "failed", p["createdAt"]: window.range()}),
        {"$group": {
            "_id": _currency(schema),
            "top": {"$topN": {
                "n": limit,
                "sortBy": {p["amount"]: -1, p["createdAt"]: 1},
                "output": {f: ("$" + p[f] if f != "amount" else _minor_units(schema)) for f in LARGEST_FAILED_FIELDS},
            }},
        }},
        {"$sort": {"_id": 1}},
    ]


def largest_failed(src: Source, window: Window, limit: int = 10) -> list[dict]:
    """Failed payments by amount, largest first within each currency; the email is as stored
    (the caller masks it for whoever reads the result)."""
    out = []
    for group in src.aggregate("payments", largest_failed_pipeline(window, src.schema, limit)):
        for doc in group["top"]:
            row = {f: doc.get(f) for f in LARGEST_FAILED_FIELDS}
            row["currency"] = group["_id"]
            row["amount"] = int(row["amount"])
            row["createdAt"] = utc(row["createdAt"])
            out.append(row)
    return out


def webhook_hours_pipeline(window: Window, schema: Schema, tz: str, limit: int) -> list[dict]:
    """Webhook events per local hour of W, worst first: most failed, then slowest p95 processing."""
    w = schema.webhook_events
    processed_ms = {"$cond": [{"$eq": [{"$type": w.ref("processedAt")}, "date"]},
                              duration_ms(w.ref("processedAt"), w.ref("receivedAt")), None]}
    return [
        *valid_stages("webhook_events", schema, {w["receivedAt"]: window.range()}),
        {"$group": {
            "_id": {"$dateTrunc": {"date": w.ref("receivedAt"), "unit": "hour", "timezone": tz}},
            "received": {"$sum": 1},
            "processed": {"$sum": {"$cond": [{"$eq": [w.ref("status"), "processed"]}, 1, 0]}},
            "failed": {"$sum": {"$cond": [{"$eq": [w.ref("status"), "failed"]}, 1, 0]}},
            # $percentile ignores the nulls of events still in flight.
            "p95": {"$percentile": {"input": processed_ms, "p": [PERCENTILE], "method": "approximate"}},
        }},
        {"$sort": {"failed": -1, "p95": -1, "_id": 1}},
        {"$limit": limit},
    ]


@rolled_up
def worst_webhook_hours(src: Source, window: Window, tz: str, limit: int = 5) -> list[dict]:
    """``[{"hour": start (UTC), "received", "processed", "failed", "failure_rate", "processing_p95_ms"}]``."""
    rows = src.aggregate("webhook_events", webhook_hours_pipeline(window, src.schema, tz, limit))
    out = []
    for r in rows:
        p95 = r.get("p95")
        p95 = p95[0] if isinstance(p95, list) and p95 else None
        out.append({"hour": utc(r["_id"]), "received": r["received"], "processed": r["processed"],
                    "failed": r["failed"], "failure_rate": ratio(r["failed"], r["processed"] + r["failed"]),
                    "processing_p95_ms": stat_number(p95)})
    return out
