"""The worker's weekly-report job: due once a week, posted once, even run twice or by two workers.

Slack is a real HTTP server on loopback (the alerts' fake, taught the three
calls of ``files_upload_v2``), driven by the real ``slack-sdk`` clients.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from notify.channels.slack import blocks
from alerts.worker import Worker
from fakes.slack import FakeSlack, Reply
from metrics import db as dbmod
from metrics.settings import SettingsError
from reports.job import (CLAIMED, COLLECTION, ReportsConfig, deliver_weekly_report, due_week, load_config,
                         past_reports, report_id, run_weekly_job, send_time, summary_message)
from reports.model import Report, Summary
from reports.periods import last_complete_week, parse_week

BERLIN = ZoneInfo("Europe/Berlin")
CHANNEL = "C0REPORTS"
UPLOAD_URL, COMPLETE_URL = "/api/files.getUploadURLExternal", "/api/files.completeUploadExternal"


class FakeSlackWithFiles(FakeSlack):
    """The alerts' fake Slack, plus the upload URL and the completion that ``files_upload_v2`` needs."""

    def _handle(self, handler, raw: bytes) -> None:
        if handler.path.startswith(UPLOAD_URL):
            self.answer_next(Reply(body=json.dumps({
                "ok": True, "file_id": "F0REPORT", "upload_url": f"http://127.0.0.1:{self.port}/upload/F0REPORT"})))
        elif handler.path.startswith(COMPLETE_URL):
            self.answer_next(Reply(body=json.dumps({"ok": True, "files": [{"id": "F0REPORT", "title": "report"}]})))
        super()._handle(handler, raw)

    def paths(self) -> list[str]:
        return [r.path.split("?")[0] for r in self.delivered()]


@pytest.fixture
def slack():
    fake = FakeSlackWithFiles().start()
    yield fake
    fake.stop()


@pytest.fixture
def bot_settings(make_settings, slack):
    def make(**overrides):
        return make_settings(timezone="Europe/Berlin", SLACK_BOT_TOKEN="xoxb-test-token", SLACK_CHANNEL=CHANNEL,
                             alerts={"slack_api_base": slack.api_base, "pace": 0}, **overrides)
    return make


def worker(settings) -> Worker:
    return Worker(settings, use_lease=False, jobs=[])


def deliver_all(*workers: Worker) -> None:
    for w in workers:
        w.outbox.deliver(budget_s=2)


# -- when ---------------------------------------------------------------------------------

def test_a_weeks_report_is_due_on_the_configured_day_and_time_of_the_week_after():
    config = ReportsConfig()
    period = parse_week("2026-W47", BERLIN)
    assert send_time(period, config) == datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)
    before = datetime(2026, 11, 23, 8, 59, tzinfo=BERLIN)
    assert due_week(before, config, BERLIN).label == "2026-W46"
    assert due_week(before + timedelta(minutes=1), config, BERLIN).label == "2026-W47"
    late = ReportsConfig(weekday="wed", time="18:30")
    assert due_week(datetime(2026, 11, 25, 18, 29, tzinfo=BERLIN), late, BERLIN).label == "2026-W46"
    assert due_week(datetime(2026, 11, 25, 18, 30, tzinfo=BERLIN), late, BERLIN).label == "2026-W47"


@pytest.mark.parametrize("table, words", [
    ({"time": "25:00"}, "not a time of day"), ({"weekday": "monday"}, "weekday"), ({"hour": 9}, "unknown setting"),
])
def test_a_bad_reports_table_stops_with_one_line(make_settings, table, words):
    with pytest.raises(SettingsError, match=words) as info:
        load_config(make_settings(reports=table))
    assert str(info.value).startswith("configuration error: [reports]") and "\n" not in str(info.value)


# -- once ---------------------------------------------------------------------------------

def test_the_job_posts_the_summary_and_uploads_the_html_once_even_when_run_twice(bot_settings, slack):
    settings = bot_settings()
    w = worker(settings)
    ctx = w.job_context()
    assert run_weekly_job(ctx) == "sent"
    assert run_weekly_job(ctx) == "done"
    deliver_all(w)
    assert run_weekly_job(ctx) == "done"
    deliver_all(w)

    paths = slack.paths()
    assert paths.count("/api/chat.postMessage") == 1
    assert paths.count(UPLOAD_URL) == 1 and paths.count(COMPLETE_URL) == 1
    upload = next(r for r in slack.delivered() if r.path.startswith("/upload/"))
    assert upload.raw.startswith(b"<!DOCTYPE html>") and upload.raw.count(b"* plotly.js v") == 1
    post = next(r for r in slack.delivered() if r.path == "/api/chat.postMessage")
    week = due_week(datetime.now(timezone.utc), load_config(settings), BERLIN)
    assert post.body["channel"] == CHANNEL and week.label in post.body["text"]
    asked = next(r for r in slack.delivered() if r.path == UPLOAD_URL).raw.decode()
    assert f"paywatch-weekly-{week.label}.html" in asked
    assert CHANNEL in next(r for r in slack.delivered() if r.path == COMPLETE_URL).raw.decode()

    kept = past_reports(dbmod.state_db(settings))
    assert [(r["period"], r["state"], r["attempts"]) for r in kept] == [(week.label, "sent", 1)]
    assert kept[0]["summary"]["headline"] and kept[0]["delivery"]["file"]["id"] == "F0REPORT"


def test_two_workers_at_the_same_moment_post_one_report(bot_settings, slack):
    settings = bot_settings()
    workers = [worker(settings), worker(settings)]
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def run(w: Worker) -> None:
        start.wait()
        outcomes.append(run_weekly_job(w.job_context()))

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    deliver_all(*workers)
    assert sorted(outcomes) == ["busy", "sent"]
    assert slack.paths().count("/api/chat.postMessage") == 1
    assert slack.paths().count(COMPLETE_URL) == 1


def test_a_run_that_died_holding_the_week_is_finished_after_its_claim_expires_without_a_second_upload(
        bot_settings, slack):
    settings = bot_settings(reports={"claim_timeout": "1s"})
    state = dbmod.state_db(settings)
    period = due_week(datetime.now(timezone.utc), load_config(settings), BERLIN)
    # What a worker killed after the upload, before marking the week sent, leaves behind.
    long_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    state[COLLECTION].insert_one({"_id": report_id(period), "state": CLAIMED, "claimed_by": "dead-worker",
                                  "claimed_until": long_ago, "attempts": 1, "start": period.window.start,
                                  "file": {"id": "F0EARLIER", "channel": CHANNEL}})
    w = worker(settings)
    assert run_weekly_job(w.job_context()) == "sent"
    deliver_all(w)
    assert slack.paths().count(COMPLETE_URL) == 0  # the file went out before the crash
    assert slack.paths().count("/api/chat.postMessage") == 1
    doc = state[COLLECTION].find_one({"_id": report_id(period)})
    assert (doc["state"], doc["attempts"], doc["delivery"]["file"]["id"]) == ("sent", 2, "F0EARLIER")


def test_a_claim_held_by_a_live_run_is_left_alone(bot_settings, slack):
    settings = bot_settings()
    state = dbmod.state_db(settings)
    period = due_week(datetime.now(timezone.utc), load_config(settings), BERLIN)
    soon = datetime.now(timezone.utc) + timedelta(minutes=20)
    state[COLLECTION].insert_one({"_id": report_id(period), "state": CLAIMED, "claimed_by": "busy-worker",
                                  "claimed_until": soon, "attempts": 1})
    assert run_weekly_job(worker(settings).job_context()) == "busy"
    assert slack.paths() == []


def test_a_failed_delivery_is_recorded_and_retried_later(make_settings, slack):
    settings = make_settings(timezone="Europe/Berlin", SLACK_BOT_TOKEN="xoxb-test-token", SLACK_CHANNEL=CHANNEL,
                             alerts={"slack_api_base": slack.api_base, "pace": 0})
    config = load_config(settings)
    state = dbmod.state_db(settings)
    period = parse_week("2026-W47", BERLIN)
    now = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)

    def broken_upload(report, html):
        raise ConnectionError("Slack is down")

    queued: list[str] = []
    outcome = deliver_weekly_report(settings, state, period, config, now=now, enqueue=lambda k, m: queued.append(k),
                                    upload=broken_upload, holder="w1")
    assert outcome == "retry"
    doc = state[COLLECTION].find_one({"_id": report_id(period)})
    assert doc["error"].startswith("ConnectionError: Slack is down") and doc["summary"]["headline"]
    assert deliver_weekly_report(settings, state, period, config, now=now + timedelta(minutes=1),
                                 enqueue=lambda k, m: queued.append(k), upload=broken_upload, holder="w1") == "busy"
    later = now + config.retry_after
    assert deliver_weekly_report(settings, state, period, config, now=later, enqueue=lambda k, m: queued.append(k),
                                 upload=lambda r, h: {"id": "F1"}, holder="w2") == "sent"
    assert queued == [f"report|{report_id(period)}"] * 2  # the outbox keeps one per key


# -- what is posted ---------------------------------------------------------------------------

def test_with_an_incoming_webhook_only_the_summary_is_posted(make_settings, slack):
    settings = make_settings(timezone="Europe/Berlin", SLACK_WEBHOOK_URL=slack.webhook_url, alerts={"pace": 0})
    w = worker(settings)
    assert run_weekly_job(w.job_context()) == "sent"
    deliver_all(w)
    assert slack.paths() == ["/services/T000/B000/XXXXXXXX"]
    posted = slack.delivered()[0]
    assert "weekly report" in posted.text.lower() and posted.blocks


def test_the_summary_message_escapes_slack_markup_from_the_data(make_settings, slack):
    settings = make_settings(timezone="Europe/Berlin")
    week = last_complete_week(datetime.now(timezone.utc), BERLIN)
    summary = Summary("<!channel> 12 payments", ["Refunds <@U123>: 1 → 9"], ["Success rate 90% (target > 98%)"], [], [])
    report = Report(week, datetime.now(timezone.utc), summary, [])
    layout = json.dumps(blocks(summary_message(report, settings, uploading=False)))
    assert "<!channel>" not in layout and "&lt;!channel&gt;" in layout
    assert "<@U123>" not in layout
