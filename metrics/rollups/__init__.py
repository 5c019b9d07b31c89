"""Rollups: every figure from pre-aggregated 15-minute buckets, so its cost never grows with the history.

``metrics/rollups/buckets.py`` folds documents into buckets (pure),
``store.py`` builds them and keeps them fresh (change streams, or a trailing
window), ``figures.py`` answers the metric functions from them.
``docs/metrics.md`` ("Rollups") explains freshness and verification.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Callable

from metrics.db import Source, state_db
from metrics.settings import Settings


def rolled_up(raw: Callable) -> Callable:
    """Serve a metric function from the rollups when its Source carries them.

    The raw function stays reachable as ``fn.raw``: the verification path
    (``python -m metrics snapshot --raw``) and the tests use it.
    """
    name = f"{raw.__module__.rsplit('.', 1)[-1]}_{raw.__name__}"
    collections = _COLLECTIONS_OF.get(raw.__module__.rsplit('.', 1)[-1])

    @functools.wraps(raw)
    def serve(src: Source, *args, **kwargs):
        rollups = getattr(src, "rollups", None)
        if rollups is not None and rollups.serves(collections):
            from metrics.rollups import figures
            return getattr(figures, name)(src, *args, **kwargs)
        return raw(src.without_rollups() if rollups is not None else src, *args, **kwargs)

    serve.raw = raw
    return serve


_COLLECTIONS_OF = {"payments": ("payments",), "webhooks": ("webhook_events",), "enrollments": ("enrollments",),
                   "quality": ("payments", "enrollments", "webhook_events"),
                   "series": ("payments", "enrollments", "webhook_events")}


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
