"""What makes a document valid (spec section 3), as MongoDB filters.

Every metric starts from ``valid_stages(...)`` (or ``valid_filter``) so an
invalid document is excluded from all of them the same way; ``data_quality``
counts the rest.  A string amount such as ``"250"`` is invalid, never 0.
"""

from __future__ import annotations

import math
from datetime import datetime

from bson import Decimal128, Int64

from metrics.db import Source
from metrics.schema import ENROLLMENT_STATUSES, PAYMENT_STATUSES, WEBHOOK_STATUSES, WINDOW_FIELD, Schema
from metrics.rollups import rolled_up

NUMBER_TYPES = ["int", "long", "double", "decimal"]
STATUSES = {"payments": PAYMENT_STATUSES, "enrollments": ENROLLMENT_STATUSES, "webhook_events": WEBHOOK_STATUSES}
COLLECTIONS = ("payments", "enrollments", "webhook_events")

# Amounts are summed as int64.  The range keeps out NaN and the infinities (a
# range never matches NaN), which ``$toLong`` would reject and so fail the whole
# aggregation instead of excluding one document, and amounts beyond 2^53 minor
# units (90 trillion dollars: no payment) whose sums could overflow int64 and
# which a JSON reader holding numbers as doubles could not represent exactly.
AMOUNT_LIMIT = 2**53
AMOUNT_RANGE = {"$gte": Int64(-AMOUNT_LIMIT), "$lte": Int64(AMOUNT_LIMIT)}


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
    # A query condition also matches an array holding a matching value (``status: ["completed"]``);
    # the same tests as expressions see the field's own value, so an array is invalid.
    checks = [{"$eq": [{"$type": coll.ref(WINDOW_FIELD[key])}, "date"]},
              {"$in": [coll.ref("status"), list(STATUSES[key])]}]
    if key == "payments":
        query[coll["amount"]] = {"$type": NUMBER_TYPES, **AMOUNT_RANGE}
        checks.append(_integral_amount(schema))
    query["$expr"] = {"$and": checks}
    return query


def is_valid(key: str, doc: dict) -> bool:
    """``valid_filter`` in Python, for a document already read under our field names.

    The rollups read documents with a plain indexed ``find`` (SecantusDB runs
    ``$expr`` slowly) and keep the valid ones with this; the two definitions
    are held together by the malformed-document tests, which run on both paths.
    """
    if not isinstance(doc.get(WINDOW_FIELD[key]), datetime):
        return False
    status = doc.get("status")
    if not isinstance(status, str) or status not in STATUSES[key]:
        return False
    if key == "payments":
        return _valid_amount(doc.get("amount"))
    return True


def _valid_amount(amount) -> bool:
    if isinstance(amount, bool):
        return False
    if isinstance(amount, int):
        return -AMOUNT_LIMIT <= amount <= AMOUNT_LIMIT
    if isinstance(amount, float):
        return math.isfinite(amount) and amount.is_integer() and -AMOUNT_LIMIT <= amount <= AMOUNT_LIMIT
    if isinstance(amount, Decimal128):
        value = amount.to_decimal()
        return value.is_finite() and value == value.to_integral_value() and -AMOUNT_LIMIT <= value <= AMOUNT_LIMIT
    return False


def valid_stages(key: str, schema: Schema, indexed: dict, window_condition: dict | None = None) -> list[dict]:
    """Two ``$match`` stages: the indexed condition alone, then validity.

    MongoDB merges adjacent ``$match`` stages and plans them as one, so this is
    the same query there.  SecantusDB (the embedded default) only uses an index
    for a filter whose every condition that index covers; with the validity
    tests beside the window range it scans the whole collection.
    """
    return [{"$match": indexed}, {"$match": valid_filter(key, schema, window_condition)}]


def count_valid(src: Source, key: str, indexed: dict, window_condition: dict | None = None) -> int:
    """Valid documents matching ``indexed`` (field names already mapped)."""
    rows = src.aggregate(key, valid_stages(key, src.schema, indexed, window_condition) + [{"$count": "n"}])
    return rows[0]["n"] if rows else 0


def invalid_count(src: Source, key: str) -> int:
    """Documents of the whole collection that fail ``valid_filter``."""
    return src.count(key, {"$nor": [valid_filter(key, src.schema)]})


@rolled_up
def data_quality(src: Source) -> dict:
    return {key: {"invalid": invalid_count(src, key)} for key in COLLECTIONS}
