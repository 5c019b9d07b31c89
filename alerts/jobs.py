"""The worker's scheduled jobs: a list, each a function and a trigger.

``python -m alerts run`` schedules every entry of :data:`JOBS`:

* ``lease``, ``evaluate``, ``outbox``: the alert worker itself;
* ``stripe-mirror``: one sync of the Stripe mirror (:func:`metrics.stripe.mirror.sync_job`)
  five seconds after start, then every ``stripe_sync_minutes`` (default 5); it
  does nothing while ``STRIPE_API_KEY`` is unset;
* ``weekly-report``: :func:`reports.job.run_weekly_job`, at the ``[reports]``
  send time (default Monday 09:00 in ``PAYWATCH_TIMEZONE``) and, as a cheap
  catch-up (one ``find_one`` when nothing is due), every minute: a worker
  that was down at the send time sends the week within a minute of coming
  back, and a failed week is retried once its ``retry_after`` has passed
  (``reports/job.py``).

To add one, append a :class:`JobSpec`.  ``func`` is a callable or a
``"module:function"`` path, imported when the worker starts (so a typo stops
it with one line, and ``alerts`` does not import the other packages until
then).  It receives a :class:`JobContext`.  A ``leader_only`` job (the
default) runs only on the replica holding the lease, so two replicas never
both send a report or sync the mirror.  Every job runs with ``coalesce``,
``max_instances=1`` and a misfire grace (see the worker).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Union

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from alerts.config import AlertsConfig
from metrics.settings import Settings, SettingsError

if TYPE_CHECKING:
    from alerts.worker import Worker

TriggerFactory = Callable[[Settings, AlertsConfig], BaseTrigger]
# The weekly report's catch-up check: one ``find_one`` when nothing is due.
REPORT_CHECK_SECONDS = 60


@dataclass
class JobContext:
    """What a job gets: the settings, Paywatch's database, the platform, and the outbox."""

    worker: "Worker"

    @property
    def settings(self) -> Settings:
        return self.worker.settings

    @property
    def config(self) -> AlertsConfig:
        return self.worker.config

    @property
    def state_db(self):
        return self.worker.state

    @property
    def stopping(self) -> threading.Event:
        return self.worker.stop_event

    def source(self):
        """The platform's database (read-only); raises ``DataSourceUnavailable``."""
        from metrics.db import source

        return source(self.settings)

    def enqueue(self, key: str, message: dict, channels: list[str] | None = None) -> list[str]:
        """Post through the outbox (retries, dedup by ``key``, pacing); see ``alerts.messages`` for the shape."""
        return self.worker.outbox.enqueue(key, message, channels)


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: Union[Callable[[JobContext], Any], str]
    trigger: TriggerFactory
    leader_only: bool = True
    run_at_start: bool = False

    def resolve(self) -> Callable[[JobContext], Any]:
        if callable(self.func):
            return self.func
        module_name, _, attr = self.func.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SettingsError(f"job {self.name}: cannot load {self.func}: {exc}") from None


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


# -- the weekly report ------------------------------------------------------------------

def weekly_report_trigger(settings: Settings, config: AlertsConfig) -> BaseTrigger:
    """At the ``[reports]`` send time, and every minute to catch up and retry (see the module doc)."""
    from reports.job import DAYS, load_config

    reports = load_config(settings)  # a bad [reports] table stops the worker at start, in one line
    clock = reports.clock
    return OrTrigger([
        CronTrigger(day_of_week=DAYS.index(reports.weekday), hour=clock.hour, minute=clock.minute,
                    timezone=settings.tz),
        IntervalTrigger(seconds=REPORT_CHECK_SECONDS),
    ])


JOBS: list[JobSpec] = [
    # Renew (or try to take) the lease three times per lease period, leader or not.
    JobSpec("lease", lambda ctx: ctx.worker.renew_lease(),
            every(lambda s, c: c.lease.total_seconds() / 3), leader_only=False, run_at_start=True),
    # Evaluate every rule; also collects the probe and the connection sample, and delivers.
    # Leadership is checked inside the cycle, which also notices when the database is down.
    JobSpec("evaluate", lambda ctx: ctx.worker.cycle(), every(lambda s, c: s.eval_interval),
            leader_only=False, run_at_start=True),
    # Retries and pacing between evaluations.
    JobSpec("outbox", lambda ctx: ctx.worker.deliver(), every(lambda s, c: c.outbox_interval.total_seconds())),
    # Copy Stripe's objects into PAYWATCH_DB.
    JobSpec("stripe-mirror", sync_stripe_mirror, stripe_mirror_trigger),
    JobSpec("weekly-report", "reports.job:run_weekly_job", weekly_report_trigger),
]
