"""Webhook metrics (spec section 4, "Webhooks"): events placed in a window by ``receivedAt``."""

from __future__ import annotations

from datetime import datetime

from metrics.db import Source
from metrics.quality import valid_filter
from metrics.schema import Schema
from metrics.stats import duration_stats_stage, ratio, read_duration_stats
from metrics.windows import Window, utc


def _is_date(ref: str) -> dict:
    return {"$eq": [{"$type": ref}, "date"]}


def window_summary_pipeline(window: Window, schema: Schema) -> list[dict]:
    w = schema.webhook_events
    return [
        {"$match": valid_filter("webhook_events", schema, window.range())},
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


def window_summary(src: Source, window: Window) -> dict:
    """The spec's webhook block for one window (``webhooks.24h`` in the snapshot)."""
    rows = src.aggregate("webhook_events", window_summary_pipeline(window, src.schema))[0]
    counts = {row["_id"]: row["count"] for row in rows["by_status"]}
    processed, failed = counts.get("processed", 0), counts.get("failed", 0)
    return {
        "received": sum(counts.values()),
        "processed": processed,
        "failed": failed,
        "failure_rate": ratio(failed, processed + failed),
        "processing_ms": read_duration_stats(rows["processing"]),
        "delivery_lag_ms": read_duration_stats(rows["delivery_lag"]),
    }


def latest_events(src: Source, at: datetime, limit: int) -> list[dict]:
    """The newest events received before ``at``, newest first."""
    w = src.schema.webhook_events
    fields = ["eventId", "type", "status", "stripeCreatedAt", "receivedAt", "processedAt", "error"]
    docs = src.find("webhook_events", valid_filter("webhook_events", src.schema, {"$lt": at}),
                    sort=[(w["receivedAt"], -1)], limit=limit, projection={w[f]: 1 for f in fields})
    events = []
    for doc in docs:
        event = {f: doc.get(w[f]) for f in fields}
        received, processed = event["receivedAt"], event["processedAt"]
        event["processing_ms"] = (
            int((utc(processed) - utc(received)).total_seconds() * 1000)
            if isinstance(processed, datetime) else None
        )
        events.append(event)
    return events


def last_received_at(src: Source, at: datetime) -> datetime | None:
    latest = latest_events(src, at, 1)
    return utc(latest[0]["receivedAt"]) if latest else None
