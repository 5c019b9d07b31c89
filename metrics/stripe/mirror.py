"""Copy Stripe's PaymentIntents, Charges, Refunds, Disputes and Events into ``PAYWATCH_DB``.

One sync (the worker runs it every few minutes, :func:`sync`):

1. **New objects** of each type come from its list endpoint filtered by a
   ``created`` cursor (``created[gte]`` = the newest ``created`` seen, so
   objects born in that same second are fetched again, harmlessly).  The
   first sync starts ``backfill_days`` back.
2. **Changes to older objects** come from the Events API: every event's
   ``data.object`` is the object as it was at ``event.created``, applied only
   when it is newer than what the mirror holds (``as_of``), so events and
   lists can arrive in any order.
3. **Undelivered events**: ``GET /v1/events?delivery_success=false`` over
   Stripe's 30 days lists the events Stripe has not delivered; one the
   mirror held as undelivered that is no longer listed has been delivered.
   This keeps ``pending_webhooks`` true in one call, however old the oldest
   undelivered event is.
4. The configured **webhook endpoints** are copied whole.

Every write is an upsert by Stripe id, so running a sync twice changes
nothing.  After each page the position is saved (a checkpoint), so a sync that
crashed resumes after the last page it stored instead of starting over; the
cursor only moves once a listing is complete.  A lease in the state database
keeps two workers from syncing at once.  Each sync records its API calls
(retries included) and what it stored in ``stripe_sync_runs``.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from metrics.db import DataSourceUnavailable, state_db
from metrics.settings import Settings
from metrics.stripe import store
from metrics.stripe.store import EVENTS_KEEP_DAYS, UNDELIVERED
from metrics.stripe.client import CallLog, StripeAPI, StripeCallError, StripeNotConfigured, StripeOptions, stripe_api

log = logging.getLogger(__name__)

UTC = timezone.utc
LEASE_ID = "sync-lease"
DUPLICATE_KEY = 11000


# Listed with a ``created`` cursor, in this order (events last: they update the others).
CURSOR_RESOURCES = ("payment_intents", "charges", "refunds", "disputes", "events")


# --- What we keep of each Stripe object ------------------------------------------
# Only what the metrics and reconciliation use: no card details, no billing
# addresses, no receipt emails (Stripe stays the record for those).

def _id(value: Any) -> str | None:
    """An id whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        return value.get("id")
    return value


def _when(seconds: Any) -> datetime | None:
    return datetime.fromtimestamp(int(seconds), UTC) if isinstance(seconds, (int, float)) else None


def _error(err: Any) -> dict | None:
    if not isinstance(err, dict):
        return None
    return {k: err.get(k) for k in ("type", "code", "decline_code", "message") if err.get(k) is not None}


def _copy(obj: dict, spec: dict[str, tuple[str, Callable[[Any], Any]]]) -> dict:
    """``{ours: convert(obj[theirs])}`` for the fields ``obj`` has.

    A field the object does not carry is left out, not set to ``None``: an
    event rendered in an older API version lacks fields that a newer one has
    (``latest_charge`` before 2022-11-15), and applying it must not wipe what
    the mirror knows.
    """
    return {ours: convert(obj[theirs]) for ours, (theirs, convert) in spec.items() if theirs in obj}


def _same(value: Any) -> Any:
    return value


def _lower(value: Any) -> str | None:
    return (value.lower() or None) if isinstance(value, str) else None


def _flag(value: Any) -> bool:
    return bool(value)


def _newest_charge(charges: Any) -> str | None:
    """The newest charge of a ``charges`` list (API versions before 2022-11-15)."""
    data = charges.get("data") if isinstance(charges, dict) else None
    if not data:
        return None
    return _id(max(data, key=lambda c: c.get("created") or 0 if isinstance(c, dict) else 0))


def _email(value: Any) -> str | None:
    return value if isinstance(value, str) and "@" in value else None


# The customer's email is the one personal field kept: the proposed fix for a payment
# missing from the database fills the record's customerEmail from it (masked on screen).
PAYMENT_INTENT_FIELDS = {
    "amount": ("amount", _same), "amount_received": ("amount_received", _same), "currency": ("currency", _lower),
    "status": ("status", _same), "created": ("created", _when), "customer": ("customer", _id),
    "latest_charge": ("latest_charge", _id), "last_payment_error": ("last_payment_error", _error),
    "canceled_at": ("canceled_at", _when), "cancellation_reason": ("cancellation_reason", _same),
    "email": ("receipt_email", _email), "livemode": ("livemode", _flag),
}


def slim_payment_intent(pi: dict) -> dict:
    # No metadata: it is the platform's free text (names, phone numbers...) and nothing here reads it.
    out = _copy(pi, PAYMENT_INTENT_FIELDS)
    if "latest_charge" not in pi and "charges" in pi:
        newest = _newest_charge(pi["charges"])
        if newest:
            out["latest_charge"] = newest
    return out


def _billing_email(details: Any) -> str | None:
    return _email(details.get("email")) if isinstance(details, dict) else None


def _outcome(outcome: Any) -> dict:
    outcome = outcome if isinstance(outcome, dict) else {}
    return {k: outcome.get(k) for k in ("type", "reason", "network_status", "risk_level") if outcome.get(k)}


CHARGE_FIELDS = {
    "amount": ("amount", _same), "amount_refunded": ("amount_refunded", _same), "currency": ("currency", _lower),
    "status": ("status", _same), "paid": ("paid", _same), "captured": ("captured", _same),
    "refunded": ("refunded", _same), "disputed": ("disputed", _same), "payment_intent": ("payment_intent", _id),
    "customer": ("customer", _id), "failure_code": ("failure_code", _same),
    "failure_message": ("failure_message", _same), "outcome": ("outcome", _outcome),
    "email": ("billing_details", _billing_email), "created": ("created", _when), "livemode": ("livemode", _flag),
}


def slim_charge(ch: dict) -> dict:
    return _copy(ch, CHARGE_FIELDS)


REFUND_FIELDS = {
    "amount": ("amount", _same), "currency": ("currency", _lower), "status": ("status", _same),
    "reason": ("reason", _same), "failure_reason": ("failure_reason", _same),
    "payment_intent": ("payment_intent", _id), "charge": ("charge", _id), "created": ("created", _when),
    "livemode": ("livemode", _flag),
}


def slim_refund(re_: dict) -> dict:
    return _copy(re_, REFUND_FIELDS)


def slim_dispute(dp: dict) -> dict:
    evidence = dp.get("evidence_details") if isinstance(dp.get("evidence_details"), dict) else {}
    return {
        "amount": dp.get("amount"), "currency": (dp.get("currency") or "").lower() or None,
        "status": dp.get("status"), "reason": dp.get("reason"),
        "charge": _id(dp.get("charge")), "payment_intent": _id(dp.get("payment_intent")),
        "created": _when(dp.get("created")), "evidence_due_by": _when(evidence.get("due_by")),
        "is_charge_refundable": dp.get("is_charge_refundable"), "livemode": bool(dp.get("livemode")),
    }


def slim_event(ev: dict) -> dict:
    obj = (ev.get("data") or {}).get("object") or {}
    request = ev.get("request") if isinstance(ev.get("request"), dict) else {}
    pending = ev.get("pending_webhooks")
    return {
        "type": ev.get("type"), "created": _when(ev.get("created")),
        # None (not 0) when the server does not report deliveries (localstripe): unknown, not "delivered".
        "pending_webhooks": int(pending) if isinstance(pending, (int, float)) else None,
        "object_id": obj.get("id"), "object_type": obj.get("object"),
        "request_id": request.get("id"), "livemode": bool(ev.get("livemode")),
        "api_version": ev.get("api_version"),
    }


def _safe_url(url: Any) -> str | None:
    """An endpoint URL without credentials or query (a token may hide there)."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def slim_webhook_endpoint(ep: dict) -> dict:
    return {
        "url": _safe_url(ep.get("url")), "status": ep.get("status"),
        "enabled_events": list(ep.get("enabled_events") or []), "api_version": ep.get("api_version"),
        "description": ep.get("description"), "livemode": bool(ep.get("livemode")),
        "created": _when(ep.get("created")),
    }


SLIM: dict[str, Callable[[dict], dict]] = {
    "payment_intents": slim_payment_intent,
    "charges": slim_charge,
    "refunds": slim_refund,
    "disputes": slim_dispute,
    "events": slim_event,
    "webhook_endpoints": slim_webhook_endpoint,
}
SLIM_BY_OBJECT = {"payment_intent": slim_payment_intent, "charge": slim_charge,
                  "refund": slim_refund, "dispute": slim_dispute}


# --- Writing ---------------------------------------------------------------------

def upsert_newer(db: Database, collection: str, items: Iterable[tuple[str, dict, int]], source: str,
                 now: datetime) -> int:
    """Upsert ``(id, fields, as_of)`` unless the mirror already holds a newer state of that object.

    ``as_of`` is when the state was true (the fetch for a list, ``event.created``
    for an event).  The filter matches only a document at most as new; when the
    stored one is newer, the upsert's insert collides on ``_id`` and that
    duplicate-key error is the expected "keep what we have" (ignored).
    Returns how many documents were inserted or changed.
    """
    ops = [
        # "$not $gt" also matches a document without as_of, and unlike an $or it keeps the _id index.
        UpdateOne({"_id": oid, "as_of": {"$not": {"$gt": as_of}}},
                  {"$set": {**fields, "as_of": as_of, "source": source, "synced_at": now}}, upsert=True)
        for oid, fields, as_of in items if oid
    ]
    if not ops:
        return 0
    try:
        result = db[collection].bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if others:
            raise
        result_doc = exc.details
        return int(result_doc.get("nUpserted", 0)) + int(result_doc.get("nModified", 0))
    return result.upserted_count + result.modified_count


# --- State -------------------------------------------------------------------------

@dataclass
class ResourceResult:
    resource: str
    status: str = "ok"  # ok | unavailable (a permanent refusal) | error (a transient failure)
    calls: int = 0
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    resumed: bool = False
    error: str | None = None

    def to_doc(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "resource"}


@dataclass
class SyncReport:
    started_at: datetime
    finished_at: datetime | None = None
    ok: bool = False
    skipped: str | None = None  # why nothing was done (another worker holds the lease)
    calls: int = 0
    errors: int = 0
    synced_through: datetime | None = None
    resources: dict[str, ResourceResult] = field(default_factory=dict)
    error: str | None = None
    api_base: str | None = None

    def to_doc(self) -> dict:
        return {
            "started_at": self.started_at, "finished_at": self.finished_at, "ok": self.ok,
            "skipped": self.skipped, "calls": self.calls, "errors": self.errors,
            "synced_through": self.synced_through, "error": self.error, "api_base": self.api_base,
            "resources": {name: r.to_doc() for name, r in self.resources.items()},
        }


class SyncAborted(RuntimeError):
    """Stripe could not be reached (or kept failing): stop this sync, keep the checkpoints."""


def _state(db: Database, resource: str) -> dict:
    return db[store.SYNC_STATE].find_one({"_id": resource}) or {"_id": resource}


def _save_state(db: Database, resource: str, fields: dict) -> None:
    db[store.SYNC_STATE].update_one({"_id": resource}, {"$set": fields}, upsert=True)


def acquire_lease(db: Database, owner: str, now: datetime, seconds: float) -> bool:
    """Claim the sync for ``owner`` until ``now + seconds``, if nobody else holds it."""
    try:
        db[store.SYNC_STATE].find_one_and_update(
            {"_id": LEASE_ID, "$or": [{"until": {"$lt": now}}, {"owner": owner}]},
            {"$set": {"owner": owner, "until": now + timedelta(seconds=seconds)}},
            upsert=True,
        )
    except DuplicateKeyError:
        return False  # the lease exists, unexpired, and is someone else's
    return True


def release_lease(db: Database, owner: str) -> None:
    db[store.SYNC_STATE].update_one({"_id": LEASE_ID, "owner": owner}, {"$set": {"until": datetime.fromtimestamp(0, UTC)}})


def _epoch(when: datetime) -> int:
    return int(when.timestamp())


# --- One sync ------------------------------------------------------------------------

class Mirror:
    """One sync of the mirror from one Stripe client into one state database."""

    def __init__(self, api: StripeAPI, db: Database, options: StripeOptions, *, clock: Callable[[], datetime] | None = None):
        self.api = api
        self.db = db
        self.options = options
        self.clock = clock or (lambda: datetime.now(UTC))

    def run(self) -> SyncReport:
        report = SyncReport(started_at=self.clock(), api_base=self.api.api_base)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        lease_s = max(300.0, self.options.sync_minutes * 60 * 2)
        if not acquire_lease(self.db, owner, report.started_at, lease_s):
            report.skipped = "another worker is syncing the Stripe mirror"
            report.finished_at = self.clock()
            log.info("stripe mirror: %s", report.skipped)
            return report
        try:
            store.ensure_indexes(self.db)
            self._forget_metadata()
            listing_starts = []
            for resource in CURSOR_RESOURCES:
                result = report.resources[resource] = ResourceResult(resource)
                started = self.clock()
                try:
                    self._sync_listing(resource, result)
                finally:
                    self._record_calls(result)
                if result.status == "ok" and resource in ("payment_intents", "refunds", "charges"):
                    listing_starts.append(started)
            undelivered = report.resources[UNDELIVERED] = ResourceResult(UNDELIVERED)
            try:
                self._sync_undelivered(undelivered)
            finally:
                self._record_calls(undelivered)
            endpoints = report.resources["webhook_endpoints"] = ResourceResult("webhook_endpoints")
            try:
                self._sync_endpoints(endpoints)
            finally:
                self._record_calls(endpoints)
            report.ok = True
            # Everything created before the earliest listing began is in the mirror; Stripe's
            # ``created`` has whole seconds, so the second the listing began in is not vouched for.
            report.synced_through = min(listing_starts).replace(microsecond=0) if len(listing_starts) == 3 else None
        except SyncAborted as exc:
            report.error = str(exc)
            log.warning("stripe mirror: sync stopped: %s", exc)
        finally:
            release_lease(self.db, owner)
            report.calls = sum(r.calls for r in report.resources.values())
            report.finished_at = self.clock()
            self.db[store.SYNC_RUNS].insert_one(report.to_doc())
        report.errors = sum(1 for r in report.resources.values() if r.status != "ok")
        log.info("stripe mirror: sync %s in %.1f s with %d API calls (%s)",
                 "done" if report.ok else "stopped", (report.finished_at - report.started_at).total_seconds(),
                 report.calls, ", ".join(f"{n} +{r.stored}" for n, r in report.resources.items()))
        return report

    def _forget_metadata(self) -> None:
        """Remove the ``metadata`` earlier versions copied (the platform's free text, a PII risk); once."""
        if _state(self.db, "mirror_format").get("metadata_removed"):
            return
        self.db[store.PAYMENT_INTENTS].update_many({"metadata": {"$exists": True}}, {"$unset": {"metadata": ""}})
        _save_state(self.db, "mirror_format", {"metadata_removed": True})

    def _record_calls(self, result: ResourceResult) -> None:
        records = self.api.calls.drain()
        result.calls += len(records)
        if records:
            self.db[store.API_CALLS].insert_many([{**r.to_doc(), "resource": result.resource} for r in records])

    def _fail(self, result: ResourceResult, exc: StripeCallError) -> None:
        result.error = str(exc)
        if exc.permanent:
            result.status = "unavailable"
            before = _state(self.db, result.resource)
            _save_state(self.db, result.resource, {"status": "unavailable", "error": str(exc), "checked_at": self.clock()})
            if (before.get("status"), before.get("error")) != ("unavailable", str(exc)):
                log.info("stripe mirror: %s", exc)  # said once, not at every sync (the page shows it)
            return
        result.status = "error"
        _save_state(self.db, result.resource, {"status": "error", "error": str(exc), "checked_at": self.clock()})
        raise SyncAborted(str(exc))

    def _start_point(self, resource: str, state: dict, now: datetime) -> int:
        if "cursor" in state:
            return int(state["cursor"])
        days = self.options.backfill_days
        if resource == "events":
            days = min(days, EVENTS_KEEP_DAYS)
        return _epoch(now - timedelta(days=days))

    def _sync_listing(self, resource: str, result: ResourceResult) -> None:
        now = self.clock()
        state = _state(self.db, resource)
        checkpoint = state.get("checkpoint")
        if checkpoint:
            gte, after, newest = int(checkpoint["gte"]), checkpoint.get("starting_after"), checkpoint.get("newest")
            result.resumed = True
            log.info("stripe mirror: resuming %s after %s", resource, after)
        else:
            gte, after, newest = self._start_point(resource, state, now), None, None
        if "coverage_start" not in state:
            _save_state(self.db, resource, {"coverage_start": datetime.fromtimestamp(gte, UTC)})
        collection = store.COLLECTIONS[resource]
        while True:
            params: dict = {"created": {"gte": gte}}
            if after:
                params["starting_after"] = after
            try:
                page = self.api.list_page(resource, params)
            except StripeCallError as exc:
                self._fail(result, exc)
                return
            fetched_at = _epoch(self.clock())
            result.pages += 1
            result.fetched += len(page.data)
            objects = [(o.get("id"), SLIM[resource](o), fetched_at) for o in page.data]
            result.stored += upsert_newer(self.db, collection, objects, "list", self.clock())
            if resource == "events":
                result.stored += self._apply_events(page.data)
            for obj in page.data:
                if isinstance(obj.get("created"), int):
                    newest = obj["created"] if newest is None else max(newest, obj["created"])
            if not page.has_more or not page.data:
                break
            after = page.data[-1]["id"]
            _save_state(self.db, resource, {"checkpoint": {"gte": gte, "starting_after": after, "newest": newest}})
        cursor = max(gte, newest) if newest is not None else gte
        _save_state(self.db, resource, {"cursor": cursor, "checkpoint": None, "status": "ok", "error": None,
                                        "synced_at": self.clock()})

    def _apply_events(self, events: list[dict]) -> int:
        """Each event's object, as of the event, into its own collection."""
        by_kind: dict[str, list[tuple[str, dict, int]]] = {}
        for ev in events:
            obj = (ev.get("data") or {}).get("object") or {}
            kind = obj.get("object")
            if kind in SLIM_BY_OBJECT and obj.get("id") and isinstance(ev.get("created"), int):
                by_kind.setdefault(kind, []).append((obj["id"], SLIM_BY_OBJECT[kind](obj), ev["created"]))
        return sum(upsert_newer(self.db, store.OBJECT_COLLECTIONS[kind], items, "event", self.clock())
                   for kind, items in by_kind.items())

    def _sync_undelivered(self, result: ResourceResult) -> None:
        """The events Stripe has not delivered (``delivery_success=false``), all of Stripe's 30 days.

        Stripe lists the events still pending or that failed every delivery
        attempt.  Those are stored with their ``pending_webhooks``; an event
        the mirror held as undelivered that is no longer listed was delivered
        (or resent) since, so its ``pending_webhooks`` becomes 0.  One call a
        sync while fewer than 100 are undelivered, instead of re-reading every
        event since the oldest one still pending.
        """
        now = self.clock()
        since = now - timedelta(days=EVENTS_KEEP_DAYS)
        seen: list[str] = []
        after = None
        while True:
            params: dict = {"delivery_success": False, "created": {"gte": _epoch(since)}}
            if after:
                params["starting_after"] = after
            try:
                page = self.api.list_page("events", params)
            except StripeCallError as exc:
                if exc.permanent:  # localstripe refuses the parameter: say what is missing, not just "400"
                    exc = StripeCallError(f"undelivered events (delivery_success=false) cannot be listed: {exc}",
                                          kind=exc.kind, status=exc.status, permanent=True)
                self._fail(result, exc)
                return
            result.pages += 1
            result.fetched += len(page.data)
            fetched_at = _epoch(self.clock())
            objects = [(o.get("id"), slim_event(o), fetched_at) for o in page.data]
            result.stored += upsert_newer(self.db, store.EVENTS, objects, "undelivered", self.clock())
            result.stored += self._apply_events(page.data)
            seen += [oid for oid, _, _ in objects if oid]
            if not page.has_more or not page.data:
                break
            after = page.data[-1]["id"]
        # The list is complete: what it no longer names has been delivered.
        delivered = self.db[store.EVENTS].update_many(
            {"created": {"$gte": since}, "pending_webhooks": {"$gt": 0}, "_id": {"$nin": seen}},
            {"$set": {"pending_webhooks": 0, "delivered_seen_at": now}})
        result.stored += delivered.modified_count
        _save_state(self.db, UNDELIVERED, {"status": "ok", "error": None, "synced_at": self.clock(),
                                           "count": len(seen)})

    def _sync_endpoints(self, result: ResourceResult) -> None:
        seen: list[str] = []
        after = None
        while True:
            params = {"starting_after": after} if after else {}
            try:
                page = self.api.list_page("webhook_endpoints", params)
            except StripeCallError as exc:
                self._fail(result, exc)
                return
            result.pages += 1
            result.fetched += len(page.data)
            fetched_at = _epoch(self.clock())
            objects = [(o.get("id"), slim_webhook_endpoint(o), fetched_at) for o in page.data]
            result.stored += upsert_newer(self.db, store.WEBHOOK_ENDPOINTS, objects, "list", self.clock())
            seen += [oid for oid, _, _ in objects if oid]
            if not page.has_more or not page.data:
                break
            after = page.data[-1]["id"]
        # The list is complete: an endpoint no longer listed was deleted in Stripe.
        self.db[store.WEBHOOK_ENDPOINTS].delete_many({"_id": {"$nin": seen}})
        _save_state(self.db, "webhook_endpoints", {"status": "ok", "error": None, "synced_at": self.clock()})


def sync(settings: Settings, options: StripeOptions | None = None, *, api: StripeAPI | None = None,
         db: Database | None = None) -> SyncReport:
    """One mirror sync with the configured key (the worker's job)."""
    options = options or StripeOptions.from_settings(settings)
    api = api or stripe_api(settings, options, CallLog())
    db = db if db is not None else state_db(settings)
    try:
        return Mirror(api, db, options).run()
    except PyMongoError as exc:
        raise DataSourceUnavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc


def sync_job(settings: Settings) -> SyncReport | None:
    """The worker's scheduled job: one sync; a problem is logged (and recorded in the run), never raised."""
    stripe_log = logging.getLogger("stripe")
    if stripe_log.level == logging.NOTSET:
        # stripe-python logs every request at INFO; each call is recorded in stripe_api_calls instead.
        stripe_log.setLevel(logging.WARNING)
    try:
        return sync(settings)
    except StripeNotConfigured as exc:
        log.info("stripe mirror: %s", exc)
    except DataSourceUnavailable as exc:
        log.warning("stripe mirror: Paywatch's database is unavailable: %s", exc)
    return None
