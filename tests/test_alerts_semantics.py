"""What the default rules say under missing data, flapping and a failing dependency, end to end:
the real worker, the real database and the fake Slack, with the rules exactly as shipped."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alerts import store
from alerts.rules import default_rules, find_rule
from alerts.state import FIRING
from fakes.fixtures import slack, worker_for  # noqa: F401 - fixtures
from fakes.platform import payment, webhook_event
from metrics.settings import load_settings

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def default(rule_id: str):
    return find_rule(default_rules(load_settings()), rule_id)


def state_of(worker, rule_id: str, subject: str = "") -> dict:
    return worker.state[store.STATE].find_one({"_id": store.state_id(rule_id, subject)})


def decline_spike(platform_db, when: datetime) -> list:
    docs = [payment(when, "failed") for _ in range(40)] + [payment(when, "completed") for _ in range(10)]
    return platform_db.payments.insert_many(docs).inserted_ids


def fire_success_rate(worker, slack, platform_db) -> list:
    ids = decline_spike(platform_db, at(-1))
    worker.cycle(at(0))
    worker.cycle(at(5))
    (posted,) = slack.wait_for(1)
    assert "Payment success rate below 95%" in posted.text and "Resolved" not in posted.text
    assert state_of(worker, "payment_success_rate")["state"] == FIRING
    return ids


def test_a_checkout_outage_after_a_decline_spike_does_not_announce_resolved(worker_for, slack, platform_db):
    worker = worker_for([default("payment_success_rate")])
    ids = fire_success_rate(worker, slack, platform_db)
    platform_db.payments.delete_many({"_id": {"$in": ids}})  # no payment at all: a checkout outage
    for minute in range(6, 70, 2):
        worker.cycle(at(minute))
    doc = state_of(worker, "payment_success_rate")
    assert doc["state"] == FIRING
    assert doc["no_data_since"] is not None
    assert [p.text for p in slack.delivered() if "Resolved" in p.text] == []


def test_a_trickle_of_declines_below_the_minimum_samples_keeps_the_alert_firing(worker_for, slack, platform_db):
    worker = worker_for([default("payment_success_rate")])
    ids = fire_success_rate(worker, slack, platform_db)
    platform_db.payments.delete_many({"_id": {"$in": ids}})
    for minute in range(10, 130, 10):  # one declined payment every 10 minutes: at most 6 in the window
        platform_db.payments.insert_one(payment(at(minute) - timedelta(seconds=5), "failed"))
        worker.cycle(at(minute))
    assert state_of(worker, "payment_success_rate")["state"] == FIRING
    assert [p.text for p in slack.delivered() if "Resolved" in p.text] == []


def test_the_alert_resolves_on_a_real_observation_on_the_good_side(worker_for, slack, platform_db):
    worker = worker_for([default("payment_success_rate")])
    ids = fire_success_rate(worker, slack, platform_db)
    platform_db.payments.delete_many({"_id": {"$in": ids}})
    worker.cycle(at(20))  # no data: still firing
    platform_db.payments.insert_many([payment(at(25), "completed") for _ in range(60)])
    worker.cycle(at(26))
    resolved = slack.wait_for(2)[1]
    assert "Resolved" in resolved.text and "100" in resolved.text
    assert state_of(worker, "payment_success_rate")["no_data_since"] is None


def webhooks_and_stuck(worker_for):
    return worker_for([default("webhooks_missing"), default("stuck_payments")])


def messages_about(slack, words: str) -> list[str]:
    return [p.text for p in slack.delivered() if words in p.text]


def test_stuck_payments_hold_their_firing_message_while_webhooks_are_missing(worker_for, slack, platform_db):
    worker = webhooks_and_stuck(worker_for)
    platform_db.payments.insert_one(payment(at(-45), "processing"))  # stuck: no webhook completed it
    worker.cycle(at(0))
    slack.wait_for(1)
    assert state_of(worker, "stuck_payments")["state"] == FIRING
    worker.cycle(at(1))
    assert len(messages_about(slack, "No webhook events received")) == 1
    assert messages_about(slack, "Payments stuck") == []  # held: the cause is announced, not its symptom
    platform_db.webhook_events.insert_one(webhook_event(at(2)))  # webhooks arrive again
    for minute in (2, 8, 13):
        worker.cycle(at(minute))
    slack.wait_for(3)
    assert len(messages_about(slack, "Resolved: No webhook events received")) == 1
    assert len([t for t in messages_about(slack, "Payments stuck") if "Resolved" not in t]) == 1


def test_a_resolve_is_never_held_back_by_an_inhibiting_rule(worker_for, slack, platform_db):
    worker = webhooks_and_stuck(worker_for)
    platform_db.webhook_events.insert_one(webhook_event(at(-1)))
    stuck = platform_db.payments.insert_one(payment(at(-45), "processing")).inserted_id
    worker.cycle(at(0))
    (posted,) = slack.wait_for(1)
    assert "Payments stuck" in posted.text
    platform_db.webhook_events.delete_many({})  # webhooks stop: webhooks_missing fires
    platform_db.payments.delete_one({"_id": stuck})  # and the stuck payment was completed by hand
    worker.cycle(at(20))
    slack.wait_for(3)
    assert state_of(worker, "webhooks_missing")["state"] == FIRING
    assert len(messages_about(slack, "Resolved: Payments stuck")) == 1


def test_a_stuck_payment_count_flipping_every_minute_posts_at_most_two_messages_in_ten_minutes(
        worker_for, slack, platform_db):
    worker = worker_for([default("stuck_payments")])
    doc = payment(at(-45), "processing")
    for minute in range(11):
        if minute % 2 == 0:
            platform_db.payments.insert_one(dict(doc))
        else:
            platform_db.payments.delete_many({"paymentId": doc["paymentId"]})
        worker.cycle(at(minute))
    slack.wait_for(1)
    assert len(slack.delivered()) <= 2


def flip_every_five_minutes(worker, platform_db) -> None:
    """Three failed payments for five minutes, none for five, for an hour; then none for 70 minutes."""
    doc = payment(at(-1), "failed")
    ids = []
    for minute in range(0, 60, 5):
        if (minute // 5) % 2 == 0:
            ids = platform_db.payments.insert_many(
                [dict(doc, paymentId=f"pi_{minute}_{i}", createdAt=at(minute) - timedelta(seconds=10))
                 for i in range(3)]).inserted_ids
        else:
            platform_db.payments.delete_many({"_id": {"$in": ids}})
        worker.cycle(at(minute))
    platform_db.payments.delete_many({})
    for minute in range(60, 130, 5):  # quiet for over an hour: it settles clear
        worker.cycle(at(minute))


def test_a_rule_flipping_every_five_minutes_is_announced_flapping_once_then_settles(worker_for, slack, platform_db):
    from fakes.fixtures import make_rule
    worker = worker_for([make_rule(window=120, keep_firing_for=0)])  # no damping: only flap detection
    flip_every_five_minutes(worker, platform_db)
    texts = [p.text for p in slack.wait_for(6)]
    flapping = [t for t in texts if "is flapping" in t]
    assert len(flapping) == 1 and "changes between firing and clear in the last hour" in flapping[0]
    assert len(texts) == 6  # first, resolved, first, resolved, flapping, and one closing resolve
    assert "Resolved" in texts[-1] and "stopped flapping" in texts[-1]
    assert not state_of(worker, "too_many_failures")["flapping"]


def test_with_a_bot_token_the_resolve_that_ends_the_flapping_edits_the_flapping_message(worker_for, slack,
                                                                                       platform_db):
    from fakes.fixtures import make_rule
    from fakes.slack import TOKEN
    worker = worker_for([make_rule(window=120, keep_firing_for=0)], SLACK_WEBHOOK_URL=None, SLACK_BOT_TOKEN=TOKEN,
                        SLACK_CHANNEL="C0PAYMENTS", alerts={"slack_api_base": slack.api_base})
    flip_every_five_minutes(worker, platform_db)
    posts = slack.channel_messages("C0PAYMENTS")
    assert len(posts) == 3  # two firing episodes, each edited resolved, and the flapping announcement
    assert all(p.edits == 1 and p.header.startswith("✅ RESOLVED") for p in posts)
    assert "stopped flapping" in posts[-1].text or "stopped flapping" in str(posts[-1].blocks)
