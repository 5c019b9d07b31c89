"""The persistent outbox: every message is written to MongoDB before anyone tries to send it.

One document per message and channel, ``_id`` = the message's dedup key and
the channel (the unique ``_id`` index is the dedup), so a message enqueued
twice is stored once.  Sending is the one place that retries, and it never
gives up on a message a retry can still deliver:

- a message is claimed atomically (``find_one_and_update`` with "still
  pending, claim expired" in the filter; if nothing comes back, another
  sender has it), then posted;
- a 429, a 5xx, a timeout or a refused connection never uses up an attempt:
  the message waits (a 429 exactly its ``Retry-After``, the rest an
  exponential backoff of its own) and is tried again;
- backoff is per message, so one failing message never holds back the
  others; only the messages of one alert episode (its firing, reminders and
  resolve) keep their order, so a resolve never overtakes its firing;
- pacing is per channel: Slack accepts about one message per second per
  channel (https://docs.slack.dev/apis/web-api/rate-limits), so posts to one
  channel are ``[alerts] pace`` apart, and a 429 holds the whole channel for
  its ``Retry-After``;
- a message is given up ("dead") only when the error is permanent (404/410,
  ``channel_not_found``, ``invalid_auth``, a malformed URL…), when it still
  fails ``outbox_max_age`` after it was queued (default 24 h), or when it
  failed ``outbox_max_attempts`` times for no reason a retry explains (the
  sender died mid-send, or a bug);
- a given-up message is announced on every other channel (always the
  console), listed on the dashboard's Notifications page, and turns the
  worker's heartbeat ping into a failure (:func:`given_up`); it expires
  ``outbox_dead_keep`` later;
- a sender that dies mid-send leaves a claim that expires after
  ``claim_timeout``; the message is then sent again.  A channel that can
  look its posts up (Slack with a bot token) first searches for the
  message's key, so such a message, or one whose answer timed out, is
  posted once; the others are at least once.

Every attempt is recorded (:mod:`notify.log`), with its redacted error.
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

from metrics.redact import describe, redact, settings_secrets
from metrics.settings import Settings
from notify import log as notify_log
from notify.channels import CHANNELS, FALLBACK, Channel, Post, TransportError
from notify.message import DEAD_LETTER, dead_letter_message
from notify.options import DeliveryOptions

log = logging.getLogger(__name__)

OUTBOX = "outbox"
PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The messages whose post later ones edit or reply to: an alert's first, and a flapping announcement
# (alerts/state.py), which stands for every episode while the rule flaps.
OPENS_THREAD = ("first", "flapping")


def utcnow() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)  # what MongoDB stores


def ensure_indexes(db: Database) -> None:
    coll = db[OUTBOX]
    coll.create_index([("channel", ASCENDING), ("status", ASCENDING), ("seq", ASCENDING)], name="channel_status_seq")
    coll.create_index([("status", ASCENDING), ("created_at", ASCENDING)], name="status_created")
    # Sent and dead messages carry expire_at; pending ones stay until they are sent or given up.
    coll.create_index([("expire_at", ASCENDING)], name="expire_ttl", expireAfterSeconds=0)
    notify_log.ensure_indexes(db)


def list_messages(db: Database, statuses: Iterable[str] = (PENDING, SENDING, DEAD), limit: int = 200) -> list[dict]:
    return list(db[OUTBOX].find({"status": {"$in": list(statuses)}}).sort([("seq", ASCENDING)]).limit(limit))


def counts(db: Database) -> dict[str, int]:
    rows = db[OUTBOX].aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
    return {row["_id"]: row["n"] for row in rows}


def given_up(db: Database, now: datetime, limit: int = 50) -> list[dict]:
    """Messages given up and not yet expired (dead letters about them aside): delivery is broken."""
    query = {"status": DEAD, "message.kind": {"$ne": DEAD_LETTER},
             "$or": [{"expire_at": {"$gt": now}}, {"expire_at": {"$exists": False}}]}
    return list(db[OUTBOX].find(query).sort([("dead_at", -1)]).limit(limit))


def requeue(db: Database, doc_id: str, now: datetime) -> bool:
    """Try a given-up message again (after the channel was fixed); its age counts from now."""
    done = db[OUTBOX].update_one(
        {"_id": doc_id, "status": DEAD},
        {"$set": {"status": PENDING, "next_attempt_at": now, "requeued_at": now, "failures": 0, "backoff_steps": 0,
                  "claimed_until": EPOCH}, "$unset": {"expire_at": "", "dead_at": ""}})
    return done.modified_count == 1


def _span(td: timedelta) -> str:
    """``24h``, ``7d``, ``90m``: the largest whole unit, days only from two of them (as configured)."""
    seconds = int(td.total_seconds())
    for unit, size, least in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("m", 60, 60)):
        if seconds >= least and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


class Outbox:
    def __init__(self, db: Database, settings: Settings, config: DeliveryOptions, channels: dict[str, Channel], *,
                 holder: str = "local", may_send: Callable[[], bool] = lambda: True,
                 stop: threading.Event | None = None, clock: Callable[[], datetime] = utcnow):
        self.db, self.coll = db, db[OUTBOX]
        self.settings, self.config = settings, config
        self.targets = list(channels)  # where messages go by default
        # The console is always there to report dead letters, even when Slack is the alert channel.
        self.senders = {**channels}
        self.senders.setdefault(FALLBACK, CHANNELS[FALLBACK].from_settings(settings, config))
        self.holder, self.may_send, self.clock = holder, may_send, clock
        self.stop = stop or threading.Event()
        self.fence = 0
        # Per channel, the monotonic time before which nothing is posted: the pace, or a 429's Retry-After.
        self._not_before: dict[str, float] = {}
        self._lock = threading.Lock()
        self._settings_secrets = settings_secrets(settings)

    def _redact(self, text: object) -> str:
        secrets = self._settings_secrets + [s for c in self.senders.values() for s in c.secrets()]
        return redact(text, secrets=secrets, limit=500)

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
                    "episode": message.get("episode"), "created_at": now, "seq": ObjectId(), "attempts": 0,
                    "failures": 0, "next_attempt_at": now, "claimed_until": EPOCH, "fence": self.fence,
                })
                added.append(doc_id)
            except DuplicateKeyError:
                log.info("outbox: %s is already queued; not adding it twice", doc_id)
        return added

    # -- sending ------------------------------------------------------------------------

    def deliver(self, budget_s: float = 0.0) -> Counter:
        """Send everything due, channel by channel.

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
                for name, channel in list(self.senders.items()):
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

    def _due(self, name: str, now: datetime) -> tuple[dict | None, float | None]:
        """The oldest message of this channel that may go now, or how long until one may.

        A message waiting for its retry holds back only the later messages of its own episode.
        """
        waiting: set[str] = set()
        wait = None
        for doc in self.coll.find({"channel": name, "status": {"$in": [PENDING, SENDING]}}, {"message": 0},
                                  sort=[("seq", ASCENDING)], limit=1000):
            episode = doc.get("episode")
            if episode and episode in waiting:
                continue
            not_before = max(doc["claimed_until"], doc["next_attempt_at"])
            if not_before > now:  # its retry is later, or another sender is posting it (or died doing so)
                left = (not_before - now).total_seconds()
                wait = left if wait is None else min(wait, left)
                if episode:
                    waiting.add(episode)
                continue
            return doc, None
        return None, wait

    def _step(self, name: str, channel: Channel) -> tuple[str, float | None]:
        """Try the oldest due message of one channel; say what happened and how long to wait."""
        now = self.clock()
        head, wait = self._due(name, now)
        if head is None:
            return ("idle" if wait is None else "wait"), wait
        pace_left = self._not_before.get(name, float("-inf")) - time.monotonic()
        if pace_left > 0:
            return "wait", pace_left
        if not self.may_send():
            log.warning("outbox: this worker no longer holds the lease; not sending")
            return "not_leader", None
        died = head["status"] == SENDING  # its claim expired: the sender stopped mid-send
        claimed = self.coll.find_one_and_update(
            {"_id": head["_id"], "status": head["status"], "attempts": head["attempts"], "claimed_until": {"$lte": now}},
            {"$set": {"status": SENDING, "claimed_by": self.holder, "fence": self.fence,
                      "claimed_until": now + self.config.claim_timeout, **({"maybe_sent": True} if died else {})},
             "$inc": {"attempts": 1, "failures": 1 if died else 0}},
            return_document=ReturnDocument.AFTER,
        )
        if claimed is None:
            return "lost", None  # another sender claimed it first
        if died and claimed.get("failures", 0) >= self.config.outbox_max_attempts:
            self._dead(claimed, f"the sender stopped mid-send {_times(claimed['failures'])}")
            return DEAD, None
        message = claimed["message"]
        thread = None
        if message.get("reason") not in OPENS_THREAD:  # reminders and resolves belong to the firing message's post
            thread = notify_log.thread_of(self.db, claimed.get("episode"), name)
        started = time.monotonic()
        looked = False
        try:
            post: Post | None = None
            if claimed.get("maybe_sent") and channel.exactly_once:
                looked = True
                post = channel.find(claimed["key"], claimed["created_at"], thread)
                if post is not None:
                    log.info("outbox: %s was already posted (its answer was lost); not posting it again",
                             claimed["_id"])
            found = post is not None
            if not found:
                post = channel.send(message, key=claimed["key"], thread=thread)
        except TransportError as exc:
            return self._failed(claimed, exc, started, looked=looked), None
        except Exception as exc:  # noqa: BLE001 - an unexpected error is retried, never lost
            return self._failed(claimed, TransportError(describe(exc)), started, looked=looked, unexpected=True), None
        return self._sent(claimed, post, found, started), None

    def _sent(self, doc: dict, post: Post | None, found: bool, started: float) -> str:
        name = doc["channel"]
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        self._not_before[doc["channel"]] = time.monotonic() + self.config.pace.total_seconds()
        sent_at = self.clock()
        done = self.coll.update_one(
            {"_id": doc["_id"], "status": SENDING, "claimed_by": self.holder, "attempts": doc["attempts"]},
            {"$set": {"status": SENT, "sent_at": sent_at, "expire_at": sent_at + self.config.outbox_keep,
                      "claimed_until": EPOCH, "last_error": None, "maybe_sent": False,
                      "post": post.as_doc() if post else None, "link": post.link if post else None}},
        )
        if done.modified_count != 1:
            log.warning("outbox: %s was sent, but its claim had passed to another sender", doc["_id"])
        if post is not None and doc["message"].get("reason") in OPENS_THREAD and doc.get("episode"):
            notify_log.remember_thread(self.db, doc["episode"], name, post, at=sent_at, keep=self.config.outbox_keep)
        notify_log.record_attempt(self.db, doc, notify_log.FOUND if found else notify_log.SENT, at=sent_at,
                                  latency_ms=latency_ms, error=None, link=post.link if post else None,
                                  keep=self.config.outbox_keep)
        log.info("outbox: sent %s (attempt %d)", doc["_id"], doc["attempts"])
        return SENT

    def backoff(self, attempts: int) -> float:
        base = self.config.outbox_backoff.total_seconds()
        return min(self.config.outbox_backoff_max.total_seconds(), base * 2 ** max(0, attempts - 1))

    def _failed(self, doc: dict, exc: TransportError, started: float, *, looked: bool = False,
                unexpected: bool = False) -> str:
        error = self._redact(exc)
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        now = self.clock()
        age = now - (doc.get("requeued_at") or doc["created_at"])
        failures = doc.get("failures", 0) + (1 if unexpected else 0)
        max_age = self.config.outbox_max_age
        if exc.permanent:
            return self._dead(doc, error, latency_ms)
        if age >= max_age:
            return self._dead(doc, f"{error} (still failing {_span(max_age)} after it was queued)", latency_ms)
        if failures >= self.config.outbox_max_attempts:
            return self._dead(doc, f"{error} (failed {_times(failures)})", latency_ms)
        # A rate limit says how long to wait; the backoff doubles with the other failures only.
        steps = doc.get("backoff_steps", 0) + (0 if exc.throttled else 1)
        delay = exc.retry_after if exc.retry_after is not None else self.backoff(max(1, steps))
        if exc.throttled:  # a rate limit holds the whole channel, not only this message
            self._not_before[doc["channel"]] = max(self._not_before.get(doc["channel"], 0.0), time.monotonic() + delay)
        # "Maybe posted" survives until a look-up says it was not: a 429 after a timeout proves nothing.
        maybe_sent = exc.maybe_sent or (bool(doc.get("maybe_sent")) and not looked)
        self.coll.update_one(
            {"_id": doc["_id"], "status": SENDING, "claimed_by": self.holder},
            {"$set": {"status": PENDING, "claimed_until": EPOCH, "last_error": error, "failures": failures,
                      "backoff_steps": steps,
                      "maybe_sent": maybe_sent, "next_attempt_at": now + timedelta(seconds=delay)}},
        )
        notify_log.record_attempt(self.db, doc, notify_log.RETRY, at=now, latency_ms=latency_ms, error=error,
                                  link=None, keep=self.config.outbox_keep)
        log.warning("outbox: %s failed (attempt %d): %s; retrying in %.1f s", doc["_id"], doc["attempts"], error, delay)
        return "retry"

    def _dead(self, doc: dict, error: str, latency_ms: float | None = None) -> str:
        now = self.clock()
        self.coll.update_one({"_id": doc["_id"]}, {"$set": {
            "status": DEAD, "dead_at": now, "last_error": error, "claimed_until": EPOCH,
            "expire_at": now + self.config.outbox_dead_keep}})
        notify_log.record_attempt(self.db, doc, notify_log.DEAD, at=now, latency_ms=latency_ms, error=error,
                                  link=None, keep=self.config.outbox_keep)
        log.error("outbox: gave up on %s after %d attempts: %s", doc["_id"], doc["attempts"], error)
        if doc.get("message", {}).get("kind") == DEAD_LETTER:
            return DEAD  # a report about a report: the log line above is where it ends
        report = dead_letter_message(doc, doc["channel"], doc["attempts"], error, self.settings, now)
        others = [n for n in self.senders if n != doc["channel"]]
        self.enqueue(f"dead|{doc['_id']}", report, others)
        return DEAD
