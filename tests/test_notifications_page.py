"""The Notifications page, run by Streamlit's AppTest over what a real outbox recorded: every
attempt with its rule, channel, status, redacted error, latency and Slack link; given-up
messages as an error, each with a button that queues it again."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from alerts.config import load_config
from alerts.worker import Worker
from fakes.fixtures import FAST_ALERTS, slack  # noqa: F401 - fixture
from fakes.slack import TOKEN, Reply
from metrics import db as dbmod
from notify.channels.slack import SlackChannel
from notify.outbox import DEAD, PENDING, Outbox, ensure_indexes, list_messages

from test_dashboard import APP, TIMEOUT_S, texts

SECRET = "TOPSECRETTOKEN0123456789"


@pytest.fixture(autouse=True)
def _fresh(fresh_streamlit):
    """Empty caches and re-read settings before and after each test (tests/conftest.py)."""


def message(rule: str, title: str) -> dict:
    return {"kind": "firing", "reason": "first", "rule_id": rule, "subject": "EUR", "severity": "warning",
            "title": title, "headline": f"{title}: 12 (threshold > 10)", "fields": [], "details": [],
            "runbook": None, "link": "http://localhost:8501/alerts", "at": "2026-11-26T12:00:00Z"}


@pytest.fixture
def delivered(env, make_settings, slack):
    """A bot channel that posts (one message after a 429), and a malformed webhook that is given up."""
    settings = make_settings(alerts={**FAST_ALERTS, "pace": 0})
    channels = {"slack": SlackChannel(token=TOKEN, channel="C0PAYMENTS", api_base=slack.api_base, timeout_s=3),
                "hook": SlackChannel(webhook_url=f"hooks.slack.com/services/T0000/B0000/{SECRET}", timeout_s=1)}
    box = Outbox(dbmod.state_db(settings), settings, load_config(settings), channels)
    ensure_indexes(box.db)
    box.enqueue("failures|EUR|1|firing", message("too_many_failures", "Too many failed payments"), ["slack"])
    box.enqueue("latency||1|firing", message("api_latency", "API latency"), ["hook"])
    slack.answer_next(Reply(429, {"Retry-After": "0"}))
    box.deliver(budget_s=5)
    dbmod.reset()
    return box


def open_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    at.switch_page("views/notifications.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def attempts_table(at: AppTest):
    (table,) = [df.value for df in at.dataframe if "Latency (ms)" in df.value.columns]
    return table


def test_every_attempt_is_listed_with_rule_channel_status_error_latency_and_link(delivered, slack):
    at = open_page()
    table = attempts_table(at)
    rows = list(zip(table["Rule"], table["Channel"], table["Status"], table["Error"], table["Slack"]))
    posted, notice = slack.channel_messages("C0PAYMENTS")  # the alert, then the notice that "hook" failed
    assert "Too many failed payments" in posted.header and "delivery to hook failed" in notice.header
    link = f"{slack.team_url}archives/C0PAYMENTS/p{posted.ts.replace('.', '')}"
    assert ("too_many_failures [EUR]", "slack", "sent", "", link) in rows
    assert any(r[:3] == ("too_many_failures [EUR]", "slack", "retry") and "HTTP 429" in r[3] for r in rows)
    assert any(r[:3] == ("api_latency [EUR]", "hook", "given up") and "unknown url type" in r[3] for r in rows)
    assert ("delivery failure: api_latency [EUR]", "slack", "sent") in [r[:3] for r in rows]
    assert all(latency >= 0 for latency in table["Latency (ms)"])


def test_a_given_up_message_is_an_error_on_the_page_without_its_secret(delivered):
    at = open_page()
    shown = texts(at.error) + texts(at.markdown) + attempts_table(at).to_string()
    assert "Delivery is failing: 1 message was given up" in texts(at.error)
    assert "API latency" in texts(at.markdown)
    assert SECRET not in shown


def test_queue_again_puts_a_given_up_message_back_in_the_outbox(delivered, mongo_client, db_names):
    state = mongo_client[db_names[1]]
    (dead,) = list_messages(state, [DEAD])
    at = open_page()
    at.button(key=f"requeue-{dead['_id']}").click().run()
    assert not at.exception
    (again,) = [d for d in list_messages(state, [PENDING]) if d["_id"] == dead["_id"]]
    assert "expire_at" not in again and again["failures"] == 0


def test_the_overview_says_when_delivery_is_failing(delivered, make_settings, slack, mongo_client, db_names):
    worker = Worker(make_settings(alerts={**FAST_ALERTS, "pace": 0}, PAYWATCH_HEARTBEAT_URL=slack.ping_url),
                    rules=[], use_lease=False)
    worker.cycle()
    assert slack.pings[-1].endswith("/fail")
    dbmod.reset()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Alert delivery is failing**: 1 message given up" in texts(at.error)
