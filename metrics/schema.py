"""The platform's collections and field names, and how a user renames them.

The defaults are the data contract of ``docs/metrics.md`` ("Renamed collections and fields").
A platform that names things differently maps our name to theirs in
``paywatch.toml``::

    [schema.payments]
    collection = "transactions"
    amount = "amount_cents"

Every pipeline asks this mapping for a field name; no pipeline spells one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

PAYMENT_STATUSES = ("pending", "processing", "completed", "failed", "canceled", "refunded")
SUCCEEDED_STATUSES = ("completed", "refunded")
STUCK_STATUSES = ("pending", "processing")
ENROLLMENT_STATUSES = ("pending", "active", "cancelled", "refunded")
ENROLLMENT_PAYMENT_STATUSES = ("pending", "paid", "failed", "refunded")
CONVERTED_PAYMENT_STATUSES = ("paid", "refunded")
WEBHOOK_STATUSES = ("received", "processed", "failed")

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "payments": (
        "paymentId", "amount", "currency", "status", "customerId", "customerEmail",
        "specialistId", "serviceId", "failureCode", "failureMessage",
        "createdAt", "completedAt", "refundedAt", "stripeEventId",
    ),
    "enrollments": (
        "customerId", "specialistId", "serviceId", "paymentId", "status",
        "paymentStatus", "createdAt", "activatedAt", "refundedAt",
        "confirmationEmailSentAt",
    ),
    "webhook_events": (
        "eventId", "type", "stripeCreatedAt", "receivedAt", "processedAt",
        "status", "error",
    ),
}

# The field that places a document in a time window (spec section 2).
WINDOW_FIELD = {"payments": "createdAt", "enrollments": "createdAt", "webhook_events": "receivedAt"}


class SchemaError(ValueError):
    """A schema mapping names a collection or field we do not know."""


@dataclass(frozen=True)
class CollectionSchema:
    """One collection: its real name and our-name -> their-name for fields."""

    key: str
    name: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, ours: str) -> str:
        if ours not in DEFAULT_FIELDS[self.key]:
            raise KeyError(f"{self.key} has no field {ours!r}")
        return self.fields.get(ours, ours)

    def ref(self, ours: str) -> str:
        """The ``$field`` reference used inside aggregation expressions."""
        return "$" + self[ours]


@dataclass(frozen=True)
class Schema:
    payments: CollectionSchema
    enrollments: CollectionSchema
    webhook_events: CollectionSchema

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Mapping[str, str]] | None = None) -> "Schema":
        mapping = dict(mapping or {})
        unknown = set(mapping) - set(DEFAULT_FIELDS)
        if unknown:
            raise SchemaError(f"[schema] has unknown collection(s): {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(DEFAULT_FIELDS)}")
        parts = {}
        for key, ours in DEFAULT_FIELDS.items():
            table = dict(mapping.get(key, {}))
            name = table.pop("collection", key)
            bad = set(table) - set(ours)
            if bad:
                raise SchemaError(f"[schema.{key}] has unknown field(s): {', '.join(sorted(bad))}")
            for k, v in table.items():
                if not isinstance(v, str) or not v or v.startswith("$") or "." in v and v.startswith("."):
                    raise SchemaError(f"[schema.{key}] {k} must be a field name, got {v!r}")
            if not isinstance(name, str) or not name or name.startswith("$") or name.startswith("system."):
                raise SchemaError(f"[schema.{key}] collection must be a collection name, got {name!r}")
            parts[key] = CollectionSchema(key=key, name=name, fields=table)
        return cls(**parts)


DEFAULT_SCHEMA = Schema.from_mapping()
