"""The figures the alert rules need beyond the snapshot (guide section 4, "Set Up Alerts").

Each rule asks one question over a short window ("more than 10 failed
payments in 1 hour", "success rate < 95 %"), sometimes per subject (per
currency, per specialist), and its message shows what is wrong (top decline
codes, revenue at risk).  Same shape as ``payments.py``: a named
``*_pipeline`` builder per query, starting from ``valid_stages``, computed in
the database; the function of the same name without the suffix runs it and
returns plain data.

``subject`` is the split value: ``""`` when the rule is not split.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta

from pymongo import ASCENDING
from pymongo.database import Database

from metrics.catalogue import rate
from metrics.db import Source
from metrics.enrollments import DUPLICATE_STATUSES
from metrics.payments import _currency, _minor_units  # one definition of each
from metrics.quality import count_valid, valid_stages
from metrics.rollups import rolled_up
from metrics.schema import SUCCEEDED_STATUSES, Schema
from metrics.webhooks import last_received_at
from metrics.windows import Window, newest_before, utc

SPLITS = ("currency", "specialist")
DECIDED_STATUSES = SUCCEEDED_STATUSES + ("failed",)

# The MAD of four weekly figures can be near 0 by chance; the scale is never
# taken below this share of the median.
MIN_SCALE_FRACTION = 0.1
MIN_BASELINE_WEEKS = 3
# 1.4826 x MAD estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826

SYSTEM_SAMPLES = "system_samples"
SYSTEM_RETENTION = timedelta(days=30)
STATE_MAX_TIME_MS = 10_000


def subject_expr(split: str | None, schema: Schema) -> dict:
    """The value a payment is split by: its currency, its specialist, or one subject ``""``."""
    if split is None:
        return {"$literal": ""}
    if split == "currency":
        return _currency(schema)
    if split == "specialist":
        ref = schema.payments.ref("specialistId")
        return {"$cond": [{"$eq": [{"$type": ref}, "string"]}, ref, "unknown"]}
    raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def _amounts(pairs: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        out[pair["k"]] = out.get(pair["k"], 0) + int(pair["v"])
    return dict(sorted(out.items()))


def _subject_match(split: str | None, subject: str | None, schema: Schema) -> list[dict]:
    if split is None or subject is None:
        return []
    # The subject is platform data ("$specialistId" is a valid id): a literal, never an expression.
    return [{"$match": {"$expr": {"$eq": [subject_expr(split, schema), {"$literal": subject}]}}}]


# -- payment outcomes ------------------------------------------------------------

def payment_outcomes_pipeline(window: Window, schema: Schema, split: str | None = None) -> list[dict]:
    """Succeeded and failed payments created in W per subject and currency: count and amount."""
    p = schema.payments
    return [
        *valid_stages("payments", schema, {p["createdAt"]: window.range()}),
        {"$match": {p["status"]: {"$in": list(DECIDED_STATUSES)}}},
        {"$group": {
            "_id": {"subject": subject_expr(split, schema),
                    "failed": {"$eq": [p.ref("status"), "failed"]},
                    "currency": _currency(schema)},
            "count": {"$sum": 1},
            "amount": {"$sum": _minor_units(schema)},
        }},
    ]


@rolled_up
def payment_outcomes(src: Source, window: Window, split: str | None = None) -> dict[str, dict]:
    """``{subject: {"succeeded", "failed", "success_rate", "failed_amount": {cur: minor}}}``.

    ``failed_amount`` is the revenue at risk: what the declined customers tried to pay.
    A subject with no decided payment in W is absent.
    """
    out: dict[str, dict] = {}
    for row in src.aggregate("payments", payment_outcomes_pipeline(window, src.schema, split)):
        key = row["_id"]
        entry = out.setdefault(key["subject"], {"succeeded": 0, "failed": 0, "failed_amount": {}})
        if key["failed"]:
            entry["failed"] += row["count"]
            entry["failed_amount"][key["currency"]] = entry["failed_amount"].get(key["currency"], 0) + int(row["amount"])
        else:
            entry["succeeded"] += row["count"]
    for entry in out.values():
        entry["success_rate"] = rate("payment_success_rate", succeeded=entry["succeeded"], failed=entry["failed"])
        entry["failed_amount"] = dict(sorted(entry["failed_amount"].items()))
    return dict(sorted(out.items()))


def decline_codes_pipeline(window: Window, schema: Schema, limit: int, split: str | None = None,
                           subject: str | None = None) -> list[dict]:
    """Failed payments created in W by decline code, with the amount per currency, most first."""
    p = schema.payments
    code = {"$cond": [{"$eq": [{"$type": p.ref("failureCode")}, "string"]}, p.ref("failureCode"), "unknown"]}
    return [
        *valid_stages("payments", schema, {p["status"]: "failed", p["createdAt"]: window.range()}),
        *_subject_match(split, subject, schema),
        {"$group": {"_id": {"code": code, "currency": _currency(schema)},
                    "count": {"$sum": 1}, "amount": {"$sum": _minor_units(schema)}}},
        {"$group": {"_id": "$_id.code", "count": {"$sum": "$count"},
                    "amounts": {"$push": {"k": "$_id.currency", "v": "$amount"}}}},
        {"$sort": {"count": -1, "_id": 1}},
        {"$limit": limit},
    ]


@rolled_up
def decline_codes(src: Source, window: Window, limit: int = 5, split: str | None = None,
                  subject: str | None = None) -> list[dict]:
    """``[{"code", "count", "amount": {cur: minor}}]``: the top decline codes (one subject, or all)."""
    rows = src.aggregate("payments", decline_codes_pipeline(window, src.schema, limit, split, subject))
    return [{"code": row["_id"], "count": row["count"], "amount": _amounts(row["amounts"])} for row in rows]


# -- refunds ---------------------------------------------------------------------

def refunds_pipeline(window: Window, schema: Schema, split: str | None = None) -> list[dict]:
    """Payments refunded in W (by ``refundedAt``) per subject and currency: count and amount."""
    p = schema.payments
    return [
        *valid_stages("payments", schema, {p["refundedAt"]: window.range()}),
        {"$group": {"_id": {"subject": subject_expr(split, schema), "currency": _currency(schema)},
                    "count": {"$sum": 1}, "amount": {"$sum": _minor_units(schema)}}},
    ]


def refund_outcomes(src: Source, window: Window, split: str | None = None) -> dict[str, dict]:
    """``{subject: {"refunds", "succeeded", "refund_rate", "refunded_amount": {cur: minor}}}``.

    The spec's ``refund_rate``: refunds in W over payments succeeded in W.
    """
    out: dict[str, dict] = {}
    for subject, outcome in payment_outcomes(src, window, split).items():
        out[subject] = {"refunds": 0, "succeeded": outcome["succeeded"], "refunded_amount": {}}
    for row in src.aggregate("payments", refunds_pipeline(window, src.schema, split)):
        entry = out.setdefault(row["_id"]["subject"], {"refunds": 0, "succeeded": 0, "refunded_amount": {}})
        entry["refunds"] += row["count"]
        cur = row["_id"]["currency"]
        entry["refunded_amount"][cur] = entry["refunded_amount"].get(cur, 0) + int(row["amount"])
    for entry in out.values():
        entry["refund_rate"] = rate("refund_rate", refunds=entry["refunds"], succeeded=entry["succeeded"])
        entry["refunded_amount"] = dict(sorted(entry["refunded_amount"].items()))
    return dict(sorted(out.items()))


def refunds_by_pipeline(window: Window, schema: Schema, field: str, limit: int) -> list[dict]:
    p = schema.payments
    return [
        *valid_stages("payments", schema, {p["refundedAt"]: window.range()}),
        {"$group": {"_id": {"$ifNull": [p.ref(field), None]}, "count": {"$sum": 1}}},
        {"$sort": {"count": -1, "_id": 1}},
        {"$limit": limit},
    ]


def refunds_by(src: Source, window: Window, field: str = "serviceId", limit: int = 3) -> list[dict]:
    """Payments refunded in W grouped by one of our payment fields: ``[{"key", "count"}]``."""
    src.schema.payments[field]  # noqa: B018 - an unknown field fails here, not as an empty list
    rows = src.aggregate("payments", refunds_by_pipeline(window, src.schema, field, limit))
    return [{"key": row["_id"], "count": row["count"]} for row in rows]


# -- amount spike ----------------------------------------------------------------

def baseline_windows(window: Window, weeks: int) -> list[Window]:
    """W, then the same stretch of time 1, 2, ... ``weeks`` weeks earlier (same weekday and hour)."""
    return [Window(window.start - timedelta(weeks=k), window.end - timedelta(weeks=k)) for k in range(weeks + 1)]


def amount_stats_pipeline(window: Window, schema: Schema, split: str | None = None) -> list[dict]:
    """Succeeded payments created in W per subject: count, sum and sum of squares of the amount."""
    p = schema.payments
    amount = _minor_units(schema)
    return [
        *valid_stages("payments", schema, {p["createdAt"]: window.range()}),
        {"$match": {p["status"]: {"$in": list(SUCCEEDED_STATUSES)}}},
        {"$group": {"_id": subject_expr(split, schema), "count": {"$sum": 1}, "sum": {"$sum": amount},
                    "sumsq": {"$sum": {"$multiply": [{"$toDouble": amount}, {"$toDouble": amount}]}}}},
    ]


def robust_score(current_mean: float, current_count: int, weekly_means: list[float], pooled_sd: float,
                 min_weeks: int = MIN_BASELINE_WEEKS) -> dict:
    """How unusual this window's average amount is, in robust standard deviations.

    ``(mean - median of the weekly means) / scale``, where the scale is the
    larger of 1.4826 x MAD of the weekly means (how much that hour varies from
    week to week) and ``pooled_sd / sqrt(count)`` (how much an average of this
    many payments varies by chance).  ``score`` is ``None`` with fewer than
    ``min_weeks`` weeks of baseline or no payment now.
    """
    if len(weekly_means) < min_weeks or not current_count:
        return {"median": statistics.median(weekly_means) if weekly_means else None, "mad": None, "score": None}
    median = statistics.median(weekly_means)
    mad = statistics.median(abs(m - median) for m in weekly_means)
    scale = max(MAD_TO_SIGMA * mad, pooled_sd / math.sqrt(current_count), MIN_SCALE_FRACTION * median)
    score = (current_mean - median) / scale if scale > 0 else None
    return {"median": median, "mad": mad, "score": None if score is None else round(score, 2)}


@rolled_up
def amount_spike(src: Source, window: Window, weeks: int = 4, split: str | None = "currency") -> dict[str, dict]:
    """The average succeeded amount in W against the same window in each of the previous ``weeks`` weeks.

    The average, not the total: more customers (a campaign, a busy day) is
    not a spike in amounts; a pricing bug or card fraud moves the average.
    One indexed query per window.  ``{subject: {"mean", "count", "weekly_means",
    "baseline_weeks", "pooled_sd", "median", "mad", "score"}}``; amounts are
    never added across currencies, so the default split is currency.
    """
    return spike_scores([{row["_id"]: row for row in src.aggregate("payments", amount_stats_pipeline(w, src.schema, split))}
                         for w in baseline_windows(window, weeks)])


def spike_scores(per_window: list[dict[str, dict]]) -> dict[str, dict]:
    """:func:`amount_spike` from each window's ``{subject: {"count", "sum", "sumsq"}}``, W first."""
    out: dict[str, dict] = {}
    for subject in sorted(set().union(*per_window)):
        current = per_window[0].get(subject, {"count": 0, "sum": 0})
        past = [w[subject] for w in per_window[1:] if w.get(subject, {}).get("count")]
        n = sum(r["count"] for r in past)
        pooled_sd = 0.0
        if n:
            mean = sum(r["sum"] for r in past) / n
            pooled_sd = math.sqrt(max(0.0, sum(r["sumsq"] for r in past) / n - mean * mean))
        weekly_means = [r["sum"] / r["count"] for r in past]
        current_mean = current["sum"] / current["count"] if current["count"] else None
        out[subject] = {
            "mean": None if current_mean is None else round(current_mean, 1),
            "count": current["count"],
            "weekly_means": [round(m, 1) for m in weekly_means],
            "baseline_weeks": len(past),
            "pooled_sd": round(pooled_sd, 1),
            **robust_score(current_mean or 0.0, current["count"], weekly_means, pooled_sd),
        }
    return out


def largest_payments_pipeline(window: Window, schema: Schema, limit: int, split: str | None = None,
                              subject: str | None = None) -> list[dict]:
    p = schema.payments
    fields = ("paymentId", "amount", "currency", "status", "customerEmail", "specialistId", "createdAt")
    return [
        *valid_stages("payments", schema, {p["createdAt"]: window.range()}),
        {"$match": {p["status"]: {"$in": list(SUCCEEDED_STATUSES)}}},
        *_subject_match(split, subject, schema),
        {"$sort": {p["amount"]: -1, "_id": 1}},
        {"$limit": limit},
        {"$project": {p[f]: 1 for f in fields}},
    ]


def largest_payments(src: Source, window: Window, limit: int = 3, split: str | None = None,
                     subject: str | None = None) -> list[dict]:
    """The biggest succeeded payments created in W (our field names; email not yet masked)."""
    p = src.schema.payments
    fields = ("paymentId", "amount", "currency", "status", "customerEmail", "specialistId", "createdAt")
    docs = src.aggregate("payments", largest_payments_pipeline(window, src.schema, limit, split, subject))
    return [{f: d.get(p[f]) for f in fields} for d in docs]


# -- webhooks --------------------------------------------------------------------

def webhook_activity(src: Source, window: Window, weeks: int = 4) -> dict:
    """Events received in W, what is usual for W, and the last one received.

    ``{"received", "usual": median of the same window in the previous weeks
    that received any (``None`` with fewer than two such weeks), "weekly":
    [...], "last_received_at"}``.  Counted by :func:`received_counts`.
    """
    now, usual, weekly = _usual(received_counts(src, baseline_windows(window, weeks)))
    return {"received": now, "usual": usual, "weekly": weekly, "last_received_at": last_received_at(src, window.end)}


@rolled_up(reads=("webhook_events",))
def received_counts(src: Source, windows: list[Window]) -> list[int]:
    """Valid webhook events received in each window: one indexed count per window."""
    received = src.schema.webhook_events["receivedAt"]
    return [count_valid(src, "webhook_events", {received: w.range()}) for w in windows]


@rolled_up
def created_counts(src: Source, windows: list[Window]) -> list[int]:
    """Valid payments created in each window: one indexed count per window."""
    created = src.schema.payments["createdAt"]
    return [count_valid(src, "payments", {created: w.range()}) for w in windows]


def _usual(counts: list[int]) -> tuple:
    """W's count (the first); the median of the previous weeks' counts that are not zero (``None``
    with fewer than two); and those weeks' counts."""
    weekly = [c for c in counts[1:] if c]
    return counts[0], statistics.median(weekly) if len(weekly) >= 2 else None, counts[1:]


def last_payment_pipeline(when: dict, schema: Schema) -> list[dict]:
    created = schema.payments["createdAt"]
    return [*valid_stages("payments", schema, {created: when}), {"$sort": {created: -1}}, {"$limit": 1},
            {"$project": {"_id": 0, "createdAt": f"${created}"}}]


def last_payment_at(src: Source, at: datetime) -> datetime | None:
    """When the last valid payment before ``at`` was created; ``None`` when there never was one."""
    last = newest_before(lambda created: src.aggregate("payments", last_payment_pipeline(created, src.schema)), at)
    return utc(last[0]["createdAt"]) if last else None


def payment_activity(src: Source, window: Window, weeks: int = 4) -> dict:
    """Payments created in W, what is usual for W, and the last one created (as :func:`webhook_activity`).

    The data-absence rule reads it: a success rate has nothing to say when
    no payment is made at all, so this one says the payments stopped.
    """
    now, usual, weekly = _usual(created_counts(src, baseline_windows(window, weeks)))
    return {"created": now, "usual": usual, "weekly": weekly, "last_created_at": last_payment_at(src, window.end)}


def webhook_errors_pipeline(window: Window, schema: Schema, limit: int) -> list[dict]:
    w = schema.webhook_events
    error = {"$cond": [{"$eq": [{"$type": w.ref("error")}, "string"]}, w.ref("error"), "(no error text)"]}
    return [
        *valid_stages("webhook_events", schema, {w["receivedAt"]: window.range()}),
        {"$match": {w["status"]: "failed"}},
        {"$group": {"_id": error, "count": {"$sum": 1}, "types": {"$addToSet": w.ref("type")}}},
        {"$sort": {"count": -1, "_id": 1}},
        {"$limit": limit},
    ]


def webhook_errors(src: Source, window: Window, limit: int = 3) -> list[dict]:
    """Failed events received in W by error text: ``[{"error", "count", "types"}]``, most first."""
    rows = src.aggregate("webhook_events", webhook_errors_pipeline(window, src.schema, limit))
    return [{"error": row["_id"], "count": row["count"], "types": sorted(t for t in row["types"] if isinstance(t, str))}
            for row in rows]


# -- enrollments -----------------------------------------------------------------

def recent_duplicates_pipeline(window: Window, schema: Schema, limit: int) -> list[dict]:
    """(customerId, serviceId) pairs with more than one active or pending enrollment created in W."""
    e = schema.enrollments
    return [
        *valid_stages("enrollments", schema, {e["createdAt"]: window.range()}),
        {"$match": {e["status"]: {"$in": list(DUPLICATE_STATUSES)}}},
        {"$sort": {e["createdAt"]: 1, "_id": 1}},  # each pair's ids oldest first, as the rollups list them
        {"$group": {"_id": {"customerId": e.ref("customerId"), "serviceId": e.ref("serviceId")},
                    "count": {"$sum": 1}, "ids": {"$push": "$_id"}, "latest": {"$max": e.ref("createdAt")}}},
        {"$match": {"count": {"$gt": 1}}},
        {"$sort": {"latest": -1, "_id.customerId": 1, "_id.serviceId": 1}},
        {"$limit": limit},
    ]


@rolled_up(reads=("enrollments",))
def recent_duplicates(src: Source, window: Window, limit: int = 50) -> list[dict]:
    """Duplicate enrollments that happened in W: ``[{"customerId", "serviceId", "count",
    "enrollment_ids", "latest"}]``, newest first.

    Both enrollments must be created in W: a webhook handled twice (the
    guide's reason for a unique index) duplicates within seconds.  The
    all-time count is the snapshot's ``enrollments.duplicates``; scanning the
    whole history each minute costs too much on a large platform.
    """
    rows = src.aggregate("enrollments", recent_duplicates_pipeline(window, src.schema, limit))
    return [{"customerId": row["_id"].get("customerId"), "serviceId": row["_id"].get("serviceId"),
             "count": row["count"], "enrollment_ids": [str(i) for i in row["ids"]], "latest": utc(row["latest"])}
            for row in rows]


# -- database connections ----------------------------------------------------------

def current_connections(src: Source) -> int | None:
    """Open connections as the server counts them; ``None`` when the user may not ask
    (``serverStatus`` needs ``clusterMonitor``)."""
    try:
        status = src.db.client.admin.command("serverStatus", maxTimeMS=src.max_time_ms)
    except Exception:  # noqa: BLE001 - a permission error means "not known", never 0
        return None
    current = status.get("connections", {}).get("current")
    return int(current) if isinstance(current, (int, float)) else None


def ensure_system_indexes(state_db: Database) -> None:
    state_db[SYSTEM_SAMPLES].create_index([("at", ASCENDING)], name="at_ttl",
                                          expireAfterSeconds=int(SYSTEM_RETENTION.total_seconds()))


def record_connections(state_db: Database, at: datetime, connections: int | None) -> None:
    """Keep one sample per worker cycle: the baseline is built from them."""
    if connections is not None:
        state_db[SYSTEM_SAMPLES].insert_one({"at": utc(at), "connections": connections})


def connections_pipeline(window: Window) -> list[dict]:
    return [
        {"$match": {"at": {"$gte": window.start, "$lte": window.end}, "connections": {"$type": "number"}}},
        {"$sort": {"at": 1}},
        {"$group": {"_id": None, "samples": {"$sum": 1}, "current": {"$last": "$connections"},
                    "median": {"$median": {"input": "$connections", "method": "approximate"}}}},
    ]


def connections_vs_baseline(state_db: Database, window: Window) -> dict:
    """The latest connection count against the median of the samples in W (its normal).

    ``{"current", "median", "samples", "ratio"}``; ``ratio`` is ``None`` without samples.
    """
    rows = list(state_db[SYSTEM_SAMPLES].aggregate(connections_pipeline(window), maxTimeMS=STATE_MAX_TIME_MS))
    if not rows:
        return {"current": None, "median": None, "samples": 0, "ratio": None}
    row = rows[0]
    median = float(row["median"][0] if isinstance(row["median"], list) else row["median"])
    return {"current": row["current"], "median": median, "samples": row["samples"],
            "ratio": round(row["current"] / median, 2) if median else None}
