"""The worker's scheduled jobs: a list, each a function and a trigger.

``python -m alerts run`` schedules every entry of :data:`JOBS`:

* ``stripe-mirror``: one sync of the Stripe mirror (:func:`metrics.stripe.mirror.sync_job`)
  five seconds after start, then every ``stripe_sync_minutes`` (default 5); it
  does nothing while ``STRIPE_API_KEY`` is unset;
* ``weekly-report``: :func:`reports.job.run_weekly_job`, on
  :func:`reports.job.weekly_report_trigger`: at the ``[reports]`` send time
  (default Monday 09:00 in ``PAYWATCH_TIMEZONE``) and, as a cheap catch-up (one ``find_one`` when nothing is due), every minute: a worker
  that was down at the send time sends the week within a minute of coming
  back, and a failed week is retried once its ``retry_after`` has passed
  (``reports/job.py``).

The worker adds its own three (``lease``, ``evaluate``, ``outbox``; see
:meth:`alerts.worker.Worker.own_jobs`).  To add one, append a
:class:`JobSpec`.  ``func`` and ``trigger`` are callables or
``"module:function"`` paths, imported when the worker starts (so a typo
stops it with one line, and ``alerts`` never imports the other jobs'
packages: they are peers on one runtime).  A job receives a
:class:`JobContext`: the settings, Paywatch's database, the outbox and the
lease holder's name, never the worker itself.  A ``leader_only`` job (the
default) runs only on the replica holding the lease, so two replicas never
both send a report or sync the mirror.  Every job runs with ``coalesce``,
``max_instances=1`` and a misfire grace (see the worker).
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Union

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pymongo.database import Database

from alerts.config import AlertsConfig
from metrics.settings import Settings, SettingsError
from notify.outbox import Outbox

log = logging.getLogger(__name__)

TriggerFactory = Callable[[Settings, AlertsConfig], BaseTrigger]

ROLLUP_REFRESH_S = 5
ROLLUP_VERIFY_S = 600  # a day of history per run: a year is checked in about two and a half days


@dataclass(frozen=True)
class JobContext:
    """What a job gets: the settings, Paywatch's database, the platform, and the outbox."""

    settings: Settings
    config: AlertsConfig
    state_db: Database
    outbox: Outbox
    holder: str  # this worker's name in the lease (a job's claims carry it)
    stopping: threading.Event

    def source(self):
        """The platform's database (read-only), figures from the rollups; raises ``DataSourceUnavailable``."""
        from metrics.rollups import live_source

        return live_source(self.settings)

    def enqueue(self, key: str, message: dict, channels: list[str] | None = None) -> list[str]:
        """Post through the outbox (retries, dedup by ``key``, pacing); see ``notify.message`` for the shape."""
        return self.outbox.enqueue(key, message, channels)


def _load(path: str, what: str, job: str):
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SettingsError(f"job {job}: cannot load {what} {path}: {exc}") from None


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: Union[Callable[[JobContext], Any], str]
    trigger: Union[TriggerFactory, str]
    leader_only: bool = True
    run_at_start: bool = False

    def resolve(self) -> Callable[[JobContext], Any]:
        return self.func if callable(self.func) else _load(self.func, "function", self.name)

    def make_trigger(self, settings: Settings, config: AlertsConfig) -> BaseTrigger:
        factory = self.trigger if callable(self.trigger) else _load(self.trigger, "trigger", self.name)
        return factory(settings, config)


def every(seconds: Callable[[Settings, AlertsConfig], float]) -> TriggerFactory:
    """An interval trigger whose period comes from the settings."""
    return lambda settings, config: IntervalTrigger(seconds=max(0.1, float(seconds(settings, config))))


def cron(**fields: Any) -> TriggerFactory:
    """A cron trigger in the configured time zone (``PAYWATCH_TIMEZONE``)."""
    return lambda settings, config: CronTrigger(timezone=settings.tz, **fields)


# -- the Stripe mirror -------------------------------------------------------------------

# The first sync waits this long after start: the job is leader-only, and by then the lease
# job (run at start) has settled who leads, instead of racing it for the lease.
STRIPE_FIRST_SYNC_DELAY = timedelta(seconds=5)


def stripe_sync_seconds(settings: Settings, config: AlertsConfig) -> float:
    """The mirror job's period: ``stripe_sync_minutes`` (default 5)."""
    from metrics.stripe.client import StripeOptions

    return StripeOptions.from_settings(settings).sync_minutes * 60


def stripe_mirror_trigger(settings: Settings, config: AlertsConfig) -> BaseTrigger:
    """A few seconds after start (a fresh 'make run' has Stripe figures at once), then every period."""
    first = datetime.now(timezone.utc) + STRIPE_FIRST_SYNC_DELAY
    return IntervalTrigger(seconds=max(1.0, stripe_sync_seconds(settings, config)), start_date=first)


def sync_stripe_mirror(ctx: JobContext) -> str:
    """One mirror sync; nothing at all (not even a log line) while Stripe is not configured."""
    if ctx.settings.stripe_api_key is None:
        return "not configured"
    from metrics.stripe import mirror

    report = mirror.sync_job(ctx.settings)
    if report is None:
        return "failed"
    return "skipped" if report.skipped else "done" if report.ok else "stopped"


def follow_rollups(ctx: JobContext) -> str:
    """Keep the rollups fresh for the worker's whole life: a change shows within seconds, not at the
    next cycle.  One long-running job (started once), so a slow refresh never makes the scheduler skip."""
    from metrics.db import DataSourceUnavailable
    from metrics.rollups import live_source

    failing = False
    while not ctx.stopping.is_set():
        try:
            live_source(ctx.settings)
            if failing:
                log.info("rollups: following the platform's changes again")
            failing = False
        except DataSourceUnavailable as exc:
            if not failing:
                log.warning("rollups: cannot follow the platform's changes (%s); retrying", exc)
            failing = True
        ctx.stopping.wait(ROLLUP_REFRESH_S)
    return "stopped"


def once(settings: Settings, config: AlertsConfig) -> BaseTrigger:
    return DateTrigger(run_date=datetime.now(timezone.utc))


def verify_rollups(ctx: JobContext) -> str:
    """Check the next day of history against the raw documents and repair what differs."""
    report = ctx.source().rollups.verify_step()
    differ = sum(len(r["differ"]) for r in report.values())
    return f"{differ} repaired" if differ else "ok"


JOBS: list[JobSpec] = [
    # Keep the rollups fresh between evaluations, and verify them a day of history at a time.
    JobSpec("rollups", follow_rollups, once, leader_only=False),
    JobSpec("rollups-verify", verify_rollups, every(lambda s, c: ROLLUP_VERIFY_S)),
    # Copy Stripe's objects into PAYWATCH_DB.
    JobSpec("stripe-mirror", sync_stripe_mirror, stripe_mirror_trigger),
    JobSpec("weekly-report", "reports.job:run_weekly_job", "reports.job:weekly_report_trigger"),
]
