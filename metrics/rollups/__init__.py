"""Rollups: every figure from pre-aggregated 15-minute buckets, so its cost never grows with the history.

``metrics/rollups/buckets.py`` folds documents into buckets (pure),
``store.py`` builds them and keeps them fresh (change streams, or a trailing
window), ``figures.py`` answers the metric functions from them.
``docs/metrics.md`` ("Rollups") explains freshness and verification.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import timedelta, timezone
from typing import Callable

from pymongo.errors import PyMongoError

from metrics.db import Source, client_for, platform_uri, source, state_db, unavailable
from metrics.settings import Settings


def rolled_up(raw: Callable | None = None, *, reads: tuple[str, ...] | None = None) -> Callable:
    """Serve a metric function from the rollups when its Source carries them.

    ``reads`` names the platform collections whose rollups it needs, when not
    its module's (``@rolled_up(reads=("enrollments",))``).  The raw function
    stays reachable as ``fn.raw``: the verification path (``python -m metrics
    snapshot --raw``) and the tests use it.
    """
    if raw is None:
        return functools.partial(rolled_up, reads=reads)
    name = f"{raw.__module__.rsplit('.', 1)[-1]}_{raw.__name__}"
    collections = reads or _COLLECTIONS_OF.get(raw.__module__.rsplit('.', 1)[-1])

    @functools.wraps(raw)
    def serve(src: Source, *args, **kwargs):
        rollups = getattr(src, "rollups", None)
        if rollups is not None and rollups.serves(collections):
            from metrics.rollups import figures
            try:
                return getattr(figures, name)(src, *args, **kwargs)
            except PyMongoError as exc:  # Paywatch's own database, where the buckets are
                raise unavailable(exc) from exc
        return raw(src.without_rollups() if rollups is not None else src, *args, **kwargs)

    serve.raw = raw
    return serve


_COLLECTIONS_OF = {"payments": ("payments",), "webhooks": ("webhook_events",), "enrollments": ("enrollments",),
                   "quality": ("payments", "enrollments", "webhook_events"),
                   "series": ("payments", "enrollments", "webhook_events"), "signals": ("payments",),
                   "review": ("payments", "webhook_events")}


def attach(src: Source, settings: Settings, *, refresh: bool = True, progress: bool = False,
           auto_refresh: bool = False) -> Source:
    """``src`` with rollups kept in ``PAYWATCH_DB``, built or brought up to date first unless ``refresh=False``."""
    from metrics.rollups.store import Rollups

    rollups = Rollups(src.without_rollups(), state_db(settings),
                      trailing=timedelta(minutes=settings.rollup_trailing_minutes),
                      change_streams=settings.rollup_change_streams, progress=progress, auto_refresh=auto_refresh)
    if refresh:
        rollups.refresh()
    return Source(db=src.db, schema=src.schema, max_time_ms=src.max_time_ms, rollups=rollups)


class _Live:
    def __init__(self, src: Source):
        self.src = src
        self.refreshed = float("-inf")
        self.lock = threading.Lock()


_live: dict[tuple, _Live] = {}
_live_lock = threading.Lock()


def live_source(settings: Settings, max_age_s: float = 0.0, trust_s: float = 0.0) -> Source:
    """The platform's Source with this process's rollups, brought up to date when older than ``max_age_s``.

    One :class:`~metrics.rollups.store.Rollups` per process and database, so
    its change streams stay open between refreshes (a refresh with nothing new
    is one ``getMore`` per collection), and every page, cycle and report of the
    process shares it.  A database that does not answer raises
    ``DataSourceUnavailable``.
    """
    src = source(settings)
    uri = platform_uri(settings)
    key = (id(client_for(uri, settings)), settings.source_db_name, settings.state_db,
           id(state_db(settings).client), settings.rollup_change_streams)
    with _live_lock:
        entry = _live.get(key)
        if entry is None:
            entry = _live[key] = _Live(attach(src, settings, refresh=False))
    with entry.lock:
        if time.monotonic() - entry.refreshed >= max_age_s:
            try:
                entry.src.rollups.refresh(trust_s)
            except PyMongoError as exc:
                raise unavailable(exc) from exc
            entry.refreshed = time.monotonic()
    return entry.src


def lag_seconds(settings: Settings) -> dict[str, float | None]:
    """Per platform collection: seconds since its rollups were last brought up to date (``None``: never built)."""
    from metrics.rollups.store import META
    from metrics.quality import COLLECTIONS

    now = time.time()
    metas = {m["_id"]: m for m in state_db(settings)[META].find({"_id": {"$in": list(COLLECTIONS)}})}
    out = {}
    for key in COLLECTIONS:
        refreshed = (metas.get(key) or {}).get("refreshed_at")
        if refreshed is None:
            out[key] = None
        else:
            refreshed = refreshed if refreshed.tzinfo else refreshed.replace(tzinfo=timezone.utc)
            out[key] = round(max(0.0, now - refreshed.timestamp()), 3)
    return out
