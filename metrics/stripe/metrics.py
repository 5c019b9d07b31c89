"""Stripe-side metrics, read from the mirror only (no Stripe call).

Definitions (``docs/stripe.md`` says the same for people):

* **PaymentIntents over W** (by ``created``): ``succeeded`` = status
  ``succeeded``; ``failed`` = not succeeded and carrying a
  ``last_payment_error`` (a declined or failed attempt, as Stripe records it);
  ``success_rate`` = succeeded / (succeeded + failed), ``None`` when both are
  0.  PaymentIntents waiting for a card or for 3-D Secure are in neither.
  ``decline_codes`` counts the failed ones by ``decline_code`` (else ``code``).
* **Refunds over W** (by the refund's ``created``): succeeded refunds, count and
  amount per currency; ``refund_rate`` = refunds / succeeded PaymentIntents in W.
* **Disputes**: created in W (count, amount per currency), and open now
  (``needs_response``, ``under_review``, their ``warning_`` forms and the
  appeal stages ``appeal_needs_response``, ``appeal_under_review``).
* **Webhook delivery backlog**: events older than 5 minutes (and younger than
  Stripe's 3 days of retries) with ``pending_webhooks > 0``.
  **Delivery success over W**: of the guide's event types created in W,
  older than 5 minutes and received by an enabled endpoint, the share with
  ``pending_webhooks == 0``; unknown when no enabled endpoint receives them
  (Stripe reports 0 pending then too).
* **Webhook health**: the events Stripe has not delivered in its 30 days
  (listed with ``delivery_success=false``), per enabled endpoint the oldest
  and since when deliveries fail, and the ``stripe events resend`` commands;
  those older than 25 days are about to leave Stripe's 30 days.
* **Endpoints**: each configured webhook endpoint, enabled or not, and which
  of the guide's events no enabled endpoint receives.
* **API**: our client's calls over W (every HTTP attempt, retries included):
  error rate = network errors, 429s and 5xx over all calls; latency avg/p95.

A figure the mirror cannot know is ``None`` with a reason, never 0: the mirror
has not synced yet, the server has no disputes or endpoints (localstripe), or
the restricted key lacks a permission.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo.database import Database

from metrics.catalogue import rate
from metrics.db import DataSourceUnavailable
from metrics.settings import Settings
from metrics.stats import PERCENTILE, ratio, read_duration_stats
from metrics.stripe import store
from metrics.stripe.store import EVENTS_KEEP_DAYS, UNDELIVERED, WEBHOOK_RETRY_DAYS
from metrics.stripe.store import MirrorStore
from metrics.windows import Window, iso, last, utc

# The events the guide's webhook endpoint subscribes to (section 3, "Configure Webhook").
GUIDE_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded", "charge.dispute.created")
DELIVERY_GRACE = timedelta(minutes=5)
# Open: Stripe still waits for an answer or is still deciding (API 2026-10-28's Dispute.status, the
# appeal stages included); closed are warning_closed, won, lost and prevented.
OPEN_DISPUTE_STATUSES = ("warning_needs_response", "needs_response", "warning_under_review", "under_review",
                         "appeal_needs_response", "appeal_under_review")
DASHBOARD = "https://dashboard.stripe.com"
# Stripe keeps events 30 days: an event older than this is about to become impossible to resend.
RETENTION_WARN_DAYS = 25
# Stripe emails after days of failures and then disables the endpoint; we say so after hours.
ENDPOINT_FAILING_HOURS = 6


# --- Links to Stripe's dashboard ----------------------------------------------------

def dashboard_url(kind: str, object_id: str | None, livemode: bool | None = False) -> str | None:
    """The Stripe dashboard page of an object (test-mode objects live under ``/test``)."""
    if not object_id:
        return None
    path = {"payment_intent": "payments", "charge": "payments", "refund": "payments",
            "dispute": "disputes", "event": "events", "webhook_endpoint": "webhooks"}[kind]
    prefix = "" if livemode else "/test"
    return f"{DASHBOARD}{prefix}/{path}/{object_id}"


# --- Sync state: is there anything to read? --------------------------------------------

def resource_status(ms: MirrorStore) -> dict[str, dict]:
    """Each resource's last sync outcome: ``{"disputes": {"status": "unavailable", "error": ...}}``."""
    rows = ms.find(store.SYNC_STATE, {"_id": {"$nin": ["sync-lease", "mirror_format"]}},
                   projection={"status": 1, "error": 1, "synced_at": 1, "checked_at": 1, "coverage_start": 1, "cursor": 1})
    return {row["_id"]: {k: row.get(k) for k in ("status", "error", "synced_at", "checked_at", "coverage_start")} for row in rows}


def _available(status: dict[str, dict], resource: str) -> tuple[bool, str | None]:
    """Whether the mirror holds ``resource`` (synced at least once), else why not."""
    row = status.get(resource)
    if row is None:
        return False, "the Stripe mirror has not synced yet"
    if row.get("status") == "unavailable" or row.get("synced_at") is None:
        return False, row.get("error") or "not synced yet"
    return True, None


def sync_summary(ms: MirrorStore, at: datetime) -> dict:
    """The mirror's last sync, the last good one, and API calls per sync over the last 24 h."""
    runs = ms.find(store.SYNC_RUNS, {"started_at": {"$lt": at}, "skipped": None}, sort=[("started_at", -1)], limit=1)
    last_ok = ms.find(store.SYNC_RUNS, {"started_at": {"$lt": at}, "ok": True}, sort=[("started_at", -1)], limit=1)
    day = ms.aggregate(store.SYNC_RUNS, [
        {"$match": {"started_at": {"$gte": at - timedelta(hours=24), "$lt": at}, "skipped": None}},
        {"$group": {"_id": None, "runs": {"$sum": 1}, "calls": {"$avg": "$calls"}, "max": {"$max": "$calls"},
                    "failed": {"$sum": {"$cond": ["$ok", 0, 1]}}}},
    ])
    run = runs[0] if runs else None
    ok = last_ok[0] if last_ok else None
    return {
        "last_run_at": iso(run["started_at"]) if run else None,
        "last_run_ok": run["ok"] if run else None,
        "last_error": run.get("error") if run else None,
        "last_ok_at": iso(ok["finished_at"]) if ok else None,
        "synced_through": iso(ok["synced_through"]) if ok and ok.get("synced_through") else None,
        "calls_last": run["calls"] if run else None,
        "calls_per_sync_24h": {"runs": day[0]["runs"], "avg": round(day[0]["calls"], 1), "max": day[0]["max"],
                               "failed": day[0]["failed"]} if day else {"runs": 0, "avg": None, "max": None, "failed": 0},
        "resources": {name: {"status": row.get("status"), "error": row.get("error")}
                      for name, row in sorted(resource_status(ms).items())},
    }


# --- PaymentIntents ---------------------------------------------------------------------

def payments_pipeline(window: Window) -> list[dict]:
    failed = {"$and": [{"$ne": ["$status", "succeeded"]}, {"$gt": ["$last_payment_error", None]}]}
    code = {"$ifNull": ["$last_payment_error.decline_code", {"$ifNull": ["$last_payment_error.code", "unknown"]}]}
    return [
        {"$match": {"created": window.range()}},
        {"$facet": {
            "by_status": [{"$group": {"_id": {"status": "$status", "failed": failed, "currency": "$currency"},
                                      "count": {"$sum": 1}, "amount": {"$sum": "$amount"}}}],
            "declines": [{"$match": {"$expr": failed}}, {"$group": {"_id": code, "count": {"$sum": 1}}},
                         {"$sort": {"count": -1, "_id": 1}}],
        }},
    ]


def payment_summary(ms: MirrorStore, window: Window) -> dict | None:
    """PaymentIntents created in W as Stripe sees them; ``None`` before the first sync."""
    ok, _ = _available(resource_status(ms), "payment_intents")
    if not ok:
        return None
    rows = ms.aggregate(store.PAYMENT_INTENTS, payments_pipeline(window))[0]
    succeeded = failed = created = 0
    amount: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for row in rows["by_status"]:
        key, count = row["_id"], row["count"]
        created += count
        by_status[key.get("status") or "unknown"] = by_status.get(key.get("status") or "unknown", 0) + count
        if key.get("status") == "succeeded":
            succeeded += count
            cur = key.get("currency") or "unknown"
            amount[cur] = amount.get(cur, 0) + int(row["amount"] or 0)
        elif key.get("failed"):
            failed += count
    return {
        "created": created,
        "succeeded": succeeded,
        "failed": failed,
        "success_rate": rate("payment_success_rate", succeeded=succeeded, failed=failed),
        "amount_succeeded": dict(sorted(amount.items())),
        "by_status": dict(sorted(by_status.items())),
        "decline_codes": {row["_id"]: row["count"] for row in rows["declines"]},
    }


def failed_payment_intents(ms: MirrorStore, window: Window, limit: int = 50) -> list[dict]:
    """The newest failed PaymentIntents in W, with their decline code and dashboard link."""
    docs = ms.find(store.PAYMENT_INTENTS, {"created": window.range(), "status": {"$ne": "succeeded"},
                                           "last_payment_error": {"$ne": None}},
                   sort=[("created", -1)], limit=limit)
    return [{
        "id": d["_id"], "created": iso(d.get("created")), "amount": d.get("amount"), "currency": d.get("currency"),
        "status": d.get("status"),
        "decline_code": (d.get("last_payment_error") or {}).get("decline_code") or (d.get("last_payment_error") or {}).get("code"),
        "message": (d.get("last_payment_error") or {}).get("message"),
        "stripe_url": dashboard_url("payment_intent", d["_id"], d.get("livemode")),
    } for d in docs]


# --- Refunds ----------------------------------------------------------------------------

def refund_summary(ms: MirrorStore, window: Window, succeeded: int | None) -> dict | None:
    ok, _ = _available(resource_status(ms), "refunds")
    if not ok:
        return None
    rows = ms.aggregate(store.REFUNDS, [
        {"$match": {"created": window.range(), "status": "succeeded"}},
        {"$group": {"_id": "$currency", "count": {"$sum": 1}, "amount": {"$sum": "$amount"}}},
    ])
    count = sum(r["count"] for r in rows)
    return {
        "count": count,
        "amount": {r["_id"] or "unknown": int(r["amount"] or 0) for r in sorted(rows, key=lambda r: r["_id"] or "")},
        "refund_rate": rate("refund_rate", refunds=count, succeeded=succeeded) if succeeded is not None else None,
    }


# --- Disputes ---------------------------------------------------------------------------

def disputes_created_count(ms: MirrorStore, window: Window) -> int | None:
    """Disputes created in W (the disputes rule); ``None`` when the mirror has no disputes to read."""
    ok, _ = _available(resource_status(ms), "disputes")
    if not ok:
        return None
    return ms.count(store.DISPUTES, {"created": window.range()})


def dispute_summary(ms: MirrorStore, window: Window) -> dict:
    """Disputes created in W and open now; ``available: False`` with the reason when unknown."""
    ok, reason = _available(resource_status(ms), "disputes")
    if not ok:
        return {"available": False, "reason": reason}
    rows = ms.aggregate(store.DISPUTES, [
        {"$facet": {
            "created": [{"$match": {"created": window.range()}},
                        {"$group": {"_id": "$currency", "count": {"$sum": 1}, "amount": {"$sum": "$amount"}}}],
            "open": [{"$match": {"status": {"$in": list(OPEN_DISPUTE_STATUSES)}}},
                     {"$group": {"_id": "$currency", "count": {"$sum": 1}, "amount": {"$sum": "$amount"}}}],
            "by_status": [{"$group": {"_id": "$status", "count": {"$sum": 1}}}],
            "by_reason": [{"$match": {"created": window.range()}}, {"$group": {"_id": "$reason", "count": {"$sum": 1}}}],
        }},
    ])[0]

    def money(group: list[dict]) -> dict[str, int]:
        return {r["_id"] or "unknown": int(r["amount"] or 0) for r in sorted(group, key=lambda r: r["_id"] or "")}

    return {
        "available": True,
        "created": sum(r["count"] for r in rows["created"]),
        "created_amount": money(rows["created"]),
        "open": sum(r["count"] for r in rows["open"]),
        "open_amount": money(rows["open"]),
        "by_status": {r["_id"]: r["count"] for r in sorted(rows["by_status"], key=lambda r: str(r["_id"]))},
        "by_reason": {r["_id"]: r["count"] for r in sorted(rows["by_reason"], key=lambda r: str(r["_id"]))},
    }


def recent_disputes(ms: MirrorStore, window: Window, limit: int = 50) -> list[dict]:
    docs = ms.find(store.DISPUTES, {"$or": [{"created": window.range()}, {"status": {"$in": list(OPEN_DISPUTE_STATUSES)}}]},
                   sort=[("created", -1)], limit=limit)
    return [{
        "id": d["_id"], "created": iso(d.get("created")), "amount": d.get("amount"), "currency": d.get("currency"),
        "status": d.get("status"), "reason": d.get("reason"), "payment_intent": d.get("payment_intent"),
        "evidence_due_by": iso(d.get("evidence_due_by")),
        "stripe_url": dashboard_url("dispute", d["_id"], d.get("livemode")),
    } for d in docs]


# --- Webhook delivery ---------------------------------------------------------------------

def _delivery_reported(ms: MirrorStore, at: datetime) -> bool:
    """Whether the server reports ``pending_webhooks`` at all (localstripe does not)."""
    return ms.count(store.EVENTS, {"created": {"$lt": at}, "pending_webhooks": {"$type": "number"}}) > 0


def backlog_filter(at: datetime) -> dict:
    return {"created": {"$gte": at - timedelta(days=WEBHOOK_RETRY_DAYS), "$lt": at - DELIVERY_GRACE},
            "pending_webhooks": {"$gt": 0}}


def webhook_backlog_count(ms: MirrorStore, at: datetime) -> int | None:
    """Events older than 5 min still waiting for delivery (the backlog rule); ``None`` when unknown."""
    ok, _ = _available(resource_status(ms), "events")
    if not ok or not _delivery_reported(ms, at):
        return None
    return ms.count(store.EVENTS, backlog_filter(at))


def _endpoints(ms: MirrorStore) -> tuple[list[dict] | None, str | None]:
    """The mirrored webhook endpoints, or ``None`` and why they are unknown."""
    ok, reason = _available(resource_status(ms), "webhook_endpoints")
    if not ok:
        return None, f"the webhook endpoints are unknown: {reason}"
    return ms.find(store.WEBHOOK_ENDPOINTS, {}, sort=[("created", 1)]), None


def _receives(endpoint: dict, event_type: str | None) -> bool:
    events = endpoint.get("enabled_events") or []
    return endpoint.get("status") == "enabled" and ("*" in events or event_type in events)


def _type_filter(endpoint: dict) -> dict:
    events = endpoint.get("enabled_events") or []
    return {} if "*" in events else {"type": {"$in": list(events)}}


def webhook_delivery(ms: MirrorStore, window: Window, at: datetime) -> dict:
    """Stripe's delivery of the guide's events over W, and the backlog now.

    Stripe's ``pending_webhooks`` is 0 both when every endpoint got the event
    and when no enabled endpoint is subscribed to it, so an event counts only
    when some enabled endpoint receives its type; with none, delivery success
    is unknown, not 100 %.
    """
    ok, reason = _available(resource_status(ms), "events")
    if ok and not _delivery_reported(ms, at):
        ok, reason = False, "this Stripe server does not report webhook deliveries (pending_webhooks)"
    if not ok:
        return {"available": False, "reason": reason, "backlog": None, "oldest_pending_at": None,
                "delivery_success": None, "events": None}
    oldest = ms.find_one(store.EVENTS, backlog_filter(at), sort=[("created", 1)], projection={"created": 1})
    backlog = ms.count(store.EVENTS, backlog_filter(at))
    endpoints, why = _endpoints(ms)
    received = [t for t in GUIDE_EVENTS if endpoints and any(_receives(e, t) for e in endpoints)]
    out = {"available": True, "reason": None, "backlog": backlog,
           "oldest_pending_at": iso(oldest["created"]) if oldest else None,
           "delivery_success": None, "events": None}
    if endpoints is None or not received:
        out["reason"] = why or ("no enabled endpoint receives the guide's events, so Stripe's pending_webhooks = 0 "
                                "means nobody was sent them: delivery success is unknown")
        return out
    end = min(window.end, at - DELIVERY_GRACE)
    rows = ms.aggregate(store.EVENTS, [
        {"$match": {"created": {"$gte": window.start, "$lt": end}, "type": {"$in": received},
                    "pending_webhooks": {"$type": "number"}}},
        {"$group": {"_id": None, "events": {"$sum": 1},
                    "delivered": {"$sum": {"$cond": [{"$eq": ["$pending_webhooks", 0]}, 1, 0]}}}},
    ]) if end > window.start else []
    out["events"] = rows[0]["events"] if rows else 0
    out["delivery_success"] = ratio(rows[0]["delivered"], rows[0]["events"]) if rows else None
    return out


def pending_events(ms: MirrorStore, at: datetime, limit: int = 50) -> list[dict]:
    docs = ms.find(store.EVENTS, backlog_filter(at), sort=[("created", 1)], limit=limit)
    return [{"id": d["_id"], "type": d.get("type"), "created": iso(d.get("created")),
             "pending_webhooks": d.get("pending_webhooks"), "object_id": d.get("object_id"),
             "stripe_url": dashboard_url("event", d["_id"], d.get("livemode"))} for d in docs]


# --- Webhook health: what Stripe failed to deliver, per endpoint, and what to resend --------

def undelivered_filter(at: datetime) -> dict:
    """Events Stripe has not delivered, older than 5 minutes, still within its 30 days."""
    return {"created": {"$gte": at - timedelta(days=EVENTS_KEEP_DAYS), "$lt": at - DELIVERY_GRACE},
            "pending_webhooks": {"$gt": 0}}


def _health_unknown(ms: MirrorStore, at: datetime) -> str | None:
    status = resource_status(ms)
    for resource in ("events", UNDELIVERED, "webhook_endpoints"):
        ok, reason = _available(status, resource)
        if not ok:
            return f"{resource.replace('_', ' ')}: {reason}"
    if not _delivery_reported(ms, at):
        return "this Stripe server does not report webhook deliveries (pending_webhooks)"
    return None


def resend_command(event_id: str, endpoint_id: str, livemode: bool | None) -> str:
    """The Stripe CLI command that resends one event to one endpoint."""
    return f"stripe events resend {event_id} --webhook-endpoint={endpoint_id}" + (" --live" if livemode else "")


def webhook_health(ms: MirrorStore, at: datetime, limit: int = 100) -> dict:
    """The events Stripe failed to deliver (``delivery_success=false``), per endpoint, and the replay list.

    Stripe's API does not say which endpoint an event failed at: an
    undelivered event counts against every enabled endpoint subscribed to its
    type (``shared`` says when another endpoint receives the same types).
    Per endpoint: how many are undelivered, the oldest, and how long
    deliveries have been failing (from that oldest event's creation).  The
    replay list names each event with the Stripe CLI command that resends it.
    """
    reason = _health_unknown(ms, at)
    if reason:
        return {"available": False, "reason": reason, "undelivered": None, "events": [], "endpoints": [],
                "replay": []}
    endpoints, _ = _endpoints(ms)
    enabled = [e for e in endpoints or [] if e.get("status") == "enabled"]
    query = undelivered_filter(at)
    # (pymongo reads limit 0 as "no limit": 0 here means the per-endpoint figures only.)
    docs = ms.find(store.EVENTS, query, sort=[("created", 1)], limit=limit) if limit else []
    per_endpoint = []
    for ep in enabled:
        mine = {**query, **_type_filter(ep)}
        count = ms.count(store.EVENTS, mine)
        oldest = ms.find_one(store.EVENTS, mine, sort=[("created", 1)]) if count else None
        since = utc(oldest["created"]) if oldest else None
        others = [o for o in enabled if o["_id"] != ep["_id"]]
        types = set(ep.get("enabled_events") or [])
        per_endpoint.append({
            "id": ep["_id"], "url": ep.get("url"), "undelivered": count,
            "oldest": ({"id": oldest["_id"], "type": oldest.get("type"), "created": iso(oldest.get("created"))}
                       if oldest else None),
            "failing_since": iso(since),
            "failing_hours": round((at - since).total_seconds() / 3600, 2) if since else 0.0,
            "shared": any("*" in (o.get("enabled_events") or []) or "*" in types
                          or types & set(o.get("enabled_events") or []) for o in others),
            "stripe_url": dashboard_url("webhook_endpoint", ep["_id"], ep.get("livemode")),
        })
    urls = [ep["url"] for ep in per_endpoint]
    for ep in per_endpoint:  # what an alert is about: the URL, with the id when two endpoints share it
        ep["label"] = ep["url"] if ep["url"] and urls.count(ep["url"]) == 1 else f"{ep['url']} ({ep['id']})"
    events, replay = [], []
    for d in docs:
        receivers = [ep for ep in enabled if _receives(ep, d.get("type"))]
        deadline = utc(d["created"]) + timedelta(days=EVENTS_KEEP_DAYS)
        row = {"id": d["_id"], "type": d.get("type"), "created": iso(d.get("created")),
               "pending_webhooks": d.get("pending_webhooks"), "object_id": d.get("object_id"),
               "endpoints": [ep.get("url") for ep in receivers], "resend_by": iso(deadline),
               "stripe_url": dashboard_url("event", d["_id"], d.get("livemode"))}
        events.append(row)
        replay += [{"event": d["_id"], "type": d.get("type"), "endpoint": ep.get("url"), "endpoint_id": ep["_id"],
                    "command": resend_command(d["_id"], ep["_id"], d.get("livemode")), "resend_by": iso(deadline)}
                   for ep in receivers]
    return {"available": True, "reason": None, "undelivered": ms.count(store.EVENTS, query), "events": events,
            "endpoints": per_endpoint, "replay": replay}


def endpoint_failing_hours(ms: MirrorStore, at: datetime) -> dict[str, float] | None:
    """Per enabled endpoint (by its URL, with its id when two share one), hours its oldest undelivered event has waited; 0 when none.

    ``None`` when the mirror cannot tell (no delivery figures, endpoints unknown).
    """
    health = webhook_health(ms, at, limit=0)
    if not health["available"]:
        return None
    return {ep["label"]: ep["failing_hours"] for ep in health["endpoints"]}


def expiring_events(ms: MirrorStore, at: datetime, limit: int = 50) -> list[dict]:
    """Undelivered events older than 25 days: resend them before Stripe's 30 days are up."""
    query = {"created": {"$gte": at - timedelta(days=EVENTS_KEEP_DAYS), "$lt": at - timedelta(days=RETENTION_WARN_DAYS)},
             "pending_webhooks": {"$gt": 0}}
    docs = ms.find(store.EVENTS, query, sort=[("created", 1)], limit=limit)
    return [{"id": d["_id"], "type": d.get("type"), "created": iso(d.get("created")),
             "resend_by": iso(utc(d["created"]) + timedelta(days=EVENTS_KEEP_DAYS)),
             "stripe_url": dashboard_url("event", d["_id"], d.get("livemode"))} for d in docs]


# --- Webhook endpoints --------------------------------------------------------------------

def endpoint_status(ms: MirrorStore) -> dict:
    """The configured endpoints, and what is wrong with them against the guide.

    A problem is no endpoint at all, or a guide event no enabled endpoint
    receives (then every disabled endpoint is named too: it may be the one
    that used to).  A disabled endpoint while the guide's four events reach
    another is only a note: a legacy endpoint switched off on purpose.
    """
    ok, reason = _available(resource_status(ms), "webhook_endpoints")
    if not ok:
        return {"available": False, "reason": reason, "items": [], "problems": None, "notes": []}
    docs = ms.find(store.WEBHOOK_ENDPOINTS, {}, sort=[("created", 1)])
    items, covered = [], set()
    for d in docs:
        events = d.get("enabled_events") or []
        enabled = d.get("status") == "enabled"
        receives = set(GUIDE_EVENTS) if "*" in events else set(events) & set(GUIDE_EVENTS)
        if enabled:
            covered |= receives
        items.append({"id": d["_id"], "url": d.get("url"), "status": d.get("status"), "enabled": enabled,
                      "enabled_events": events, "missing_guide_events": [e for e in GUIDE_EVENTS if e not in receives],
                      "stripe_url": dashboard_url("webhook_endpoint", d["_id"], d.get("livemode"))})
    missing = [e for e in GUIDE_EVENTS if e not in covered]
    disabled = [f"endpoint {i['url']} is {i['status']}" for i in items if not i["enabled"]]
    problems, notes = [], []
    if not items:
        problems.append("no webhook endpoint is configured")
    elif missing:
        problems += disabled
        problems.append("no enabled endpoint receives " + ", ".join(missing))
    else:
        notes += [f"{d} (the guide's events reach another endpoint)" for d in disabled]
    return {"available": True, "reason": None, "items": items, "problems": problems, "notes": notes,
            "enabled": sum(1 for i in items if i["enabled"]), "missing_guide_events": missing}


def endpoint_problem_count(ms: MirrorStore) -> int | None:
    """No endpoint, or guide events no enabled endpoint receives (the endpoint rule); ``None`` when unknown."""
    status = endpoint_status(ms)
    return None if not status["available"] else len(status["problems"])


# --- Our client's API health ----------------------------------------------------------------

def api_summary(ms: MirrorStore, window: Window) -> dict:
    """Calls our client made in W (retries included), errors, error rate and latency."""
    rows = ms.aggregate(store.API_CALLS, [
        {"$match": {"at": window.range()}},
        {"$facet": {
            "kinds": [{"$group": {"_id": "$kind", "count": {"$sum": 1}}}],
            "latency": [{"$group": {"_id": None, "count": {"$sum": 1}, "avg": {"$avg": "$ms"},
                                    "p95": {"$percentile": {"input": "$ms", "p": [PERCENTILE], "method": "approximate"}}}}],
        }},
    ])[0]
    kinds = {r["_id"]: r["count"] for r in rows["kinds"]}
    calls = sum(kinds.values())
    errors = sum(kinds.get(k, 0) for k in store.ERROR_KINDS)
    return {"calls": calls, "errors": errors, "error_rate": ratio(errors, calls),
            "latency_ms": read_duration_stats(rows["latency"]), "by_kind": dict(sorted(kinds.items()))}


def api_unreachable_minutes(ms: MirrorStore, at: datetime, horizon: timedelta = timedelta(hours=1)) -> float | None:
    """How long Stripe has failed us: minutes from the last successful call to the last failed one.

    0 when the latest call succeeded (or failed only with a 4xx: Stripe
    answered); ``None`` when no call was made in the last ``horizon`` (the
    worker is not syncing: its heartbeat says so, this rule does not guess).
    """
    latest = ms.find_one(store.API_CALLS, {"at": {"$gte": at - horizon, "$lt": at}}, sort=[("at", -1)])
    if latest is None:
        return None
    if latest.get("kind") not in store.ERROR_KINDS:
        return 0.0
    answered = ms.find_one(store.API_CALLS, {"at": {"$lt": at}, "kind": {"$nin": list(store.ERROR_KINDS)}}, sort=[("at", -1)])
    since = utc(answered["at"]) if answered else utc(ms.find_one(store.API_CALLS, {"at": {"$lt": at}}, sort=[("at", 1)])["at"])
    return round(max(0.0, (utc(latest["at"]) - since).total_seconds() / 60), 1)


# --- The snapshot's "stripe" key ---------------------------------------------------------------

def stripe_snapshot(db: Database | MirrorStore, settings: Settings, at: datetime | None = None) -> dict[str, Any]:
    """Every Stripe-side figure at ``at`` (default now), from the mirror."""
    ms = db if isinstance(db, MirrorStore) else MirrorStore(db=db, max_time_ms=settings.query_timeout_ms)
    at = utc(at) if at else datetime.now(timezone.utc).replace(microsecond=0)
    configured = settings.stripe_api_key is not None
    try:
        # Without a key here and nothing ever mirrored, there is nothing to show: say so in one
        # line rather than a tree of nulls.  (A mirror filled by a worker that has the key is
        # still read: ``configured`` is about this process, the figures about the mirror.)
        if not configured and not resource_status(ms):
            return {"configured": False, "available": False,
                    "reason": "Stripe is not configured (STRIPE_API_KEY is unset) and the mirror has never synced"}
        figures = _snapshot(ms, at)
    except DataSourceUnavailable as exc:
        # The mirror lives in Paywatch's own database, possibly another cluster: unknown, not zero.
        return {"configured": configured, "available": False,
                "reason": f"the Stripe mirror could not be read: {exc}"}
    return {"configured": configured, "available": True, "reason": None, **figures}


def _snapshot(ms: MirrorStore, at: datetime) -> dict:
    day = last(at, hours=24)
    payments = payment_summary(ms, day)
    delivery = webhook_delivery(ms, day, at)
    disputes = dispute_summary(ms, day)
    endpoints = endpoint_status(ms)
    health = webhook_health(ms, at, limit=0)
    return {
        "sync": sync_summary(ms, at),
        "24h": {
            "payments": payments,
            "refunds": refund_summary(ms, day, payments["succeeded"] if payments else None),
            "disputes": {"created": disputes["created"], "amount": disputes["created_amount"]} if disputes["available"] else None,
            "webhooks": {"delivery_success": delivery["delivery_success"], "events": delivery["events"]},
            "api": api_summary(ms, day),
        },
        "disputes": ({k: disputes[k] for k in ("open", "open_amount", "by_status")} if disputes["available"]
                     else {"open": None, "reason": disputes["reason"]}),
        "webhooks": {"backlog": delivery["backlog"], "oldest_pending_at": delivery["oldest_pending_at"],
                     "reason": delivery.get("reason"), "undelivered": health["undelivered"],
                     "failing_endpoints": {e["label"]: e["failing_hours"] for e in health["endpoints"]
                                           if e["undelivered"]} if health["available"] else None,
                     "expiring": len(expiring_events(ms, at)) if health["available"] else None},
        "endpoints": ({"count": len(endpoints["items"]), "enabled": endpoints["enabled"], "problems": endpoints["problems"],
                       "items": [{k: e[k] for k in ("id", "url", "status", "enabled_events", "missing_guide_events")}
                                 for e in endpoints["items"]]}
                      if endpoints["available"] else {"count": None, "problems": None, "reason": endpoints["reason"]}),
        "api": {"unreachable_minutes": api_unreachable_minutes(ms, at)},
    }


def stripe_page(ms: MirrorStore, window: Window, at: datetime, limit: int = 50) -> dict[str, Any]:
    """Everything the dashboard's Stripe page draws, for one window, in one read of the mirror."""
    payments = payment_summary(ms, window)
    return {
        "sync": sync_summary(ms, at),
        "payments": payments,
        "failed": failed_payment_intents(ms, window, limit),
        "refunds": refund_summary(ms, window, payments["succeeded"] if payments else None),
        "disputes": dispute_summary(ms, window),
        "dispute_list": recent_disputes(ms, window, limit),
        "delivery": webhook_delivery(ms, window, at),
        "health": webhook_health(ms, at, limit),
        "endpoints": endpoint_status(ms),
        "api": api_summary(ms, window),
        "unreachable_minutes": api_unreachable_minutes(ms, at),
    }
