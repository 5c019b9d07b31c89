"""The outbox and the Slack channel against a fake Slack: retries, dead letters, order, pacing, claims."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from notify.channels import build_channels
from notify.channels.slack import SlackChannel, blocks, fallback_text
from alerts.config import load_config
from notify.outbox import DEAD, SENT, Outbox, ensure_indexes, list_messages
from fakes.fixtures import FAST_ALERTS, slack  # noqa: F401 - fixture
from fakes.slack import Reply
from metrics.db import state_db
from metrics.settings import SettingsError

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def message(n: int, **fields) -> dict:
    return {"kind": "firing", "reason": "first", "rule_id": "r", "subject": "", "severity": "warning",
            "title": f"Rule {n}", "headline": f"Rule {n}: 12 (threshold > 10)", "fields": [["Value", "12"]],
            "details": [], "runbook": None, "link": "http://localhost:8501/alerts?rule=r", "at": "2026-11-26T12:00:00Z",
            **fields}


@pytest.fixture
def outbox_for(make_settings, slack):
    def make(alerts: dict | None = None, channel: SlackChannel | None = None, **kwargs) -> Outbox:
        settings = make_settings(SLACK_WEBHOOK_URL=slack.webhook_url, alerts={**FAST_ALERTS, **(alerts or {})})
        config = load_config(settings)
        channels = {"slack": channel} if channel else build_channels(settings, config)
        box = Outbox(state_db(settings), settings, config, channels, **kwargs)
        ensure_indexes(box.db)
        return box
    return make


def titles(requests) -> list[str]:
    return [r.blocks[0]["text"]["text"].split("· ", 1)[1] for r in requests]


def test_429_and_5xx_are_retried_and_every_message_arrives_once(outbox_for, slack):
    box = outbox_for()
    for n in (1, 2, 3):
        box.enqueue(f"key-{n}", message(n))
    slack.answer_next(Reply(429, {"Retry-After": "1"}), Reply(503), Reply(500))
    outcomes = box.deliver(budget_s=15)
    delivered = slack.wait_for(3)
    assert sorted(titles(delivered)) == ["Rule 1", "Rule 2", "Rule 3"]
    assert [r.status for r in slack.requests] == [429, 503, 500, 200, 200, 200]
    assert slack.requests[1].at - slack.requests[0].at >= 1.0  # Retry-After: 1 was honoured
    assert outcomes["retry"] == 3 and outcomes["sent"] == 3
    docs = {d["_id"]: d for d in list_messages(box.db, [SENT])}
    assert sum(d["attempts"] for d in docs.values()) == 6


def test_a_deleted_webhook_is_permanent_and_the_dead_letter_is_reported(outbox_for, slack, caplog):
    box = outbox_for()
    box.enqueue("key-1", message(1))
    slack.answer_next(Reply(404))
    with caplog.at_level("WARNING"):
        box.deliver(budget_s=2)
    (dead,) = list_messages(box.db, [DEAD])
    assert dead["attempts"] == 1 and "HTTP 404" in dead["last_error"]
    assert len(slack.requests) == 1  # no retry of a permanent error
    reports = [r.getMessage() for r in caplog.records if r.name == "alerts.console"]
    assert any("Could not deliver to slack after 1 attempt: Rule 1" in m for m in reports)
    (report,) = list_messages(box.db, [SENT])
    assert report["_id"] == "dead|key-1@slack@console"


def test_a_message_that_fails_for_no_reason_a_retry_explains_is_given_up_after_the_last_attempt(outbox_for, slack):
    box = outbox_for({"outbox_max_attempts": 3})
    broken = message(1)
    del broken["headline"]  # a bug upstream: the layout cannot be built, however often it is tried
    box.enqueue("key-1", broken)
    box.enqueue("key-2", message(2))
    box.deliver(budget_s=10)
    (dead,) = list_messages(box.db, [DEAD])
    assert dead["_id"] == "key-1@slack" and dead["attempts"] == 3 and "KeyError" in dead["last_error"]
    assert titles(slack.delivered()) == ["Rule 2"]  # the other message was not held back


def test_slack_down_loses_nothing(outbox_for, slack):
    box = outbox_for({"outbox_max_attempts": 10})
    box.enqueue("key-1", message(1))
    slack.stop()  # connection refused
    box.deliver(budget_s=0.5)
    (pending,) = list_messages(box.db)
    assert pending["status"] == "pending" and pending["attempts"] >= 1
    assert "ConnectionRefusedError" in pending["last_error"] or "URLError" in pending["last_error"]


def test_a_message_queued_twice_is_stored_once_and_posted_once(outbox_for, slack):
    box = outbox_for()
    assert box.enqueue("same-key", message(1)) == ["same-key@slack"]
    assert box.enqueue("same-key", message(1)) == []
    box.deliver(budget_s=2)
    box.deliver(budget_s=1)
    assert len(slack.requests) == 1


def test_the_outbox_paces_posts_to_one_channel(outbox_for, slack):
    box = outbox_for({"pace": 0.3})
    for n in (1, 2, 3):
        box.enqueue(f"key-{n}", message(n))
    box.deliver(budget_s=5)
    first, second, third = slack.wait_for(3)
    assert second.at - first.at >= 0.3 and third.at - second.at >= 0.3


def test_two_senders_at_once_post_each_message_once(outbox_for, slack):
    one, two = outbox_for(holder="one"), outbox_for(holder="two")
    for n in (1, 2, 3):
        one.enqueue(f"key-{n}", message(n))
    slack.answer_next(Reply(200, hold_s=0.5))  # the first post is slow: the other sender must wait, not resend
    threads = [threading.Thread(target=box.deliver, kwargs={"budget_s": 5}) for box in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    one.deliver(budget_s=2)
    assert titles(slack.requests) == ["Rule 1", "Rule 2", "Rule 3"]
    assert len({d["claimed_by"] for d in list_messages(one.db, [SENT])}) >= 1


def test_a_sender_that_lost_the_lease_does_not_post(outbox_for, slack):
    box = outbox_for(may_send=lambda: False)
    box.enqueue("key-1", message(1))
    assert box.deliver(budget_s=1)["not_leader"] == 1
    assert slack.requests == []


def test_the_bot_token_mode_posts_with_chat_post_message(outbox_for, slack):
    channel = SlackChannel(token="xoxb-test", channel="#payments-alerts", api_base=slack.api_base, timeout_s=3)
    box = outbox_for(channel=channel)
    box.enqueue("key-1", message(1))
    slack.answer_next(Reply(429, {"Retry-After": "0"}, body='{"ok": false, "error": "ratelimited"}'))
    box.deliver(budget_s=5)
    (posted,) = slack.wait_for(1)
    assert posted.path == "/api/chat.postMessage"
    assert posted.body["channel"] == "#payments-alerts" and posted.headers["Authorization"] == "Bearer xoxb-test"
    assert titles([posted]) == ["Rule 1"]


def test_a_bot_posting_to_a_missing_channel_is_a_permanent_error(outbox_for, slack):
    channel = SlackChannel(token="xoxb-test", channel="#gone", api_base=slack.api_base, timeout_s=3)
    box = outbox_for(channel=channel)
    box.enqueue("key-1", message(1))
    slack.answer_next(Reply(200, body='{"ok": false, "error": "channel_not_found"}'))
    box.deliver(budget_s=2)
    (dead,) = list_messages(box.db, [DEAD])
    assert "channel_not_found" in dead["last_error"]


def test_a_bot_token_without_a_channel_stops_with_one_line(make_settings):
    settings = make_settings(SLACK_BOT_TOKEN="xoxb-test")
    with pytest.raises(SettingsError, match="SLACK_CHANNEL is not"):
        build_channels(settings, load_config(settings))


def test_block_kit_layout_has_header_fields_details_runbook_link_and_a_fallback():
    msg = message(1, severity="critical", details=["Top decline codes: card_declined ×12."],
                  runbook={"section": "Emergency Response", "steps": ["Check Stripe status.", "Check logs."],
                           "url": "https://status.stripe.com/"})
    layout = blocks(msg)
    assert [b["type"] for b in layout] == ["header", "section", "section", "section", "section", "context"]
    assert layout[0]["text"]["text"] == "🔴 CRITICAL · Rule 1"
    assert "1. Check Stripe status.\n2. Check logs." in layout[4]["text"]["text"]
    assert "<http://localhost:8501/alerts?rule=r|Open in the Paywatch dashboard>" in layout[5]["elements"][0]["text"]
    text = fallback_text(msg)
    assert text.startswith("🔴 [CRITICAL] Rule 1: 12 (threshold &gt; 10)") and "Runbook (Emergency Response):" in text


def test_long_texts_are_cut_to_slacks_limits():
    layout = blocks(message(1, title="x" * 500, details=["y" * 5000]))
    assert len(layout[0]["text"]["text"]) <= 150
    assert all(len(b["text"]["text"]) <= 3000 for b in layout if b["type"] == "section" and "text" in b)
