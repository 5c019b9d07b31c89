"""Alert state in Paywatch's own database (``PAYWATCH_DB``).

Collections: ``alert_state`` (one document per rule and subject), ``alert_history``
(every transition and every message sent: the dashboard's timeline and the
weekly report read it), ``silences`` and ``heartbeats``.  The outbox and the
lease keep their own collections (:mod:`notify.outbox`, :mod:`alerts.lease`).

Writes are ``$set`` of the fields that changed, filtered by the writer's
fencing token: a worker that lost its lease while paused cannot overwrite
what the new leader wrote (the filter no longer matches, the upsert collides
on ``_id``, and the write is refused).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from alerts.state import AlertState
from metrics.windows import utc

STATE, HISTORY, SILENCES, HEARTBEATS = "alert_state", "alert_history", "silences", "heartbeats"
HISTORY_RETENTION = timedelta(days=400)  # a year of weekly reports, with room
WORKER_HEARTBEAT = "worker"
_FIELDS = tuple(f.name for f in dataclasses.fields(AlertState))


class Fenced(RuntimeError):
    """A newer leader has written here: this worker must stop writing and sending."""


def ensure_indexes(db: Database) -> None:
    db[STATE].create_index([("rule_id", ASCENDING), ("subject", ASCENDING)], name="rule_subject")
    db[HISTORY].create_index([("at", DESCENDING)], name="at_ttl", expireAfterSeconds=int(HISTORY_RETENTION.total_seconds()))
    db[HISTORY].create_index([("rule_id", ASCENDING), ("at", DESCENDING)], name="rule_at")
    db[SILENCES].create_index([("until", ASCENDING)], name="until")


def state_id(rule_id: str, subject: str) -> str:
    return f"{rule_id}|{subject}"


def from_doc(doc: dict | None) -> AlertState:
    if not doc:
        return AlertState()
    values = {}
    for name in _FIELDS:
        if name in doc and doc[name] is not None:
            value = doc[name]
            values[name] = utc(value) if isinstance(value, datetime) else value
    return AlertState(**values)


def load_states(db: Database) -> dict[str, dict]:
    """Every stored state document by ``_id`` (one small collection: rules x subjects)."""
    return {doc["_id"]: doc for doc in db[STATE].find({})}


def changed_fields(prev: AlertState, new: AlertState) -> dict:
    return {name: getattr(new, name) for name in _FIELDS if getattr(prev, name) != getattr(new, name)}


def all_fields(st: AlertState) -> dict:
    return {name: getattr(st, name) for name in _FIELDS}


def state_update(doc_id: str, fields: dict, fence: int) -> UpdateOne:
    """An upsert of these fields, refused when a newer fencing token wrote the document."""
    return UpdateOne(
        {"_id": doc_id, "$or": [{"fence": {"$lte": fence}}, {"fence": {"$exists": False}}]},
        {"$set": {**fields, "fence": fence}},
        upsert=True,
    )


def write_states(db: Database, updates: list[UpdateOne]) -> None:
    """One round trip for the whole cycle; raise :class:`Fenced` if a newer leader owns a document."""
    if not updates:
        return
    try:
        db[STATE].bulk_write(updates, ordered=False)
    except BulkWriteError as exc:
        if any(err.get("code") == 11000 for err in exc.details.get("writeErrors", [])):
            raise Fenced("a newer leader owns the alert state") from None
        raise
    except DuplicateKeyError:
        raise Fenced("a newer leader owns the alert state") from None


def add_history(db: Database, entries: list[dict]) -> None:
    if entries:
        db[HISTORY].insert_many(entries, ordered=False)


def history(db: Database, since: datetime | None = None, limit: int = 500, rule_id: str | None = None) -> list[dict]:
    query: dict = {}
    if since is not None:
        query["at"] = {"$gte": since}
    if rule_id:
        query["rule_id"] = rule_id
    return list(db[HISTORY].find(query, {"_id": 0}).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit))


# -- silences -------------------------------------------------------------------------

def add_silence(db: Database, rule_id: str, subject: str | None, until: datetime, reason: str, by: str,
                now: datetime) -> str:
    doc = {"rule_id": rule_id, "subject": subject, "until": utc(until), "reason": reason, "by": by,
           "created_at": utc(now)}
    return str(db[SILENCES].insert_one(doc).inserted_id)


def remove_silence(db: Database, silence_id: str, now: datetime) -> bool:
    """End a silence now (kept for the record)."""
    try:
        oid = ObjectId(silence_id)
    except Exception:  # noqa: BLE001 - a mistyped id is "not found"
        return False
    return db[SILENCES].update_one({"_id": oid, "until": {"$gt": utc(now)}}, {"$set": {"until": utc(now)}}).modified_count == 1


def active_silences(db: Database, now: datetime) -> list[dict]:
    return list(db[SILENCES].find({"until": {"$gt": utc(now)}}).sort("until", ASCENDING))


def silenced_by(silences: list[dict], rule_id: str, subject: str) -> dict | None:
    """The silence covering this rule and subject (a silence without subject covers all)."""
    for silence in silences:
        if silence["rule_id"] == rule_id and silence.get("subject") in (None, subject):
            return silence
    return None


# -- heartbeat ------------------------------------------------------------------------

def write_heartbeat(db: Database, fields: dict, name: str = WORKER_HEARTBEAT) -> None:
    db[HEARTBEATS].update_one({"_id": name}, {"$set": fields}, upsert=True)


def read_heartbeat(db: Database, name: str = WORKER_HEARTBEAT) -> dict | None:
    return db[HEARTBEATS].find_one({"_id": name})
