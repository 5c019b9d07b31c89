"""Alerts during a period, from the alert worker's history (``alert_history``, ``silences``).

The worker records every state transition of every rule and subject
(:mod:`alerts.store`).  A firing episode runs from a transition *to*
``firing`` to the next transition of the same rule and subject; the review
wants, per rule: how many episodes began in the period, how long the rule
fired within it, and how long the episodes that ended in it took to
resolve.  Computed in the database (``$setWindowFields`` pairs each
transition with the next one), in the same style as ``metrics/``.
"""

from __future__ import annotations

from datetime import timedelta

from pymongo.database import Database

from alerts.state import FIRING, RESOLVED
from alerts.store import HISTORY, SILENCES
from metrics.windows import Window, utc

# An episode that began before the period still counts for its time within it.
LOOKBACK = timedelta(days=35)
MAX_TIME_MS = 15_000
TRANSITION, NOTIFIED = "transition", "notified"


def episodes_pipeline(window: Window) -> list[dict]:
    start, end = window.start, window.end
    resolved_in_window = {"$and": [{"$eq": ["$next_to", RESOLVED]}, {"$gte": ["$next_at", start]},
                                   {"$lt": ["$next_at", end]}]}
    return [
        {"$match": {"at": {"$gte": start - LOOKBACK, "$lt": end}, "event": {"$in": [TRANSITION, NOTIFIED]}}},
        {"$facet": {
            "episodes": [
                {"$match": {"event": TRANSITION}},
                {"$setWindowFields": {
                    "partitionBy": {"rule": "$rule_id", "subject": "$subject"},
                    "sortBy": {"at": 1},
                    "output": {"next_at": {"$shift": {"output": "$at", "by": 1}},
                               "next_to": {"$shift": {"output": "$to", "by": 1}}},
                }},
                {"$match": {"to": FIRING}},
                {"$set": {"from_at": {"$max": ["$at", start]},
                          "to_at": {"$min": [{"$ifNull": ["$next_at", end]}, end]},
                          "resolved_here": resolved_in_window}},
                {"$match": {"$expr": {"$gt": ["$to_at", "$from_at"]}}},
                {"$group": {
                    "_id": "$rule_id",
                    "title": {"$last": "$title"},
                    "severity": {"$last": "$severity"},
                    "fired": {"$sum": {"$cond": [{"$gte": ["$at", start]}, 1, 0]}},
                    "firing_ms": {"$sum": {"$subtract": ["$to_at", "$from_at"]}},
                    "resolved": {"$sum": {"$cond": ["$resolved_here", 1, 0]}},
                    "resolve_avg_ms": {"$avg": {"$cond": ["$resolved_here", {"$subtract": ["$next_at", "$at"]}, None]}},
                    "resolve_max_ms": {"$max": {"$cond": ["$resolved_here", {"$subtract": ["$next_at", "$at"]}, None]}},
                }},
            ],
            "messages": [
                {"$match": {"event": NOTIFIED, "at": {"$gte": start}}},
                {"$group": {"_id": "$rule_id", "messages": {"$sum": 1}}},
            ],
        }},
    ]


def has_history(state: Database) -> bool:
    return state[HISTORY].find_one({}, {"_id": 1}, max_time_ms=MAX_TIME_MS) is not None


def alerts_in(state: Database, window: Window) -> list[dict]:
    """Per rule that fired (or was firing) in W: ``rule_id, title, severity, fired, firing_ms,
    resolved, resolve_avg_ms, resolve_max_ms, messages``; longest firing first."""
    result = list(state[HISTORY].aggregate(episodes_pipeline(window), maxTimeMS=MAX_TIME_MS))[0]
    messages = {row["_id"]: row["messages"] for row in result["messages"]}
    rows = [{"rule_id": row["_id"], "title": row.get("title") or row["_id"], "severity": row.get("severity"),
             "fired": row["fired"], "firing_ms": row["firing_ms"], "resolved": row["resolved"],
             "resolve_avg_ms": _ms(row.get("resolve_avg_ms")), "resolve_max_ms": _ms(row.get("resolve_max_ms")),
             "messages": messages.pop(row["_id"], 0)} for row in result["episodes"]]
    # Messages about rules with no episode in W (a resolve of an older one is in the episodes already).
    rows += [{"rule_id": rule, "title": rule, "severity": None, "fired": 0, "firing_ms": 0, "resolved": 0,
              "resolve_avg_ms": None, "resolve_max_ms": None, "messages": n} for rule, n in messages.items()]
    return sorted(rows, key=lambda r: (-r["firing_ms"], r["rule_id"]))


def silences_in(state: Database, window: Window) -> list[dict]:
    """Silences in force at some point of W, in the order they were set."""
    docs = state[SILENCES].find({"created_at": {"$lt": window.end}, "until": {"$gt": window.start}},
                                {"_id": 0}, sort=[("created_at", 1)], max_time_ms=MAX_TIME_MS)
    return [{"rule_id": d.get("rule_id"), "subject": d.get("subject") or "(all)", "from": utc(d["created_at"]),
             "until": utc(d["until"]), "reason": d.get("reason"), "by": d.get("by")} for d in docs]


def _ms(value) -> int | None:
    return None if value is None else int(value)
