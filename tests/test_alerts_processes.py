"""Real worker processes (``python -m alerts run``): two replicas, a leader killed, a sender killed mid-send."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alerts import outbox
from alerts.lease import LEASES, WORKER_LEASE
from alerts.rules import default_rules
from fakes.fixtures import slack  # noqa: F401 - fixture
from fakes.platform import payment
from fakes.slack import TOKEN, Reply
from metrics.embedded import stop_process
from metrics.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
BOT_CHANNEL = "C0PAYMENTS"


@pytest.fixture
def start_worker(mongo_uri, db_names, slack, tmp_path):
    """Start ``python -m alerts run`` with one rule (more than 2 failed payments in 10 minutes)."""
    config = tmp_path / "paywatch.toml"
    lines = ["[alerts]", "pace = 0.02", "outbox_backoff = 0.2", "outbox_interval = 0.3", "lease = 1.5",
             "claim_timeout = 2", "send_timeout = 1", "misfire_grace = 5", f'slack_api_base = "{slack.api_base}"',
             "[alerts.rules.failed_payments]", "threshold = 2", "window = 600", "keep_firing_for = 0"]
    for rule in default_rules(load_settings()):
        if rule.id != "failed_payments":
            lines += [f"[alerts.rules.{rule.id}]", "enabled = false"]
    lines += ["[reports]", "enabled = false"]  # only the alert's messages reach the fake Slack
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
           "SLACK_WEBHOOK_URL": slack.webhook_url, "PAYWATCH_CONFIG": str(config), "PAYWATCH_EVAL_INTERVAL": "0.5",
           "PAYWATCH_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    started: list[subprocess.Popen] = []

    def start(name: str, *, bot: bool = False) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")
        slack_env = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_CHANNEL": BOT_CHANNEL} if bot else {}
        proc_env = {k: v for k, v in {**env, **slack_env}.items() if not (bot and k == "SLACK_WEBHOOK_URL")}
        proc = subprocess.Popen([sys.executable, "-m", "alerts", "run"], cwd=ROOT, env=proc_env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc.log_path = tmp_path / f"{name}.log"
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc, timeout=5)


def leader_pid(mongo_client, db_names, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lease = mongo_client[db_names[1]][LEASES].find_one({"_id": WORKER_LEASE})
        if lease and lease.get("holder"):
            return int(lease["holder"].split(":")[1])
        time.sleep(0.1)
    raise AssertionError("no worker took the lease")


def failing(platform_db) -> list:
    now = datetime.now(timezone.utc)
    return platform_db.payments.insert_many([payment(now - timedelta(seconds=20)) for _ in range(3)]).inserted_ids


def test_two_workers_post_once_and_the_standby_takes_over_when_the_leader_dies(start_worker, slack, platform_db,
                                                                              mongo_client, db_names):
    ids = failing(platform_db)
    workers = {p.pid: p for p in (start_worker("a"), start_worker("b"))}
    slack.wait_for(1, timeout=30)
    time.sleep(2)  # several cycles of both replicas
    assert len(slack.delivered()) == 1

    leader = workers.pop(leader_pid(mongo_client, db_names))
    leader.send_signal(signal.SIGKILL)  # no release: the standby waits for the lease to expire
    leader.wait(timeout=5)
    platform_db.payments.delete_many({"_id": {"$in": ids}})
    resolved = slack.wait_for(2, timeout=30)[1]
    assert "Resolved" in resolved.text
    assert len(slack.delivered()) == 2
    (standby,) = workers.values()
    assert leader_pid(mongo_client, db_names) == standby.pid

    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=15) == 0
    assert "alert worker stopped" in standby.log_path.read_text()


def test_a_worker_killed_mid_send_loses_nothing(start_worker, slack, platform_db, mongo_client, db_names):
    failing(platform_db)
    slack.answer_next(Reply(200, hold_s=8))  # Slack receives the post but the worker dies before the answer
    first = start_worker("first")
    slack.wait_for(1, timeout=30, delivered_only=False)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    (doc,) = outbox.list_messages(mongo_client[db_names[1]], [outbox.SENDING])

    second = start_worker("second")
    slack.wait_for(2, timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sent = outbox.list_messages(mongo_client[db_names[1]], [outbox.SENT])
        if sent:
            break
        time.sleep(0.1)
    assert [d["_id"] for d in sent] == [doc["_id"]]
    assert sent[0]["attempts"] == 2
    # At least once: Slack saw the same message twice, and nothing else.
    assert len(slack.requests) == 2 and slack.requests[0].text == slack.requests[1].text
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0


def test_a_worker_killed_mid_post_to_a_bot_channel_posts_the_message_once(start_worker, slack, platform_db,
                                                                        mongo_client, db_names):
    failing(platform_db)
    slack.answer_next(Reply(200, hold_s=8))  # Slack posts it, but the worker dies before the answer
    first = start_worker("first", bot=True)
    slack.wait_for(1, timeout=30, delivered_only=False)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=5)

    second = start_worker("second", bot=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sent = outbox.list_messages(mongo_client[db_names[1]], [outbox.SENT])
        if sent:
            break
        time.sleep(0.1)
    assert len(sent) == 1 and sent[0]["attempts"] == 2
    # Exactly once: the second worker found the post by its key in the message metadata.
    assert len(slack.posts()) == 1 and len(slack.channel_messages(BOT_CHANNEL)) == 1
    assert sent[0]["post"]["ref"]["ts"] == slack.channel_messages(BOT_CHANNEL)[0].ts
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0
