"""Payment metrics (spec section 4, "Payments").

Each ``*_pipeline`` function builds one aggregation from a window and the
schema; each metric function runs it through a :class:`~metrics.db.Source`
and returns plain data.  Everything is computed in the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from metrics.db import Source
from metrics.quality import valid_filter
from metrics.schema import SUCCEEDED_STATUSES, STUCK_STATUSES, Schema
from metrics.stats import duration_stats_stage, ratio, read_duration_stats
from metrics.windows import Window


def _currency(schema: Schema) -> dict:
    return {"$ifNull": [{"$toLower": schema.payments.ref("currency")}, "unknown"]}


def _minor_units(schema: Schema) -> dict:
    # int32, int64, integral double and Decimal128 all become int64 before summing.
    return {"$toLong": schema.payments.ref("amount")}


def window_summary_pipeline(window: Window, schema: Schema) -> list[dict]:
    """Counts and sums by status and currency, and processing time, for payments created in W."""
    p = schema.payments
    succeeded = {"$in": [p.ref("status"), list(SUCCEEDED_STATUSES)]}
    return [
        {"$match": valid_filter("payments", schema, window.range())},
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


def window_summary(src: Source, window: Window, currencies: tuple[str, ...] = ()) -> dict:
    """The spec's payment block for one window (``payments.24h`` in the snapshot).

    ``currencies`` are always present in the money maps (0 when nothing was
    taken), as in the spec's example, so a script can read ``revenue.usd``.
    """
    rows = src.aggregate("payments", window_summary_pipeline(window, src.schema))[0]
    succeeded = failed = 0
    revenue: dict[str, int] = dict.fromkeys(currencies, 0)
    succeeded_by_currency: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for row in rows["by_status"]:
        status, currency = row["_id"]["status"], row["_id"]["currency"]
        by_status[status] = by_status.get(status, 0) + row["count"]
        if status in SUCCEEDED_STATUSES:
            succeeded += row["count"]
            revenue[currency] = revenue.get(currency, 0) + int(row["amount"])
            succeeded_by_currency[currency] = succeeded_by_currency.get(currency, 0) + row["count"]
        elif status == "failed":
            failed += row["count"]
    refunds = refund_count(src, window)
    return {
        "succeeded": succeeded,
        "failed": failed,
        "success_rate": ratio(succeeded, succeeded + failed),
        "revenue": dict(sorted(revenue.items())),
        "avg_transaction_value": {
            cur: round(revenue[cur] / succeeded_by_currency[cur], 2) if succeeded_by_currency.get(cur) else 0
            for cur in sorted(revenue)
        },
        "refunds": refunds,
        "refund_rate": ratio(refunds, succeeded),
        "processing_ms": read_duration_stats(rows["processing"]),
        "by_status": dict(sorted(by_status.items())),
    }


def refund_count(src: Source, window: Window) -> int:
    """Payments whose ``refundedAt`` falls in W, whatever their ``createdAt``."""
    query = valid_filter("payments", src.schema)
    query[src.schema.payments["refundedAt"]] = window.range()
    return src.count("payments", query)


def revenue_periods_pipeline(periods: dict[str, Window], schema: Schema) -> list[dict]:
    """Revenue per currency for several windows sharing one end, in one scan."""
    p = schema.payments
    earliest = min(w.start for w in periods.values())
    end = max(w.end for w in periods.values())
    match = valid_filter("payments", schema, {"$gte": earliest, "$lt": end})
    match[p["status"]] = {"$in": list(SUCCEEDED_STATUSES)}

    def within(w: Window) -> dict:
        return {"$and": [{"$gte": [p.ref("createdAt"), w.start]}, {"$lt": [p.ref("createdAt"), w.end]}]}

    return [
        {"$match": match},
        {"$group": {
            "_id": _currency(schema),
            **{name: {"$sum": {"$cond": [within(w), _minor_units(schema), 0]}} for name, w in periods.items()},
        }},
    ]


def revenue_by_period(src: Source, periods: dict[str, Window], currencies: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """``{"today": {"usd": 123}, "week": {...}, ...}``; ``currencies`` always present, others when taken."""
    rows = src.aggregate("payments", revenue_periods_pipeline(periods, src.schema))
    out: dict[str, dict[str, int]] = {name: dict.fromkeys(currencies, 0) for name in periods}
    for row in sorted(rows, key=lambda r: r["_id"]):
        for name in periods:
            if row[name]:
                out[name][row["_id"]] = int(row[name])
    return out


def stuck_filter(at: datetime, stuck_minutes: float, schema: Schema) -> dict:
    """Pending or processing and created before ``at - stuck_minutes`` (the runbook's query)."""
    query = valid_filter("payments", schema, {"$lt": at - timedelta(minutes=stuck_minutes)})
    query[schema.payments["status"]] = {"$in": list(STUCK_STATUSES)}
    return query


def stuck_count(src: Source, at: datetime, stuck_minutes: float) -> int:
    return src.count("payments", stuck_filter(at, stuck_minutes, src.schema))


def stuck_payments(src: Source, at: datetime, stuck_minutes: float, limit: int = 50) -> list[dict]:
    """The stuck payments themselves, oldest first (for the dashboard and alert samples)."""
    p = src.schema.payments
    fields = ["paymentId", "amount", "currency", "status", "customerEmail", "specialistId", "createdAt"]
    docs = src.find("payments", stuck_filter(at, stuck_minutes, src.schema),
                    sort=[(p["createdAt"], 1)], limit=limit, projection={p[f]: 1 for f in fields})
    return [{f: d.get(p[f]) for f in fields} for d in docs]
