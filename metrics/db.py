"""Database handles: one MongoClient per process, created on first use.

Nothing connects at import time.  The platform's database is only ever read
(a read-only user is enough); Paywatch's own state lives in ``PAYWATCH_DB``,
on the same cluster unless ``PAYWATCH_STATE_URI`` names another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ExecutionTimeout, PyMongoError

from metrics.embedded import EmbeddedMongo, EmbeddedServerError
from metrics.redact import redact
from metrics.schema import Schema
from metrics.settings import Settings

_lock = threading.Lock()
_clients: dict[str, MongoClient] = {}
_embedded: EmbeddedMongo | None = None

APP_NAME = "paywatch"


class DataSourceUnavailable(RuntimeError):
    """The database could not be reached or did not answer in time."""


class DataSourceSlow(DataSourceUnavailable):
    """The database is up and answered, but a query ran past its time budget (``maxTimeMS``).

    Pages show "slow" with the last good values, never "unavailable".
    """


def unavailable(exc: PyMongoError) -> DataSourceUnavailable:
    """The error to raise for a driver error: slow when the server said the query took too long."""
    return (DataSourceSlow if isinstance(exc, ExecutionTimeout) else DataSourceUnavailable)(_describe(exc))


def platform_uri(settings: Settings) -> str:
    """The configured URI, or the embedded server's (found or started)."""
    global _embedded
    if settings.mongodb_uri is not None:
        return settings.mongodb_uri.get_secret_value()
    with _lock:
        if _embedded is None:
            _embedded = EmbeddedMongo(settings.home)
            try:
                _embedded.ensure()
            except EmbeddedServerError as exc:
                _embedded = None
                raise DataSourceUnavailable(f"embedded database: {exc}") from None
        return _embedded.uri


def client_for(uri: str, settings: Settings) -> MongoClient:
    """The process's client for this URI (pymongo pools connections inside it)."""
    with _lock:
        client = _clients.get(uri)
        if client is None:
            client = MongoClient(
                uri,
                appname=APP_NAME,
                tz_aware=True,
                serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
                connectTimeoutMS=settings.server_selection_timeout_ms,
                socketTimeoutMS=settings.query_timeout_ms + 5000,
                retryReads=True,
            )
            _clients[uri] = client
        return client


@dataclass(frozen=True)
class Source:
    """What every metric function needs: the database, the schema, a time budget."""

    db: Database
    schema: Schema
    max_time_ms: int
    # metrics.rollups.store.Rollups: the figures of payments/webhooks/enrollments/series come from
    # pre-aggregated buckets (docs/metrics.md, "Rollups"); None reads the raw documents.
    rollups: Any = None

    def without_rollups(self) -> "Source":
        return replace(self, rollups=None) if self.rollups is not None else self

    def coll(self, key: str):
        return self.db[getattr(self.schema, key).name]

    def aggregate(self, key: str, pipeline: list[dict]) -> list[dict]:
        pipeline = index_first(pipeline, key, self.schema)
        try:
            return list(self.coll(key).aggregate(pipeline, maxTimeMS=self.max_time_ms, allowDiskUse=True))
        except PyMongoError as exc:
            raise unavailable(exc) from exc

    def count(self, key: str, query: dict) -> int:
        rows = self.aggregate(key, [{"$match": query}, {"$count": "n"}])
        return rows[0]["n"] if rows else 0

    def find(self, key: str, query: dict, *, sort: list | None = None, limit: int = 0, projection=None) -> list[dict]:
        pipeline: list[dict] = [{"$match": query}]
        if sort:
            pipeline.append({"$sort": dict(sort)})
        if limit:
            pipeline.append({"$limit": limit})
        if projection:
            pipeline.append({"$project": projection})
        return self.aggregate(key, pipeline)

    def command(self, *args, **kwargs) -> dict:
        try:
            return self.db.command(*args, maxTimeMS=self.max_time_ms, **kwargs)
        except PyMongoError as exc:
            raise unavailable(exc) from exc


def _condition_kind(cond) -> int:
    """How well a condition narrows an index scan: 3 both bounds, 2 equality or $in, 1 one bound, 0 not at all."""
    if not isinstance(cond, dict):
        return 2
    ops = set(cond)
    lower, upper = ops & {"$gt", "$gte"}, ops & {"$lt", "$lte"}
    if lower and upper:
        return 3
    if ops <= {"$eq", "$in"}:
        return 2
    if lower or upper:
        return 1
    return 0


def index_first(pipeline: list[dict], key: str, schema: Schema) -> list[dict]:
    """Put the part of the first ``$match`` that an index of ``metrics/indexes.py`` serves in a
    ``$match`` of its own, ahead of the rest.

    MongoDB merges adjacent ``$match`` stages, so this changes nothing there;
    SecantusDB's planner only picks an index when a ``$match`` holds nothing
    but indexable conditions, and otherwise scans the whole collection, whose
    cost grows with history.
    """
    from metrics.indexes import INDEXES  # late: indexes imports schema only, but keep db light

    if not pipeline or set(pipeline[0]) != {"$match"}:
        return pipeline
    match = pipeline[0]["$match"]
    best: list[str] = []
    best_score = 0.0
    for spec in INDEXES:
        if spec.collection != key:
            continue
        prefix: list[str] = []
        score = 0.0
        for field_name, _direction in spec.real_keys(schema):
            kind = _condition_kind(match[field_name]) if field_name in match else 0
            if kind == 0:
                break
            prefix.append(field_name)
            score = max(score, kind) + 0.5 * (len(prefix) - 1)
            if kind != 2 or isinstance(match[field_name], dict) and "$in" in match[field_name]:
                break  # nothing after a range or an $in can narrow the scan further
        if score > best_score:
            best, best_score = prefix, score
    if not best or len(best) == len(match):
        return pipeline
    lead = {f: match[f] for f in best}
    rest = {f: v for f, v in match.items() if f not in lead}
    return [{"$match": lead}, {"$match": rest}, *pipeline[1:]]


def _describe(exc: PyMongoError) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # pymongo appends its whole topology description; the first part names the host and the cause.
    text = text.split(", Timeout:")[0]
    # An OperationFailure appends the server's whole reply as a dict, and timeouts their settings.
    text = text.split(", full error:")[0].split(" (configured timeouts:")[0]
    return f"{type(exc).__name__}: {redact(text)}"


def read_preference(name: str):
    from pymongo.read_preferences import read_pref_mode_from_name, make_read_preference
    return make_read_preference(read_pref_mode_from_name(name), None)


describe_error = _describe  # the public name, for the other metrics modules


def source(settings: Settings) -> Source:
    """The platform's database, read-only by convention of this code."""
    try:
        uri = platform_uri(settings)
    except DataSourceUnavailable:
        raise
    # The platform's reads may go to a secondary (docs/deploy.md); Paywatch's own state always uses the primary.
    db = client_for(uri, settings).get_database(settings.source_db_name,
                                                read_preference=read_preference(settings.read_preference))
    return Source(db=db, schema=settings.schema, max_time_ms=settings.query_timeout_ms)


def state_db(settings: Settings) -> Database:
    """Paywatch's own database (alerts, outbox, mirror, reports)."""
    uri = settings.state_uri.get_secret_value() if settings.state_uri else platform_uri(settings)
    return client_for(uri, settings)[settings.state_db]


def reset() -> None:
    """Close every client (tests, and processes that fork)."""
    global _embedded
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
        _embedded = None
