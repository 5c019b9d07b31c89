"""The metric functions of ``payments``, ``webhooks``, ``enrollments``, ``quality`` and ``series``,
answered from the rollups: the closed buckets inside a window, plus an indexed
read of the raw documents in its two partial edges.

Each function here has the name ``<module>_<function>`` of the one it stands
in for and returns exactly what that one returns from the raw documents
(``tests/test_rollups.py`` holds them to it).  The module functions dispatch
here when their :class:`~metrics.db.Source` carries rollups
(:func:`metrics.rollups.rolled_up`); a collection whose rollups are not built
yet is answered from the raw documents.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterator

from metrics.catalogue import rate
from metrics.payments import summary_block as payments_block
from metrics.rollups import buckets as bk
from metrics.rollups.buckets import Bucket, Hist
from metrics.rollups.store import HOUR, SERIES, bucket_id, fetch
from metrics.schema import SUCCEEDED_STATUSES
from metrics.webhooks import summary_block as webhooks_block
from metrics.windows import Window


def over(src, series: str, ranges: list[tuple[datetime, datetime]]) -> list[Bucket]:
    """One merged bucket per range: stored buckets read in one query, partial edges from the raw documents."""
    plans = [bk.segments(a, b) for a, b in ranges]
    keys = sorted({k for buckets, _ in plans for k in buckets}, key=lambda k: (k[0], k[1]))
    stored = src.rollups.read_keyed(series, keys)
    out = []
    for buckets, edges in plans:
        merged = bk.merge_all(stored[k] for k in buckets if k in stored)
        for a, b in edges:
            merged.merge(edge(src, series, a, b))
        out.append(merged)
    return out


def edge(src, series: str, start: datetime, end: datetime) -> Bucket:
    """The raw documents of ``[start, end)``, a range no stored bucket covers, folded into one bucket."""
    out = Bucket()
    for d in documents(src, series, start, end):
        SERIES[series].fold(out, d)
    return out


def documents(src, series: str, start: datetime, end: datetime) -> Iterator[dict]:
    """The valid raw documents of ``series`` in ``[start, end)``, under our field names.

    They are read as the whole fine buckets the range falls in, each kept until its hour's bucket
    is written again (a change to one of its documents rewrites it): a page's windows end at one
    instant and meet one another inside a fine bucket (the last 24 hours and the 24 hours before),
    a chart's first and last bars end where its window does, and the next view needs them again.
    """
    spec = SERIES[series]
    raw = src.without_rollups()
    lo, hi = _as_stored(start), _as_stored(end)
    t = bk.floor(start)
    while t < end:
        docs = src.rollups.remembered(("fine", series, t), lambda t=t: fetch(raw, spec, t, t + bk.LEVELS[bk.FINE]),
                                      under=bucket_id(series, HOUR, bk.floor(t, HOUR)))
        yield from (d for d in docs if lo <= bk.utc(d[spec.field]) < hi)
        t += bk.LEVELS[bk.FINE]


def _as_stored(when: datetime) -> datetime:
    # BSON dates hold milliseconds: a bound is compared as the server compares it, truncated.
    return bk.utc(when).replace(microsecond=when.microsecond // 1000 * 1000)


def one(src, series: str, window: Window) -> Bucket:
    return over(src, series, [(window.start, window.end)])[0]


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(float(value), 1)


def duration_stats(h: Hist) -> dict:
    """As ``metrics.stats.read_duration_stats``."""
    if not h.count:
        return {"avg": None, "p95": None}
    return {"avg": _number(h.avg()), "p95": _number(h.quantile())}


def chart_stats(h: Hist) -> dict:
    """As ``metrics.series._stats``."""
    if not h.count:
        return {"avg": None, "p95": None}
    return {"avg": round(float(h.avg()), 1), "p95": round(float(h.quantile()), 1)}


def _counter(b: Bucket, name: str):
    return b.counters.get(name) or {}


def _sums(b: Bucket, name: str):
    return b.sums.get(name) or {}


def _hist(b: Bucket, name: str) -> Hist:
    return b.hists.get(name) or Hist()


# -- payments ------------------------------------------------------------------

def _outcomes(b: Bucket) -> tuple[int, int, dict[str, int], dict[str, int], dict[str, int]]:
    """succeeded, failed, revenue per currency, succeeded count per currency, count per status."""
    succeeded = failed = 0
    revenue: dict[str, int] = {}
    succeeded_by: dict[str, int] = {}
    by_status: dict[str, int] = {}
    amounts = _sums(b, "status")
    for (status, currency), n in _counter(b, "status").items():
        by_status[status] = by_status.get(status, 0) + n
        if status in SUCCEEDED_STATUSES:
            succeeded += n
            revenue[currency] = revenue.get(currency, 0) + amounts.get((status, currency), 0)
            succeeded_by[currency] = succeeded_by.get(currency, 0) + n
        elif status == "failed":
            failed += n
    return succeeded, failed, revenue, succeeded_by, by_status


def payments_window_summary(src, window: Window, currencies: tuple[str, ...] = ()) -> dict:
    b = one(src, "payments", window)
    amounts = _sums(b, "status")
    counts = [(status, cur, n, amounts.get((status, cur), 0)) for (status, cur), n in _counter(b, "status").items()]
    return payments_block(counts, payments_refund_count(src, window), duration_stats(_hist(b, "processing")), currencies)


def payments_refund_count(src, window: Window) -> int:
    return sum(_counter(one(src, "refunds", window), "refunds").values())


def payments_revenue_by_period(src, periods: dict[str, Window], currencies: tuple[str, ...] = ()) -> dict:
    names = list(periods)
    found = over(src, "payments", [(periods[n].start, periods[n].end) for n in names])
    out = {}
    for name, b in zip(names, found):
        taken = _outcomes(b)[2]
        row = dict.fromkeys(currencies, 0)
        for cur in sorted(taken):
            if taken[cur]:
                row[cur] = taken[cur]
        out[name] = row
    return out


# -- webhooks ------------------------------------------------------------------

def webhooks_window_summary(src, window: Window) -> dict:
    b = one(src, "webhooks", window)
    return webhooks_block({status: n for (status,), n in _counter(b, "status").items()},
                         duration_stats(_hist(b, "processing")), duration_stats(_hist(b, "delivery_lag")))


# -- enrollments ---------------------------------------------------------------

def _funnel(b: Bucket) -> dict[str, int]:
    c = _counter(b, "funnel")
    return {stage: c.get((stage,), 0) for stage in ("created", "paid", "activated", "emailed")}


def enrollments_created_count(src, window: Window) -> int:
    return _funnel(one(src, "enrollments", window))["created"]


def enrollments_refunded_count(src, window: Window) -> int:
    return sum(_counter(one(src, "enrollment_refunds", window), "refunded").values())


def enrollments_window_summary(src, window: Window) -> dict:
    funnel = _funnel(one(src, "enrollments", window))
    activations = one(src, "activations", window)
    return {
        "created": funnel["created"],
        "converted": funnel["paid"],
        "conversion_rate": rate("conversion_rate", converted=funnel["paid"], created=funnel["created"]),
        "refunded": enrollments_refunded_count(src, window),
        "activation_ms": duration_stats(_hist(activations, "activation")),
        "email_ms": duration_stats(_hist(activations, "email")),
    }


def enrollments_duplicate_count(src, at: datetime) -> int:
    return len(src.rollups.duplicate_pairs(at))


def enrollments_duplicate_pairs(src, at: datetime, limit: int | None = 50) -> list[dict]:
    pairs = src.rollups.duplicate_pairs(at)
    return pairs if limit is None else pairs[:limit]


def signals_recent_duplicates(src, window: Window, limit: int = 50) -> list[dict]:
    out = []
    for row in src.rollups.duplicate_pairs(window.end, members=True):
        inside = sorted((m for m in row["members"] if window.start <= bk.utc(m["t"])),
                        key=lambda m: (bk.utc(m["t"]), _order(m["id"])))
        if len(inside) > 1:
            out.append({"customerId": row["customerId"], "serviceId": row["serviceId"], "count": len(inside),
                        "enrollment_ids": [str(m["id"]) for m in inside], "latest": bk.utc(inside[-1]["t"])})
    out.sort(key=lambda r: (_order(r["customerId"]), _order(r["serviceId"])))
    out.sort(key=lambda r: r["latest"], reverse=True)  # stable: newest first, then customer and service
    return out[:limit]


# -- data quality --------------------------------------------------------------

def quality_data_quality(src) -> dict:
    from metrics.quality import COLLECTIONS
    return {key: {"invalid": src.rollups.invalid_count(key)} for key in COLLECTIONS}


# -- series (charts) -------------------------------------------------------------

def _chart(src, series: str, window: Window, tz, unit: str | None) -> tuple[str, list[tuple[datetime, Bucket]]]:
    from metrics.series import bucket_starts, bucket_unit, zone
    unit = unit or bucket_unit(window)
    starts = bucket_starts(window, unit, zone(tz))
    ends = starts[1:] + [window.end]
    ranges = [(max(a, window.start), min(b, window.end)) for a, b in zip(starts, ends)]
    return unit, list(zip(starts, over(src, series, ranges)))


def series_payment_series(src, window: Window, tz, unit: str | None = None, currencies: tuple[str, ...] = ()) -> list[dict]:
    _, rows = _chart(src, "payments", window, tz, unit)
    parts = []
    seen = set(currencies)
    for start, b in rows:
        succeeded, failed, revenue, succeeded_by, by_status = _outcomes(b)
        if by_status:
            seen |= set(revenue)
        parts.append((start, succeeded, failed, revenue, succeeded_by))
    seen_sorted = sorted(seen)
    out = []
    for start, succeeded, failed, revenue, succeeded_by in parts:
        rev = {c: revenue.get(c, 0) for c in seen_sorted}
        out.append({
            "bucket": start, "succeeded": succeeded, "failed": failed, "revenue": rev,
            "success_rate": rate("payment_success_rate", succeeded=succeeded, failed=failed),
            "avg_transaction_value": {c: round(rev[c] / succeeded_by[c], 2) if succeeded_by.get(c) else None
                                      for c in seen_sorted},
        })
    return out


def series_refund_series(src, window: Window, tz, unit: str | None = None) -> list[dict]:
    _, rows = _chart(src, "refunds", window, tz, unit)
    out = []
    for start, b in rows:
        counts, amounts = _counter(b, "refunds"), _sums(b, "refunds")
        out.append({"bucket": start, "refunds": sum(counts.values()),
                    "amount": {cur: amounts.get((cur,), 0) for (cur,), n in sorted(counts.items()) if n}})
    return out


def series_webhook_series(src, window: Window, tz, unit: str | None = None) -> list[dict]:
    _, rows = _chart(src, "webhooks", window, tz, unit)
    out = []
    for start, b in rows:
        counts = {status: n for (status,), n in _counter(b, "status").items()}
        processed, failed = counts.get("processed", 0), counts.get("failed", 0)
        out.append({"bucket": start, "received": sum(counts.values()), "processed": processed, "failed": failed,
                    "processing_ms": chart_stats(_hist(b, "processing")),
                    "delivery_lag_ms": chart_stats(_hist(b, "delivery_lag")),
                    "failure_rate": rate("webhook_failure_rate", failed=failed, processed=processed)})
    return out


def series_webhook_types(src, window: Window, limit: int = 20) -> list[dict]:
    totals: dict = {}
    for (kind, failed), n in _counter(one(src, "webhooks", window), "type").items():
        row = totals.setdefault(kind, {"type": kind, "received": 0, "failed": 0})
        row["received"] += n
        row["failed"] += n if failed else 0
    return sorted(totals.values(), key=lambda r: (-r["received"], _order(r["type"])))[:limit]


def series_enrollment_series(src, window: Window, tz, unit: str | None = None) -> list[dict]:
    _, created = _chart(src, "enrollments", window, tz, unit)
    _, refunded = _chart(src, "enrollment_refunds", window, tz, unit)
    out = []
    for (start, b), (_, r) in zip(created, refunded):
        funnel = _funnel(b)
        out.append({"bucket": start, "created": funnel["created"], "converted": funnel["paid"],
                    "refunded": sum(_counter(r, "refunded").values()),
                    "conversion_rate": rate("conversion_rate", converted=funnel["paid"], created=funnel["created"])})
    return out


def series_latency_series(src, window: Window, tz, unit: str | None = None) -> list[dict]:
    _, rows = _chart(src, "activations", window, tz, unit)
    return [{"bucket": start, "activated": sum(_counter(b, "activated").values()),
             "activation_ms": chart_stats(_hist(b, "activation")), "email_ms": chart_stats(_hist(b, "email"))}
            for start, b in rows]


def series_enrollment_funnel(src, window: Window) -> dict:
    return _funnel(one(src, "enrollments", window))


ROLLED_FAILURE_FIELDS = ("failureCode", "specialistId", "serviceId")


def series_failures_by(src, window: Window, field: str = "failureCode", limit: int = 10) -> list[dict]:
    from metrics import series
    if field not in ROLLED_FAILURE_FIELDS:
        return series.failures_by.raw(src, window, field, limit)
    counts = _counter(one(src, "payments", window), f"failed_by_{field}")
    rows = [{"key": k, "count": n} for (k,), n in counts.items() if n]
    return sorted(rows, key=lambda r: (-r["count"], _order(r["key"])))[:limit]


def series_amount_histogram(src, window: Window, currency: str, statuses: tuple[str, ...] = SUCCEEDED_STATUSES,
                            edges: list[int] | None = None) -> list[dict]:
    from metrics import series
    default = series.amount_edges(currency)
    if tuple(statuses) != tuple(SUCCEEDED_STATUSES) or (edges is not None and list(edges) != default):
        return series.amount_histogram.raw(src, window, currency, statuses, edges)
    counts = {band: n for (cur, band), n in _counter(one(src, "payments", window), "amount_band").items()
              if cur == currency.lower()}
    bands = [{"lower": lo, "upper": hi, "count": counts.get(lo, 0)} for lo, hi in zip(default, default[1:])]
    bands.append({"lower": default[-1], "upper": None, "count": counts.get("above", 0)})
    return bands


# -- the weekly review ------------------------------------------------------------

def review_failures_by_hour(src, window: Window, tz: str) -> list[dict]:
    """As ``metrics.review.failures_by_hour``: the window's local hours, summed per (weekday, hour)."""
    from metrics.series import zone
    from metrics.stats import ratio
    cells: dict[tuple[int, int], list[int]] = {}
    for start, b in _chart(src, "payments", window, tz, "hour")[1]:
        succeeded, failed, *_ = _outcomes(b)
        if succeeded + failed:
            local = start.astimezone(zone(tz))
            cell = cells.setdefault((local.isoweekday(), local.hour), [0, 0])
            cell[0] += failed
            cell[1] += succeeded + failed
    return [{"weekday": weekday, "hour": hour, "failed": failed, "decided": decided,
             "failure_rate": ratio(failed, decided)} for (weekday, hour), (failed, decided) in sorted(cells.items())]


def review_worst_webhook_hours(src, window: Window, tz: str, limit: int = 5) -> list[dict]:
    """As ``metrics.review.worst_webhook_hours``: most failed first, then the slowest p95 (none last)."""
    from metrics.stats import ratio
    rows = []
    for start, b in _chart(src, "webhooks", window, tz, "hour")[1]:
        counts = {status: n for (status,), n in _counter(b, "status").items()}
        if not sum(counts.values()):
            continue
        processed, failed = counts.get("processed", 0), counts.get("failed", 0)
        rows.append({"hour": start, "received": sum(counts.values()), "processed": processed, "failed": failed,
                     "failure_rate": ratio(failed, processed + failed),
                     "processing_p95_ms": duration_stats(_hist(b, "processing"))["p95"]})
    slowest = lambda r: -r["processing_p95_ms"] if r["processing_p95_ms"] is not None else float("inf")  # noqa: E731
    return sorted(rows, key=lambda r: (-r["failed"], slowest(r), r["hour"]))[:limit]


# -- alert signals ---------------------------------------------------------------

def signals_payment_outcomes(src, window: Window, split: str | None = None) -> dict[str, dict]:
    """As ``metrics.signals.payment_outcomes``: decided payments per subject, with the amount at risk."""
    b = one(src, "payments", window)
    out: dict[str, dict] = {}
    counts, amounts = _counter(b, "outcome_by_specialist"), _sums(b, "outcome_by_specialist")
    for (specialist, failed, currency), n in counts.items():
        if not n:
            continue
        subject = {None: "", "currency": currency, "specialist": specialist}[split]
        entry = out.setdefault(subject, {"succeeded": 0, "failed": 0, "failed_amount": {}})
        if failed:
            entry["failed"] += n
            entry["failed_amount"][currency] = entry["failed_amount"].get(currency, 0) + \
                amounts.get((specialist, failed, currency), 0)
        else:
            entry["succeeded"] += n
    for entry in out.values():
        entry["success_rate"] = rate("payment_success_rate", succeeded=entry["succeeded"], failed=entry["failed"])
        entry["failed_amount"] = dict(sorted(entry["failed_amount"].items()))
    return dict(sorted(out.items()))


def signals_decline_codes(src, window: Window, limit: int = 5, split: str | None = None,
                          subject: str | None = None) -> list[dict]:
    """As ``metrics.signals.decline_codes``: the top decline codes, of one subject or all."""
    b = one(src, "payments", window)
    counts, amounts = _counter(b, "declines"), _sums(b, "declines")
    codes: dict[str, dict] = {}
    for (code, currency, specialist), n in counts.items():
        if not n or (subject is not None and split is not None
                     and {"currency": currency, "specialist": specialist}[split] != subject):
            continue
        row = codes.setdefault(code, {"code": code, "count": 0, "amount": {}})
        row["count"] += n
        row["amount"][currency] = row["amount"].get(currency, 0) + amounts.get((code, currency, specialist), 0)
    rows = sorted(codes.values(), key=lambda r: (-r["count"], _order(r["code"])))[:limit]
    for row in rows:
        row["amount"] = dict(sorted(row["amount"].items()))
    return rows


# Longer windows of the amount-spike rule are aggregated from the raw documents: buckets keep no
# sum of squares, and a day of fine buckets is a hundred reads.
SPIKE_DOCUMENTS_MAX = timedelta(hours=3)


def signals_amount_spike(src, window: Window, weeks: int = 4, split: str | None = "currency") -> dict[str, dict]:
    """As ``metrics.signals.amount_spike``, from the documents of each window's fine buckets."""
    from metrics.signals import amount_spike, baseline_windows, spike_scores
    if window.length > SPIKE_DOCUMENTS_MAX:
        return amount_spike.raw(src.without_rollups(), window, weeks, split)
    per_window = []
    for w in baseline_windows(window, weeks):
        stats: dict[str, dict] = {}
        for d in documents(src, "payments", w.start, w.end):
            if d.get("status") in SUCCEEDED_STATUSES:
                amount = bk.minor_units(d["amount"])
                row = stats.setdefault(_subject(d, split), {"count": 0, "sum": 0, "sumsq": 0.0})
                row["count"] += 1
                row["sum"] += amount
                row["sumsq"] += float(amount) * float(amount)
        per_window.append(stats)
    return spike_scores(per_window)


def _subject(payment: dict, split: str | None) -> str:
    # As metrics.signals.subject_expr.
    if split is None:
        return ""
    if split == "currency":
        return bk.currency_of(payment.get("currency"))
    return bk.specialist_of(payment.get("specialistId"))


def _counted(src, series: str, windows: list[Window]) -> list[int]:
    return [sum(_counter(b, "status").values()) for b in over(src, series, [(w.start, w.end) for w in windows])]


def signals_received_counts(src, windows: list[Window]) -> list[int]:
    return _counted(src, "webhooks", windows)


def signals_created_counts(src, windows: list[Window]) -> list[int]:
    return _counted(src, "payments", windows)


def _order(value) -> tuple:
    # MongoDB's order for the few types a key can have: null, numbers, strings, then the rest.
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (3, str(value))
    if isinstance(value, (int, float)):
        return (1, float(value))
    if isinstance(value, str):
        return (2, value)
    return (4, str(value))
