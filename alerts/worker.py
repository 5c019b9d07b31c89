"""``python -m alerts run``: the alert worker.

An APScheduler 3 ``BlockingScheduler`` runs the jobs of :mod:`alerts.jobs`
(the lease, the evaluation every ``PAYWATCH_EVAL_INTERVAL`` seconds, the
outbox, and whatever else is registered there) with ``coalesce=True``,
``max_instances=1`` and a misfire grace, so a worker paused for ten minutes
does one catch-up evaluation, not ten.

One cycle (:meth:`Worker.cycle`, which tests call directly):

1. hold the lease (only the leader evaluates and sends);
2. check the platform's database answers (if not, every rule is unknown and
   "data source unavailable" fires);
3. record this cycle's health probe and connection count;
4. evaluate, persist, queue messages (:mod:`alerts.engine`);
5. deliver the outbox;
6. write the heartbeat (``heartbeats`` {_id: "worker"}) and ping
   ``PAYWATCH_HEARTBEAT_URL``: an outside dead-man's switch notices when
   the pings stop.  While a message is given up (:func:`notify.outbox.given_up`)
   the ping goes to ``<url>/fail`` instead (healthchecks.io's convention), so
   the switch also notices that delivery is broken.

When Paywatch's own database is unreachable too (the default keeps both on
one server), nothing can be written: the worker logs the outage every cycle
and queues the "data source unavailable" alert as soon as it can write.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from datetime import datetime, timezone

import requests
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from pymongo.errors import PyMongoError

from alerts import engine, health, store
from alerts.config import AlertsConfig, load_config
from alerts.jobs import JOBS, JobContext, JobSpec, every
from alerts.lease import Lease
from alerts.messages import alert_message
from alerts.readings import EvalContext
from alerts.rules import Rule, load_rules
from alerts.state import FIRING, FIRST, AlertState, after_notify, dedup_key
from metrics import probe as probe_mod
from metrics import signals
from metrics.db import DataSourceUnavailable, source, state_db
from metrics.redact import describe
from metrics.rollups import live_source
from metrics.settings import Settings
from metrics.windows import iso
from notify import outbox as outbox_mod
from notify.channels import build_channels
from notify.outbox import Outbox, given_up, utcnow

log = logging.getLogger(__name__)

DATA_SOURCE_METRIC = "data_source_unavailable"


class Worker:
    def __init__(self, settings: Settings, config: AlertsConfig | None = None, rules: list[Rule] | None = None, *,
                 channels: dict | None = None, holder: str | None = None, use_lease: bool = True,
                 jobs: list[JobSpec] | None = None):
        self.settings = settings
        self.config = config or load_config(settings)
        self.rules = rules if rules is not None else load_rules(settings, self.config)
        self.channels = channels if channels is not None else build_channels(settings, self.config)
        self.jobs = jobs if jobs is not None else JOBS
        self.use_lease = use_lease
        self.stop_event = threading.Event()
        self.state = state_db(settings)
        self.lease = Lease(self.state, self.config.lease, holder=holder)
        self.outbox = Outbox(self.state, settings, self.config, self.channels, holder=self.lease.holder,
                             may_send=self._may_send, stop=self.stop_event)
        self._prepared = False
        self._outage: dict | None = None  # platform and state db both down: {"start", "last", "error"}
        self._dead_seen = 0  # given-up messages at the last heartbeat

    # -- leadership --------------------------------------------------------------------

    def _may_send(self) -> bool:
        return not self.use_lease or self.lease.check()

    def renew_lease(self) -> bool:
        return True if not self.use_lease else self.lease.acquire()

    def is_leader(self) -> bool:
        return not self.use_lease or self.lease.held or self.lease.acquire()

    # -- one cycle ---------------------------------------------------------------------

    def _prepare(self) -> None:
        if not self._prepared:
            store.ensure_indexes(self.state)
            outbox_mod.ensure_indexes(self.state)
            probe_mod.ensure_probe_indexes(self.state)
            signals.ensure_system_indexes(self.state)
            self._prepared = True

    def _source(self):
        try:
            # The figures come from the rollups, brought up to date first (docs/metrics.md, "Rollups").
            src = live_source(self.settings)
            src.command("ping")
            return src, None
        except DataSourceUnavailable as exc:
            return None, str(exc)

    def _collect(self, src, at: datetime) -> None:
        """This cycle's own measurements: the health probe and the connection count."""
        if self.settings.health_url:
            result = probe_mod.probe_once(self.settings.health_url, self.config.probe_timeout.total_seconds())
            probe_mod.record_probe(self.state, result)
        if src is not None:
            signals.record_connections(self.state, at, signals.current_connections(src))

    def cycle(self, at: datetime | None = None) -> dict:
        """Evaluate every rule once at ``at`` (default now), persist, queue and deliver."""
        started = time.perf_counter()
        live = at is None
        at = utcnow() if live else at.astimezone(timezone.utc).replace(microsecond=at.microsecond // 1000 * 1000)
        if self.use_lease and not (self.lease.held or self.lease.acquire()):
            if self.lease.last_error:
                return self._note_outage(at)
            log.debug("standby: another worker holds the lease")
            return {"leader": False}
        self.outbox.fence = self.lease.fence
        try:
            self._prepare()
            stored = store.load_states(self.state)
        except PyMongoError as exc:
            return self._note_outage(at, exc)
        src, source_error = self._source()
        try:
            if self._outage:
                self._announce_outage(stored, at)
            if live:
                self._collect(src, at)
            ctx = EvalContext(self.settings, at, src, self.state, source_error)
            evaluations = engine.evaluate(ctx, self.rules, stored)
            queued = engine.apply(self.state, self.outbox, ctx, evaluations, self.config, self.lease.fence)
        except store.Fenced as exc:
            log.warning("stopping this cycle: %s", exc)
            self.lease.drop()
            return {"leader": False, "fenced": True}
        except PyMongoError as exc:
            return self._note_outage(at, exc)
        delivered = self.outbox.deliver(budget_s=min(30.0, self.settings.eval_interval / 2))
        cycle_ms = round((time.perf_counter() - started) * 1000, 1)
        report = {
            "leader": True, "at": at, "cycle_ms": cycle_ms, "source_error": ctx.source_error,
            "firing": sum(e.new.state == FIRING for e in evaluations),
            "unknown": sum(e.unknown for e in evaluations),
            "queued": queued, "delivered": dict(delivered),
        }
        self._heartbeat(report)
        return report

    def _note_outage(self, at: datetime, exc: Exception | None = None) -> dict:
        """Paywatch's database does not answer: log it every cycle; remember a platform outage."""
        _, source_error = self._source()
        error = source_error or (describe(exc, limit=200) if exc else "unreachable")
        if source_error:
            self._outage = {"start": (self._outage or {}).get("start", at), "last": at, "error": error}
            log.error("data source unavailable, and Paywatch's own database too (%s): every rule is unknown; "
                      "the alert is queued as soon as the database can be written", error)
        else:
            log.error("Paywatch's database is unavailable (%s): no evaluation, no heartbeat", error)
        return {"leader": None, "at": at, "state_error": error, "source_error": source_error}

    def _announce_outage(self, stored: dict, at: datetime) -> None:
        """Queue the "data source unavailable" episode that could not be written while it lasted."""
        outage, self._outage = self._outage, None
        rule = next((r for r in self.rules if r.metric == DATA_SOURCE_METRIC and r.enabled), None)
        doc = stored.get(store.state_id(rule.id, "")) if rule else None
        if rule is None or (doc and doc.get("state") == FIRING):
            return
        st = AlertState(state=FIRING, since=outage["start"], active_at=outage["start"], fired_at=outage["start"],
                        last_breach_at=outage["last"], value=1.0, evaluated_at=outage["last"])
        details = [f"Error: {outage['error']}",
                   f"Paywatch's own database was unreachable too, from {iso(outage['start'])} to {iso(outage['last'])}; "
                   f"this message was held until it answered again."]
        self.outbox.enqueue(dedup_key(rule.id, "", st, FIRST), alert_message(rule, "", st, FIRST, details, self.settings, at))
        st = after_notify(st, FIRST, at)
        fields = {**store.all_fields(st), "rule_id": rule.id, "subject": "", "title": rule.title,
                  "severity": rule.severity, "metric": rule.metric}
        store.write_states(self.state, [store.state_update(store.state_id(rule.id, ""), fields, self.lease.fence)])
        stored[store.state_id(rule.id, "")] = {"_id": store.state_id(rule.id, ""), **fields}

    def deliver(self) -> None:
        if self.is_leader():
            self.outbox.fence = self.lease.fence
            try:
                self.outbox.deliver(budget_s=self.config.outbox_interval.total_seconds())
            except PyMongoError as exc:
                log.warning("outbox: Paywatch's database is unavailable: %s", describe(exc, limit=200))

    def _heartbeat(self, report: dict) -> None:
        dead = given_up(self.state, utcnow())
        store.write_heartbeat(self.state, {
            "at": utcnow(), "evaluated_at": report["at"], "cycle_ms": report["cycle_ms"],
            "leader": self.lease.holder, "fence": self.lease.fence, "host": socket.gethostname(), "pid": os.getpid(),
            "interval_s": self.settings.eval_interval,
            "late_after_s": self.config.late_after(self.settings).total_seconds(),
            "rules": sum(r.enabled for r in self.rules), "firing": report["firing"], "unknown": report["unknown"],
            "source_error": report["source_error"], "channels": list(self.channels),
            "delivery_failed": len(dead),
        })
        if len(dead) != self._dead_seen:  # said once per change, not every cycle for days
            if dead:
                log.error("delivery is failing: %d given up (the latest %s: %s); the heartbeat ping reports a "
                          "failure until they expire or are queued again", len(dead), dead[0]["_id"],
                          dead[0].get("last_error") or "?")
            else:
                log.info("delivery: no message is given up any more; the heartbeat ping reports success again")
            self._dead_seen = len(dead)
        if self.settings.heartbeat_url:
            url = self.settings.heartbeat_url
            if dead:
                url = url.rstrip("/") + "/fail"
            try:
                requests.get(url, timeout=5)
            except requests.RequestException as exc:
                log.warning("heartbeat ping failed: %s", type(exc).__name__)

    # -- the scheduler -------------------------------------------------------------------

    def own_jobs(self) -> list[JobSpec]:
        """The worker's own jobs; the others (:data:`alerts.jobs.JOBS`) are peers it only schedules."""
        return [
            # Renew (or try to take) the lease three times per lease period, leader or not.
            JobSpec("lease", lambda ctx: self.renew_lease(), every(lambda s, c: c.lease.total_seconds() / 3),
                    leader_only=False, run_at_start=True),
            # Evaluate every rule; also collects the probe and the connection sample, and delivers.
            # Leadership is checked inside the cycle, which also notices when the database is down.
            JobSpec("evaluate", lambda ctx: self.cycle(), every(lambda s, c: s.eval_interval),
                    leader_only=False, run_at_start=True),
            # Retries and pacing between evaluations.
            JobSpec("outbox", lambda ctx: self.deliver(), every(lambda s, c: c.outbox_interval.total_seconds())),
        ]

    def job_context(self) -> JobContext:
        return JobContext(self.settings, self.config, self.state, self.outbox, self.lease.holder, self.stop_event)

    def run(self) -> None:
        """Schedule every job and block until Ctrl-C or SIGTERM."""
        jobs = [*self.own_jobs(), *self.jobs]
        executor = ThreadPoolExecutor(max_workers=max(4, len(jobs) + 1))
        scheduler = BlockingScheduler(
            timezone=timezone.utc,
            executors={"default": executor},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": max(1, int(self.config.misfire_grace.total_seconds()))},
        )
        context = self.job_context()
        for spec in jobs:
            func = spec.resolve()
            scheduler.add_job(self._guarded(spec, func, context), trigger=spec.make_trigger(self.settings, self.config),
                              id=spec.name, name=spec.name,
                              **({"next_run_time": datetime.now(timezone.utc)} if spec.run_at_start else {}))

        def stop(signum, frame):
            log.info("stopping (%s): finishing the running jobs", signal.Signals(signum).name)
            self.stop_event.set()
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("alert worker %s: %d rules, every %g s, channels: %s", self.lease.holder,
                 sum(r.enabled for r in self.rules), self.settings.eval_interval,
                 ", ".join(c.describe() for c in self.channels.values()))
        health_server = health.serve(self, scheduler)  # /healthz, /readyz, /metrics on PAYWATCH_WORKER_PORT
        try:
            scheduler.start()
        finally:
            health_server.close()
            executor.shutdown(wait=True)
            if self.use_lease:
                self.lease.release()
            log.info("alert worker stopped")

    def _guarded(self, spec: JobSpec, func, context: JobContext):
        def run_job():
            if self.stop_event.is_set():
                return
            if spec.leader_only and not self.is_leader():
                return
            try:
                func(context)
            except Exception:  # noqa: BLE001 - one failed run must not stop the schedule
                log.exception("job %s failed", spec.name)
        run_job.__name__ = f"job_{spec.name}"
        return run_job
