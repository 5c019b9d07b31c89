"""Slack with a bot token, as the best tools do it: a firing message is edited in place when it
resolves, reminders are thread replies, and a post whose answer was lost is looked up by its key
before any resend.  Against the fake Slack's Web API, through the real slack-sdk client."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from notify.channels.slack import SlackChannel
from alerts.config import load_config
from notify.outbox import SENT, Outbox, ensure_indexes, list_messages
from notify.log import attempts
from fakes.fixtures import FAST_ALERTS, make_rule, slack, worker_for  # noqa: F401 - fixtures
from fakes.platform import payment
from fakes.slack import TOKEN, Reply
from metrics.db import state_db

CHANNEL = "C0PAYMENTS"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def message(n: int, **fields) -> dict:
    return {"kind": "firing", "reason": "first", "rule_id": f"rule_{n}", "subject": "", "severity": "warning",
            "title": f"Rule {n}", "headline": f"Rule {n}: 12 (threshold > 10)", "fields": [["Value", "12"]],
            "details": [], "runbook": None, "link": "http://localhost:8501/alerts", "at": "2026-11-26T12:00:00Z",
            **fields}


@pytest.fixture
def bot_outbox(make_settings, slack):
    def make(alerts: dict | None = None, timeout_s: float = 3, channel: str = CHANNEL) -> Outbox:
        settings = make_settings(SLACK_BOT_TOKEN=TOKEN, SLACK_CHANNEL=CHANNEL,
                                 alerts={**FAST_ALERTS, "slack_api_base": slack.api_base, **(alerts or {})})
        slack_channel = SlackChannel(token=TOKEN, channel=channel, api_base=slack.api_base, timeout_s=timeout_s)
        box = Outbox(state_db(settings), settings, load_config(settings), {"slack": slack_channel})
        ensure_indexes(box.db)
        return box
    return make


@pytest.fixture
def bot_worker(worker_for, slack):
    def make(rules, **kwargs):
        return worker_for(rules, SLACK_WEBHOOK_URL=None, SLACK_BOT_TOKEN=TOKEN, SLACK_CHANNEL=CHANNEL,
                          alerts={"slack_api_base": slack.api_base, **kwargs.pop("alerts", {})}, **kwargs)
    return make


def test_a_timed_out_post_to_a_bot_token_channel_is_not_duplicated(bot_outbox, slack):
    box = bot_outbox(timeout_s=1)
    box.enqueue("key-1", message(1))
    slack.answer_next(Reply(200, hold_s=2.5))  # Slack posts it, but the answer comes after the client gave up
    box.deliver(budget_s=6)
    assert len(slack.posts()) == 1
    assert [m.header for m in slack.channel_messages(CHANNEL)] == ["🟠 WARNING · Rule 1"]
    (sent,) = list_messages(box.db, [SENT])
    assert sent["post"]["ref"]["ts"] == slack.channel_messages(CHANNEL)[0].ts
    assert [a["status"] for a in attempts(box.db)] == ["found", "retry"]  # newest first


def test_a_post_whose_sender_died_mid_send_is_looked_up_by_the_next_sender_not_posted_again(bot_outbox, slack):
    first, second = bot_outbox({"claim_timeout": 1}), bot_outbox({"claim_timeout": 1})
    first.holder, second.holder = "first", "second"
    first.enqueue("key-1", message(1))
    slack.answer_next(Reply(200, hold_s=3))  # Slack has the post; its sender hangs (as if killed) past its claim
    hung = threading.Thread(target=first.deliver, kwargs={"budget_s": 0})
    hung.start()
    slack.wait_for(1)
    second.deliver(budget_s=4)  # the claim expires after 1 s: the second sender takes the message over
    hung.join()
    assert len(slack.posts()) == 1 and len(slack.channel_messages(CHANNEL)) == 1
    (sent,) = list_messages(second.db, [SENT])
    assert sent["claimed_by"] == "second" and "found" in [a["status"] for a in attempts(second.db)]


def test_a_channel_named_by_its_name_is_looked_up_by_the_id_slack_answered_with(bot_outbox, slack):
    box = bot_outbox(timeout_s=1, channel="#payments-alerts")
    box.enqueue("key-1", message(1))
    box.deliver(budget_s=2)  # the first answer names the channel: C0PAYMENTS
    box.enqueue("key-2", message(2))
    slack.answer_next(Reply(200, hold_s=2.5))
    box.deliver(budget_s=6)
    assert [m.header for m in slack.channel_messages(CHANNEL)] == ["🟠 WARNING · Rule 1", "🟠 WARNING · Rule 2"]
    assert len(slack.posts()) == 2


def test_fifty_alerts_to_a_bot_channel_across_bursts_of_ratelimited_are_each_posted_once(bot_outbox, slack):
    box = bot_outbox({"outbox_max_attempts": 2, "pace": 0})
    for n in range(50):
        box.enqueue(f"key-{n}", message(n))
    burst = [Reply(429, {"Retry-After": "0"})] * 6  # {"ok": false, "error": "ratelimited"}, as Slack answers
    slack.answer_next(*burst, *[Reply()] * 12, *burst, *[Reply()] * 20, *burst)
    box.deliver(budget_s=30)
    headers = [m.header for m in slack.channel_messages(CHANNEL)]
    assert sorted(headers) == sorted(f"🟠 WARNING · Rule {n}" for n in range(50))
    assert len(list_messages(box.db, [SENT])) == 50


def test_a_bot_post_carries_its_dedup_key_in_the_message_metadata(bot_outbox, slack):
    box = bot_outbox()
    box.enqueue("key-7", message(7))
    box.deliver(budget_s=3)
    (posted,) = slack.channel_messages(CHANNEL)
    assert posted.metadata["event_payload"]["key"] == "key-7"
    (sent,) = list_messages(box.db, [SENT])
    assert sent["link"] == f"{slack.team_url}archives/{CHANNEL}/p{posted.ts.replace('.', '')}"


def test_an_alert_that_resolves_edits_its_firing_message_and_reminders_are_thread_replies(bot_worker, slack,
                                                                                           platform_db):
    worker = bot_worker([make_rule(repeat_interval=2, window=600)])
    ids = platform_db.payments.insert_many([payment(NOW - timedelta(seconds=30), "failed")
                                            for _ in range(3)]).inserted_ids
    worker.cycle(NOW)
    worker.cycle(NOW + timedelta(seconds=2))  # a reminder
    platform_db.payments.delete_many({"_id": {"$in": ids}})
    worker.cycle(NOW + timedelta(seconds=700))

    (firing,) = slack.channel_messages(CHANNEL)  # one message in the channel, edited in place
    assert firing.edits == 1 and firing.header.startswith("✅ RESOLVED · Too many failed payments")
    replies = slack.channel_messages(CHANNEL, replies=True)
    assert [r.thread_ts for r in replies] == [firing.ts, firing.ts]
    assert "still firing" in replies[0].text and "Resolved" in replies[1].text
    assert len(slack.posts("/api/chat.update")) == 1


def test_a_resolve_whose_firing_message_was_deleted_is_posted_as_a_new_message(bot_worker, slack, platform_db):
    worker = bot_worker([make_rule(window=600)])
    ids = platform_db.payments.insert_many([payment(NOW - timedelta(seconds=30), "failed")
                                            for _ in range(3)]).inserted_ids
    worker.cycle(NOW)
    slack.messages.clear()  # someone deleted the firing message
    platform_db.payments.delete_many({"_id": {"$in": ids}})
    worker.cycle(NOW + timedelta(seconds=700))
    (resolved,) = slack.channel_messages(CHANNEL)
    assert resolved.header.startswith("✅ RESOLVED")


def test_a_bot_with_a_wrong_token_is_a_permanent_error(bot_outbox, slack):
    box = bot_outbox()
    box.senders["slack"].client.token = "xoxb-revoked"
    box.enqueue("key-1", message(1))
    box.deliver(budget_s=2)
    assert "invalid_auth" in list_messages(box.db, ["dead"])[0]["last_error"]
    assert len(slack.posts()) == 1
