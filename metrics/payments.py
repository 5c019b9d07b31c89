"""Payment metrics (spec section 4, "Payments").

Each ``*_pipeline`` function builds one aggregation from a window and the
schema; each metric function runs it through a :class:`~metrics.db.Source`
and returns plain data.  Everything is computed in the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable

from metrics.catalogue import rate
from metrics.db import Source
from metrics.quality import count_valid, valid_stages
from metrics.schema import SUCCEEDED_STATUSES, STUCK_STATUSES, Schema
from metrics.stats import duration_stats_stage, read_duration_stats
from metrics.windows import Window
from metrics.rollups import rolled_up


def _currency(schema: Schema) -> dict:
    # $toLower turns a missing currency into "" (and a number into digits), so test the type first.
    ref = schema.payments.ref("currency")
    return {"$cond": [{"$eq": [{"$type": ref}, "string"]}, {"$toLower": ref}, "unknown"]}


def _minor_units(schema: Schema) -> dict:
    # int32, int64, integral double and Decimal128 all become int64 before summing.
    return {"$toLong": schema.payments.ref("amount")}


def window_summary_pipeline(window: Window, schema: Schema) -> list[dict]:
    """Counts and sums by status and currency, and processing time, for payments created in W."""
    p = schema.payments
    succeeded = {"$in": [p.ref("status"), list(SUCCEEDED_STATUSES)]}
    return [
        *valid_stages("payments", schema, {p["createdAt"]: window.range()}),
        {"$facet": {
            "by_status": [
                {"$group": {
                    "_id": {"status": p.ref("status"), "currency": _currency(schema)},
                    "count": {"$sum": 1},
                    "amount": {"$sum": _minor_units(schema)},
                }},
            ],
            "processing": [
                {"$match": {"$expr": {"$and": [succeeded, {"$eq": [{"$type": p.ref("completedAt")}, "date"]}]}}},
                duration_stats_stage(p.ref("completedAt"), p.ref("createdAt")),
            ],
        }},
    ]


@rolled_up
def window_summary(src: Source, window: Window, currencies: tuple[str, ...] = ()) -> dict:
    """The spec's payment block for one window (``payments.24h`` in the snapshot).

    ``currencies`` are always present in the money maps (0 when nothing was
    taken), as in the spec's example, so a script can read ``revenue.usd``.
    """
    rows = src.aggregate("payments", window_summary_pipeline(window, src.schema))[0]
    counts = [(row["_id"]["status"], row["_id"]["currency"], row["count"], int(row["amount"])) for row in rows["by_status"]]
    return summary_block(counts, refund_count(src, window), read_duration_stats(rows["processing"]), currencies)


def summary_block(counts: Iterable[tuple[str, str, int, int]], refunds: int, processing: dict,
                  currencies: tuple[str, ...] = ()) -> dict:
    """The payment block from ``(status, currency, count, amount)`` rows: one shape, raw or from rollups."""
    succeeded = failed = 0
    revenue: dict[str, int] = dict.fromkeys(currencies, 0)
    succeeded_by_currency: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for status, currency, n, amount in counts:
        by_status[status] = by_status.get(status, 0) + n
        if status in SUCCEEDED_STATUSES:
            succeeded += n
            revenue[currency] = revenue.get(currency, 0) + amount
            succeeded_by_currency[currency] = succeeded_by_currency.get(currency, 0) + n
        elif status == "failed":
            failed += n
    return {
        "succeeded": succeeded,
        "failed": failed,
        "success_rate": rate("payment_success_rate", succeeded=succeeded, failed=failed),
        "revenue": dict(sorted(revenue.items())),
        "avg_transaction_value": {
            cur: round(revenue[cur] / succeeded_by_currency[cur], 2) if succeeded_by_currency.get(cur) else 0
            for cur in sorted(revenue)
        },
        "refunds": refunds,
        "refund_rate": rate("refund_rate", refunds=refunds, succeeded=succeeded),
        "processing_ms": processing,
        "by_status": dict(sorted(by_status.items())),
    }


@rolled_up
def refund_count(src: Source, window: Window) -> int:
    """Payments whose ``refundedAt`` falls in W, whatever their ``createdAt``."""
    return count_valid(src, "payments", {src.schema.payments["refundedAt"]: window.range()})


def revenue_periods_pipeline(periods: dict[str, Window], schema: Schema) -> list[dict]:
    """Revenue per currency for several windows sharing one end, in one scan."""
    p = schema.payments
    earliest = min(w.start for w in periods.values())
    end = max(w.end for w in periods.values())

    def within(w: Window) -> dict:
        return {"$and": [{"$gte": [p.ref("createdAt"), w.start]}, {"$lt": [p.ref("createdAt"), w.end]}]}

    return [
        *valid_stages("payments", schema, {p["createdAt"]: {"$gte": earliest, "$lt": end}}),
        {"$match": {p["status"]: {"$in": list(SUCCEEDED_STATUSES)}}},
        {"$group": {
            "_id": _currency(schema),
            **{name: {"$sum": {"$cond": [within(w), _minor_units(schema), 0]}} for name, w in periods.items()},
        }},
    ]


@rolled_up
def revenue_by_period(src: Source, periods: dict[str, Window], currencies: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """``{"today": {"usd": 123}, "week": {...}, ...}``; ``currencies`` always present, others when taken."""
    rows = src.aggregate("payments", revenue_periods_pipeline(periods, src.schema))
    out: dict[str, dict[str, int]] = {name: dict.fromkeys(currencies, 0) for name in periods}
    for row in sorted(rows, key=lambda r: r["_id"]):
        for name in periods:
            if row[name]:
                out[name][row["_id"]] = int(row[name])
    return out


def stuck_pipeline(status: str, at: datetime, stuck_minutes: float, schema: Schema) -> list[dict]:
    """Payments in ``status`` created before ``at - stuck_minutes`` (the runbook's
    ``db.payments.find({ status: "processing" })``), oldest first.

    One query per stuck status: an equality and a range use the ``(status,
    createdAt)`` index on every server, where ``$in`` with a range, or a
    ``$unionWith`` branch, makes SecantusDB scan the whole collection.
    """
    p = schema.payments
    cutoff = at - timedelta(minutes=stuck_minutes)
    return [
        *valid_stages("payments", schema, {p["status"]: status, p["createdAt"]: {"$lt": cutoff}}),
        {"$sort": {p["createdAt"]: 1, "_id": 1}},
    ]


def stuck_count(src: Source, at: datetime, stuck_minutes: float) -> int:
    """Payments pending or processing for longer than ``stuck_minutes``."""
    total = 0
    for status in STUCK_STATUSES:
        rows = src.aggregate("payments", stuck_pipeline(status, at, stuck_minutes, src.schema) + [{"$count": "n"}])
        total += rows[0]["n"] if rows else 0
    return total


def stuck_payments(src: Source, at: datetime, stuck_minutes: float, limit: int = 50) -> list[dict]:
    """The stuck payments themselves, oldest first (for the dashboard and alert samples)."""
    p = src.schema.payments
    fields = ["paymentId", "amount", "currency", "status", "customerEmail", "specialistId", "createdAt"]
    docs = []
    for status in STUCK_STATUSES:
        docs += src.aggregate("payments", stuck_pipeline(status, at, stuck_minutes, src.schema) + [
            {"$limit": limit},
            {"$project": {f: p.ref(f) for f in fields}},  # our names out, whatever theirs (even dotted)
        ])
    docs.sort(key=lambda d: (d["createdAt"], d["_id"]))
    return [{f: d.get(f) for f in fields} for d in docs[:limit]]
