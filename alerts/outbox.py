"""The persistent outbox: every message is written to MongoDB before anyone tries to send it.

One document per message and channel, ``_id`` = the message's dedup key and
the channel (the unique ``_id`` index is the dedup), so a message enqueued
twice is stored once.  Sending is the one place that retries:

- a message is claimed atomically (``find_one_and_update`` with "still
  pending, claim expired" in the filter; if nothing comes back, another
  sender has it), then posted;
- 429 waits exactly ``Retry-After``; 5xx, timeouts and connection errors back
  off exponentially; 404/410 and other permanent errors go straight to dead;
- after ``outbox_max_attempts`` it is dead-lettered, and that is itself
  reported on the other channels (always the console) and in the log;
- per channel, messages go out in the order they were enqueued: a message
  waiting for its retry holds back the ones behind it;
- Slack accepts about one message per second per channel
  (https://docs.slack.dev/apis/web-api/rate-limits), so sends to one channel
  are paced ``[alerts] pace`` apart;
- a sender that dies mid-send leaves a claim that expires after
  ``claim_timeout``; the message is then sent again (at least once: Slack
  may have received the first post).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from alerts.channels import FALLBACK, CHANNELS, Channel, TransportError
from alerts.config import AlertsConfig
from alerts.messages import DEAD_LETTER, dead_letter_message
from metrics.settings import Settings

log = logging.getLogger(__name__)

OUTBOX = "outbox"
PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utcnow() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)  # what MongoDB stores


def ensure_indexes(db: Database) -> None:
    coll = db[OUTBOX]
    coll.create_index([("channel", ASCENDING), ("status", ASCENDING), ("seq", ASCENDING)], name="channel_status_seq")
    coll.create_index([("status", ASCENDING), ("created_at", ASCENDING)], name="status_created")
    # Only sent messages carry expire_at: pending and dead ones stay until someone looks.
    coll.create_index([("expire_at", ASCENDING)], name="expire_ttl", expireAfterSeconds=0)


def list_messages(db: Database, statuses: Iterable[str] = (PENDING, SENDING, DEAD), limit: int = 200) -> list[dict]:
    return list(db[OUTBOX].find({"status": {"$in": list(statuses)}}).sort([("seq", ASCENDING)]).limit(limit))


def counts(db: Database) -> dict[str, int]:
    rows = db[OUTBOX].aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
    return {row["_id"]: row["n"] for row in rows}


class Outbox:
    def __init__(self, db: Database, settings: Settings, config: AlertsConfig, channels: dict[str, Channel], *,
                 holder: str = "local", may_send: Callable[[], bool] = lambda: True,
                 stop: threading.Event | None = None, clock: Callable[[], datetime] = utcnow):
        self.db, self.coll = db, db[OUTBOX]
        self.settings, self.config = settings, config
        self.targets = list(channels)  # where alerts go
        # The console is always there to report dead letters, even when Slack is the alert channel.
        self.senders = {**channels}
        self.senders.setdefault(FALLBACK, CHANNELS[FALLBACK].from_settings(settings, config))
        self.holder, self.may_send, self.clock = holder, may_send, clock
        self.stop = stop or threading.Event()
        self.fence = 0
        self._last_sent: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------

    def enqueue(self, key: str, message: dict, channels: Iterable[str] | None = None) -> list[str]:
        """Store the message once per channel; a key already present is left as it is."""
        now = self.clock()
        added = []
        for name in channels if channels is not None else self.targets:
            doc_id = f"{key}@{name}"
            try:
                self.coll.insert_one({
                    "_id": doc_id, "key": key, "channel": name, "status": PENDING, "message": message,
                    "created_at": now, "seq": ObjectId(), "attempts": 0, "next_attempt_at": now,
                    "claimed_until": EPOCH, "fence": self.fence,
                })
                added.append(doc_id)
            except DuplicateKeyError:
                log.info("outbox: %s is already queued; not adding it twice", doc_id)
        return added

    # -- sending ------------------------------------------------------------------------

    def deliver(self, budget_s: float = 0.0) -> Counter:
        """Send everything due, channel by channel, in order.

        Waits for retries and pacing that fall within ``budget_s`` seconds;
        what is due later is left for the next call.  Returns counts per outcome.
        """
        outcomes: Counter = Counter()
        if not self._lock.acquire(blocking=False):
            outcomes["busy"] += 1  # another thread of this worker is delivering
            return outcomes
        try:
            deadline = time.monotonic() + budget_s
            while not self.stop.is_set():
                waits, progressed = [], False
                for name, channel in self.senders.items():
                    outcome, wait = self._step(name, channel)
                    if outcome == "not_leader":
                        outcomes[outcome] += 1
                        return outcomes
                    if outcome in (SENT, "retry", DEAD, "lost"):
                        outcomes[outcome] += 1
                        progressed = True
                    if wait is not None:
                        waits.append(wait)
                if progressed:
                    continue
                if not waits or time.monotonic() + min(waits) > deadline:
                    break
                self.stop.wait(max(0.01, min(waits)))
        finally:
            self._lock.release()
        return outcomes

    def _step(self, name: str, channel: Channel) -> tuple[str, float | None]:
        """Try the oldest unsent message of one channel; say what happened and how long to wait."""
        now = self.clock()
        head = self.coll.find_one({"channel": name, "status": {"$in": [PENDING, SENDING]}}, sort=[("seq", ASCENDING)])
        if head is None:
            return "idle", None
        if head["claimed_until"] > now:  # another sender is posting it (or died and its claim runs)
            return "busy", (head["claimed_until"] - now).total_seconds()
        if head["next_attempt_at"] > now:
            return "wait", (head["next_attempt_at"] - now).total_seconds()
        pace_left = self._last_sent.get(name, float("-inf")) + self.config.pace.total_seconds() - time.monotonic()
        if pace_left > 0:
            return "wait", pace_left
        if head["attempts"] >= self.config.outbox_max_attempts:
            # Claimed that many times and never finished: the sender died mid-send each time.
            self._dead(head, head.get("last_error") or "the sender stopped mid-send on every attempt")
            return DEAD, None
        if not self.may_send():
            log.warning("outbox: this worker no longer holds the lease; not sending")
            return "not_leader", None
        claimed = self.coll.find_one_and_update(
            {"_id": head["_id"], "status": head["status"], "attempts": head["attempts"], "claimed_until": {"$lte": now}},
            {"$set": {"status": SENDING, "claimed_by": self.holder, "fence": self.fence,
                      "claimed_until": now + self.config.claim_timeout},
             "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if claimed is None:
            return "lost", None  # another sender claimed it first
        try:
            channel.send(claimed["message"])
        except TransportError as exc:
            return self._failed(claimed, exc), None
        except Exception as exc:  # noqa: BLE001 - an unexpected error is retried, never lost
            return self._failed(claimed, TransportError(f"{type(exc).__name__}: {exc}")), None
        self._last_sent[name] = time.monotonic()
        sent_at = self.clock()
        done = self.coll.update_one(
            {"_id": claimed["_id"], "status": SENDING, "claimed_by": self.holder, "attempts": claimed["attempts"]},
            {"$set": {"status": SENT, "sent_at": sent_at, "expire_at": sent_at + self.config.outbox_keep,
                      "claimed_until": EPOCH, "last_error": None}},
        )
        if done.modified_count != 1:
            log.warning("outbox: %s was sent, but its claim had passed to another sender", claimed["_id"])
        log.info("outbox: sent %s (attempt %d)", claimed["_id"], claimed["attempts"])
        return SENT, None

    def backoff(self, attempts: int) -> float:
        base = self.config.outbox_backoff.total_seconds()
        return min(self.config.outbox_backoff_max.total_seconds(), base * 2 ** max(0, attempts - 1))

    def _failed(self, doc: dict, exc: TransportError) -> str:
        error = str(exc)[:500]
        attempts = doc["attempts"]
        if exc.permanent or attempts >= self.config.outbox_max_attempts:
            self._dead(doc, error)
            return DEAD
        delay = exc.retry_after if exc.retry_after is not None else self.backoff(attempts)
        self.coll.update_one(
            {"_id": doc["_id"], "status": SENDING, "claimed_by": self.holder},
            {"$set": {"status": PENDING, "claimed_until": EPOCH, "last_error": error,
                      "next_attempt_at": self.clock() + timedelta(seconds=delay)}},
        )
        log.warning("outbox: %s failed (attempt %d of %d): %s; retrying in %.1f s",
                    doc["_id"], attempts, self.config.outbox_max_attempts, error, delay)
        return "retry"

    def _dead(self, doc: dict, error: str) -> None:
        now = self.clock()
        self.coll.update_one({"_id": doc["_id"]}, {"$set": {"status": DEAD, "dead_at": now, "last_error": error,
                                                             "claimed_until": EPOCH}})
        log.error("outbox: gave up on %s after %d attempts: %s", doc["_id"], doc["attempts"], error)
        if doc.get("message", {}).get("kind") == DEAD_LETTER:
            return  # a report about a report: the log line above is where it ends
        report = dead_letter_message(doc, doc["channel"], doc["attempts"], error, self.settings, now)
        others = [n for n in self.senders if n != doc["channel"]]
        self.enqueue(f"dead|{doc['_id']}", report, others)
