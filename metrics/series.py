"""Time series and breakdowns behind the charts (dashboard, weekly report).

The single numbers live in ``payments`` / ``webhooks`` / ``enrollments``;
this module answers "how did it move" and "what is it made of": values per
time bucket, failures by decline code, the enrollment funnel, and so on.

Each ``*_pipeline`` function builds one aggregation from a window, the schema
and the time zone; the function of the same name without the suffix runs it
and returns plain data.  Buckets are computed in the database with
``$dateTrunc`` in the configured time zone (a "day" is a local day), and
returned as aware UTC datetimes; empty buckets are filled in here so a chart
shows a gap as 0 events, not as a line drawn across it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from metrics.db import Source
from metrics.format import ZERO_DECIMAL
from metrics.payments import _currency, _minor_units, revenue_by_period  # one definition of each
from metrics.quality import valid_filter, valid_stages
from metrics.schema import CONVERTED_PAYMENT_STATUSES, SUCCEEDED_STATUSES, Schema
from metrics.stats import PERCENTILE, duration_ms, ratio
from metrics.windows import UTC, Window, previous_period, utc
from metrics.rollups import rolled_up

UNITS = ("hour", "day", "week", "month")

# A chart reads best with a few dozen to a couple of hundred points.
_UNIT_UP_TO = (
    (timedelta(days=8), "hour"),      # today, 24 h, 7 days: hourly (168 points at most)
    (timedelta(days=120), "day"),     # 30 days, a quarter
    (timedelta(days=730), "week"),
)

# Amount histogram edges in major units (dollars, euros); scaled to minor units per currency.
AMOUNT_EDGES_MAJOR = (0, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000)

# Age bands for pending payments, in minutes: the stuck threshold (30 min) is one edge.
PENDING_AGE_EDGES_MIN = (0, 5, 30, 60, 240, 1440)


# -- buckets -------------------------------------------------------------------

def zone(tz: ZoneInfo | str) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def bucket_unit(window: Window) -> str:
    """The bucket size that suits the window's length."""
    for up_to, unit in _UNIT_UP_TO:
        if window.length <= up_to:
            return unit
    return "month"


def bucket_expr(ref: str, unit: str, tz: ZoneInfo | str) -> dict:
    """``$dateTrunc`` of a date field to a local hour / day / ISO week / month."""
    if unit not in UNITS:
        raise ValueError(f"unknown bucket unit {unit!r}; one of {', '.join(UNITS)}")
    return {"$dateTrunc": {"date": ref, "unit": unit, "timezone": zone(tz).key, "startOfWeek": "monday"}}


def bucket_start(when: datetime, unit: str, tz: ZoneInfo | str) -> datetime:
    """The start of the bucket holding ``when``, as ``$dateTrunc`` computes it (aware UTC)."""
    local = utc(when).astimezone(zone(tz))
    if unit == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
    else:
        day = local.date()
        if unit == "week":
            day -= timedelta(days=day.weekday())
        elif unit == "month":
            day = day.replace(day=1)
        start = datetime(day.year, day.month, day.day, tzinfo=zone(tz))
    return start.astimezone(UTC)


def _next_bucket(start: datetime, unit: str, tz: ZoneInfo) -> datetime:
    if unit == "hour":
        return bucket_start(start + timedelta(hours=1), unit, tz)
    local = start.astimezone(tz).date()
    if unit == "day":
        nxt = local + timedelta(days=1)
    elif unit == "week":
        nxt = local + timedelta(days=7)
    else:
        nxt = local.replace(year=local.year + (local.month == 12), month=local.month % 12 + 1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)


def bucket_starts(window: Window, unit: str, tz: ZoneInfo | str) -> list[datetime]:
    """Every bucket that overlaps the window, oldest first."""
    tz = zone(tz)
    starts = []
    current = bucket_start(window.start, unit, tz)
    while current < window.end:
        starts.append(current)
        current = _next_bucket(current, unit, tz)
    return starts


def _fill(rows: dict[datetime, dict], window: Window, unit: str, tz: ZoneInfo | str, empty) -> list[dict]:
    """One row per bucket of the window; ``empty()`` makes the row for a bucket with no documents."""
    out = []
    for start in bucket_starts(window, unit, tz):
        out.append({"bucket": start, **rows.get(start, empty())})
    return out


def _by_bucket(rows: list[dict]) -> dict[datetime, dict]:
    return {utc(row["_id"]): row for row in rows if isinstance(row.get("_id"), datetime)}


def _stats(avg, p95) -> dict:
    """``{"avg", "p95"}`` in ms from ``$avg`` and ``$percentile`` results (``None`` when no sample)."""
    if isinstance(p95, list):
        p95 = p95[0] if p95 else None
    return {"avg": None if avg is None else round(float(avg), 1),
            "p95": None if p95 is None else round(float(p95), 1)}


def _ms_when(condition: dict, end_ref: str, start_ref: str) -> dict:
    """The duration where ``condition`` holds, else null (``$avg``/``$percentile`` skip nulls)."""
    return {"$cond": [condition, duration_ms(end_ref, start_ref), None]}


def _is_date(ref: str) -> dict:
    return {"$eq": [{"$type": ref}, "date"]}


def _p95(expr: dict) -> dict:
    return {"$percentile": {"input": expr, "p": [PERCENTILE], "method": "approximate"}}


# -- payments ------------------------------------------------------------------

def payment_series_pipeline(window: Window, schema: Schema, tz: ZoneInfo | str, unit: str) -> list[dict]:
    """Payments created in W per bucket, status and currency: count and amount."""
    p = schema.payments
    return [
        *valid_stages("payments", schema, {p["createdAt"]: window.range()}),
        {"$group": {
            "_id": {"bucket": bucket_expr(p.ref("createdAt"), unit, tz), "status": p.ref("status"),
                    "currency": _currency(schema)},
            "count": {"$sum": 1},
            "amount": {"$sum": _minor_units(schema)},
        }},
    ]


@rolled_up
def payment_series(src: Source, window: Window, tz: ZoneInfo | str, unit: str | None = None,
                   currencies: tuple[str, ...] = ()) -> list[dict]:
    """Per bucket: succeeded, failed, success rate, revenue and average value per currency.

    ``[{"bucket", "succeeded", "failed", "success_rate", "revenue": {cur: minor},
    "avg_transaction_value": {cur: minor}}]``, the definitions of the spec
    (section 4) applied to each bucket; ``currencies`` are always present.
    """
    unit = unit or bucket_unit(window)
    rows: dict[datetime, dict] = {}
    counts: dict[datetime, dict[str, int]] = {}
    for row in src.aggregate("payments", payment_series_pipeline(window, src.schema, tz, unit)):
        key, status, cur = utc(row["_id"]["bucket"]), row["_id"]["status"], row["_id"]["currency"]
        out = rows.setdefault(key, {"succeeded": 0, "failed": 0, "revenue": dict.fromkeys(currencies, 0)})
        if status in SUCCEEDED_STATUSES:
            out["succeeded"] += row["count"]
            out["revenue"][cur] = out["revenue"].get(cur, 0) + int(row["amount"])
            counts.setdefault(key, {})[cur] = counts.get(key, {}).get(cur, 0) + row["count"]
        elif status == "failed":
            out["failed"] += row["count"]
    seen = sorted({c for r in rows.values() for c in r["revenue"]} | set(currencies))
    series = _fill(rows, window, unit, tz, lambda: {"succeeded": 0, "failed": 0, "revenue": {}})
    for row in series:
        row["revenue"] = {c: row["revenue"].get(c, 0) for c in seen}
        row["success_rate"] = ratio(row["succeeded"], row["succeeded"] + row["failed"])
        n = counts.get(row["bucket"], {})
        row["avg_transaction_value"] = {c: round(row["revenue"][c] / n[c], 2) if n.get(c) else None for c in seen}
    return series


def text_key(ref: str) -> dict:
    """A grouping key that is always text or null: a string as it is, a missing field null, anything
    else (a number, a dict, a list) named by its type, ``(not text: object)``, so one malformed
    document is one row, never an unhashable key."""
    return {"$switch": {"branches": [
        {"case": {"$eq": [{"$type": ref}, "string"]}, "then": ref},
        {"case": {"$in": [{"$type": ref}, ["missing", "null"]]}, "then": None},
    ], "default": {"$concat": ["(not text: ", {"$type": ref}, ")"]}}}


def failures_by_pipeline(window: Window, schema: Schema, field: str, limit: int) -> list[dict]:
    p = schema.payments
    return [
        *valid_stages("payments", schema, {p["status"]: "failed", p["createdAt"]: window.range()}),
        {"$group": {"_id": text_key(p.ref(field)), "count": {"$sum": 1}}},
        {"$sort": {"count": -1, "_id": 1}},
        {"$limit": limit},
    ]


@rolled_up
def failures_by(src: Source, window: Window, field: str = "failureCode", limit: int = 10) -> list[dict]:
    """Failed payments created in W grouped by a payment field, most first.

    ``field`` is our field name (``failureCode``, ``specialistId``,
    ``serviceId``, ``currency`` ...); a payment without it counts under
    ``None``, one whose value is not text under ``(not text: <type>)``.
    ``[{"key": text | None, "count": n}]``, at most ``limit`` rows.
    """
    src.schema.payments[field]  # noqa: B018 - an unknown field is a KeyError here, not an empty chart
    rows = src.aggregate("payments", failures_by_pipeline(window, src.schema, field, limit))
    return [{"key": row["_id"], "count": row["count"]} for row in rows]


def refund_series_pipeline(window: Window, schema: Schema, tz: ZoneInfo | str, unit: str) -> list[dict]:
    """Payments refunded in W (by ``refundedAt``, whatever their ``createdAt``), per bucket and currency."""
    p = schema.payments
    return [
        *valid_stages("payments", schema, {p["refundedAt"]: window.range()}),
        {"$group": {
            "_id": {"bucket": bucket_expr(p.ref("refundedAt"), unit, tz), "currency": _currency(schema)},
            "count": {"$sum": 1},
            "amount": {"$sum": _minor_units(schema)},
        }},
    ]


@rolled_up
def refund_series(src: Source, window: Window, tz: ZoneInfo | str, unit: str | None = None) -> list[dict]:
    """``[{"bucket", "refunds": n, "amount": {cur: minor}}]``: the spec's ``refunds`` per bucket."""
    unit = unit or bucket_unit(window)
    rows: dict[datetime, dict] = {}
    for row in src.aggregate("payments", refund_series_pipeline(window, src.schema, tz, unit)):
        out = rows.setdefault(utc(row["_id"]["bucket"]), {"refunds": 0, "amount": {}})
        out["refunds"] += row["count"]
        out["amount"][row["_id"]["currency"]] = int(row["amount"])
    return _fill(rows, window, unit, tz, lambda: {"refunds": 0, "amount": {}})


def amount_edges(currency: str, edges_major: tuple[int, ...] = AMOUNT_EDGES_MAJOR) -> list[int]:
    """Histogram edges in the currency's minor units (¥1,000 is 1000; $10 is 1000)."""
    factor = 1 if currency.lower() in ZERO_DECIMAL else 100
    return [e * factor for e in edges_major]


def amount_histogram_pipeline(window: Window, schema: Schema, currency: str, edges: list[int],
                              statuses: tuple[str, ...]) -> list[dict]:
    p = schema.payments
    return [
        *valid_stages("payments", schema, {p["createdAt"]: window.range()}),
        {"$match": {p["status"]: {"$in": list(statuses)},
                    # The currency comes from the data: a literal, never an expression.
                    "$expr": {"$eq": [_currency(schema), {"$literal": currency.lower()}]}}},
        {"$bucket": {"groupBy": _minor_units(schema), "boundaries": edges, "default": "above",
                     "output": {"count": {"$sum": 1}}}},
    ]


@rolled_up
def amount_histogram(src: Source, window: Window, currency: str,
                     statuses: tuple[str, ...] = SUCCEEDED_STATUSES,
                     edges: list[int] | None = None) -> list[dict]:
    """Payments created in W in one currency by amount band.

    ``[{"lower": minor, "upper": minor | None, "count": n}]``, every band
    present; the last band is open-ended (``upper`` None).  By default only
    succeeded payments (the money actually taken).
    """
    edges = list(edges or amount_edges(currency))
    rows = src.aggregate("payments", amount_histogram_pipeline(window, src.schema, currency, edges, statuses))
    counts = {row["_id"]: row["count"] for row in rows}
    bands = [{"lower": lo, "upper": hi, "count": counts.get(lo, 0)} for lo, hi in zip(edges, edges[1:])]
    bands.append({"lower": edges[-1], "upper": None, "count": counts.get("above", 0)})
    return bands


def recent_failed_payments(src: Source, window: Window, limit: int = 50) -> list[dict]:
    """Failed payments created in W, newest first, with what support needs to follow up.

    ``customerEmail`` is returned as stored: whoever shows it masks it
    (``metrics.format.mask_email``).
    """
    p = src.schema.payments
    fields = ["paymentId", "createdAt", "amount", "currency", "failureCode", "failureMessage",
              "customerEmail", "specialistId", "serviceId"]
    docs = src.aggregate("payments", [
        *valid_stages("payments", src.schema, {p["status"]: "failed", p["createdAt"]: window.range()}),
        {"$sort": {p["createdAt"]: -1, "_id": 1}},
        {"$limit": limit},
        {"$project": {p[f]: 1 for f in fields}},
    ])
    return [{f: doc.get(p[f]) for f in fields} for doc in docs]


# -- webhooks ------------------------------------------------------------------

def webhook_series_pipeline(window: Window, schema: Schema, tz: ZoneInfo | str, unit: str) -> list[dict]:
    w = schema.webhook_events
    processing = _ms_when(_is_date(w.ref("processedAt")), w.ref("processedAt"), w.ref("receivedAt"))
    lag = _ms_when(_is_date(w.ref("stripeCreatedAt")), w.ref("receivedAt"), w.ref("stripeCreatedAt"))
    return [
        *valid_stages("webhook_events", schema, {w["receivedAt"]: window.range()}),
        {"$group": {
            "_id": bucket_expr(w.ref("receivedAt"), unit, tz),
            "received": {"$sum": 1},
            "processed": {"$sum": {"$cond": [{"$eq": [w.ref("status"), "processed"]}, 1, 0]}},
            "failed": {"$sum": {"$cond": [{"$eq": [w.ref("status"), "failed"]}, 1, 0]}},
            "processing_avg": {"$avg": processing},
            "processing_p95": _p95(processing),
            "lag_avg": {"$avg": lag},
            "lag_p95": _p95(lag),
        }},
    ]


@rolled_up
def webhook_series(src: Source, window: Window, tz: ZoneInfo | str, unit: str | None = None) -> list[dict]:
    """Per bucket of ``receivedAt``: received, processed, failed, failure rate,
    processing time and delivery lag (avg / p95 in ms), as the spec defines them."""
    unit = unit or bucket_unit(window)
    rows = {}
    for key, row in _by_bucket(src.aggregate("webhook_events", webhook_series_pipeline(window, src.schema, tz, unit))).items():
        rows[key] = {
            "received": row["received"], "processed": row["processed"], "failed": row["failed"],
            "processing_ms": _stats(row.get("processing_avg"), row.get("processing_p95")),
            "delivery_lag_ms": _stats(row.get("lag_avg"), row.get("lag_p95")),
        }
    series = _fill(rows, window, unit, tz, lambda: {
        "received": 0, "processed": 0, "failed": 0,
        "processing_ms": _stats(None, None), "delivery_lag_ms": _stats(None, None)})
    for row in series:
        row["failure_rate"] = ratio(row["failed"], row["processed"] + row["failed"])
    return series


def webhook_types_pipeline(window: Window, schema: Schema, limit: int) -> list[dict]:
    w = schema.webhook_events
    return [
        *valid_stages("webhook_events", schema, {w["receivedAt"]: window.range()}),
        {"$group": {"_id": w.ref("type"), "received": {"$sum": 1},
                    "failed": {"$sum": {"$cond": [{"$eq": [w.ref("status"), "failed"]}, 1, 0]}}}},
        {"$sort": {"received": -1, "_id": 1}},
        {"$limit": limit},
    ]


@rolled_up
def webhook_types(src: Source, window: Window, limit: int = 20) -> list[dict]:
    """Events received in W by Stripe event type: ``[{"type", "received", "failed"}]``, most first."""
    rows = src.aggregate("webhook_events", webhook_types_pipeline(window, src.schema, limit))
    return [{"type": row["_id"], "received": row["received"], "failed": row["failed"]} for row in rows]


# -- enrollments ---------------------------------------------------------------

def enrollment_series_pipeline(window: Window, schema: Schema, tz: ZoneInfo | str, unit: str) -> list[dict]:
    """Created and converted per bucket of ``createdAt``, and refunded per bucket of ``refundedAt``."""
    e = schema.enrollments
    converted = {"$in": [e.ref("paymentStatus"), list(CONVERTED_PAYMENT_STATUSES)]}
    return [
        *valid_stages("enrollments", schema, {e["createdAt"]: window.range()}),
        {"$group": {"_id": bucket_expr(e.ref("createdAt"), unit, tz),
                    "created": {"$sum": 1}, "converted": {"$sum": {"$cond": [converted, 1, 0]}},
                    "refunded": {"$sum": 0}}},
        {"$unionWith": {"coll": e.name, "pipeline": [
            *valid_stages("enrollments", schema, {e["refundedAt"]: window.range()}),
            {"$group": {"_id": bucket_expr(e.ref("refundedAt"), unit, tz),
                        "created": {"$sum": 0}, "converted": {"$sum": 0}, "refunded": {"$sum": 1}}},
        ]}},
    ]


@rolled_up
def enrollment_series(src: Source, window: Window, tz: ZoneInfo | str, unit: str | None = None) -> list[dict]:
    """``[{"bucket", "created", "converted", "conversion_rate", "refunded"}]``."""
    unit = unit or bucket_unit(window)
    rows: dict[datetime, dict] = {}
    for row in src.aggregate("enrollments", enrollment_series_pipeline(window, src.schema, tz, unit)):
        out = rows.setdefault(utc(row["_id"]), {"created": 0, "converted": 0, "refunded": 0})
        for k in out:
            out[k] += row[k]
    series = _fill(rows, window, unit, tz, lambda: {"created": 0, "converted": 0, "refunded": 0})
    for row in series:
        row["conversion_rate"] = ratio(row["converted"], row["created"])
    return series


def latency_series_pipeline(window: Window, schema: Schema, tz: ZoneInfo | str, unit: str) -> list[dict]:
    """Activation and email latency per bucket of ``activatedAt`` (spec: enrollments activated in W)."""
    e, p = schema.enrollments, schema.payments
    payment_match = valid_filter("payments", schema)
    payment_match[p["completedAt"]] = {"$type": "date"}
    activation = _ms_when(_is_date("$payment.completedAt"), e.ref("activatedAt"), "$payment.completedAt")
    email = _ms_when(_is_date(e.ref("confirmationEmailSentAt")), e.ref("confirmationEmailSentAt"), e.ref("activatedAt"))
    return [
        *valid_stages("enrollments", schema, {e["activatedAt"]: window.range()}),
        {"$lookup": {"from": p.name, "localField": e["paymentId"], "foreignField": "_id",
                     "pipeline": [{"$match": payment_match}, {"$project": {"completedAt": p.ref("completedAt")}}],
                     "as": "payment"}},
        {"$set": {"payment": {"$first": "$payment"}}},
        {"$group": {
            "_id": bucket_expr(e.ref("activatedAt"), unit, tz),
            "activated": {"$sum": 1},
            "activation_avg": {"$avg": activation}, "activation_p95": _p95(activation),
            "email_avg": {"$avg": email}, "email_p95": _p95(email),
        }},
    ]


@rolled_up
def latency_series(src: Source, window: Window, tz: ZoneInfo | str, unit: str | None = None) -> list[dict]:
    """``[{"bucket", "activated", "activation_ms": {"avg", "p95"}, "email_ms": {"avg", "p95"}}]``."""
    unit = unit or bucket_unit(window)
    rows = {
        key: {"activated": row["activated"],
              "activation_ms": _stats(row.get("activation_avg"), row.get("activation_p95")),
              "email_ms": _stats(row.get("email_avg"), row.get("email_p95"))}
        for key, row in _by_bucket(src.aggregate("enrollments", latency_series_pipeline(window, src.schema, tz, unit))).items()
    }
    return _fill(rows, window, unit, tz, lambda: {"activated": 0, "activation_ms": _stats(None, None),
                                                  "email_ms": _stats(None, None)})


def enrollment_funnel_pipeline(window: Window, schema: Schema) -> list[dict]:
    e = schema.enrollments
    paid = {"$in": [e.ref("paymentStatus"), list(CONVERTED_PAYMENT_STATUSES)]}
    activated = {"$and": [paid, _is_date(e.ref("activatedAt"))]}
    emailed = {"$and": [activated, _is_date(e.ref("confirmationEmailSentAt"))]}
    return [
        *valid_stages("enrollments", schema, {e["createdAt"]: window.range()}),
        {"$group": {"_id": None, "created": {"$sum": 1},
                    "paid": {"$sum": {"$cond": [paid, 1, 0]}},
                    "activated": {"$sum": {"$cond": [activated, 1, 0]}},
                    "emailed": {"$sum": {"$cond": [emailed, 1, 0]}}}},
    ]


@rolled_up
def enrollment_funnel(src: Source, window: Window) -> dict:
    """Enrollments created in W and how far they got: created -> paid -> activated -> emailed.

    paid = ``paymentStatus`` paid or refunded (the spec's "converted");
    activated = paid and ``activatedAt`` set; emailed = activated and the
    confirmation email sent.  Each stage is a subset of the one before.
    """
    rows = src.aggregate("enrollments", enrollment_funnel_pipeline(window, src.schema))
    row = rows[0] if rows else {}
    return {stage: row.get(stage, 0) for stage in ("created", "paid", "activated", "emailed")}


def pending_by_age_pipeline(at: datetime, schema: Schema, edges_min: tuple[int, ...]) -> list[dict]:
    e = schema.enrollments
    age_min = {"$divide": [{"$subtract": [at, e.ref("createdAt")]}, 60_000]}
    return [
        *valid_stages("enrollments", schema, {e["paymentStatus"]: "pending", e["createdAt"]: {"$lt": at}}),
        {"$bucket": {"groupBy": age_min, "boundaries": list(edges_min), "default": "older",
                     "output": {"count": {"$sum": 1}}}},
    ]


def pending_by_age(src: Source, at: datetime, edges_min: tuple[int, ...] = PENDING_AGE_EDGES_MIN) -> list[dict]:
    """Enrollments waiting for their payment (the spec's ``pending_payments``) by age.

    ``[{"lower_min": m, "upper_min": m | None, "count": n}]``, youngest band
    first, every band present; the last band is open-ended.
    """
    rows = src.aggregate("enrollments", pending_by_age_pipeline(utc(at), src.schema, edges_min))
    counts = {row["_id"]: row["count"] for row in rows}
    bands = [{"lower_min": lo, "upper_min": hi, "count": counts.get(lo, 0)} for lo, hi in zip(edges_min, edges_min[1:])]
    bands.append({"lower_min": edges_min[-1], "upper_min": None, "count": counts.get("older", 0)})
    return bands


# -- periods ---------------------------------------------------------------------

def revenue_with_previous(src: Source, periods: dict[str, Window], currencies: tuple[str, ...] = (),
                          tz: ZoneInfo | str | None = None) -> dict:
    """Revenue for each named period and for the period it compares with.

    With ``tz``, a calendar period (``today``, ``week``, ``month``) compares with
    the previous one up to the same local time (``metrics.windows.previous_period``);
    without, and for any other name, with the same length just before.
    ``{"today": {"current": {cur: minor}, "previous": {cur: minor}}, ...}``.
    """
    both = {**periods, **{f"previous_{name}": previous_period(name, w, zone(tz)) if tz else w.previous()
                          for name, w in periods.items()}}
    revenue = revenue_by_period(src, both, currencies)
    return {name: {"current": revenue[name], "previous": revenue[f"previous_{name}"]} for name in periods}


