"""Enrollment metrics (spec section 4, "Enrollments")."""

from __future__ import annotations

from datetime import datetime

from metrics.catalogue import rate
from metrics.db import Source
from metrics.quality import count_valid, valid_filter, valid_stages
from metrics.schema import CONVERTED_PAYMENT_STATUSES, Schema
from metrics.stats import duration_stats_stage, read_duration_stats
from metrics.windows import Window
from metrics.rollups import rolled_up

DUPLICATE_STATUSES = ("active", "pending")


@rolled_up
def created_count(src: Source, window: Window) -> int:
    """Enrollments created in W (``new_today`` with the ``today`` window)."""
    return count_valid(src, "enrollments", {src.schema.enrollments["createdAt"]: window.range()})


def conversion_pipeline(window: Window, schema: Schema) -> list[dict]:
    e = schema.enrollments
    converted = {"$in": [e.ref("paymentStatus"), list(CONVERTED_PAYMENT_STATUSES)]}
    return [
        *valid_stages("enrollments", schema, {e["createdAt"]: window.range()}),
        {"$group": {"_id": None, "created": {"$sum": 1}, "converted": {"$sum": {"$cond": [converted, 1, 0]}}}},
    ]


def latency_pipeline(window: Window, schema: Schema) -> list[dict]:
    """Activation (payment completed -> enrollment active) and email (active -> email sent) times
    for enrollments activated in W."""
    e, p = schema.enrollments, schema.payments
    payment_match = valid_filter("payments", schema)
    payment_match[p["completedAt"]] = {"$type": "date"}
    return [
        *valid_stages("enrollments", schema, {e["activatedAt"]: window.range()}),
        {"$facet": {
            "activation": [
                {"$lookup": {"from": p.name, "localField": e["paymentId"], "foreignField": "_id",
                             "pipeline": [{"$match": payment_match}, {"$project": {"completedAt": p.ref("completedAt")}}],
                             "as": "payment"}},
                {"$unwind": "$payment"},
                duration_stats_stage(e.ref("activatedAt"), "$payment.completedAt"),
            ],
            "email": [
                {"$match": {"$expr": {"$eq": [{"$type": e.ref("confirmationEmailSentAt")}, "date"]}}},
                duration_stats_stage(e.ref("confirmationEmailSentAt"), e.ref("activatedAt")),
            ],
        }},
    ]


@rolled_up
def refunded_count(src: Source, window: Window) -> int:
    """Enrollments whose ``refundedAt`` falls in W, whatever their ``createdAt``."""
    return count_valid(src, "enrollments", {src.schema.enrollments["refundedAt"]: window.range()})


@rolled_up
def window_summary(src: Source, window: Window) -> dict:
    """The spec's enrollment block for one window (``enrollments.24h`` in the snapshot)."""
    conv = src.aggregate("enrollments", conversion_pipeline(window, src.schema))
    created = conv[0]["created"] if conv else 0
    converted = conv[0]["converted"] if conv else 0
    latency = src.aggregate("enrollments", latency_pipeline(window, src.schema))[0]
    return {
        "created": created,
        "converted": converted,
        "conversion_rate": rate("conversion_rate", converted=converted, created=created),
        "refunded": refunded_count(src, window),
        "activation_ms": read_duration_stats(latency["activation"]),
        "email_ms": read_duration_stats(latency["email"]),
    }


def pending_payments_count(src: Source, at: datetime) -> int:
    """Enrollments created before ``at`` whose payment is still ``pending``."""
    e = src.schema.enrollments
    return count_valid(src, "enrollments", {e["paymentStatus"]: "pending", e["createdAt"]: {"$lt": at}})


def duplicates_pipeline(at: datetime, schema: Schema, limit: int | None = None) -> list[dict]:
    """(customerId, serviceId) pairs with more than one active or pending enrollment."""
    e = schema.enrollments
    pipeline = [
        *valid_stages("enrollments", schema, {e["status"]: {"$in": list(DUPLICATE_STATUSES)}}, {"$lt": at}),
        {"$group": {"_id": {"customerId": e.ref("customerId"), "serviceId": e.ref("serviceId")},
                    "count": {"$sum": 1}, "ids": {"$push": "$_id"}}},
        {"$match": {"count": {"$gt": 1}}},
        {"$sort": {"count": -1, "_id.customerId": 1}},
    ]
    if limit is not None:
        pipeline.append({"$limit": limit})
    return pipeline


@rolled_up
def duplicate_count(src: Source, at: datetime) -> int:
    rows = src.aggregate("enrollments", duplicates_pipeline(at, src.schema) + [{"$count": "pairs"}])
    return rows[0]["pairs"] if rows else 0


@rolled_up
def duplicate_pairs(src: Source, at: datetime, limit: int = 50) -> list[dict]:
    rows = src.aggregate("enrollments", duplicates_pipeline(at, src.schema, limit))
    return [{**row["_id"], "count": row["count"], "enrollment_ids": [str(i) for i in row["ids"]]} for row in rows]
