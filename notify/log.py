"""What was sent is its own record (Alertmanager's notification log), apart from the alert.

Two collections in Paywatch's database:

- ``notify_attempts``: one document per try of a message on a channel, with
  its outcome, the (redacted) error, the latency and the Slack link; the
  Notifications page lists them.  Kept as long as sent messages
  (``outbox_keep``).
- ``notify_threads``: per alert episode and channel, the post of its firing
  message, so a reminder replies to it and the resolve edits it, after a
  restart too, and on any replica.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from notify.channels.base import Post

ATTEMPTS, THREADS = "notify_attempts", "notify_threads"
# Outcomes of one attempt.
SENT, FOUND, RETRY, DEAD = "sent", "found", "retry", "dead"


def ensure_indexes(db: Database) -> None:
    db[ATTEMPTS].create_index([("at", DESCENDING)], name="at")
    db[ATTEMPTS].create_index([("expire_at", ASCENDING)], name="expire_ttl", expireAfterSeconds=0)
    db[ATTEMPTS].create_index([("outbox_id", ASCENDING), ("at", ASCENDING)], name="outbox_at")
    db[THREADS].create_index([("expire_at", ASCENDING)], name="expire_ttl", expireAfterSeconds=0)


def record_attempt(db: Database, doc: dict, status: str, *, at: datetime, latency_ms: float | None,
                   error: str | None, link: str | None, keep: timedelta) -> None:
    message = doc.get("message") or {}
    db[ATTEMPTS].insert_one({
        "at": at, "outbox_id": doc["_id"], "key": doc.get("key"), "channel": doc.get("channel"),
        "attempt": doc.get("attempts"), "status": status, "error": error, "latency_ms": latency_ms, "link": link,
        "kind": message.get("kind"), "rule_id": message.get("rule_id"), "subject": message.get("subject"),
        "title": message.get("title"), "headline": message.get("headline"), "expire_at": at + keep,
    })


def attempts(db: Database, *, since: datetime | None = None, limit: int = 500) -> list[dict]:
    """The latest attempts first (the Notifications page)."""
    query = {"at": {"$gte": since}} if since is not None else {}
    return list(db[ATTEMPTS].find(query, {"_id": 0}).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit))


def thread_id(episode: str, channel: str) -> str:
    return f"{episode}@{channel}"


def remember_thread(db: Database, episode: str, channel: str, post: Post, *, at: datetime, keep: timedelta) -> None:
    db[THREADS].update_one({"_id": thread_id(episode, channel)},
                           {"$set": {**post.as_doc(), "at": at, "expire_at": at + keep}}, upsert=True)


def thread_of(db: Database, episode: str | None, channel: str) -> Post | None:
    if not episode:
        return None
    return Post.from_doc(db[THREADS].find_one({"_id": thread_id(episode, channel)}))
