"""The worker's HTTP server on ``PAYWATCH_WORKER_PORT``: ``/healthz``, ``/readyz`` and ``/metrics``.

* ``/healthz`` (liveness): 200 while the scheduler runs and the last
  evaluation cycle finished within the heartbeat's lateness limit
  (``[alerts] heartbeat_late``, default three ``PAYWATCH_EVAL_INTERVAL``);
  503 otherwise, with the reason as JSON.  A cycle that hangs, or a scheduler
  that died, is what a restart cures.  Until the first cycle finishes it
  answers 200 ``"starting"``: that cycle may build the rollups from the whole
  history, and a restart would only begin it again.
* ``/readyz`` (readiness): 200 when the platform's database and Paywatch's
  own both answer a ping; 503 with the error otherwise.
* ``/metrics``: the Prometheus text format, written by ``prometheus-client``
  from :data:`GAUGES`: the snapshot's figures (``python -m metrics snapshot``)
  with currency, status and period labels; each rule's state and value; and
  the worker's own figures (cycle duration, outbox, lease, Stripe API calls).

Every figure is read from the databases when Prometheus scrapes (the
snapshot at most once per :data:`SNAPSHOT_TTL_S`), so a standby replica
serves the same numbers as the leader.  An unknown figure (no payment yet,
no Stripe mirror) has no sample at all: Prometheus has no null, and 0 would
be a lie.  ``docs/deploy.md`` lists every metric.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Iterable

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.schedulers.base import STATE_RUNNING
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from pymongo.errors import PyMongoError

from alerts import store
from alerts.state import FIRING
from metrics.db import DataSourceUnavailable, source, state_db
from metrics.settings import SettingsError
from notify import outbox as outbox_mod

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from alerts.worker import Worker

log = logging.getLogger(__name__)

# The job whose runs are the worker's "cycles" (alerts.jobs.JOBS).
CYCLE_JOB = "evaluate"
# Prometheus scrapes every 15 to 60 s; one snapshot serves the scrapes of this many seconds.
SNAPSHOT_TTL_S = 15.0
# The worker's rollup job refreshes every 5 s; a scrape refreshes them itself only when they are older.
ROLLUP_MAX_AGE_S = 5.0
PERIODS = ("today", "week", "month")

Samples = Iterable[tuple[tuple[str, ...], float]]


def _get(data: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _one(path: str, scale: float = 1.0) -> Callable[[dict], Samples]:
    """One unlabelled figure of the snapshot at ``path`` (absent when unknown)."""
    def read(snap: dict) -> Samples:
        value = _number(_get(snap, path))
        return [((), value * scale)] if value is not None else []
    return read


def _each(path: str, scale: float = 1.0, keys: Iterable[str] | None = None) -> Callable[[dict], Samples]:
    """A dict of figures at ``path`` (currency or status to value): one sample per key."""
    def read(snap: dict) -> Samples:
        found = _get(snap, path)
        if not isinstance(found, dict):
            return []
        wanted = found if keys is None else {k: found.get(k) for k in keys}
        return [((str(k),), v * scale) for k, v in ((k, _number(v)) for k, v in wanted.items()) if v is not None]
    return read


def _stats(path: str) -> Callable[[dict], Samples]:
    """``{"avg": ms, "p95": ms}`` at ``path`` as seconds, labelled ``stat``."""
    return _each(path, scale=0.001, keys=("avg", "p95"))


def _revenue(snap: dict) -> Samples:
    periods = {p: _get(snap, f"payments.revenue.{p}") for p in PERIODS}
    periods["24h"] = _get(snap, "payments.24h.revenue")
    return [((period, currency), float(amount)) for period, by_currency in periods.items()
            if isinstance(by_currency, dict)
            for currency, amount in by_currency.items() if _number(amount) is not None]


def _stripe(read: Callable[[dict], Samples]) -> Callable[[dict], Samples]:
    """A Stripe mirror figure: none at all while the mirror is not available."""
    return lambda snap: read(snap) if _get(snap, "stripe.available") else []


@dataclass(frozen=True)
class Gauge:
    """One metric: its name, help, label names and how to read its samples from the snapshot."""

    name: str
    help: str
    labels: tuple[str, ...]
    read: Callable[[dict], Samples]


# The snapshot's figures.  Amounts are in minor units (cents), as in the snapshot; durations in seconds.
GAUGES: list[Gauge] = [
    Gauge("paywatch_payments_revenue_minor_units",
          "Revenue of succeeded payments in minor units (cents): calendar periods in PAYWATCH_TIMEZONE, and the last 24 h",
          ("period", "currency"), _revenue),
    Gauge("paywatch_payments_avg_transaction_value_minor_units", "Average succeeded payment over the last 24 h, minor units",
          ("currency",), _each("payments.24h.avg_transaction_value")),
    Gauge("paywatch_payments_24h", "Payments created in the last 24 h, by status", ("status",),
          _each("payments.24h.by_status")),
    Gauge("paywatch_payments_success_ratio_24h", "Succeeded / (succeeded + failed) payments over the last 24 h (target > 0.98)",
          (), _one("payments.24h.success_rate")),
    Gauge("paywatch_payments_refunds_24h", "Payments refunded in the last 24 h", (), _one("payments.24h.refunds")),
    Gauge("paywatch_payments_refund_ratio_24h", "Refunds / succeeded payments over the last 24 h (target < 0.02)",
          (), _one("payments.24h.refund_rate")),
    Gauge("paywatch_payments_processing_seconds_24h", "completedAt - createdAt of succeeded payments over the last 24 h: avg and p95",
          ("stat",), _stats("payments.24h.processing_ms")),
    Gauge("paywatch_payments_stuck", "Payments pending or processing for longer than PAYWATCH_STUCK_MINUTES",
          (), _one("payments.stuck")),
    Gauge("paywatch_webhook_events_24h", "Webhook events in the last 24 h: received, processed, failed", ("status",),
          _each("webhooks.24h", keys=("received", "processed", "failed"))),
    Gauge("paywatch_webhook_failure_ratio_24h", "Webhook failure rate over the last 24 h (webhooks.24h.failure_rate in docs/metrics.md)",
          (), _one("webhooks.24h.failure_rate")),
    Gauge("paywatch_webhook_processing_seconds_24h", "processedAt - receivedAt of webhook events over the last 24 h: avg and p95",
          ("stat",), _stats("webhooks.24h.processing_ms")),
    Gauge("paywatch_webhook_delivery_lag_seconds_24h", "Stripe event creation to its receipt by the platform over the last 24 h: avg and p95",
          ("stat",), _stats("webhooks.24h.delivery_lag_ms")),
    Gauge("paywatch_enrollments_24h", "Enrollments in the last 24 h: created, converted, refunded", ("status",),
          _each("enrollments.24h", keys=("created", "converted", "refunded"))),
    Gauge("paywatch_enrollments_new_today", "Enrollments created today (PAYWATCH_TIMEZONE)", (),
          _one("enrollments.new_today")),
    Gauge("paywatch_enrollments_conversion_ratio_24h", "Enrollment conversion rate over the last 24 h (enrollments.24h.conversion_rate in docs/metrics.md)",
          (), _one("enrollments.24h.conversion_rate")),
    Gauge("paywatch_enrollments_pending_payments", "Enrollments waiting for their payment", (),
          _one("enrollments.pending_payments")),
    Gauge("paywatch_enrollments_duplicates", "Duplicate enrollments (target 0)", (), _one("enrollments.duplicates")),
    Gauge("paywatch_enrollments_activation_seconds_24h", "Payment to activation over the last 24 h: avg and p95 (target < 2 s)",
          ("stat",), _stats("enrollments.24h.activation_ms")),
    Gauge("paywatch_enrollments_email_seconds_24h", "Payment to confirmation email over the last 24 h: avg and p95 (target < 5 s)",
          ("stat",), _stats("enrollments.24h.email_ms")),
    Gauge("paywatch_invalid_documents", "Documents that break the data contract (docs/metrics.md), by collection",
          ("collection",), lambda snap: [((name,), float(v["invalid"])) for name, v in (snap.get("data_quality") or {}).items()
                                         if isinstance(v, dict) and _number(v.get("invalid")) is not None]),
    Gauge("paywatch_database_connections", "Current connections to the platform's database server", (),
          _one("system.connections.current")),
    Gauge("paywatch_stripe_mirror_available", "1 when the Stripe mirror has synced and its figures below are served",
          (), lambda snap: [((), 1.0 if _get(snap, "stripe.available") else 0.0)] if "stripe" in snap else []),
    Gauge("paywatch_stripe_payment_intents_24h", "PaymentIntents in the last 24 h as Stripe sees them (the mirror)",
          ("status",), _stripe(_each("stripe.24h.payments", keys=("succeeded", "failed")))),
    Gauge("paywatch_stripe_success_ratio_24h", "Stripe's success rate of PaymentIntents over the last 24 h",
          (), _stripe(_one("stripe.24h.payments.success_rate"))),
    Gauge("paywatch_stripe_disputes_open", "Disputes open at Stripe", (), _stripe(_one("stripe.disputes.open"))),
    Gauge("paywatch_stripe_webhook_backlog", "Stripe events not yet delivered to the platform's endpoint",
          (), _stripe(_one("stripe.webhooks.backlog"))),
    Gauge("paywatch_stripe_api_calls_24h", "Paywatch's own Stripe API calls in the last 24 h (retries included), by outcome",
          ("kind",), _stripe(_each("stripe.24h.api.by_kind"))),
    Gauge("paywatch_stripe_api_error_ratio_24h", "Network errors, 429s and 5xx over all of Paywatch's Stripe calls, last 24 h",
          (), _stripe(_one("stripe.24h.api.error_rate"))),
]

# Paywatch's own figures, read from its database (name, help, labels); samples in WorkerFigures.
OWN: list[tuple[str, str, tuple[str, ...]]] = [
    ("paywatch_alert_firing", "1 while the rule fires for the subject, else 0 (one series per stored alert)",
     ("rule", "subject", "severity")),
    ("paywatch_alert_value", "The rule's value at its last evaluation", ("rule", "subject")),
    ("paywatch_worker_cycle_duration_seconds", "How long the leader's last evaluation cycle took", ()),
    ("paywatch_worker_last_cycle_timestamp_seconds", "When the leader's last evaluation cycle ran (Unix time)", ()),
    ("paywatch_worker_scheduler_running", "1 while this replica's scheduler runs", ()),
    ("paywatch_worker_leader", "1 when this replica holds the lease (evaluates and sends)", ()),
    ("paywatch_lease_holder", "The replica holding the lease (value 1; the holder is the label)", ("holder",)),
    ("paywatch_lease_fence", "The lease's fencing token: it grows at each change of leader", ()),
    ("paywatch_outbox_depth", "Messages waiting to be sent (pending or being sent)", ()),
    ("paywatch_outbox_messages", "Outbox messages by status: pending, sending, sent (kept 30 days), dead (gave up)",
     ("status",)),
    ("paywatch_database_up", "1 when the database answers a ping: the platform's or Paywatch's own", ("database",)),
    ("paywatch_rollup_lag_seconds", "Seconds since the rollups of a platform collection were last brought up to date "
     "(docs/metrics.md, Rollups)", ("collection",)),
]


class SnapshotCache:
    """The snapshot, computed at most once per ``ttl`` seconds however many scrapes come."""

    def __init__(self, build: Callable[[], dict], ttl: float = SNAPSHOT_TTL_S):
        self.build, self.ttl = build, ttl
        self._lock = threading.Lock()
        self._value: dict | None = None
        self._at = -float("inf")

    def get(self) -> dict:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                self._value, self._at = self.build(), time.monotonic()
            return self._value or {}


class Health:
    """What the endpoints report for one worker: its scheduler, its cycles, its databases."""

    def __init__(self, worker: "Worker", scheduler: "BaseScheduler | None" = None):
        self.worker = worker
        self.settings = worker.settings
        self.scheduler = scheduler
        self.started = time.monotonic()
        self.last_cycle: float | None = None  # monotonic end of the last evaluation cycle
        self.late_after = worker.config.late_after(worker.settings).total_seconds()
        self.snapshots = SnapshotCache(self._build_snapshot)
        if scheduler is not None:
            scheduler.add_listener(self._on_job, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    def _on_job(self, event) -> None:
        if event.job_id == CYCLE_JOB and event.code != EVENT_JOB_MISSED:
            self.last_cycle = time.monotonic()

    # -- /healthz ---------------------------------------------------------------------

    def liveness(self) -> tuple[int, dict]:
        if self.scheduler is None or self.scheduler.state != STATE_RUNNING:
            return 503, {"status": "unhealthy", "reason": "the scheduler is not running"}
        body = {"last_cycle_age_s": None, "late_after_s": self.late_after, "leader": self._is_leader()}
        if self.last_cycle is None:
            # The first cycle may build the rollups from the whole history: restarting it would only start over.
            return 200, {"status": "starting", **body,
                         "started_s_ago": round(time.monotonic() - self.started, 1)}
        age = time.monotonic() - self.last_cycle
        body["last_cycle_age_s"] = round(age, 1)
        if age > self.late_after:
            return 503, {"status": "unhealthy", **body,
                         "reason": f"no evaluation cycle finished for {age:.0f} s (the limit is {self.late_after:g} s)"}
        return 200, {"status": "ok", **body}

    def _is_leader(self) -> bool:
        return not self.worker.use_lease or self.worker.lease.held

    # -- /readyz ----------------------------------------------------------------------

    def readiness(self) -> tuple[int, dict]:
        checks = self.ping()
        ready = all(error is None for error in checks.values())
        return (200 if ready else 503), {"status": "ready" if ready else "not ready",
                                         "databases": {name: error or "ok" for name, error in checks.items()}}

    def ping(self) -> dict[str, str | None]:
        """``{"platform": None, "paywatch": "error text"}``: None where the database answered.

        Both at once, so a probe or a scrape waits one server-selection timeout, not two."""
        def one(connect) -> str | None:
            try:
                connect().command("ping")
                return None
            except (DataSourceUnavailable, PyMongoError) as exc:
                return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="health-ping") as pool:
            platform = pool.submit(one, lambda: source(self.settings))
            paywatch = pool.submit(one, lambda: state_db(self.settings))
            return {"platform": platform.result(), "paywatch": paywatch.result()}

    # -- /metrics ---------------------------------------------------------------------

    def _build_snapshot(self) -> dict:
        from metrics.rollups import live_source
        from metrics.snapshot import build_snapshot

        # Through this process's rollups, as the worker's cycle and the CLI's snapshot read them.
        return build_snapshot(live_source(self.settings, ROLLUP_MAX_AGE_S), self.settings)

    def own_samples(self, checks: dict[str, str | None]) -> dict[str, list[tuple[tuple[str, ...], float]]]:
        """Paywatch's own figures by metric name (``checks``: :meth:`ping`'s answer); what cannot be read is left out."""
        out: dict[str, list] = {name: [] for name, _, _ in OWN}
        running = self.scheduler is not None and self.scheduler.state == STATE_RUNNING
        out["paywatch_worker_scheduler_running"].append(((), 1.0 if running else 0.0))
        out["paywatch_worker_leader"].append(((), 1.0 if self._is_leader() else 0.0))
        for name, error in checks.items():
            out["paywatch_database_up"].append(((name,), 0.0 if error else 1.0))
        if checks["paywatch"] is not None:
            return out
        db = self.worker.state
        try:
            for doc in store.load_states(db).values():
                rule, subject = str(doc.get("rule_id", "")), str(doc.get("subject") or "")
                out["paywatch_alert_firing"].append(((rule, subject, str(doc.get("severity") or "")),
                                                     1.0 if doc.get("state") == FIRING else 0.0))
                if _number(doc.get("value")) is not None:
                    out["paywatch_alert_value"].append(((rule, subject), float(doc["value"])))
            beat = store.read_heartbeat(db) or {}
            if _number(beat.get("cycle_ms")) is not None:
                out["paywatch_worker_cycle_duration_seconds"].append(((), beat["cycle_ms"] / 1000))
            if isinstance(beat.get("evaluated_at"), datetime):
                at = beat["evaluated_at"]
                at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
                out["paywatch_worker_last_cycle_timestamp_seconds"].append(((), at.timestamp()))
            lease = self.worker.lease.status() or {}
            if lease.get("holder") and lease.get("expires_at") and _still_valid(lease["expires_at"]):
                out["paywatch_lease_holder"].append(((str(lease["holder"]),), 1.0))
            if _number(lease.get("fence")) is not None:
                out["paywatch_lease_fence"].append(((), float(lease["fence"])))
            counts = outbox_mod.counts(db)
            for status in (outbox_mod.PENDING, outbox_mod.SENDING, outbox_mod.SENT, outbox_mod.DEAD):
                out["paywatch_outbox_messages"].append(((status,), float(counts.get(status, 0))))
            out["paywatch_outbox_depth"].append(((), float(counts.get(outbox_mod.PENDING, 0) + counts.get(outbox_mod.SENDING, 0))))
            from metrics.rollups import lag_seconds
            for collection, lag in lag_seconds(self.settings).items():
                if lag is not None:
                    out["paywatch_rollup_lag_seconds"].append(((collection,), lag))
        except PyMongoError as exc:
            log.warning("/metrics: Paywatch's database is unavailable: %s", str(exc).splitlines()[0][:200])
        return out


def _still_valid(expires_at: datetime) -> bool:
    at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=timezone.utc)
    return at > datetime.now(timezone.utc)


class PaywatchCollector(Collector):
    """Builds every metric family at scrape time, from the snapshot and Paywatch's database."""

    def __init__(self, health: Health):
        self.health = health

    def collect(self):
        # A database that does not answer costs one timeout, then is skipped: the scrape still reports it.
        checks = self.health.ping()
        snap = {}
        if checks["platform"] is None:
            try:
                snap = self.health.snapshots.get()
            except (DataSourceUnavailable, PyMongoError) as exc:
                log.warning("/metrics: no snapshot, the platform's database is unavailable: %s",
                            (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200])
        for gauge in GAUGES:
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=gauge.labels)
            for labels, value in gauge.read(snap) if snap else ():
                family.add_metric(list(labels), value)
            yield family
        own = self.health.own_samples(checks)
        for name, help_text, labels in OWN:
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for label_values, value in own[name]:
                family.add_metric(list(label_values), value)
            yield family


def registry_for(health: Health) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PaywatchCollector(health))
    return registry


class _Handler(BaseHTTPRequestHandler):
    server: "HealthServer"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                self._json(*self.server.health.liveness())
            elif path == "/readyz":
                self._json(*self.server.health.readiness())
            elif path == "/metrics":
                self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
            else:
                self._json(404, {"error": f"no such path: {path}", "paths": ["/healthz", "/readyz", "/metrics"]})
        except Exception as exc:  # noqa: BLE001 - a failed probe answers 500, it never kills the server
            log.exception("%s failed", path)
            self._json(500, {"error": type(exc).__name__})

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - probes every few seconds: not worth a line each
        log.debug("health server: " + format, *args)


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], health: Health):
        super().__init__(address, _Handler)
        self.health = health
        self.registry = registry_for(health)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    def start(self) -> "HealthServer":
        self._thread = threading.Thread(target=self.serve_forever, name="health-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _NoServer:
    url = None

    def close(self) -> None:
        pass


def serve(worker: "Worker", scheduler: "BaseScheduler | None") -> HealthServer | _NoServer:
    """Start the health server when ``PAYWATCH_WORKER_PORT`` is set; ``close()`` the result to stop it."""
    port = worker.settings.worker_port
    if port is None:
        return _NoServer()
    address = worker.settings.worker_address
    try:
        server = HealthServer((address, port), Health(worker, scheduler)).start()
    except OSError as exc:
        raise SettingsError(f"PAYWATCH_WORKER_PORT: cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    log.info("health server on %s (/healthz, /readyz, /metrics)", server.url)
    return server
