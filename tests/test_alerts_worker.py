"""The worker's cycle against the real database and a fake Slack: what is posted, and when."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alerts import outbox, store
from alerts.state import FIRING, INACTIVE, PENDING, RESOLVED
from fakes.fixtures import make_rule, slack, worker_for  # noqa: F401 - fixtures
from fakes.platform import payment
from metrics.embedded import EmbeddedMongo

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def fail(platform_db, n: int, when: datetime = NOW - timedelta(seconds=30), **fields) -> list:
    return platform_db.payments.insert_many([payment(when, "failed", **fields) for _ in range(n)]).inserted_ids


def state_of(worker, rule_id: str, subject: str = "") -> dict:
    return worker.state[store.STATE].find_one({"_id": store.state_id(rule_id, subject)})


def test_a_breach_posts_one_firing_message_and_one_resolved_message(worker_for, slack, platform_db):
    worker = worker_for([make_rule()])
    ids = fail(platform_db, 3)
    worker.cycle(at(0))
    worker.cycle(at(1))
    (posted,) = slack.wait_for(1)
    assert "Too many failed payments" in posted.text and "3" in posted.text
    header = posted.blocks[0]["text"]["text"]
    assert "WARNING" in header and "Too many failed payments" in header
    assert state_of(worker, "too_many_failures")["state"] == FIRING

    platform_db.payments.delete_many({"_id": {"$in": ids}})
    worker.cycle(at(90))
    resolved = slack.wait_for(2)[1]
    assert "Resolved" in resolved.text and "fired for 1m 30s" in resolved.text
    assert "RESOLVED" in resolved.blocks[0]["text"]["text"]
    worker.cycle(at(91))
    assert len(slack.delivered()) == 2
    assert state_of(worker, "too_many_failures")["state"] == RESOLVED
    transitions = [(h["from"], h["to"]) for h in store.history(worker.state) if h["event"] == "transition"]
    assert transitions == [(FIRING, RESOLVED), (INACTIVE, FIRING)]


def test_the_firing_message_carries_value_threshold_samples_runbook_and_a_dashboard_link(worker_for, slack, platform_db):
    worker = worker_for([make_rule()], PAYWATCH_DASHBOARD_URL="https://paywatch.example.com")
    fail(platform_db, 3, code="insufficient_funds", amount=2500)
    worker.cycle(at(0))
    (posted,) = slack.wait_for(1)
    body = str(posted.body)
    assert "*Value*\\n3" in body and "*Threshold*\\n&gt; 2" in body
    assert "insufficient_funds ×3 ($75.00)" in body  # top decline codes with the revenue at risk
    assert "Revenue at risk (declined amounts): $75.00" in body
    assert "Look at the decline codes." in body
    assert "https://paywatch.example.com/alerts?rule=too_many_failures" in body


def test_a_firing_alert_repeats_every_repeat_interval(worker_for, slack, platform_db):
    worker = worker_for([make_rule(repeat_interval=2, window=600)])
    fail(platform_db, 3)
    for second in (0, 1, 2, 3, 4):
        worker.cycle(at(second))
    posted = slack.wait_for(3)
    assert "still firing after 2s" in posted[1].text and "still firing after 4s" in posted[2].text
    assert len(slack.delivered()) == 3


def test_for_holds_the_alert_pending_until_the_condition_has_lasted(worker_for, slack, platform_db):
    worker = worker_for([make_rule(**{"for": 5, "window": 600})])
    fail(platform_db, 3)
    worker.cycle(at(0))
    worker.cycle(at(3))
    assert state_of(worker, "too_many_failures")["state"] == PENDING
    assert slack.delivered() == []
    worker.cycle(at(5))
    slack.wait_for(1)
    assert state_of(worker, "too_many_failures")["state"] == FIRING


def test_a_flapping_value_posts_one_firing_and_one_resolved_message(worker_for, slack, platform_db):
    worker = worker_for([make_rule(keep_firing_for=4)])
    ids = fail(platform_db, 3)
    parked = list(platform_db.payments.find({"_id": {"$in": ids}}))
    platform_db.payments.delete_many({"_id": {"$in": ids}})
    for second in range(0, 8):
        if second % 2:
            platform_db.payments.delete_many({"_id": {"$in": ids}})
        else:
            platform_db.payments.insert_many(parked)
        worker.cycle(at(second))
    platform_db.payments.delete_many({"_id": {"$in": ids}})
    for second in range(8, 14):
        worker.cycle(at(second))
    posted = slack.wait_for(2)
    assert len(slack.delivered()) == 2
    assert "Resolved" not in posted[0].text and "Resolved" in posted[1].text


def test_a_rate_below_the_minimum_sample_size_does_not_fire(worker_for, slack, platform_db):
    rule = make_rule(id="success", title="Success rate low", metric="payment_success_rate", comparison="<",
                     threshold=0.95, min_samples=10)
    worker = worker_for([rule])
    fail(platform_db, 3)  # 0 % success, but only 3 payments
    worker.cycle(at(0))
    assert state_of(worker, "success")["state"] == INACTIVE
    assert state_of(worker, "success")["samples"] == 3
    fail(platform_db, 7)
    worker.cycle(at(1))
    slack.wait_for(1)
    assert state_of(worker, "success")["state"] == FIRING


def test_a_restarted_worker_does_not_announce_a_firing_alert_again(worker_for, slack, platform_db):
    fail(platform_db, 3)
    worker_for([make_rule()]).cycle(at(0))
    slack.wait_for(1)
    restarted = worker_for([make_rule()])
    restarted.cycle(at(5))
    restarted.cycle(at(10))
    assert len(slack.delivered()) == 1
    assert state_of(restarted, "too_many_failures")["state"] == FIRING


def test_a_resolve_that_happened_while_the_worker_was_down_is_still_posted(worker_for, slack, platform_db):
    ids = fail(platform_db, 3)
    worker_for([make_rule()]).cycle(at(0))
    slack.wait_for(1)
    platform_db.payments.delete_many({"_id": {"$in": ids}})  # the problem ends while no worker runs
    worker_for([make_rule()]).cycle(at(600))
    assert "Resolved" in slack.wait_for(2)[1].text


def test_a_silenced_rule_posts_nothing_until_the_silence_ends(worker_for, slack, platform_db):
    worker = worker_for([make_rule(window=600)])
    store.add_silence(worker.state, "too_many_failures", None, at(10), "known issuer outage", "ops", at(0))
    fail(platform_db, 3)
    worker.cycle(at(0))
    worker.cycle(at(5))
    assert slack.delivered() == []
    worker.cycle(at(11))
    assert "Too many failed payments" in slack.wait_for(1)[0].text


def test_a_silence_on_one_subject_leaves_the_others_alone(worker_for, slack, platform_db):
    worker = worker_for([make_rule(split="currency")])
    store.add_silence(worker.state, "too_many_failures", "eur", at(600), "EUR acquirer maintenance", "ops", at(0))
    fail(platform_db, 3, currency="eur")
    fail(platform_db, 3, currency="usd")
    worker.cycle(at(0))
    (posted,) = slack.wait_for(1)
    assert "currency usd" in posted.text
    assert state_of(worker, "too_many_failures", "eur")["state"] == FIRING


def test_channel_mentions_in_platform_data_arrive_escaped(worker_for, slack, platform_db):
    worker = worker_for([make_rule(split="specialist")])
    fail(platform_db, 3, code="<!channel> <https://evil.example|click> & co", specialist="<!here>")
    worker.cycle(at(0))
    (posted,) = slack.wait_for(1)
    raw = posted.raw.decode("utf-8")
    assert "<!channel>" not in raw and "<!here>" not in raw and "<https://evil" not in raw
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co" in posted.text
    assert "&lt;!here&gt;" in posted.blocks[0]["text"]["text"]


def test_customer_emails_are_masked_in_messages(worker_for, slack, platform_db):
    rule = make_rule(id="stuck", title="Stuck payments", metric="stuck_payments", comparison=">", threshold=0, window=60)
    worker = worker_for([rule])
    platform_db.payments.insert_one(payment(NOW - timedelta(minutes=5), "processing", email="jane.doe@example.com"))
    worker.cycle(at(0))
    (posted,) = slack.wait_for(1)
    assert "j***@example.com" in posted.text and "jane.doe" not in posted.raw.decode()


def test_the_heartbeat_records_the_cycle_and_pings_the_dead_mans_switch(worker_for, slack, platform_db):
    worker = worker_for([make_rule()], heartbeat_url=slack.ping_url)
    report = worker.cycle(at(0))
    beat = store.read_heartbeat(worker.state)
    assert beat["evaluated_at"] == at(0) and beat["cycle_ms"] == report["cycle_ms"] and beat["rules"] == 1
    assert slack.pings == ["/ping/paywatch-worker"]


def test_a_stopped_database_makes_rules_unknown_then_the_data_source_alert_fires(make_settings, mongo_uri, slack,
                                                                               tmp_path):
    from alerts.worker import Worker
    from fakes.fixtures import FAST_ALERTS

    platform = EmbeddedMongo(Path(tmp_path / "platform"), memory=True)
    platform.ensure()
    try:
        settings = make_settings(mongodb_uri=platform.uri, state_uri=mongo_uri, SLACK_WEBHOOK_URL=slack.webhook_url,
                                 alerts=FAST_ALERTS, server_selection_timeout_ms=400, query_timeout_ms=1000,
                                 eval_interval=2)
        rules = [make_rule(), make_rule(id="data_source_unavailable", title="Data source unavailable",
                                        metric="data_source_unavailable", comparison=">", threshold=0, window=0,
                                        severity="critical")]
        worker = Worker(settings, rules=rules, use_lease=False)
        from pymongo import MongoClient

        with MongoClient(platform.uri) as client:
            client[settings.source_db_name].payments.insert_many([payment(NOW - timedelta(seconds=30)) for _ in range(3)])
        worker.cycle(at(0))
        assert slack.wait_for(1)[0].text.count("Too many failed payments")

        platform.stop()  # the platform's database goes away mid-run
        report = worker.cycle(at(600))  # long after the failures left the window: still not "resolved"
        assert report["source_error"]
        failing = state_of(worker, "too_many_failures")
        assert failing["state"] == FIRING and failing["unknown"] is True
        posted = slack.wait_for(2)
        assert "Data source unavailable" in posted[1].text and "CRITICAL" in posted[1].blocks[0]["text"]["text"]
        assert not any("Resolved" in p.text for p in posted)
    finally:
        platform.stop()


def test_the_outbox_keeps_every_message_with_its_dedup_key(worker_for, slack, platform_db):
    worker = worker_for([make_rule()])
    fail(platform_db, 3)
    worker.cycle(at(0))
    slack.wait_for(1)
    (doc,) = outbox.list_messages(worker.state, [outbox.SENT])
    assert doc["_id"].startswith("too_many_failures||") and doc["_id"].endswith("|firing@slack")
    assert doc["attempts"] == 1 and doc["message"]["kind"] == "firing"


@pytest.mark.parametrize("channels", [None])
def test_without_slack_the_console_channel_logs_each_message(make_settings, platform_db, caplog, channels):
    from alerts.worker import Worker

    worker = Worker(make_settings(alerts={"pace": 0}), rules=[make_rule()], use_lease=False)
    assert list(worker.channels) == ["console"]
    fail(platform_db, 3)
    with caplog.at_level("WARNING", logger="alerts.console"):
        worker.cycle(at(0))
    assert any("Too many failed payments" in r.getMessage() for r in caplog.records)
    (doc,) = outbox.list_messages(worker.state, [outbox.SENT])
    assert doc["channel"] == "console"
