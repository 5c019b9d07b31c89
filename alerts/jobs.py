"""The worker's scheduled jobs: a list, each a function and a trigger.

``python -m alerts run`` schedules every entry of :data:`JOBS`.  To add one
(the weekly report, the Stripe mirror), append a :class:`JobSpec`::

    JobSpec("weekly-report", "reports.jobs:send_weekly_report",
            cron(day_of_week="mon", hour=8)),
    JobSpec("stripe-mirror", "metrics.stripe_mirror:sync_job", every(lambda s, c: 300)),

``func`` is a callable or a ``"module:function"`` path, imported when the
worker starts (so a typo stops it with one line, and ``alerts`` does not
import the other packages until then).  It receives a :class:`JobContext`.
A ``leader_only`` job (the default) runs only on the replica holding the
lease, so two replicas never both send a report.  Every job runs with
``coalesce``, ``max_instances=1`` and a misfire grace (see the worker).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from alerts.config import AlertsConfig
from metrics.settings import Settings, SettingsError

if TYPE_CHECKING:
    from alerts.worker import Worker

TriggerFactory = Callable[[Settings, AlertsConfig], BaseTrigger]


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
]
