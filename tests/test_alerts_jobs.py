"""The worker's scheduled jobs: the Stripe mirror and the weekly report are scheduled, on the
configured triggers, leader-only, and do their work when the scheduler runs them."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from alerts import worker as worker_mod
from alerts.jobs import JOBS, STRIPE_FIRST_SYNC_DELAY, JobSpec
from alerts.worker import Worker
from fakes.fixtures import FAST_ALERTS, slack  # noqa: F401 - fixture
from fakes.stripe_extras import localstripe, shop, stripe_fake, stripe_front  # noqa: F401 (fixtures)
from metrics.settings import SettingsError
from metrics.stripe import store
from reports.job import COLLECTION, REPORT_CHECK_SECONDS, due_week, load_config, report_id

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def scheduled(monkeypatch):
    """``scheduled(worker)``: run ``worker.run()`` far enough to schedule every job, and return the jobs.

    The scheduler is the real one, stopped as soon as it would start blocking; the
    jobs' functions are the ones it would call.  The worker's signal handlers are
    put back afterwards (it installs its own for Ctrl-C and SIGTERM).
    """
    seen: list = []

    class SchedulerThatReturns(BlockingScheduler):
        def start(self, *args, **kwargs):
            seen.extend(self.get_jobs())  # the jobs added, with their triggers

    monkeypatch.setattr(worker_mod, "BlockingScheduler", SchedulerThatReturns)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def run(worker: Worker) -> dict:
        try:
            worker.run()
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        return {job.id: job for job in seen}

    return run


@pytest.fixture
def make_worker(make_settings, slack):
    def make(*, use_lease: bool = False, holder: str | None = None, **overrides) -> Worker:
        values = {"SLACK_WEBHOOK_URL": slack.webhook_url, "alerts": dict(FAST_ALERTS), "eval_interval": 2}
        values.update(overrides)
        return Worker(make_settings(**values), rules=[], use_lease=use_lease, holder=holder)
    return make


def test_the_stripe_mirror_and_the_weekly_report_are_leader_only_jobs():
    specs = {spec.name: spec for spec in JOBS}
    assert {"stripe-mirror", "weekly-report"} <= set(specs)
    assert specs["stripe-mirror"].leader_only and specs["weekly-report"].leader_only


def test_the_worker_schedules_the_mirror_every_five_minutes_and_the_report_at_its_send_time(make_worker, scheduled):
    worker = make_worker(timezone="Europe/Berlin", reports={"weekday": "tue", "time": "07:30"})

    jobs = scheduled(worker)

    assert {"lease", "evaluate", "outbox", "stripe-mirror", "weekly-report"} <= set(jobs)
    mirror = jobs["stripe-mirror"].trigger
    assert isinstance(mirror, IntervalTrigger) and mirror.interval == timedelta(minutes=5)
    # The first sync comes seconds after start (a fresh 'make run' has Stripe figures at once),
    # once the lease job has settled who leads.
    now = datetime.now(UTC)
    first = mirror.get_next_fire_time(None, now)
    assert now < first <= now + STRIPE_FIRST_SYNC_DELAY
    report = jobs["weekly-report"].trigger
    assert isinstance(report, OrTrigger)
    cron = next(t for t in report.triggers if isinstance(t, CronTrigger))
    sunday_night = datetime(2026, 11, 29, 23, 0, tzinfo=BERLIN)
    assert cron.get_next_fire_time(None, sunday_night) == datetime(2026, 12, 1, 7, 30, tzinfo=BERLIN)
    catch_up = next(t for t in report.triggers if isinstance(t, IntervalTrigger))
    assert catch_up.interval == timedelta(seconds=REPORT_CHECK_SECONDS)


def test_the_default_report_time_is_monday_nine_local(make_worker, scheduled):
    jobs = scheduled(make_worker(timezone="Europe/Berlin"))

    cron = next(t for t in jobs["weekly-report"].trigger.triggers if isinstance(t, CronTrigger))
    assert cron.get_next_fire_time(None, datetime(2026, 11, 25, 12, 0, tzinfo=BERLIN)) == \
        datetime(2026, 11, 30, 9, 0, tzinfo=BERLIN)


def test_a_bad_reports_table_stops_the_worker_at_start_in_one_line(make_worker, scheduled):
    with pytest.raises(SettingsError, match=r"\[reports\]\.time"):
        scheduled(make_worker(reports={"time": "25:00"}))


@pytest.mark.parametrize("func, trigger", [("reports.job:no_such_job", "reports.job:weekly_report_trigger"),
                                           ("reports.job:run_weekly_job", "no_such_module:trigger")])
def test_a_job_or_trigger_path_that_does_not_load_stops_the_worker_at_start_in_one_line(make_worker, scheduled,
                                                                                      func, trigger):
    worker = make_worker()
    worker.jobs = [JobSpec("broken", func, trigger)]
    with pytest.raises(SettingsError, match=r"^job broken: cannot load"):
        scheduled(worker)


def test_a_job_gets_the_settings_the_database_the_outbox_and_the_holder_not_the_worker(make_worker):
    worker = make_worker(holder="replica-1")
    ctx = worker.job_context()
    assert (ctx.settings, ctx.state_db, ctx.outbox, ctx.holder) == (worker.settings, worker.state, worker.outbox,
                                                                    "replica-1")
    assert not hasattr(ctx, "worker")


def test_the_scheduled_mirror_job_syncs_when_stripe_is_configured(make_worker, scheduled, localstripe, stripe_fake, shop):
    shop.pay(amount=1234)
    worker = make_worker(STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=stripe_fake.url)
    job = scheduled(worker)["stripe-mirror"]

    job.func()  # what the scheduler calls

    (run,) = worker.state[store.SYNC_RUNS].find()
    assert run["ok"] is True and run["calls"] > 0
    assert worker.state[store.PAYMENT_INTENTS].find_one({"amount": 1234}) is not None


def test_the_scheduled_mirror_job_does_nothing_without_a_key(make_worker, scheduled, stripe_fake):
    worker = make_worker()
    job = scheduled(worker)["stripe-mirror"]

    job.func()

    assert worker.state[store.SYNC_RUNS].count_documents({}) == 0
    assert worker.state[store.API_CALLS].count_documents({}) == 0


def test_only_the_leader_syncs_the_mirror(make_worker, scheduled, localstripe, stripe_fake):
    key = {"STRIPE_API_KEY": localstripe.api_key, "STRIPE_API_BASE": stripe_fake.url}
    leader = make_worker(use_lease=True, holder="leader", **key)
    assert leader.renew_lease()
    standby = make_worker(use_lease=True, holder="standby", **key)
    job = scheduled(standby)["stripe-mirror"]

    job.func()

    assert standby.state[store.SYNC_RUNS].count_documents({}) == 0
    leader.lease.release()


def test_the_scheduled_report_job_delivers_the_due_week_once(make_worker, scheduled, slack):
    worker = make_worker(timezone="Europe/Berlin")
    job = scheduled(worker)["weekly-report"]
    week = due_week(datetime.now(UTC), load_config(worker.settings), BERLIN)

    job.func()
    job.func()  # the catch-up check a minute later: the week is done
    worker.outbox.deliver(budget_s=5)

    doc = worker.state[COLLECTION].find_one({"_id": report_id(week)})
    assert doc["state"] == "sent" and doc["attempts"] == 1
    (posted,) = slack.wait_for(1)
    assert f"Weekly report {week.label}" in posted.text
