"""Small shared pieces: rates, and duration statistics computed in the database."""

from __future__ import annotations

PERCENTILE = 0.95


def ratio(numerator: int, denominator: int) -> float | None:
    """A rate in [0, 1]; ``None`` when there is nothing to divide by (never 0, never NaN).

    A named rate (success, refund, failure, conversion) is computed by its
    formula in :mod:`metrics.catalogue` (``rate("payment_success_rate", ...)``),
    which divides with this function.
    """
    return numerator / denominator if denominator else None


def duration_ms(end_ref: str, start_ref: str) -> dict:
    """``end - start`` in milliseconds (BSON date subtraction yields milliseconds)."""
    return {"$subtract": [end_ref, start_ref]}


def duration_stats_stage(end_ref: str, start_ref: str) -> dict:
    """A ``$group`` giving count, average and p95 of ``end - start`` in ms.

    ``$percentile`` with ``method: "approximate"`` is what MongoDB 7+ offers;
    the spec accepts it in place of the exact nearest-rank value.
    """
    ms = duration_ms(end_ref, start_ref)
    return {"$group": {
        "_id": None,
        "count": {"$sum": 1},
        "avg": {"$avg": ms},
        "p95": {"$percentile": {"input": ms, "p": [PERCENTILE], "method": "approximate"}},
    }}


def _number(value) -> float | int | None:
    if value is None:
        return None
    value = float(str(value)) if not isinstance(value, (int, float)) else value  # Decimal128 -> float
    return int(value) if float(value).is_integer() else round(float(value), 1)


def read_duration_stats(rows: list[dict]) -> dict:
    """``{"avg": ms | None, "p95": ms | None}`` from a ``duration_stats_stage`` result."""
    if not rows or not rows[0].get("count"):
        return {"avg": None, "p95": None}
    row = rows[0]
    p95 = row.get("p95")
    if isinstance(p95, list):
        p95 = p95[0] if p95 else None
    return {"avg": _number(row.get("avg")), "p95": _number(p95)}
