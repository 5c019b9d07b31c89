"""The Stripe mirror's collections in ``PAYWATCH_DB`` and a read handle with a time budget.

Readers (metrics, reconciliation, pages) go through :class:`MirrorStore`,
whose wrappers put ``maxTimeMS`` on every query and turn driver errors into
:class:`~metrics.db.DataSourceUnavailable`, as :class:`metrics.db.Source`
does for the platform's database.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

from metrics.db import DataSourceUnavailable, state_db
from metrics.settings import Settings

PAYMENT_INTENTS = "stripe_payment_intents"
CHARGES = "stripe_charges"
REFUNDS = "stripe_refunds"
DISPUTES = "stripe_disputes"
EVENTS = "stripe_events"
WEBHOOK_ENDPOINTS = "stripe_webhook_endpoints"
SYNC_STATE = "stripe_sync_state"
SYNC_RUNS = "stripe_sync_runs"
API_CALLS = "stripe_api_calls"
# Outcomes of a recorded API call (``kind``) that count against the API's health: the network or
# Stripe failed us.  A 4xx (a permission not granted, an endpoint localstripe lacks) is our request
# being refused; it is reported per resource instead.
ERROR_KINDS = ("network_error", "rate_limited", "server_error")
# Stripe retries a webhook delivery for up to three days in live mode
# (https://docs.stripe.com/webhooks#retries); after that an event's
# ``pending_webhooks`` will not change, so the mirror stops re-reading it.
WEBHOOK_RETRY_DAYS = 3
# Stripe keeps events for 30 days (https://docs.stripe.com/api/events).
EVENTS_KEEP_DAYS = 30
# The sync state and run-report name of the ``delivery_success=false`` listing.
UNDELIVERED = "undelivered_events"

# Stripe resource name -> mirror collection, for the objects listed with a ``created`` cursor.
COLLECTIONS = {
    "payment_intents": PAYMENT_INTENTS,
    "charges": CHARGES,
    "refunds": REFUNDS,
    "disputes": DISPUTES,
    "events": EVENTS,
    "webhook_endpoints": WEBHOOK_ENDPOINTS,
}
# The ``object`` field of an event's ``data.object`` -> the collection it updates.
OBJECT_COLLECTIONS = {
    "payment_intent": PAYMENT_INTENTS,
    "charge": CHARGES,
    "refund": REFUNDS,
    "dispute": DISPUTES,
}

API_CALLS_KEEP_DAYS = 30
SYNC_RUNS_KEEP_DAYS = 90

INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    PAYMENT_INTENTS: [[("created", ASCENDING)], [("status", ASCENDING), ("created", ASCENDING)]],
    CHARGES: [[("created", ASCENDING)], [("payment_intent", ASCENDING)]],
    REFUNDS: [[("created", ASCENDING)], [("payment_intent", ASCENDING)], [("charge", ASCENDING)]],
    DISPUTES: [[("created", ASCENDING)], [("status", ASCENDING)]],
    EVENTS: [[("created", ASCENDING)], [("pending_webhooks", ASCENDING), ("created", ASCENDING)],
             [("object_id", ASCENDING), ("type", ASCENDING)]],  # reconciliation: when each payment succeeded
    SYNC_RUNS: [[("started_at", DESCENDING)]],
}


def ensure_indexes(db: Database) -> None:
    """The mirror's indexes, and TTLs so call records and run records do not grow forever."""
    for name, specs in INDEXES.items():
        for keys in specs:
            db[name].create_index(keys)
    db[API_CALLS].create_index([("at", ASCENDING)], expireAfterSeconds=API_CALLS_KEEP_DAYS * 86400)
    db[SYNC_RUNS].create_index([("finished_at", ASCENDING)], expireAfterSeconds=SYNC_RUNS_KEEP_DAYS * 86400)


@dataclass(frozen=True)
class MirrorStore:
    """Read access to the mirror with a time budget on every query."""

    db: Database
    max_time_ms: int

    def aggregate(self, name: str, pipeline: list[dict]) -> list[dict]:
        try:
            return list(self.db[name].aggregate(pipeline, maxTimeMS=self.max_time_ms, allowDiskUse=True))
        except PyMongoError as exc:
            raise DataSourceUnavailable(_describe(exc)) from exc

    def count(self, name: str, query: dict) -> int:
        try:
            return self.db[name].count_documents(query, maxTimeMS=self.max_time_ms)
        except PyMongoError as exc:
            raise DataSourceUnavailable(_describe(exc)) from exc

    def find(self, name: str, query: dict, *, sort: list | None = None, limit: int = 0,
             projection: dict | None = None) -> list[dict]:
        try:
            return list(self.db[name].find(query, projection, sort=sort, limit=limit, max_time_ms=self.max_time_ms))
        except PyMongoError as exc:
            raise DataSourceUnavailable(_describe(exc)) from exc

    def find_one(self, name: str, query: dict, *, sort: list | None = None, projection: dict | None = None) -> dict | None:
        rows = self.find(name, query, sort=sort, limit=1, projection=projection)
        return rows[0] if rows else None


def _describe(exc: PyMongoError) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def mirror_store(settings: Settings) -> MirrorStore:
    """The mirror in Paywatch's own database (``PAYWATCH_DB``)."""
    try:
        db = state_db(settings)
    except DataSourceUnavailable:
        raise
    return MirrorStore(db=db, max_time_ms=settings.query_timeout_ms)
