"""Delivery that cannot lose a message: rate limits, per-message backoff, giving up, and what a
given-up message sets off; against the real database and a fake Slack answering as Slack does."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from notify.channels.slack import SlackChannel
from alerts.config import load_config
from notify.outbox import DEAD, PENDING, SENT, Outbox, ensure_indexes, given_up, list_messages
from fakes.fixtures import FAST_ALERTS, make_rule, slack, worker_for  # noqa: F401 - fixtures
from fakes.platform import payment
from fakes.slack import TOKEN, Reply
from metrics.db import state_db


def message(n: int, **fields) -> dict:
    return {"kind": "firing", "reason": "first", "rule_id": f"rule_{n}", "subject": "", "severity": "warning",
            "title": f"Rule {n}", "headline": f"Rule {n}: 12 (threshold > 10)", "fields": [["Value", "12"]],
            "details": [], "runbook": None, "link": "http://localhost:8501/alerts", "at": "2026-11-26T12:00:00Z",
            **fields}


@pytest.fixture
def outbox_for(make_settings, slack):
    def make(alerts: dict | None = None, channel: SlackChannel | None = None, **kwargs) -> Outbox:
        settings = make_settings(SLACK_WEBHOOK_URL=slack.webhook_url, alerts={**FAST_ALERTS, **(alerts or {})})
        config = load_config(settings)
        channels = {"slack": channel or SlackChannel(webhook_url=slack.webhook_url, timeout_s=3)}
        box = Outbox(state_db(settings), settings, config, channels, **kwargs)
        ensure_indexes(box.db)
        return box
    return make


def titles(requests) -> list[str]:
    return [r.blocks[0]["text"]["text"].split("· ", 1)[1] for r in requests]


def test_fifty_alerts_across_bursts_of_429s_are_all_delivered_exactly_once(outbox_for, slack):
    box = outbox_for({"outbox_max_attempts": 3, "pace": 0})
    for n in range(50):
        box.enqueue(f"key-{n}", message(n))
    # Bursts of eight 429s, each longer than outbox_max_attempts, between runs of accepted posts.
    burst = [Reply(429, {"Retry-After": "0"})] * 8
    slack.answer_next(*burst, *[Reply()] * 10, *burst, *[Reply()] * 15, *burst, Reply(), *burst)
    box.deliver(budget_s=30)
    delivered = titles(slack.delivered())
    assert sorted(delivered) == sorted(f"Rule {n}" for n in range(50))
    assert len(delivered) == 50  # exactly once each
    assert list_messages(box.db, [DEAD]) == []
    assert [r.status for r in slack.requests].count(429) == 32


def test_a_429_pauses_the_channel_for_retry_after(outbox_for, slack):
    box = outbox_for({"pace": 0})
    for n in (1, 2):
        box.enqueue(f"key-{n}", message(n))
    slack.answer_next(Reply(429, {"Retry-After": "1"}))
    box.deliver(budget_s=5)
    first, second, third = slack.requests
    assert first.status == 429 and second.at - first.at >= 1.0 and third.at - first.at >= 1.0
    assert len(slack.delivered()) == 2


def test_a_failing_message_does_not_hold_back_the_others(outbox_for, slack):
    box = outbox_for({"outbox_backoff": 60, "outbox_backoff_max": 60})
    for n in (1, 2, 3):
        box.enqueue(f"key-{n}", message(n))
    slack.answer_next(Reply(503))
    box.deliver(budget_s=2)
    assert titles(slack.delivered()) == ["Rule 2", "Rule 3"]
    (waiting,) = list_messages(box.db, [PENDING])
    assert waiting["_id"] == "key-1@slack" and "HTTP 503" in waiting["last_error"]


def test_messages_about_one_alert_keep_their_order_while_one_waits(outbox_for, slack):
    box = outbox_for({"outbox_backoff": 0.5, "outbox_backoff_max": 0.5, "pace": 0})
    box.enqueue("r|x|1|firing", message(1, episode="r|x|1"))
    box.enqueue("r|x|1|resolved", message(1, episode="r|x|1", kind="resolved", title="Rule 1 resolved"))
    box.enqueue("other", message(2))
    slack.answer_next(Reply(503))
    box.deliver(budget_s=5)
    assert titles(slack.delivered()) == ["Rule 2", "Rule 1", "Rule 1 resolved"]


def test_5xx_never_uses_up_an_attempt(outbox_for, slack):
    box = outbox_for({"outbox_max_attempts": 2, "pace": 0, "outbox_backoff": 0.01, "outbox_backoff_max": 0.01})
    box.enqueue("key-1", message(1))
    slack.answer_next(*[Reply(503)] * 5, Reply(500), Reply(502))
    box.deliver(budget_s=10)
    (sent,) = list_messages(box.db, [SENT])
    assert sent["attempts"] == 8 and titles(slack.delivered()) == ["Rule 1"]


def test_a_message_still_failing_after_the_maximum_age_is_given_up(outbox_for, slack):
    now = [datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)]
    box = outbox_for({"outbox_max_age": "24h"}, clock=lambda: now[0])
    box.enqueue("key-1", message(1))
    slack.answer_next(Reply(503))
    box.deliver(budget_s=0)
    assert list_messages(box.db, [PENDING])
    now[0] += timedelta(hours=25)
    slack.answer_next(Reply(503))
    box.deliver(budget_s=0)
    (dead,) = list_messages(box.db, [DEAD])
    assert "HTTP 503" in dead["last_error"] and "24h" in dead["last_error"]


def test_a_dead_message_expires_after_the_configured_time(outbox_for, slack):
    box = outbox_for({"outbox_dead_keep": "3d"})
    box.enqueue("key-1", message(1))
    slack.answer_next(Reply(404))
    box.deliver(budget_s=1)
    (dead,) = list_messages(box.db, [DEAD])
    assert dead["expire_at"] - dead["dead_at"] == timedelta(days=3)
    # Until then delivery counts as failing, and the heartbeat ping says so.
    assert [d["_id"] for d in given_up(box.db, dead["dead_at"] + timedelta(days=2))] == ["key-1@slack"]
    assert given_up(box.db, dead["dead_at"] + timedelta(days=3, seconds=1)) == []


def test_a_dead_message_is_announced_on_every_other_channel(make_settings, slack, caplog):
    settings = make_settings(alerts=FAST_ALERTS)
    box = Outbox(state_db(settings), settings, load_config(settings), {
        "slack": SlackChannel(webhook_url=slack.webhook_url, timeout_s=3),
        "ops": SlackChannel(token=TOKEN, channel="C0OPS", api_base=slack.api_base, timeout_s=3)})
    ensure_indexes(box.db)
    box.enqueue("key-1", message(1), ["slack"])
    slack.answer_next(Reply(410))
    with caplog.at_level(logging.WARNING):
        box.deliver(budget_s=3)
    (notice,) = slack.channel_messages("C0OPS")
    assert "Could not deliver to slack" in notice.text
    assert any("Could not deliver to slack" in r.getMessage() for r in caplog.records if r.name.endswith("console"))


def test_a_given_up_message_turns_the_heartbeat_ping_into_a_failure(worker_for, slack, platform_db):
    worker = worker_for([make_rule()], PAYWATCH_HEARTBEAT_URL=slack.ping_url)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    worker.cycle(now)
    assert slack.pings[-1] == "/ping/paywatch-worker"
    platform_db.payments.insert_many([payment(now, "failed") for _ in range(3)])
    slack.answer_next(Reply(404))  # the webhook was deleted
    worker.cycle(now + timedelta(seconds=1))
    assert list_messages(worker.state, [DEAD])
    assert slack.pings[-1] == "/ping/paywatch-worker/fail"


def test_rate_limits_do_not_lengthen_the_backoff_of_a_later_failure(outbox_for, slack):
    box = outbox_for({"outbox_backoff": 0.5, "outbox_backoff_max": 60, "pace": 0})
    box.enqueue("key-1", message(1))
    slack.answer_next(*[Reply(429, {"Retry-After": "0"})] * 5, Reply(503))
    box.deliver(budget_s=3)  # the 503 waits the first backoff (0.5 s), not one doubled by the five 429s
    assert titles(slack.delivered()) == ["Rule 1"]
    assert slack.requests[-1].at - slack.requests[-2].at >= 0.5
