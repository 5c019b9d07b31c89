"""Rollups kept in ``PAYWATCH_DB``: built once, then kept fresh without rescanning the history.

* **Build**: one pass over a collection folds every valid document into its
  15-minute buckets (and their hours and days), records which documents are
  invalid (spec section 3) and, for enrollments, which (customer, service)
  pairs hold more than one active or pending enrollment.  The change
  stream is opened *before* the pass, so nothing written during it is lost.
* **Refresh, with change streams** (MongoDB replica sets, Atlas, SecantusDB):
  every change to a platform document names the buckets it touches; only
  those are re-aggregated, each by an indexed read of its 15 minutes.  The
  resume token is kept in ``rollup_meta``, so a restarted process carries on
  where the last one stopped; a token the server no longer knows (the oplog
  rolled over) or a dropped collection leads to a rebuild of that collection.
* **Refresh, without change streams** (a standalone ``mongod``, or a user
  without the privilege): the trailing window (``PAYWATCH_ROLLUP_TRAILING_MINUTES``)
  is re-aggregated every cycle, together with the buckets of documents whose
  ``refundedAt`` or ``activatedAt`` fell in it since the last refresh.
  Changes outside that reach are repaired by verification.
* **Verification** recomputes closed buckets from the raw documents,
  repairs any that differ, and logs what it repaired.

A bucket is only ever replaced by one computed from a later read
(``v``, the time its read started), so two processes refreshing at once
cannot put an older figure back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, TypeVar

from bson import ObjectId
import pymongo
from pymongo import ASCENDING, ReplaceOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from metrics.db import DataSourceUnavailable, Source, describe_error, unavailable
from metrics.enrollments import DUPLICATE_STATUSES
from metrics.quality import COLLECTIONS, is_valid, valid_filter, valid_stages
from metrics.rollups import buckets as bk
from metrics.rollups.buckets import FINE, LEVELS, Bucket
from metrics.rollups.memo import INVALIDATING, Memo

log = logging.getLogger("paywatch.rollups")

FORMAT_VERSION = 3  # a change to what a bucket holds: stored rollups are rebuilt
BUCKETS = "rollup_buckets"
META = "rollup_meta"
INVALID = "rollup_invalid"
PAIRS = "rollup_pairs"
MEMBERS = "rollup_members"

# Server errors that mean "no change streams here": not a replica set, $changeStream unknown,
# change streams disabled, not authorised.
NO_CHANGE_STREAMS = {40573, 40324, 136, 13, 8000}
# The resume token is no longer usable: history lost, token unparseable, stream fatally broken.
LOST_TOKEN = {286, 280, 260, 9, 40576, 40615}

BUILD_BATCH = 2000
# How long a refresh's getMore on a change stream waits for a change that has not come: what has
# come is answered at once, and the next refresh asks again.  Each refresh waits once per stream.
STREAM_AWAIT_MS = 1
# Every date, as a range the time field's index serves.  A range on dates matches dates only
# (MongoDB compares within a type), so this is ``{"$type": "date"}``, which planners answer
# with a collection scan: minutes on a year of a sparse field such as refundedAt.
ANY_DATE = {"$gte": datetime(1, 1, 1, tzinfo=timezone.utc),
            "$lte": datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)}
# A build reads each collection in windows of its time field holding about this many documents,
# so no server operation of a build grows with the history (SecantusDB computes a query's whole
# answer before its first batch; MongoDB counts maxTimeMS over a cursor's whole life).
BUILD_CHUNK_DOCS = 20_000
# The deadline of one such operation, whatever the platform's query timeout (pymongo.timeout).
# The longest is the one pass that finds a collection's time span and its documents without a date.
BUILD_STEP_TIMEOUT_S = 900
WRITE_BATCH = 500
OLDEST = "oldest"  # the rollup_meta document of the first day any series has a bucket for
MEMO_ENTRIES = 4_000  # bucket documents and fine buckets of raw documents remembered (a page needs ~100)
T = TypeVar("T")
VERIFY_STEP = timedelta(days=1)
BUILD_CLAIM = timedelta(minutes=30)
HOUR, DAY = "1h", "1d"
QUARTERS = 4  # 15-minute buckets in an hour document


@dataclass(frozen=True)
class Series:
    """A collection placed in time by one date field, and how a document folds into its bucket."""

    name: str
    collection: str
    field: str
    fields: tuple[str, ...]
    fold: Callable[[Bucket, dict], None]
    with_payment: bool = False


SERIES: dict[str, Series] = {s.name: s for s in (
    Series("payments", "payments", "createdAt",
           ("status", "currency", "amount", "createdAt", "completedAt", "failureCode", "specialistId", "serviceId"),
           bk.fold_payment),
    Series("refunds", "payments", "refundedAt", ("currency", "amount", "refundedAt"), bk.fold_refund),
    Series("webhooks", "webhook_events", "receivedAt",
           ("status", "type", "receivedAt", "processedAt", "stripeCreatedAt"), bk.fold_webhook),
    Series("enrollments", "enrollments", "createdAt",
           ("paymentStatus", "createdAt", "activatedAt", "confirmationEmailSentAt"), bk.fold_enrollment),
    Series("activations", "enrollments", "activatedAt", ("activatedAt", "confirmationEmailSentAt"),
           bk.fold_activation, with_payment=True),
    Series("enrollment_refunds", "enrollments", "refundedAt", ("refundedAt",), bk.fold_enrollment_refund),
)}

# Date fields, other than a series' own, that the platform sets on a later change and that an index
# serves: without change streams, a document with one of them in the trailing window is re-read.
LATE_FIELDS = {"payments": ("refundedAt",), "enrollments": ("activatedAt", "refundedAt"), "webhook_events": ()}


def series_of(collection: str) -> list[Series]:
    return [s for s in SERIES.values() if s.collection == collection]


def bucket_id(series: str, level: str, start: datetime) -> str:
    return f"{series}|{level}|{start.strftime('%Y-%m-%dT%H:%M')}"


def read_valid(src: Source, series: Series, condition: dict, batch_size: int = 0, invalid: list | None = None):
    """The valid documents (spec section 3) of ``series`` whose time field matches ``condition``,
    under our field names: an indexed ``find`` on the time field, validity checked here.
    ``invalid`` collects the ids of the documents that matched but are not valid."""
    coll = getattr(src.schema, series.collection)
    fields = {*series.fields, _window_field(series.collection), "status"}
    if series.collection == "payments":
        fields.add("amount")
    if series.with_payment:
        fields.add("paymentId")
    projection = {coll[f]: 1 for f in fields}
    try:
        cursor = src.coll(series.collection).find({coll[series.field]: condition}, projection,
                                                  batch_size=batch_size, max_time_ms=src.max_time_ms)
        for raw in cursor:
            doc = {f: bk.get_path(raw, coll[f]) for f in fields}
            doc["_id"] = raw["_id"]
            if is_valid(series.collection, doc):
                yield doc
            elif invalid is not None:
                invalid.append(raw["_id"])
    except PyMongoError as exc:
        raise unavailable(exc) from exc


def time_chunks(src: Source, collection: str, field: str) -> list[tuple[datetime, datetime]]:
    """Windows ``[a, b)`` of the (stored) time ``field`` holding about ``BUILD_CHUNK_DOCS`` documents
    each, oldest first, covering every date it holds: one pass over the field, at build time only."""
    try:
        with pymongo.timeout(BUILD_STEP_TIMEOUT_S):
            rows = list(src.coll(collection).aggregate([
                {"$match": {field: ANY_DATE}},
                # Dates only: an array holding dates matches the range too (such a document is invalid,
                # and found by _rebuild_invalid whatever it holds).
                {"$set": {"_t": {"$cond": [{"$eq": [{"$type": f"${field}"}, "date"]}, f"${field}", None]}}},
                {"$group": {"_id": None, "lo": {"$min": "$_t"}, "hi": {"$max": "$_t"}, "n": {"$sum": 1}}},
            ]))
    except PyMongoError as exc:
        raise unavailable(exc) from exc
    if not rows or rows[0]["lo"] is None:
        return []
    lo, hi, n = bk.utc(rows[0]["lo"]), bk.utc(rows[0]["hi"]) + timedelta(milliseconds=1), rows[0]["n"]
    parts = max(1, math.ceil(n / BUILD_CHUNK_DOCS))
    edges = [lo + (hi - lo) * i / parts for i in range(parts)] + [hi]
    return list(zip(edges, edges[1:]))


def read_chunks(src: Source, series: Series, invalid: list | None = None):
    """Every valid document of ``series`` (a build), one list per window of :func:`time_chunks`."""
    field = getattr(src.schema, series.collection)[series.field]
    for a, b in time_chunks(src, series.collection, field):
        with pymongo.timeout(BUILD_STEP_TIMEOUT_S):
            docs = list(read_valid(src, series, {"$gte": a, "$lt": b}, BUILD_BATCH, invalid))
        yield docs


def payment_times(src: Source, ids: list | None = None) -> dict:
    """``completedAt`` of valid payments that have one: of ``ids``, or of every payment (a build)."""
    p = src.schema.payments
    if ids is None:
        out: dict = {}
        # By createdAt, which is indexed (completedAt need not be): every valid payment has it.
        for a, b in time_chunks(src, "payments", p["createdAt"]):
            with pymongo.timeout(BUILD_STEP_TIMEOUT_S):
                out.update(_payment_times(src, {p["createdAt"]: {"$gte": a, "$lt": b}}))
        return out
    return _payment_times(src, {"_id": {"$in": ids}, p["completedAt"]: ANY_DATE})


def _payment_times(src: Source, query: dict) -> dict:
    p = src.schema.payments
    fields = ("createdAt", "status", "amount", "completedAt")
    try:
        rows = src.coll("payments").find(query, {p[f]: 1 for f in fields}, batch_size=BUILD_BATCH,
                                         max_time_ms=src.max_time_ms)
        out = {}
        for raw in rows:
            doc = {f: bk.get_path(raw, p[f]) for f in fields}
            if is_valid("payments", doc) and isinstance(doc["completedAt"], datetime):
                out[raw["_id"]] = doc["completedAt"]
        return out
    except PyMongoError as exc:
        raise unavailable(exc) from exc


def with_payment_times(src: Source, docs: list[dict], times: dict | None = None) -> list[dict]:
    """Each enrollment with its payment's ``completedAt`` (a valid payment's only).

    The same join as ``metrics.enrollments.latency_pipeline``'s ``$lookup``, done
    here because SecantusDB runs a ``$lookup`` pipeline as a scan per document.
    """
    if times is None:
        ids = list({d["paymentId"] for d in docs if _hashable(d.get("paymentId")) and d.get("paymentId") is not None})
        times = payment_times(src, ids) if ids else {}
    for d in docs:
        pid = d.get("paymentId")
        d["paymentCompletedAt"] = times.get(pid) if _hashable(pid) else None
    return docs


def _hashable(value) -> bool:
    try:
        hash(value)
        return True
    except TypeError:
        return False


def _window_field(collection: str) -> str:
    from metrics.schema import WINDOW_FIELD
    return WINDOW_FIELD[collection]


def fetch(src: Source, series: Series, start: datetime, end: datetime) -> list[dict]:
    docs = list(read_valid(src, series, {"$gte": start, "$lt": end}))
    return with_payment_times(src, docs) if series.with_payment else docs


def fold_range(src: Source, series: Series, start: datetime, end: datetime) -> dict[datetime, Bucket]:
    """Fine buckets of ``series`` over ``[start, end)``, folded from the raw documents."""
    return bk.fold_into(fetch(src, series, start, end), series.field, series.fold)


def schema_hash(src: Source) -> str:
    mapping = {k: {"name": getattr(src.schema, k).name, **dict(getattr(src.schema, k).fields)} for k in COLLECTIONS}
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:16]


def pair_key(customer, service) -> str:
    return json.dumps([bk.key_value(customer), bk.key_value(service)], default=str)


class Progress:
    """``label: n/total`` on stderr, on one line in a terminal, every 2 s in a log."""

    def __init__(self, enabled: bool, stream=sys.stderr):
        self.enabled = enabled
        self.stream = stream
        self.tty = enabled and stream.isatty()
        self._last = 0.0

    def note(self, text: str) -> None:
        """A phase with no count, on a line of its own."""
        if self.enabled:
            self.stream.write(("\n" if self.tty and self._last else "") + f"rollups: {text}\n")
            self.stream.flush()

    def __call__(self, label: str, done: int, total: int | None, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self.tty else 2.0):
            return
        self._last = now
        text = f"rollups: {label} {done:,}" + (f"/{total:,}" if total else "") + " documents"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


class Rollups:
    """The rollups of one platform database, kept in Paywatch's own."""

    def __init__(self, src: Source, state: Database, *, trailing: timedelta = timedelta(minutes=120),
                 change_streams: bool = True, progress: bool = False, auto_refresh: bool = False):
        self.src = src
        self.auto_refresh = auto_refresh
        self._ready: set[str] = set()
        self.state = state
        self.trailing = trailing
        self.allow_change_streams = change_streams
        self.progress = Progress(progress)
        self._streams: dict[str, object] = {}
        self._indexed = False
        self._memo = Memo(state[BUCKETS], MEMO_ENTRIES, STREAM_AWAIT_MS)
        self._oldest: datetime | None = None  # as kept in rollup_meta, once read or written
        self.hash = schema_hash(src)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    # -- what was read, kept until it changes ---------------------------------------------

    def remembered(self, key: tuple, read: Callable[[], T], under: str) -> T:
        """``read()``, or what it gave before, while nothing under it changed.

        A page asks for a window, the window before it, its series and its
        splits: each needs the same stored buckets and the same partial edges
        of raw documents, and the next view needs them again.  ``under`` is the
        bucket document (``bucket_id``) the value was read from or depends on:
        the value is kept until that bucket is written, by this process or
        another (:class:`~metrics.rollups.memo.Memo`).
        """
        return self._memo.get(key, read, under)

    def forget(self) -> None:
        self._memo.forget()

    # -- storage -------------------------------------------------------------------

    @property
    def buckets(self):
        return self.state[BUCKETS]

    def ensure_indexes(self) -> None:
        if self._indexed:
            return
        self.buckets.create_index([("s", ASCENDING), ("l", ASCENDING), ("t", ASCENDING)])
        self.state[INVALID].create_index([("c", ASCENDING), ("d", ASCENDING)], unique=True)
        self.state[PAIRS].create_index([("n", ASCENDING)])
        self._indexed = True

    def serves(self, collections: Iterable[str] | None) -> bool:
        """Whether figures over ``collections`` can be read from here (refreshing first in auto mode)."""
        if self.auto_refresh:
            self.refresh()
        return collections is not None and all(c in self._ready for c in collections)

    def meta(self, collection: str) -> dict | None:
        return self.state[META].find_one({"_id": collection})

    def ready(self, collection: str) -> bool:
        return self._current(self.meta(collection))

    def _current(self, meta: dict | None) -> bool:
        """Built, in this format, for this schema mapping."""
        return bool(meta and meta.get("built_at") and meta.get("version") == FORMAT_VERSION
                    and meta.get("schema") == self.hash)

    def _replace(self, docs: list[dict]) -> None:
        """Write bucket documents unless a later read already wrote them (``v``, when the read began)."""
        self._memo.forget(d["_id"] for d in docs)
        ops = [ReplaceOne({"_id": d["_id"], "v": {"$lte": d["v"]}}, d, upsert=True) for d in docs]
        for i in range(0, len(ops), WRITE_BATCH):
            try:
                self.buckets.bulk_write(ops[i:i + WRITE_BATCH], ordered=False)
            except BulkWriteError as exc:
                # A duplicate key here means a later read already wrote that bucket: keep it.
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise

    def _insert(self, docs: list[dict]) -> None:
        """A build's buckets, written in batches into a series just emptied."""
        self._memo.forget(d["_id"] for d in docs)
        for i in range(0, len(docs), WRITE_BATCH):
            try:
                self.buckets.insert_many(docs[i:i + WRITE_BATCH], ordered=False)
            except BulkWriteError as exc:
                # Another process built the same buckets at the same time: theirs are as good.
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise

    def hours_stored(self, series: str, start: datetime, end: datetime) -> dict[datetime, list]:
        rows = self.buckets.find({"s": series, "l": HOUR, "t": {"$gte": start, "$lt": end}})
        return {bk.utc(r["t"]): _quarters_from(r) for r in rows}

    def read_keyed(self, series: str, keys: list[tuple[str, datetime]]) -> dict[tuple[str, datetime], Bucket]:
        """The stored buckets at ``keys`` (level, start): the documents not remembered read in one
        query per contiguous run.  A bucket that was never written held no document."""
        if not keys:
            return {}
        hours = sorted({bk.floor(t, HOUR) for level, t in keys if level != DAY})
        days = sorted({t for level, t in keys if level == DAY})
        docs = self._stored(series, [(HOUR, h) for h in hours] + [(DAY, d) for d in days])
        # A day document written before its day ended (or never) may miss that day's last changes:
        # sum its hours instead, and store the sum, which is final now that the day is over.
        day_docs = {d: docs[(DAY, d)]["b"] for d in days
                    if docs[(DAY, d)] is not None and docs[(DAY, d)]["v"] >= _ns(d + LEVELS[DAY])}
        open_days = [d for d in days if d not in day_docs]
        if open_days:
            day_docs.update(self._close_days(series, open_days))
        out = {}
        for level, t in keys:
            if level == DAY:
                b = day_docs.get(t)
            else:
                hour = bk.floor(t, HOUR)
                quarters = (docs[(HOUR, hour)] or {}).get("q")
                if quarters is None:
                    b = None
                elif level == HOUR:
                    b = self.remembered(("hour", series, hour), lambda quarters=quarters: bk.merge_all(
                        q for q in quarters if q is not None), under=bucket_id(series, HOUR, hour))
                else:
                    b = quarters[_quarter(t)]
            if b is not None:
                out[(level, t)] = b
        return out

    def _stored(self, series: str, wanted: list[tuple[str, datetime]]) -> dict[tuple[str, datetime], dict | None]:
        """The bucket documents at ``wanted`` (level, start), decoded (``None``: never written)."""
        def read(missing: list[tuple]) -> dict[tuple, dict | None]:
            found = dict.fromkeys(missing)
            for level in (HOUR, DAY):
                # One (s, l, t) index range per run: SecantusDB scans the collection for an $or of
                # them, or for a range on _id.
                starts = sorted(t for _, _, lv, t in missing if lv == level)
                for a, b in _runs(starts, LEVELS[level]):
                    try:
                        rows = _decoded(self.buckets.find({"s": series, "l": level, "t": {"$gte": a, "$lt": b}}))
                    except PyMongoError as exc:
                        raise unavailable(exc) from exc
                    for row in rows:
                        if ("doc", series, level, row["t"]) in found:
                            found[("doc", series, level, row["t"])] = row
            return found

        docs = self._memo.many({("doc", series, level, t): bucket_id(series, level, t) for level, t in wanted}, read)
        return {(level, t): docs[("doc", series, level, t)] for level, t in wanted}

    def _close_days(self, series: str, days: list[datetime]) -> dict[datetime, Bucket]:
        version = time.time_ns()
        sums: dict[datetime, Bucket] = {d: Bucket() for d in days}
        for a, b in _runs(sorted(days), LEVELS[DAY]):
            for hour, quarters in self.hours_stored(series, a, b).items():
                sums[bk.floor(hour, DAY)].merge(bk.merge_all(q for q in quarters if q is not None))
        over = [d for d in days if _ns(d + LEVELS[DAY]) <= version]
        self._replace([_day_doc(series, d, sums[d], version) for d in over])
        return sums

    def _write_hours(self, series: str, hours: Iterable[datetime], found: dict[datetime, Bucket], version: int,
                     insert: bool = False) -> None:
        by_hour = _by_hour(found)
        docs = [_hour_doc(series, h, by_hour.get(h, [None] * QUARTERS), version) for h in sorted(set(hours))]
        written = [d["t"] for d in docs if any(q is not None for q in d["q"])]
        if written:
            if self._oldest is None:
                self.oldest()  # what is kept, before a recent write could stand for it
            self._move_oldest(bk.floor(min(written), DAY))
        self._insert(docs) if insert else self._replace(docs)

    def _roll_up_days(self, series: str, hours: Iterable[datetime], version: int) -> None:
        """Recompute the days holding ``hours`` from the hours stored under them.

        Today's (UTC) day document is left until the day is over: a window only
        reads a day document for a day wholly inside it, so before its end it is
        never read, and every change of the day would otherwise re-read its hours.
        The first read after the day's end writes it (:meth:`read_keyed`).
        """
        docs = []
        today = bk.floor(datetime.now(timezone.utc), DAY)
        days = {bk.floor(h, DAY) for h in hours}
        days.discard(today)
        for day in sorted(days):
            stored = self.hours_stored(series, day, day + LEVELS[DAY])
            merged = bk.merge_all(q for quarters in stored.values() for q in quarters if q is not None)
            docs.append(_day_doc(series, day, merged, version))
        self._replace(docs)

    def recompute(self, series: Series, starts: Iterable[datetime]) -> int:
        """Re-aggregate the hours holding the fine buckets at ``starts`` from the raw documents, then their days.

        Returns how many hours were re-read.
        """
        hours = sorted({bk.floor(t, HOUR) for t in starts})
        if not hours:
            return 0
        version = time.time_ns()
        for run_start, run_end in _runs(hours, LEVELS[HOUR]):
            found = fold_range(self.src, series, run_start, run_end)
            self._write_hours(series.name, [h for h in hours if run_start <= h < run_end], found, version)
        self._roll_up_days(series.name, hours, version)
        return len(hours)

    # -- build ---------------------------------------------------------------------

    def build(self, collections: Iterable[str] = COLLECTIONS) -> dict:
        """Build the rollups of ``collections`` from scratch; returns documents folded per collection."""
        self.ensure_indexes()
        done = {}
        for key in collections:
            if not self._lock(key):
                log.info("rollups: %s is being built by another process", key)
                continue
            try:
                done[key] = self._build_one(key)
            finally:
                self._unlock(key)
            # A build writes many documents into the oplog the streams resume from: bring the
            # collections built before this one up to date, so their resume points move on too.
            for earlier in done:
                meta = self.state[META].find_one({"_id": earlier})
                if earlier != key and meta and meta.get("mode") == "change_stream":
                    self._follow(earlier, meta)
        return done

    def _lock(self, key: str) -> bool:
        """Claim the build of ``key`` (claims expire, so a process that died cannot hold one for ever)."""
        now = datetime.now(timezone.utc)
        takeable: list[dict] = [{"until": {"$lt": now}}, {"holder": self.holder}]
        claim = self.claim(key)
        if claim and _died_here(claim.get("holder")):
            takeable.append({"holder": claim["holder"]})  # its process, on this machine, is gone
        try:
            self.state[META].find_one_and_update(
                {"_id": f"build:{key}", "$or": takeable},
                {"$set": {"holder": self.holder, "until": now + BUILD_CLAIM}}, upsert=True)
            return True
        except DuplicateKeyError:
            return False

    def claim(self, key: str) -> dict | None:
        """Who is building ``key`` and until when their claim holds (``None`` when nobody is)."""
        return self.state[META].find_one({"_id": f"build:{key}"}, {"_id": 0, "holder": 1, "until": 1})

    def _unlock(self, key: str) -> None:
        self.state[META].delete_one({"_id": f"build:{key}", "holder": self.holder})

    def _build_one(self, key: str) -> int:
        """Fold the whole collection into fresh buckets; returns how many documents it holds."""
        stream_token, mode = self._open_for_build(key)
        version = time.time_ns()
        coll = self.src.coll(key)
        total = coll.estimated_document_count()
        invalid: list = []  # documents with a date in the collection's own time field, but not valid
        for series in series_of(key):
            found: dict[datetime, Bucket] = {}
            seen = 0
            times = None
            if series.with_payment:
                self.progress.note(f"{series.name}: reading when each payment completed")
                times = payment_times(self.src)
            self.progress.note(f"{series.name}: finding the span of {series.field}")
            primary = series.field == _window_field(key)
            for batch in read_chunks(self.src, series, invalid if primary else None):
                if series.with_payment:
                    with_payment_times(self.src, batch, times)
                for d in batch:
                    when = d.get(series.field)
                    if isinstance(when, datetime):
                        series.fold(found.setdefault(bk.floor(when), Bucket()), d)
                seen += len(batch)
                self.progress(series.name, seen, total)
            with pymongo.timeout(BUILD_STEP_TIMEOUT_S):  # a year of buckets goes at once
                self.buckets.delete_many({"s": series.name})
            self._memo.forget()
            self._write_hours(series.name, {bk.floor(t, HOUR) for t in found}, found, version, insert=True)
            days: dict[datetime, Bucket] = {}
            for t, b in found.items():
                days.setdefault(bk.floor(t, DAY), Bucket()).merge(b)
            self._insert([_day_doc(series.name, d, b, version) for d, b in sorted(days.items())])
        self._rebuild_invalid(key, invalid)
        if key == "enrollments":
            self._rebuild_pairs()
        now = datetime.now(timezone.utc)
        self.state[META].replace_one({"_id": key}, {
            "_id": key, "version": FORMAT_VERSION, "schema": self.hash, "mode": mode, "token": stream_token,
            "built_at": now, "refreshed_at": now, "polled_through": now, "documents": total,
        }, upsert=True)
        self._ready.add(key)
        log.info("rollups: built %s (%d documents, %s)", key, total, mode)
        self.progress(f"{key} built", total, None, final=True)
        return total

    def _open_for_build(self, key: str) -> tuple[dict | None, str]:
        """A change stream opened now (its token is where the refresh will resume), or poll mode."""
        self._close(key)
        if not self.allow_change_streams:
            return None, "poll"
        try:
            stream = self.src.coll(key).watch(full_document="updateLookup", max_await_time_ms=STREAM_AWAIT_MS)
        except OperationFailure as exc:
            if exc.code in NO_CHANGE_STREAMS:
                log.warning("rollups: change streams unavailable on %s (%s); re-aggregating the trailing %s "
                            "every cycle instead", key, describe_error(exc), self.trailing)
                return None, "poll"
            raise unavailable(exc) from exc
        self._streams[key] = stream
        return stream.resume_token, "change_stream"

    def _close(self, key: str) -> None:
        stream = self._streams.pop(key, None)
        if stream is not None:
            try:
                stream.close()
            except PyMongoError:
                pass

    def _rebuild_invalid(self, key: str, dated: list) -> None:
        """The ids of the collection's invalid documents, at build time only: ``dated`` (found by the
        build's read of the collection's time field) and those without one date there (one query:
        no date, or an array, which a range matches when it holds a date)."""
        field = getattr(self.src.schema, key)[_window_field(key)]
        self.progress.note(f"{key}: looking for documents without a date in {_window_field(key)}")
        try:
            with pymongo.timeout(BUILD_STEP_TIMEOUT_S):
                undated = [d["_id"] for d in self.src.coll(key).find(
                    {"$or": [{field: {"$not": ANY_DATE}}, {field: {"$type": "array"}}]}, {"_id": 1})]
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        with pymongo.timeout(BUILD_STEP_TIMEOUT_S):
            self.state[INVALID].delete_many({"c": key})
        ids = list(dict.fromkeys(dated + undated))  # an array of dates in two windows is read twice
        if ids:
            self._insert_plain(INVALID, [{"c": key, "d": i} for i in ids])

    def _counting_enrollments(self, query: dict) -> list[dict]:
        """Valid active or pending enrollments matching ``query``: id, pair and ``createdAt``."""
        e = self.src.schema.enrollments
        fields = ("status", "createdAt", "customerId", "serviceId")
        try:
            rows = self.src.coll("enrollments").find(
                {**query, e["status"]: {"$in": list(DUPLICATE_STATUSES)}}, {e[f]: 1 for f in fields},
                batch_size=BUILD_BATCH, max_time_ms=self.src.max_time_ms)
            out = []
            for raw in rows:
                doc = {f: bk.get_path(raw, e[f]) for f in fields}
                if is_valid("enrollments", doc) and doc["status"] in DUPLICATE_STATUSES:
                    out.append({"_id": raw["_id"], **doc})
            return out
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    def _rebuild_pairs(self) -> None:
        pairs: dict[str, list] = {}
        created = self.src.schema.enrollments["createdAt"]
        counting = []
        for a, b in time_chunks(self.src, "enrollments", created):
            with pymongo.timeout(BUILD_STEP_TIMEOUT_S):
                counting += self._counting_enrollments({created: {"$gte": a, "$lt": b}})
        self.progress.note(f"enrollments: writing {len(counting):,} (customer, service) pair members")
        for d in counting:
            pairs.setdefault(pair_key(d.get("customerId"), d.get("serviceId")), []).append(
                {"id": d["_id"], "t": d["createdAt"]})
        # Dropped, not emptied: deleting one document per enrollment outlives any query timeout.
        self.state[PAIRS].drop()
        self.state[MEMBERS].drop()
        self.state[PAIRS].create_index([("n", ASCENDING)])
        if pairs:
            self._insert_plain(PAIRS, [{"_id": k, "m": m, "n": len(m)} for k, m in pairs.items()])
            self._insert_plain(MEMBERS, [{"_id": x["id"], "p": k} for k, m in pairs.items() for x in m])

    def _insert_plain(self, name: str, docs: list[dict]) -> None:
        for i in range(0, len(docs), WRITE_BATCH):
            self.state[name].insert_many(docs[i:i + WRITE_BATCH], ordered=False)

    # -- refresh -------------------------------------------------------------------

    def refresh(self, trust_s: float = 0.0) -> dict:
        """Bring every collection's rollups up to date; returns what was done per collection.

        ``trust_s > 0``: a collection another process brought up to date less than
        ``trust_s`` seconds ago is taken as it is (the dashboard trusts the worker,
        which follows every 5 s), so open dashboards add no work per change.
        """
        self._memo.follow()
        self.ensure_indexes()
        out = {}
        now = datetime.now(timezone.utc)
        for key in COLLECTIONS:
            meta = self.meta(key)
            if (trust_s and key in self._ready and self._current(meta) and meta.get("refreshed_at")
                    and now - bk.utc(meta["refreshed_at"]) < timedelta(seconds=trust_s)):
                self._close(key)  # when this process follows again, it resumes from the shared token
                out[key] = "trusted"
                continue
            if not self._current(meta):
                why = "missing" if not meta else "stale format or schema"
                log.info("rollups: building %s (%s)", key, why)
                built = self.build([key])
                out[key] = "built" if key in built else "being built elsewhere"
                if key not in built:
                    continue
            elif meta["mode"] == "change_stream":
                out[key] = self._follow(key, meta)
            else:
                out[key] = self._poll(key, meta)
            self._ready.add(key)
        return out

    def _follow(self, key: str, meta: dict) -> str:
        stream = self._streams.get(key)
        try:
            if stream is None:
                stream = self.src.coll(key).watch(full_document="updateLookup", resume_after=meta["token"],
                                                  max_await_time_ms=STREAM_AWAIT_MS)
                self._streams[key] = stream
            changes = []
            while True:
                change = stream.try_next()
                if change is None:
                    break
                if change["operationType"] in INVALIDATING:
                    log.warning("rollups: %s was %s; rebuilding", key, change["operationType"])
                    self.build([key])
                    return "rebuilt"
                changes.append(change)
            token = stream.resume_token
        except OperationFailure as exc:
            self._close(key)
            if exc.code in LOST_TOKEN or exc.code in NO_CHANGE_STREAMS:
                log.warning("rollups: the change stream of %s cannot resume (%s); rebuilding",
                            key, describe_error(exc))
                self.build([key])
                return "rebuilt"
            raise unavailable(exc) from exc
        except PyMongoError as exc:
            self._close(key)
            raise unavailable(exc) from exc
        if changes:
            self.apply(key, changes)
        now = datetime.now(timezone.utc)
        self.state[META].update_one({"_id": key}, {"$set": {"token": token, "refreshed_at": now}})
        return f"{len(changes)} changes"

    def apply(self, key: str, changes: list[dict]) -> None:
        """Recompute what a batch of change events touches: buckets, the invalid set, duplicate pairs."""
        dirty: dict[str, set[datetime]] = {s.name: set() for s in series_of(key)}
        upserted, deleted = {}, []
        for change in changes:
            doc_id = change.get("documentKey", {}).get("_id")
            doc = change.get("fullDocument")
            if change["operationType"] == "delete" or doc is None:
                deleted.append(doc_id)
                # No pre-image says where it was: look where a deleted document usually is, the time of its
                # id (old webhook events expiring) and the trailing window (a draft removed soon after it
                # was written); verification repairs the rest.
                now = datetime.now(timezone.utc)
                recent = _range(bk.floor(now - self.trailing), bk.floor(now) + LEVELS[FINE])
                for s in series_of(key):
                    dirty[s.name].update(recent)
                    if isinstance(doc_id, ObjectId):
                        dirty[s.name].add(bk.floor(doc_id.generation_time))
                continue
            upserted[doc_id] = doc
            self._mark(key, doc, dirty)
        if key == "payments" and upserted:
            # An enrollment's activation time is measured from its payment's completedAt.
            self._mark_enrollments_of(list(upserted), dirty)
        for name, starts in dirty.items():
            self.recompute(SERIES[name], starts)
        self._update_invalid(key, list(upserted), deleted)
        if key == "enrollments":
            self._update_pairs(list(upserted) + deleted)

    def _mark(self, key: str, doc: dict, dirty: dict[str, set[datetime]]) -> None:
        coll = getattr(self.src.schema, key)
        for s in series_of(key):
            when = bk.get_path(doc, coll[s.field])
            if isinstance(when, datetime):
                dirty.setdefault(s.name, set()).add(bk.floor(when))

    def _mark_enrollments_of(self, payment_ids: list, dirty: dict[str, set[datetime]]) -> None:
        e = self.src.schema.enrollments
        rows = self.src.find("enrollments", {e["paymentId"]: {"$in": payment_ids}},
                             projection={"activatedAt": e.ref("activatedAt")})
        starts = {bk.floor(r["activatedAt"]) for r in rows if isinstance(r.get("activatedAt"), datetime)}
        if starts:
            self.recompute(SERIES["activations"], starts)

    def _update_invalid(self, key: str, ids: list, deleted: list) -> None:
        coll = self.state[INVALID]
        if deleted:
            coll.delete_many({"c": key, "d": {"$in": deleted}})
        if not ids:
            return
        rows = self.src.coll(key).find({"_id": {"$in": ids}, **valid_filter(key, self.src.schema)}, {"_id": 1})
        try:
            valid = {d["_id"] for d in rows}
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        invalid = [i for i in ids if i not in valid]
        if valid:
            coll.delete_many({"c": key, "d": {"$in": list(valid)}})
        ops = [UpdateOne({"c": key, "d": i}, {"$setOnInsert": {"c": key, "d": i}}, upsert=True) for i in invalid]
        if ops:
            coll.bulk_write(ops, ordered=False)

    def _update_pairs(self, ids: list) -> None:
        """Move each changed enrollment out of its old pair and into its new one, if it still counts."""
        current = {d["_id"]: d for d in self._counting_enrollments({"_id": {"$in": ids}})}
        pairs, members = self.state[PAIRS], self.state[MEMBERS]
        for i in ids:
            old = members.find_one({"_id": i})
            if old:
                pairs.update_one({"_id": old["p"]}, {"$pull": {"m": {"id": i}}, "$inc": {"n": -1}})
                members.delete_one({"_id": i})
            d = current.get(i)
            if d is not None:
                k = pair_key(d.get("customerId"), d.get("serviceId"))
                pairs.update_one({"_id": k}, {"$push": {"m": {"id": i, "t": d["createdAt"]}}, "$inc": {"n": 1}},
                                 upsert=True)
                members.replace_one({"_id": i}, {"_id": i, "p": k}, upsert=True)

    def _poll(self, key: str, meta: dict) -> str:
        """No change streams: re-aggregate the trailing window, and what was refunded or activated since."""
        now = datetime.now(timezone.utc)
        since = min(bk.utc(meta.get("polled_through") or now), now) - timedelta(minutes=2)
        start = bk.floor(min(now - self.trailing, since))
        end = bk.floor(now) + LEVELS[FINE]
        coll = getattr(self.src.schema, key)
        touched = 0
        for s in series_of(key):
            starts = set(_range(start, end))
            for late in LATE_FIELDS[key]:
                if late == s.field:
                    continue
                rows = self.src.find(key, {coll[late]: {"$gte": since, "$lt": now}},
                                     projection={"t": coll.ref(s.field)})
                starts |= {bk.floor(r["t"]) for r in rows if isinstance(r.get("t"), datetime)}
            touched += self.recompute(s, starts)
        self.state[META].update_one({"_id": key}, {"$set": {"polled_through": now, "refreshed_at": now}})
        return f"polled {touched} buckets"

    # -- verification --------------------------------------------------------------

    def verify(self, start: datetime, end: datetime, *, repair: bool = True,
               collections: Iterable[str] = COLLECTIONS) -> dict:
        """Compare the stored hours and days in ``[start, end)`` with the raw documents; repair any that differ.

        Returns ``{series: {"checked": buckets, "differ": [starts of differing 15-minute buckets or days]}}``.
        """
        self.ensure_indexes()
        start, end = bk.floor(start, HOUR), bk.floor(end, HOUR)
        report: dict[str, dict] = {}
        for key in collections:
            for s in series_of(key):
                checked, differ = 0, []
                t = start
                while t < end:
                    chunk_end = min(end, bk.floor(t, DAY) + LEVELS[DAY])
                    version = time.time_ns()
                    raw = fold_range(self.src, s, t, chunk_end)
                    want, have = _by_hour(raw), self.hours_stored(s.name, t, chunk_end)
                    bad_hours = []
                    for hour in _range(t, chunk_end, LEVELS[HOUR]):
                        w = want.get(hour, [None] * QUARTERS)
                        g = have.get(hour, [None] * QUARTERS)
                        for i in range(QUARTERS):
                            checked += 1
                            if _canon(w[i]) != _canon(g[i]):
                                differ.append(hour + i * LEVELS[FINE])
                                if hour not in bad_hours:
                                    bad_hours.append(hour)
                    if repair and bad_hours:
                        self._write_hours(s.name, bad_hours, raw, version)
                    # The day above these hours must be their sum.
                    day = bk.floor(t, DAY)
                    if t == day and chunk_end == day + LEVELS[DAY]:
                        stored_day = self.read_keyed(s.name, [(DAY, day)]).get((DAY, day))
                        expected = bk.merge_all(b for b in raw.values())
                        checked += 1
                        if _canon(stored_day) != _canon(expected):
                            differ.append(day)
                            if repair:
                                self._replace([_day_doc(s.name, day, expected, version)])
                    elif repair and bad_hours:
                        self._roll_up_days(s.name, bad_hours, version)
                    self.progress(f"verify {s.name}", checked, None)
                    t = chunk_end
                if differ:
                    log.warning("rollups: %d %s bucket(s) differed from the raw documents%s: %s", len(differ),
                                s.name, " and were repaired" if repair else "",
                                ", ".join(d.strftime("%Y-%m-%d %H:%M") for d in differ[:5]) + (" …" if len(differ) > 5 else ""))
                report[s.name] = {"checked": checked, "differ": differ}
        return report

    def verify_step(self, now: datetime | None = None, step: timedelta = VERIFY_STEP) -> dict:
        """Verify the next ``step`` of history, walking back from now and starting over at the oldest.

        The worker calls this every cycle, so each cycle's cost is one step,
        whatever the history, and every bucket is checked in turn.
        """
        now = bk.floor(now or datetime.now(timezone.utc))
        meta = self.state[META].find_one({"_id": "verify"}) or {}
        cursor = bk.utc(meta["cursor"]) if meta.get("cursor") else now
        oldest = self.oldest()
        if oldest is None or cursor <= oldest:
            cursor = now
        start = max(cursor - step, oldest or cursor - step)
        report = self.verify(start, cursor)
        self.state[META].replace_one({"_id": "verify"}, {"_id": "verify", "cursor": start,
                                                         "verified_at": datetime.now(timezone.utc)}, upsert=True)
        return report

    def oldest(self) -> datetime | None:
        """The first day any series has a bucket for, where verification starts over.

        Kept in ``rollup_meta`` and moved back by any write older than it, since
        no index serves "the oldest day of every series" (a collection scan of
        the buckets, 14 s at a year on the embedded server); read once from each
        series' day buckets when rollups written before it was kept have none.
        """
        row = self.state[META].find_one({"_id": OLDEST})
        if row is not None:
            self._oldest = bk.utc(row["t"])
            return self._oldest
        firsts = [bk.utc(r["t"]) for name in SERIES
                  for r in self.buckets.find({"s": name, "l": DAY}, {"t": 1}).sort("t", ASCENDING).limit(1)]
        if not firsts:
            return None
        self._move_oldest(min(firsts))
        return self._oldest

    def _move_oldest(self, day: datetime) -> None:
        if self._oldest is None or day < self._oldest:
            self.state[META].update_one({"_id": OLDEST}, {"$min": {"t": day}}, upsert=True)
            self._oldest = day

    # -- status --------------------------------------------------------------------

    def status(self, now: datetime | None = None) -> dict:
        now = now or datetime.now(timezone.utc)
        out = {}
        for key in COLLECTIONS:
            meta = self.meta(key) or {}
            refreshed = meta.get("refreshed_at")
            out[key] = {
                "mode": meta.get("mode"),
                "built_at": meta.get("built_at"),
                "refreshed_at": refreshed,
                "lag_s": None if refreshed is None else round((now - bk.utc(refreshed)).total_seconds(), 1),
                "current": self.ready(key),
                "buckets": self.buckets.count_documents({"s": {"$in": [s.name for s in series_of(key)]}}),
            }
        verify = self.state[META].find_one({"_id": "verify"}) or {}
        out["verification"] = {"verified_at": verify.get("verified_at"), "cursor": verify.get("cursor")}
        return out

    # -- incremental figures ---------------------------------------------------------

    def invalid_count(self, key: str) -> int:
        return self.state[INVALID].count_documents({"c": key})

    def duplicate_pairs(self, at: datetime, members: bool = False) -> list[dict]:
        """(customer, service) pairs with more than one counting enrollment created before ``at``,
        with those enrollments (``{"id", "t"}``) as ``members`` when asked."""
        out = []
        for row in self.state[PAIRS].find({"n": {"$gte": 2}}):
            before = [m for m in row["m"] if bk.utc(m["t"]) < at]
            if len(before) > 1:
                customer, service = json.loads(row["_id"])
                pair = {"customerId": customer, "serviceId": service, "count": len(before),
                        "enrollment_ids": [str(m["id"]) for m in before]}
                out.append({**pair, "members": before} if members else pair)
        out.sort(key=lambda r: (-r["count"], str(r["customerId"])))
        return out

    def close(self) -> None:
        for key in list(self._streams):
            self._close(key)
        self._memo.close()


def _ns(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000


def _quarter(t: datetime) -> int:
    return (t - bk.floor(t, HOUR)) // LEVELS[FINE]


def _by_hour(found: dict[datetime, Bucket]) -> dict[datetime, list]:
    out: dict[datetime, list] = {}
    for t, b in found.items():
        out.setdefault(bk.floor(t, HOUR), [None] * QUARTERS)[_quarter(t)] = b
    return out


def _hour_doc(series: str, hour: datetime, quarters: list, version: int) -> dict:
    """An hour: its four 15-minute buckets (null when empty); the unit that is stored and recomputed."""
    return {"_id": bucket_id(series, HOUR, hour), "s": series, "l": HOUR, "t": hour, "v": version,
            "q": [None if b is None or b.empty() else b.to_bson() for b in quarters]}


def _day_doc(series: str, day: datetime, bucket: Bucket, version: int) -> dict:
    return {"_id": bucket_id(series, DAY, day), "s": series, "l": DAY, "t": day, "v": version, "b": bucket.to_bson()}


def _decoded(docs: Iterable[dict]) -> list[dict]:
    """Bucket documents as read, with their buckets decoded: an hour's quarters in ``q``, a day's bucket in ``b``.

    Decoded once per read: the buckets a page merges are shared by its windows, and never changed in place.
    """
    out = []
    for doc in docs:
        row = {"l": doc["l"], "t": bk.utc(doc["t"]), "v": doc.get("v", 0)}
        if doc["l"] == HOUR:
            row["q"] = _quarters_from(doc)
        else:
            row["b"] = Bucket.from_bson(doc.get("b") or {})
        out.append(row)
    return out


def _quarters_from(doc: dict) -> list:
    quarters = list(doc.get("q") or [])
    quarters += [None] * (QUARTERS - len(quarters))
    return [None if q is None else Bucket.from_bson(q) for q in quarters[:QUARTERS]]


def _died_here(holder: object) -> bool:
    """Whether a claim's holder (``host:pid:…``) was a process of this machine that no longer runs."""
    host, _, rest = str(holder or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _canon(b: Bucket | None) -> dict:
    return (b or Bucket()).comparable()


def _runs(starts: list[datetime], step: timedelta = LEVELS[FINE]) -> list[tuple[datetime, datetime]]:
    """Contiguous runs of buckets ``step`` long as ``[start, end)`` ranges."""
    runs: list[list[datetime]] = []
    for t in starts:
        if runs and t == runs[-1][1]:
            runs[-1][1] = t + step
        else:
            runs.append([t, t + step])
    return [(a, b) for a, b in runs]


def _range(start: datetime, end: datetime, step: timedelta = LEVELS[FINE]) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += step
    return out
