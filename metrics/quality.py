"""What makes a document valid (spec section 3), as MongoDB filters.

Every metric starts from ``valid_filter(...)`` so an invalid document is
excluded from all of them the same way; ``data_quality`` counts the rest.
A string amount such as ``"250"`` is invalid, never 0.
"""

from __future__ import annotations

from metrics.db import Source
from metrics.schema import ENROLLMENT_STATUSES, PAYMENT_STATUSES, WEBHOOK_STATUSES, WINDOW_FIELD, Schema

NUMBER_TYPES = ["int", "long", "double", "decimal"]
STATUSES = {"payments": PAYMENT_STATUSES, "enrollments": ENROLLMENT_STATUSES, "webhook_events": WEBHOOK_STATUSES}


def _integral_amount(schema: Schema) -> dict:
    """Amount in minor units: a number with no fraction ($cond keeps $trunc off strings)."""
    ref = schema.payments.ref("amount")
    return {"$cond": [{"$isNumber": ref}, {"$eq": [ref, {"$trunc": [ref, 0]}]}, False]}


def valid_filter(key: str, schema: Schema, window_condition: dict | None = None) -> dict:
    """The filter a document must pass to count at all.

    ``window_condition`` replaces the plain "is a date" test on the window
    field with a range (a range on a date matches only dates, so it is both).
    """
    coll = getattr(schema, key)
    window_field = coll[WINDOW_FIELD[key]]
    query: dict = {
        window_field: window_condition if window_condition is not None else {"$type": "date"},
        coll["status"]: {"$in": list(STATUSES[key])},
    }
    if key == "payments":
        query[coll["amount"]] = {"$type": NUMBER_TYPES}
        query["$expr"] = _integral_amount(schema)
    return query


def invalid_count(src: Source, key: str) -> int:
    """Documents of the whole collection that fail ``valid_filter``."""
    return src.count(key, {"$nor": [valid_filter(key, src.schema)]})


def data_quality(src: Source) -> dict:
    return {key: {"invalid": invalid_count(src, key)} for key in ("payments", "enrollments", "webhook_events")}
