"""Rollup buckets: what one stretch of time holds, folded from documents, with no I/O.

A bucket is one *series* (a collection placed in time by one of its date
fields, such as payments by ``createdAt`` or payments by ``refundedAt``) over
``[start, start + level)``.  The finest level is 15 minutes: every UTC
offset in use is a multiple of 15 minutes, so every zone's local midnight,
and with it every calendar period, starts on a bucket edge.  Hours and days
(in UTC) are the coarser levels that a long window reads instead.

Everything a figure needs is kept as exact integers or as counters:

* ``by``: counters keyed by a tuple of values (status and currency, decline
  code, webhook type ...), each counting documents and, for payments,
  summing amounts in minor units;
* histograms of durations in log-spaced bins one percent wide, each bin
  keeping its count, smallest and largest value, so that a p95 read from
  them is exact for small samples and within a percent for large ones.

Folding is the same code for the initial build, for a bucket recomputed
after a change, for the partial edges of a window and for verification, so
the four cannot drift apart.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from bson import Decimal128, Int64

from metrics.schema import CONVERTED_PAYMENT_STATUSES, SUCCEEDED_STATUSES
from metrics.series import amount_edges
from metrics.stats import PERCENTILE

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Bucket levels, finest first: name -> length.
LEVELS: dict[str, timedelta] = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
FINE = "15m"

# Durations: bins one percent wide (bin i holds [1.01^i, 1.01^(i+1)) ms); durations <= 0 share one bin.
BIN_RATIO = 1.01
_LOG_RATIO = math.log(BIN_RATIO)
NONPOSITIVE_BIN = -1_000_000



# -- time ------------------------------------------------------------------------

def utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def floor(when: datetime, level: str = FINE) -> datetime:
    """The start of the ``level`` bucket holding ``when`` (UTC edges)."""
    step = LEVELS[level]
    return EPOCH + ((utc(when) - EPOCH) // step) * step


def ceil(when: datetime, level: str = FINE) -> datetime:
    start = floor(when, level)
    return start if start == utc(when) else start + LEVELS[level]


def segments(start: datetime, end: datetime) -> tuple[list[tuple[str, datetime]], list[tuple[datetime, datetime]]]:
    """Split ``[start, end)`` into whole buckets, coarsest that fit, and the partial edges.

    Returns ``(buckets, edges)``: ``buckets`` as ``(level, bucket start)``;
    ``edges`` the at most two ranges shorter than 15 minutes that no bucket
    covers, to be read from the raw documents.
    """
    start, end = utc(start), utc(end)
    inner_start, inner_end = ceil(start), floor(end)
    if inner_start >= inner_end:
        return [], [(start, end)] if start < end else []
    edges = [r for r in ((start, inner_start), (inner_end, end)) if r[0] < r[1]]
    buckets: list[tuple[str, datetime]] = []

    def cover(a: datetime, b: datetime, levels: tuple[str, ...]) -> None:
        # Greedy from both ends: fine buckets up to the first coarse edge, then coarse ones.
        if a >= b:
            return
        if not levels[1:]:
            step = LEVELS[levels[0]]
            t = a
            while t < b:
                buckets.append((levels[0], t))
                t += step
            return
        coarse = levels[-1]
        ca, cb = ceil(a, coarse), floor(b, coarse)
        if ca >= cb:
            cover(a, b, levels[:-1])
            return
        cover(a, ca, levels[:-1])
        t, step = ca, LEVELS[coarse]
        while t < cb:
            buckets.append((coarse, t))
            t += step
        cover(cb, b, levels[:-1])

    cover(inner_start, inner_end, tuple(LEVELS))
    return buckets, edges


# -- values ----------------------------------------------------------------------

def get_path(doc: dict, path: str) -> Any:
    """A field by its (possibly dotted) name; ``None`` when absent."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def key_value(value: Any) -> Any:
    """A platform value usable as a counter key and stored as is: scalars stay, anything else is its text."""
    if value is None or isinstance(value, (str, bool, int, float, datetime)):
        return value
    if isinstance(value, Decimal128):
        return str(value)
    return str(value)


def bson_type(value: Any) -> str:
    """The name ``$type`` gives a value."""
    from bson import Int64, ObjectId
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64) or (isinstance(value, int) and not -2**31 <= value < 2**31):
        return "long"
    if isinstance(value, int):
        return "int"
    names = ((float, "double"), (str, "string"), (dict, "object"), (list, "array"), (datetime, "date"),
             (ObjectId, "objectId"), (Decimal128, "decimal"), (bytes, "binData"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def text_key(value: Any) -> str | None:
    """As ``metrics.series.text_key``: text as it is, null when missing, else ``(not text: <type>)``."""
    if value is None or isinstance(value, str):
        return value
    return f"(not text: {bson_type(value)})"


def minor_units(value: Any) -> int:
    """A valid amount (int32/int64/integral double/Decimal128) as an exact int."""
    if isinstance(value, Decimal128):
        return int(value.to_decimal())
    return int(value)


def currency_of(value: Any) -> str:
    # The same as metrics.payments._currency: lower-case text, "unknown" for anything that is not a string.
    return value.lower() if isinstance(value, str) else "unknown"


def specialist_of(value: Any) -> str:
    # The same as metrics.signals.subject_expr's specialist: the text, "unknown" for anything else.
    return value if isinstance(value, str) else "unknown"


def duration_ms(end: Any, start: Any) -> int | None:
    if isinstance(end, datetime) and isinstance(start, datetime):
        return (utc(end) - utc(start)) // timedelta(milliseconds=1)
    return None


def amount_band(currency: str, amount: int) -> int | str:
    """The lower edge of the Payments page's amount band holding ``amount``, or ``"above"`` for anything
    outside the edges, as ``$bucket`` with ``default: "above"`` places it."""
    edges = amount_edges(currency)
    for lo, hi in zip(edges, edges[1:]):
        if lo <= amount < hi:
            return lo
    return "above"


# -- histograms ------------------------------------------------------------------

@dataclass
class Hist:
    """Durations in ms: exact count and sum, and log-spaced bins of ``[count, min, max]``."""

    count: int = 0
    total: int = 0
    bins: dict[int, list[int]] = field(default_factory=dict)

    def add(self, ms: int) -> None:
        self.count += 1
        self.total += ms
        key = NONPOSITIVE_BIN if ms <= 0 else int(math.floor(math.log(ms) / _LOG_RATIO))
        slot = self.bins.get(key)
        if slot is None:
            self.bins[key] = [1, ms, ms]
        else:
            slot[0] += 1
            slot[1] = min(slot[1], ms)
            slot[2] = max(slot[2], ms)

    def merge(self, other: "Hist") -> None:
        self.count += other.count
        self.total += other.total
        for key, (n, lo, hi) in other.bins.items():
            slot = self.bins.get(key)
            if slot is None:
                self.bins[key] = [n, lo, hi]
            else:
                slot[0] += n
                slot[1] = min(slot[1], lo)
                slot[2] = max(slot[2], hi)

    def avg(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile(self, q: float = PERCENTILE) -> float | None:
        """Nearest rank ``ceil(q * n)``: exact when the rank's bin holds one value or the rank is at its edge."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for key in sorted(self.bins):
            n, lo, hi = self.bins[key]
            if seen + n >= rank:
                k = rank - seen
                if k == n:
                    return float(hi)
                if k == 1:
                    return float(lo)
                return lo + (hi - lo) * (k - 1) / (n - 1)
            seen += n
        return float(self.bins[max(self.bins)][2])

    def to_bson(self) -> dict:
        return {"n": self.count, "sum": Int64(self.total),
                "bins": [[k, *v] for k, v in sorted(self.bins.items())]}

    @classmethod
    def from_bson(cls, doc: dict | None) -> "Hist":
        if not doc:
            return cls()
        return cls(int(doc["n"]), int(doc["sum"]), {int(b[0]): [int(b[1]), int(b[2]), int(b[3])] for b in doc["bins"]})


# -- buckets ---------------------------------------------------------------------

@dataclass
class Bucket:
    """What one series holds over one stretch of time: counters and histograms by name."""

    counters: dict[str, Counter] = field(default_factory=dict)
    sums: dict[str, Counter] = field(default_factory=dict)
    hists: dict[str, Hist] = field(default_factory=dict)

    def count(self, name: str, key: tuple, n: int = 1) -> None:
        self.counters.setdefault(name, Counter())[key] += n

    def add_sum(self, name: str, key: tuple, amount: int) -> None:
        self.sums.setdefault(name, Counter())[key] += amount

    def hist(self, name: str) -> Hist:
        return self.hists.setdefault(name, Hist())

    def merge(self, other: "Bucket") -> "Bucket":
        for name, c in other.counters.items():
            self.counters.setdefault(name, Counter()).update(c)
        for name, c in other.sums.items():
            self.sums.setdefault(name, Counter()).update(c)
        for name, h in other.hists.items():
            self.hist(name).merge(h)
        return self

    def empty(self) -> bool:
        return not any(self.counters.values()) and not any(h.count for h in self.hists.values())

    def to_bson(self) -> dict:
        # Keys are lists of platform values, never field names, so no value can be read as an operator or path.
        return {
            "c": {name: [[list(k), v] for k, v in sorted(c.items(), key=_sort_key) if v]
                  for name, c in sorted(self.counters.items())},
            "a": {name: [[list(k), Int64(v)] for k, v in sorted(c.items(), key=_sort_key)]
                  for name, c in sorted(self.sums.items())},
            "h": {name: h.to_bson() for name, h in sorted(self.hists.items()) if h.count},
        }

    @classmethod
    def from_bson(cls, doc: dict) -> "Bucket":
        b = cls()
        for name, rows in (doc.get("c") or {}).items():
            b.counters[name] = Counter({tuple(k): int(v) for k, v in rows})
        for name, rows in (doc.get("a") or {}).items():
            b.sums[name] = Counter({tuple(k): int(v) for k, v in rows})
        for name, h in (doc.get("h") or {}).items():
            b.hists[name] = Hist.from_bson(h)
        return b

    def comparable(self) -> dict:
        """A canonical form for verification (zero counters dropped)."""
        return self.to_bson()


def _sort_key(item):
    return repr(item[0])


def merge_all(buckets: Iterable[Bucket]) -> Bucket:
    out = Bucket()
    for b in buckets:
        out.merge(b)
    return out


# -- folds: one document into its bucket -------------------------------------------
# Each takes a document projected to our field names (see SERIES in metrics/rollups/store.py)
# that the database already found valid (spec section 3), and adds it to the bucket.

def fold_payment(b: Bucket, d: dict) -> None:
    status, currency = d.get("status"), currency_of(d.get("currency"))
    amount = minor_units(d["amount"])
    b.count("status", (status, currency))
    b.add_sum("status", (status, currency), amount)
    specialist = specialist_of(d.get("specialistId"))
    if status in SUCCEEDED_STATUSES or status == "failed":
        # The alert rules split outcomes by specialist (metrics.signals.subject_expr).
        b.count("outcome_by_specialist", (specialist, status == "failed", currency))
        b.add_sum("outcome_by_specialist", (specialist, status == "failed", currency), amount)
    if status in SUCCEEDED_STATUSES:
        ms = duration_ms(d.get("completedAt"), d.get("createdAt"))
        if ms is not None:
            b.hist("processing").add(ms)
        b.count("amount_band", (currency, amount_band(currency, amount)))
    elif status == "failed":
        for name in ("failureCode", "specialistId", "serviceId"):
            b.count(f"failed_by_{name}", (text_key(d.get(name)),))
        code = d.get("failureCode") if isinstance(d.get("failureCode"), str) else "unknown"
        b.count("declines", (code, currency, specialist))
        b.add_sum("declines", (code, currency, specialist), amount)


def fold_refund(b: Bucket, d: dict) -> None:
    currency = currency_of(d.get("currency"))
    b.count("refunds", (currency,))
    b.add_sum("refunds", (currency,), minor_units(d["amount"]))


def fold_webhook(b: Bucket, d: dict) -> None:
    status = d.get("status")
    b.count("status", (status,))
    b.count("type", (key_value(d.get("type")), status == "failed"))
    ms = duration_ms(d.get("processedAt"), d.get("receivedAt"))
    if ms is not None:
        b.hist("processing").add(ms)
    ms = duration_ms(d.get("receivedAt"), d.get("stripeCreatedAt"))
    if ms is not None:
        b.hist("delivery_lag").add(ms)


def fold_enrollment(b: Bucket, d: dict) -> None:
    paid = d.get("paymentStatus") in CONVERTED_PAYMENT_STATUSES
    activated = paid and isinstance(d.get("activatedAt"), datetime)
    emailed = activated and isinstance(d.get("confirmationEmailSentAt"), datetime)
    b.count("funnel", ("created",))
    for stage, reached in (("paid", paid), ("activated", activated), ("emailed", emailed)):
        if reached:
            b.count("funnel", (stage,))


def fold_activation(b: Bucket, d: dict) -> None:
    b.count("activated", ())
    ms = duration_ms(d.get("activatedAt"), d.get("paymentCompletedAt"))
    if ms is not None:
        b.hist("activation").add(ms)
    ms = duration_ms(d.get("confirmationEmailSentAt"), d.get("activatedAt"))
    if ms is not None:
        b.hist("email").add(ms)


def fold_enrollment_refund(b: Bucket, d: dict) -> None:
    b.count("refunded", ())


def fold_into(docs: Iterable[dict], time_field: str, fold: Callable[[Bucket, dict], None],
              level: str = FINE) -> dict[datetime, Bucket]:
    """Documents into buckets of ``level`` by ``time_field``."""
    out: dict[datetime, Bucket] = {}
    for d in docs:
        when = d.get(time_field)
        if not isinstance(when, datetime):
            continue
        start = floor(when, level)
        bucket = out.get(start)
        if bucket is None:
            bucket = out[start] = Bucket()
        fold(bucket, d)
    return out
