"""One leader among worker replicas: a lease in MongoDB, timed by the server's clock.

The lease document (collection ``leases``) names a holder and an expiry.
Acquiring and renewing are one pipeline update: take it when it is ours or
has expired, by the server's ``$$NOW``, so replicas with skewed clocks still
agree.  Each change of holder increments a fencing counter; everything the
leader writes carries it (:mod:`alerts.store` refuses older tokens), and
before each post the outbox checks, again on the server, that the lease is
still ours.  A leader paused past its lease therefore cannot send once it
wakes, and a standby takes over within about two lease periods of a crash
(it retries every third of a lease).

SecantusDB, the embedded default, compares a stored date with ``$$NOW``
wrongly, so expiry is compared as milliseconds (``$toLong``), which means
the same on MongoDB.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import PyMongoError

from metrics.redact import describe

log = logging.getLogger(__name__)

LEASES = "leases"
WORKER_LEASE = "alerts-worker"


def _after_now(ref: str) -> dict:
    return {"$gt": [{"$toLong": ref}, {"$toLong": "$$NOW"}]}


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(self, db: Database, duration: timedelta, *, name: str = WORKER_LEASE, holder: str | None = None):
        self.coll = db[LEASES]
        self.name = name
        self.holder = holder or default_holder()
        self.duration = duration
        self.fence = 0
        self.last_error: str | None = None  # why the last acquire could not ask the server
        self._valid_until = 0.0  # local monotonic bound: renewals sent before it expire after it

    @property
    def held(self) -> bool:
        """Held as far as this process knows (no round trip)."""
        return time.monotonic() < self._valid_until

    def acquire(self) -> bool:
        """Take the lease if it is free or ours, and renew it; True when we hold it."""
        ms = int(self.duration.total_seconds() * 1000)
        take = {"$or": [{"$eq": ["$holder", self.holder]}, {"$not": [_after_now("$expires_at")]}]}
        started = time.monotonic()
        try:
            doc = self.coll.find_one_and_update(
                {"_id": self.name},
                [
                    {"$set": {"_take": take}},
                    {"$set": {
                        "fence": {"$cond": ["$_take",
                                            {"$cond": [{"$eq": ["$holder", self.holder]}, "$fence",
                                                       {"$add": [{"$ifNull": ["$fence", 0]}, 1]}]},
                                            "$fence"]},
                        "acquired_at": {"$cond": [{"$and": ["$_take", {"$ne": ["$holder", self.holder]}]},
                                                  "$$NOW", "$acquired_at"]},
                        "holder": {"$cond": ["$_take", self.holder, "$holder"]},
                        "expires_at": {"$cond": ["$_take", {"$add": ["$$NOW", ms]}, "$expires_at"]},
                        "renewed_at": {"$cond": ["$_take", "$$NOW", "$renewed_at"]},
                    }},
                    {"$unset": "_take"},
                ],
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                # An upsert racing another (the first acquire of two replicas, or of the lease and
                # evaluate jobs) can come back empty on some servers: read what was stored.
                doc = self.coll.find_one({"_id": self.name})
        except PyMongoError as exc:
            self.last_error = describe(exc, limit=200)
            log.warning("lease: could not reach the state database: %s", self.last_error)
            self._valid_until = 0.0
            return False
        self.last_error = None
        mine = doc is not None and doc.get("holder") == self.holder
        if mine:
            if doc.get("fence") != self.fence:
                log.info("lease: %s is now the leader (fence %s)", self.holder, doc.get("fence"))
            self.fence = int(doc.get("fence") or 0)
            self._valid_until = started + self.duration.total_seconds()
        else:
            if self._valid_until:
                log.warning("lease: lost to %s", doc.get("holder") if doc else "?")
            self._valid_until = 0.0
        return mine

    def drop(self) -> None:
        """Stop believing we lead (a newer leader's fence refused our write), until the next acquire."""
        self._valid_until = 0.0

    def check(self) -> bool:
        """Ask the server whether the lease is still ours, with our fence, and unexpired."""
        if not self.held:
            return False
        try:
            n = self.coll.count_documents({"_id": self.name, "holder": self.holder, "fence": self.fence,
                                           "$expr": _after_now("$expires_at")})
        except PyMongoError:
            return False
        return n == 1

    def release(self) -> None:
        """Let a standby take over at once (clean shutdown)."""
        self._valid_until = 0.0
        try:
            self.coll.update_one({"_id": self.name, "holder": self.holder},
                                 [{"$set": {"expires_at": "$$NOW", "released_at": "$$NOW"}}])
        except PyMongoError as exc:
            log.warning("lease: could not release: %s", describe(exc, limit=200))

    def status(self) -> dict | None:
        return self.coll.find_one({"_id": self.name})
