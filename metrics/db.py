"""Database handles: one MongoClient per process, created on first use.

Nothing connects at import time.  The platform's database is only ever read
(a read-only user is enough); Paywatch's own state lives in ``PAYWATCH_DB``,
on the same cluster unless ``PAYWATCH_STATE_URI`` names another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from metrics.embedded import EmbeddedMongo, EmbeddedServerError
from metrics.schema import Schema
from metrics.settings import Settings

_lock = threading.Lock()
_clients: dict[str, MongoClient] = {}
_embedded: EmbeddedMongo | None = None

APP_NAME = "paywatch"


class DataSourceUnavailable(RuntimeError):
    """The database could not be reached or did not answer in time."""


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

    def coll(self, key: str):
        return self.db[getattr(self.schema, key).name]

    def aggregate(self, key: str, pipeline: list[dict]) -> list[dict]:
        try:
            return list(self.coll(key).aggregate(pipeline, maxTimeMS=self.max_time_ms, allowDiskUse=True))
        except PyMongoError as exc:
            raise DataSourceUnavailable(_describe(exc)) from exc

    def count(self, key: str, query: dict) -> int:
        try:
            return self.coll(key).count_documents(query, maxTimeMS=self.max_time_ms)
        except PyMongoError as exc:
            raise DataSourceUnavailable(_describe(exc)) from exc

    def find(self, key: str, query: dict, *, sort: list | None = None, limit: int = 0, projection=None) -> list[dict]:
        try:
            cursor = self.coll(key).find(query, projection, sort=sort, limit=limit, max_time_ms=self.max_time_ms)
            return list(cursor)
        except PyMongoError as exc:
            raise DataSourceUnavailable(_describe(exc)) from exc

    def command(self, *args, **kwargs) -> dict:
        try:
            return self.db.command(*args, maxTimeMS=self.max_time_ms, **kwargs)
        except PyMongoError as exc:
            raise DataSourceUnavailable(_describe(exc)) from exc


def _describe(exc: PyMongoError) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def source(settings: Settings) -> Source:
    """The platform's database, read-only by convention of this code."""
    try:
        uri = platform_uri(settings)
    except DataSourceUnavailable:
        raise
    db = client_for(uri, settings)[settings.source_db_name]
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
