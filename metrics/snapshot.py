"""The whole metrics tree at one instant: the spec's snapshot JSON (section 5).

The dashboard's Overview, the alert rules and the weekly report read the
same functions this module calls, so a number is defined in one place.
The ``"stripe"`` key reads the Stripe mirror in ``PAYWATCH_DB``
(:mod:`metrics.stripe.metrics`); a snapshot never calls Stripe.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bson import Decimal128, ObjectId

from metrics import enrollments, payments, webhooks
from metrics.db import Source, state_db
from metrics.quality import data_quality
from metrics.settings import Settings
from metrics.stripe.metrics import stripe_snapshot
from metrics.system import database_health, embedded_storage_path
from metrics.windows import CALENDAR, iso, last, today, utc


def build_snapshot(src: Source, settings: Settings, at: datetime | None = None, *, system: bool = True,
                   stripe: bool | None = None) -> dict:
    """Every metric of the spec for the instant ``at`` (default: now).

    ``system=False`` keeps the snapshot to the platform's data: the database
    server's figures are ``{}`` and, unless ``stripe=True``, the ``"stripe"``
    key (read from Paywatch's own database, not the platform's) is left out.
    ``python -m metrics snapshot`` always has both.
    """
    at = utc(at) if at else datetime.now(timezone.utc).replace(microsecond=0)
    currencies = tuple(settings.currencies)
    tz = settings.tz
    day = last(at, hours=24)
    periods = {name: make(at, tz) for name, make in CALENDAR.items()}
    latest = webhooks.latest_events(src, at, settings.latest_events)
    snap = {
        "at": iso(at),
        "timezone": settings.timezone,
        "payments": {
            "revenue": payments.revenue_by_period(src, periods, currencies),
            "24h": payments.window_summary(src, day, currencies),
            "stuck": payments.stuck_count(src, at, settings.stuck_minutes),
        },
        "webhooks": {
            "24h": webhooks.window_summary(src, day),
            "last_received_at": iso(latest[0]["receivedAt"]) if latest else None,
            "latest": [to_json(e) for e in latest],
        },
        "enrollments": {
            "new_today": enrollments.created_count(src, today(at, tz)),
            "24h": enrollments.window_summary(src, day),
            "pending_payments": enrollments.pending_payments_count(src, at),
            "duplicates": enrollments.duplicate_count(src, at),
        },
        "system": database_health(src, settings.embedded, embedded_storage_path(settings)) if system else {},
        "data_quality": data_quality(src),
    }
    if system if stripe is None else stripe:
        snap["stripe"] = stripe_snapshot(state_db(settings), settings, at)
    return snap


def to_json(value: Any) -> Any:
    """BSON values to what ``json.dumps`` writes: ISO dates with Z, ids as strings."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return float(str(value))
    return value
