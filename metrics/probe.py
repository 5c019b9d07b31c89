"""The health probe: the platform's API as a client sees it (guide section 4,
"Infrastructure Monitoring": API latency, error rate, memory usage).

``probe_once`` asks ``PAYWATCH_HEALTH_URL`` once and times the answer;
``record_probe`` keeps the result in Paywatch's own database (collection
``probes``); ``probe_summary`` turns a window of results into the figures the
alert rules and the dashboard read, computed in the database.

Memory is only known when the health endpoint reports it, as JSON
``{"memory_pct": 71.5}`` or ``{"memory": {"used_pct": 71.5}}``; otherwise it
is ``None`` (never 0).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

import requests
from pymongo import ASCENDING
from pymongo.database import Database

from metrics.stats import PERCENTILE
from metrics.windows import Window, utc

COLLECTION = "probes"
# Probes are a rolling record; a month is enough for every window the rules use.
RETENTION = timedelta(days=30)
MAX_TIME_MS = 10_000


@dataclass(frozen=True)
class ProbeResult:
    at: datetime
    url: str
    ok: bool
    status: int | None
    latency_ms: float | None
    error: str | None = None
    memory_pct: float | None = None

    def to_doc(self) -> dict:
        return asdict(self)


def _memory_pct(response: requests.Response) -> float | None:
    """``memory_pct`` or ``memory.used_pct`` from a JSON body, when present and a number."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("memory_pct")
    if value is None and isinstance(body.get("memory"), dict):
        value = body["memory"].get("used_pct")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def probe_once(url: str, timeout_s: float = 5.0) -> ProbeResult:
    """One GET of the health URL: ok when it answers 2xx/3xx within ``timeout_s``."""
    at = datetime.now(timezone.utc)
    started = time.perf_counter()
    try:
        response = requests.get(url, timeout=timeout_s, headers={"User-Agent": "paywatch-probe"})
    except requests.Timeout:
        return ProbeResult(at, url, False, None, round(timeout_s * 1000, 1), f"timed out after {timeout_s:g} s")
    except requests.RequestException as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return ProbeResult(at, url, False, None, None, f"{type(exc).__name__}: {reason}")
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    ok = 200 <= response.status_code < 400
    return ProbeResult(
        at=at, url=url, ok=ok, status=response.status_code, latency_ms=latency_ms,
        error=None if ok else f"HTTP {response.status_code}",
        memory_pct=_memory_pct(response),
    )


def ensure_probe_indexes(state_db: Database) -> None:
    """Windows read by ``at``; old probes expire by themselves (TTL)."""
    state_db[COLLECTION].create_index([("at", ASCENDING)], name="at_ttl",
                                      expireAfterSeconds=int(RETENTION.total_seconds()))


def record_probe(state_db: Database, result: ProbeResult) -> None:
    state_db[COLLECTION].insert_one(result.to_doc())


def summary_pipeline(window: Window) -> list[dict]:
    """Count, latency avg/p95 (answered probes), error count and average memory over W."""
    answered = {"$ne": [{"$type": "$latency_ms"}, "null"]}
    return [
        {"$match": {"at": window.range()}},
        {"$sort": {"at": 1}},
        {"$group": {
            "_id": None,
            "samples": {"$sum": 1},
            "errors": {"$sum": {"$cond": ["$ok", 0, 1]}},
            "latency_avg": {"$avg": {"$cond": [answered, "$latency_ms", None]}},
            "latency_p95": {"$percentile": {"input": "$latency_ms", "p": [PERCENTILE], "method": "approximate"}},
            "memory_pct": {"$avg": "$memory_pct"},
            "last": {"$last": "$$ROOT"},
        }},
    ]


def _round(value) -> float | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else round(float(value), 1)


def probe_summary(state_db: Database, window: Window) -> dict:
    """``{"samples", "latency_ms": {"avg", "p95"}, "error_rate", "memory_pct", "last"}`` over W.

    ``error_rate`` is ``None`` with no samples; ``memory_pct`` is ``None`` when
    no probe in W reported it.
    """
    rows = list(state_db[COLLECTION].aggregate(summary_pipeline(window), maxTimeMS=MAX_TIME_MS))
    if not rows:
        return {"samples": 0, "latency_ms": {"avg": None, "p95": None}, "error_rate": None,
                "memory_pct": None, "last": None}
    row = rows[0]
    last = {k: v for k, v in row["last"].items() if k != "_id"}
    last["at"] = utc(last["at"])
    return {
        "samples": row["samples"],
        "latency_ms": {"avg": _round(row["latency_avg"]), "p95": _round(row["latency_p95"])},
        "error_rate": row["errors"] / row["samples"],
        "memory_pct": _round(row["memory_pct"]),
        "last": last,
    }
