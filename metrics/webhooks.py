"""Webhook metrics (spec section 4, "Webhooks"): events placed in a window by ``receivedAt``."""

from __future__ import annotations

from datetime import datetime, timedelta

from metrics.catalogue import rate
from metrics.db import Source
from metrics.quality import valid_stages
from metrics.schema import Schema
from metrics.stats import duration_stats_stage, read_duration_stats
from metrics.windows import Window, newest_before, utc
from metrics.rollups import rolled_up

EVENT_FIELDS = ("eventId", "type", "status", "stripeCreatedAt", "receivedAt", "processedAt", "error")


def _is_date(ref: str) -> dict:
    return {"$eq": [{"$type": ref}, "date"]}


def window_summary_pipeline(window: Window, schema: Schema) -> list[dict]:
    w = schema.webhook_events
    return [
        *valid_stages("webhook_events", schema, {w["receivedAt"]: window.range()}),
        {"$facet": {
            "by_status": [{"$group": {"_id": w.ref("status"), "count": {"$sum": 1}}}],
            "processing": [
                {"$match": {"$expr": _is_date(w.ref("processedAt"))}},
                duration_stats_stage(w.ref("processedAt"), w.ref("receivedAt")),
            ],
            "delivery_lag": [
                {"$match": {"$expr": _is_date(w.ref("stripeCreatedAt"))}},
                duration_stats_stage(w.ref("receivedAt"), w.ref("stripeCreatedAt")),
            ],
        }},
    ]


@rolled_up
def window_summary(src: Source, window: Window) -> dict:
    """The spec's webhook block for one window (``webhooks.24h`` in the snapshot)."""
    rows = src.aggregate("webhook_events", window_summary_pipeline(window, src.schema))[0]
    return summary_block({row["_id"]: row["count"] for row in rows["by_status"]},
                         read_duration_stats(rows["processing"]), read_duration_stats(rows["delivery_lag"]))


def summary_block(counts: dict[str, int], processing: dict, delivery_lag: dict) -> dict:
    """The webhook block from counts by status: one shape, raw or from rollups."""
    processed, failed = counts.get("processed", 0), counts.get("failed", 0)
    return {
        "received": sum(counts.values()),
        "processed": processed,
        "failed": failed,
        "failure_rate": rate("webhook_failure_rate", failed=failed, processed=processed),
        "processing_ms": processing,
        "delivery_lag_ms": delivery_lag,
    }


def latest_pipeline(received: dict, limit: int, schema: Schema) -> list[dict]:
    """Valid events whose ``receivedAt`` matches ``received``, newest first."""
    w = schema.webhook_events
    return [
        *valid_stages("webhook_events", schema, {w["receivedAt"]: received}),
        {"$sort": {w["receivedAt"]: -1, "_id": -1}},
        {"$limit": limit},
        {"$project": {f: w.ref(f) for f in EVENT_FIELDS}},  # our names out, whatever theirs (even dotted)
    ]


def latest_events(src: Source, at: datetime, limit: int) -> list[dict]:
    """The newest events received before ``at``, newest first."""
    docs = newest_before(lambda received: src.aggregate("webhook_events", latest_pipeline(received, limit, src.schema)),
                         at, limit)
    events = []
    for doc in docs:
        event = {f: doc.get(f) for f in EVENT_FIELDS}
        received, processed = event["receivedAt"], event["processedAt"]
        # Integer division of timedeltas is exact; total_seconds() * 1000 turns 1001 ms into 1000.
        event["processing_ms"] = (
            (utc(processed) - utc(received)) // timedelta(milliseconds=1)
            if isinstance(processed, datetime) else None
        )
        events.append(event)
    return events


def last_received_at(src: Source, at: datetime) -> datetime | None:
    """The latest ``receivedAt`` before ``at``, in any window; ``None`` when nothing was ever received."""
    latest = latest_events(src, at, 1)
    return utc(latest[0]["receivedAt"]) if latest else None
