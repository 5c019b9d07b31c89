"""The weekly report as a job of the alert worker (``python -m alerts run``).

Every run asks one question: is a week's report due (its send time, Monday
09:00 local by default, has passed) and not yet delivered?  Then it builds
the report, posts the summary through the outbox of ``notify`` (Slack, or the
console without Slack) and, with a bot token, uploads the HTML file to the
same channel with ``files_upload_v2``.  An incoming webhook cannot carry a
file, so with one only the summary is posted.

Exactly once per week, across restarts and with two workers: the week's
document in the ``reports`` collection is claimed atomically
(``find_one_and_update`` with "not delivered, not claimed by a live run"
in the filter, upserted; when nothing comes back or the insert collides,
someone else has it).  Each step after the claim is idempotent on its own:
the summary's outbox key is the week, so a second enqueue is ignored, and
the uploaded file is recorded before the week is marked sent, so a run that
died in between does not upload it again.  A run that dies holding the claim
is retried once the claim expires; a failure is retried later, a few times.

Because it runs every minute (cheap: one ``find_one`` when nothing is due),
a worker that was down on Monday morning sends the report when it comes
back, and the document it leaves is what the dashboard lists as past reports.

Configured by the ``[reports]`` table of ``paywatch.toml``::

    [reports]
    weekday = "mon"        # the send day, in PAYWATCH_TIMEZONE
    time = "09:00"
    upload_html = true     # with SLACK_BOT_TOKEN; SLACK_CHANNEL must be a channel id (C…)
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, time, timedelta, timezone
from typing import Callable, Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from alerts.config import Duration, one_line
from metrics.rollups import live_source
from metrics.redact import describe, settings_secrets
from metrics.settings import Settings, SettingsError
from metrics.windows import iso, utc
from notify.channels.slack import SlackChannel, escape
from notify.message import REPORT
from notify.options import DeliveryOptions
from reports.model import Report, build_report
from reports.periods import Period, last_complete_week, week_period
from reports.render import file_name, render

log = logging.getLogger(__name__)

COLLECTION = "reports"
CLAIMED, RETRY, SENT, FAILED = "claimed", "retry", "sent", "failed"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
REPORTS_PAGE = "reports"
UPLOAD_TIMEOUT_S = 120  # the HTML is about 5 MB (plotly.js inlined)
# The catch-up check: one ``find_one`` when nothing is due.
REPORT_CHECK_SECONDS = 60

Enqueue = Callable[[str, dict], object]
Upload = Callable[[Report, bytes], dict]


class ReportsConfig(BaseModel):
    """The ``[reports]`` table; ``docs/reports.md`` describes each key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="send the weekly report from the alert worker")
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = Field(
        default="mon", description="the day the last complete week's report goes out")
    time: str = Field(default="09:00", description="local time (PAYWATCH_TIMEZONE) it goes out, HH:MM")
    upload_html: bool = Field(default=True, description="upload the HTML file to Slack when a bot token is set")
    # Six tries half an hour apart ride out a database or Slack outage of a Monday morning.
    max_attempts: int = Field(default=6, ge=1, le=20, description="tries before a week's report is given up")
    retry_after: Duration = Field(default=timedelta(minutes=30), description="wait before trying a failed report again")
    claim_timeout: Duration = Field(default=timedelta(minutes=30),
                                    description="a run that died holding a week is retried after this")

    @field_validator("time")
    @classmethod
    def _clock(cls, value: str) -> str:
        match = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", str(value))
        if not match:
            raise ValueError(f"not a time of day: {value!r} (use HH:MM, e.g. 09:00)")
        return f"{int(match[1]):02d}:{match[2]}"

    @property
    def clock(self) -> time:
        hour, minute = self.time.split(":")
        return time(int(hour), int(minute))


def load_config(settings: Settings) -> ReportsConfig:
    """The checked ``[reports]`` table; one line of :class:`SettingsError` when it is wrong."""
    try:
        return ReportsConfig.model_validate(settings.reports)
    except ValidationError as exc:
        raise SettingsError(one_line(exc, "[reports]")) from None


# -- when -----------------------------------------------------------------------------

def send_time(period: Period, config: ReportsConfig) -> datetime:
    """When ``period``'s report goes out: the configured day and time of the week after it (aware UTC)."""
    tz = ZoneInfo(period.timezone)
    monday = period.window.end.astimezone(tz).date()
    day = monday + timedelta(days=DAYS.index(config.weekday))
    return datetime.combine(day, config.clock, tzinfo=tz).astimezone(timezone.utc)


def due_week(now: datetime, config: ReportsConfig, tz: ZoneInfo) -> Period:
    """The latest week whose send time has passed at ``now``."""
    period = last_complete_week(now, tz)
    if send_time(period, config) <= utc(now):
        return period
    monday = period.window.start.astimezone(tz).date() - timedelta(days=7)
    year, week_no, _ = monday.isocalendar()
    return week_period(year, week_no, tz)


def report_id(period: Period) -> str:
    return f"{period.kind}:{period.label}"


# -- the job ----------------------------------------------------------------------------

def weekly_report_trigger(settings: Settings, alerts: DeliveryOptions) -> BaseTrigger:
    """At the ``[reports]`` send time, and every minute to catch up and retry (see the module doc)."""
    reports = load_config(settings)  # a bad [reports] table stops the worker at start, in one line
    clock = reports.clock
    return OrTrigger([
        CronTrigger(day_of_week=DAYS.index(reports.weekday), hour=clock.hour, minute=clock.minute,
                    timezone=settings.tz),
        IntervalTrigger(seconds=REPORT_CHECK_SECONDS),
    ])


def run_weekly_job(ctx) -> str:
    """The worker's entry point (a job of ``python -m alerts run``): ``ctx`` gives the settings, the
    state database, ``enqueue`` (the outbox), the delivery settings and the lease holder's name."""
    settings = ctx.settings
    config = load_config(settings)
    if not config.enabled:
        return "disabled"
    now = datetime.now(timezone.utc)
    period = due_week(now, config, settings.tz)
    outcome = deliver_weekly_report(
        settings, ctx.state_db, period, config, now=now, enqueue=ctx.enqueue,
        upload=slack_uploader(settings, ctx.config, config), holder=ctx.holder)
    if outcome not in ("done", "busy"):
        log.info("weekly report %s: %s", period.label, outcome)
    return outcome


def deliver_weekly_report(settings: Settings, state: Database, period: Period, config: ReportsConfig, *,
                          now: datetime, enqueue: Enqueue, upload: Upload | None, holder: str) -> str:
    """Build and deliver ``period``'s report unless it is done or another run holds it.

    Returns ``done`` (delivered or given up earlier), ``busy`` (another run
    holds it, or its retry is not due), ``sent``, ``retry`` or ``failed``.
    """
    coll = state[COLLECTION]
    doc_id = report_id(period)
    known = coll.find_one({"_id": doc_id}, {"state": 1, "attempts": 1, "claimed_until": 1})
    if known and known.get("state") in (SENT, FAILED):
        return "done"
    claim = _claim(coll, doc_id, period, config, holder, now)
    if claim is None:
        return _gave_up_if_dead(coll, doc_id, config, now)
    try:
        report = build_report(live_source(settings), settings, period, state=state, generated_at=now)
        # The summary is kept first: the dashboard lists it even if Slack is down.
        coll.update_one({"_id": doc_id, "claimed_by": holder}, {"$set": report.to_record()})
        enqueue(f"report|{doc_id}", summary_message(report, settings, uploading=upload is not None))
        delivery = {"summary": "queued"}
        if upload is not None:
            delivery["file"] = claim.get("file") or _upload_once(coll, doc_id, holder, upload, report)
        done = coll.update_one({"_id": doc_id, "claimed_by": holder, "state": CLAIMED},
                               {"$set": {"state": SENT, "sent_at": datetime.now(timezone.utc), "delivery": delivery,
                                         "error": None}})
        if done.modified_count != 1:
            log.warning("weekly report %s was delivered, but its claim had passed to another run", period.label)
        log.info("weekly report %s: summary queued%s", period.label, ", HTML uploaded" if upload else "")
        return SENT
    except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried, never lost
        error = describe(exc, secrets=settings_secrets(settings), limit=300)
        outcome = FAILED if claim["attempts"] >= config.max_attempts else RETRY
        coll.update_one({"_id": doc_id, "claimed_by": holder},
                        {"$set": {"state": outcome, "error": error, "retry_at": now + config.retry_after}})
        log.warning("weekly report %s: attempt %d of %d failed: %s", period.label, claim["attempts"],
                    config.max_attempts, error)
        return outcome


def _claim(coll, doc_id: str, period: Period, config: ReportsConfig, holder: str, now: datetime) -> dict | None:
    """Take the week: a new document, a retry that is due, or a claim whose holder died."""
    try:
        return coll.find_one_and_update(
            {"_id": doc_id, "attempts": {"$lt": config.max_attempts}, "$or": [
                {"state": RETRY, "retry_at": {"$lte": now}},
                {"state": CLAIMED, "claimed_until": {"$lte": now}},
            ]},
            {"$set": {"state": CLAIMED, "claimed_by": holder, "claimed_at": now,
                      "claimed_until": now + config.claim_timeout, "kind": period.kind, "period": period.label,
                      "start": period.window.start, "end": period.window.end, "timezone": period.timezone},
             "$inc": {"attempts": 1}},
            upsert=True, return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        return None  # the document exists and is not ours to take


def _gave_up_if_dead(coll, doc_id: str, config: ReportsConfig, now: datetime) -> str:
    """A claim that expired after the last allowed attempt: the runs died mid-report every time."""
    gone = coll.update_one({"_id": doc_id, "state": CLAIMED, "claimed_until": {"$lte": now},
                            "attempts": {"$gte": config.max_attempts}},
                           {"$set": {"state": FAILED, "error": "the worker stopped mid-report on every attempt"}})
    return FAILED if gone.modified_count else "busy"


def _upload_once(coll, doc_id: str, holder: str, upload: Upload, report: Report) -> dict:
    info = upload(report, render(report, "html"))
    coll.update_one({"_id": doc_id, "claimed_by": holder}, {"$set": {"file": info}})
    return info


# -- Slack --------------------------------------------------------------------------------

def summary_message(report: Report, settings: Settings, *, uploading: bool) -> dict:
    """The summary in the delivery layer's message shape (:mod:`notify.message`), so every channel
    posts it and escapes it its own way (Slack: ``&``, ``<``, ``>``)."""
    summary = report.summary
    period = report.period
    fields = [["Period", period.title], ["Compared with", period.previous_label],
              ["Targets missed", str(len(summary.missed))]]
    if summary.changes:
        fields.append(["Changed most", "\n".join(summary.changes)])
    fields.append(["Full report", "the HTML file below" if uploading else
                   "in the dashboard (Reports), or: python -m reports weekly --week " + period.label])
    details = [f"Target missed: {line}" for line in summary.missed] + [f"At risk: {line}" for line in summary.at_risk]
    return {
        "kind": REPORT, "reason": "report", "rule_id": None, "subject": "", "severity": "info",
        "title": f"Paywatch weekly report {period.label}",
        "headline": f"Weekly report {period.label} ({period.first_day:%d %b} – {period.last_day:%d %b}): "
                    f"{summary.headline}",
        "fields": fields,
        "details": details,
        "runbook": None,
        "link": f"{settings.dashboard_url.rstrip('/')}/{REPORTS_PAGE}?week={period.label}",
        "at": iso(report.generated_at),
    }


def slack_uploader(settings: Settings, alerts: DeliveryOptions, config: ReportsConfig) -> Upload | None:
    """An upload of the HTML to ``SLACK_CHANNEL`` with the bot token, through the delivery layer's Slack
    channel class; ``None`` without a bot token (an incoming webhook cannot carry files)."""
    if not config.upload_html or settings.slack_bot_token is None or not settings.slack_channel:
        return None
    if settings.slack_channel.startswith("#"):
        # files.completeUploadExternal takes a channel id; a name fails there after the summary went out.
        log.warning("weekly report: not uploading the HTML: SLACK_CHANNEL is a name (%s); file uploads "
                    "need the channel id (C…)", settings.slack_channel)
        return None
    slack = SlackChannel(token=settings.slack_bot_token.get_secret_value(), channel=settings.slack_channel,
                         api_base=alerts.slack_api_base, timeout_s=UPLOAD_TIMEOUT_S)

    def upload(report: Report, html: bytes) -> dict:
        response = slack.client.files_upload_v2(
            channel=slack.channel, file=html, filename=file_name(report, "html"), title=report.title,
            initial_comment=escape(f"{report.title}: the full report. Open it in a browser; it works offline "
                                   "and prints."))
        uploaded = response.get("file") or {}
        return {"id": uploaded.get("id"), "channel": slack.channel, "name": file_name(report, "html"),
                "bytes": len(html)}

    return upload


# -- the dashboard's list -------------------------------------------------------------------

def past_reports(state: Database, limit: int = 52) -> list[dict]:
    """The reports the job has kept, newest period first (the dashboard's list)."""
    fields = {"_id": 1, "kind": 1, "period": 1, "state": 1, "sent_at": 1, "generated_at": 1, "attempts": 1,
              "error": 1, "summary": 1, "delivery": 1, "title": 1}
    return list(state[COLLECTION].find({}, fields, sort=[("start", -1)], limit=limit, max_time_ms=5000))
