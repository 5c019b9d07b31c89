"""The indexes the metric queries need on the platform's collections.

Paywatch never creates them on its own: a read-only user cannot, and an
index build on a busy production cluster is the platform team's decision.
``python -m metrics indexes`` lists them and which are missing;
``--create`` creates them for users who allow it.  ``docs/metrics.md`` says
which metric uses which.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.database import Database

from metrics.schema import Schema


@dataclass(frozen=True)
class IndexSpec:
    collection: str  # our collection key
    keys: tuple[tuple[str, int], ...]  # our field names
    why: str
    unique: bool = False

    def real_keys(self, schema: Schema) -> list[tuple[str, int]]:
        coll = getattr(schema, self.collection)
        return [(coll[f], d) for f, d in self.keys]

    def name(self, schema: Schema) -> str:
        return "paywatch_" + "_".join(f"{f}_{d}" for f, d in self.real_keys(schema))


INDEXES = (
    IndexSpec("payments", (("createdAt", 1),), "every payment window, revenue periods"),
    IndexSpec("payments", (("status", 1), ("createdAt", 1)), "stuck payments (one query per status)"),
    IndexSpec("payments", (("refundedAt", 1),), "refunds in a window (any createdAt)"),
    IndexSpec("webhook_events", (("receivedAt", 1),), "webhook windows, last received, latest events"),
    IndexSpec("enrollments", (("createdAt", 1),), "new enrollments, conversion"),
    IndexSpec("enrollments", (("activatedAt", 1),), "activation and email latency"),
    IndexSpec("enrollments", (("refundedAt", 1),), "refunded enrollments in a window"),
    IndexSpec("enrollments", (("paymentStatus", 1), ("createdAt", 1)), "pending payments"),
    IndexSpec("enrollments", (("status", 1), ("customerId", 1), ("serviceId", 1)), "duplicate enrollments"),
    IndexSpec("enrollments", (("paymentId", 1),), "the guide's index; reconciliation"),
)


def _serves(existing: list[tuple[str, object]], wanted: list[tuple[str, int]]) -> bool:
    """The same keys in the same order, with the same directions or all reversed
    (MongoDB walks an index either way).  A direction such as "2dsphere" never matches."""
    if [k for k, _ in existing] != [k for k, _ in wanted]:
        return False
    directions = [d for _, d in existing]  # 1 or 1.0 (the shell writes doubles), or a string
    return directions == [d for _, d in wanted] or directions == [-d for _, d in wanted]


def missing_indexes(db: Database, schema: Schema) -> list[IndexSpec]:
    """Specs with no existing index serving the same keys (whatever its name)."""
    missing = []
    existing_by_collection: dict[str, list] = {}
    for spec in INDEXES:
        name = getattr(schema, spec.collection).name
        if name not in existing_by_collection:
            # pymongo gives each index's key as a list of (field, direction) pairs.
            existing_by_collection[name] = [info["key"] for info in db[name].index_information().values()]
        if not any(_serves(keys, spec.real_keys(schema)) for keys in existing_by_collection[name]):
            missing.append(spec)
    return missing


def ensure_indexes(db: Database, schema: Schema) -> list[str]:
    """Create the missing indexes; return the names created."""
    created = []
    for spec in missing_indexes(db, schema):
        coll = db[getattr(schema, spec.collection).name]
        created.append(coll.create_index(spec.real_keys(schema), name=spec.name(schema), unique=spec.unique))
    return created
