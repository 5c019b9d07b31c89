"""The Alerts page, run by Streamlit's AppTest over what a real worker cycle stored.

The platform database is the demo seed at a fixed instant; one worker cycle
(console channel, no Slack) evaluates the default rules there and writes the
states, history, outbox and heartbeat the page reads.  Silences added and
ended on the page are read back with ``python -m alerts silences``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from streamlit.testing.v1 import AppTest

from alerts import outbox, store
from alerts.__main__ import main as alerts_cli
from alerts.worker import Worker
from demo.seed import seed
from metrics import db as dbmod
from metrics.embedded import free_port
from metrics.schema import DEFAULT_SCHEMA
from metrics.windows import iso

from test_dashboard import APP, TIMEOUT_S, texts

AT = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
INJECTION = "<!channel> *pwned* [click](javascript:alert(1)) `x`"


@pytest.fixture(autouse=True)
def _fresh(fresh_streamlit):
    """Empty caches and re-read settings before and after each test (tests/conftest.py)."""


@pytest.fixture(scope="module")
def seeded_name(mongo_client):
    """The demo's history up to AT: its stuck payments fire ``stuck_payments`` at AT."""
    name = f"alertspage_{uuid.uuid4().hex[:10]}"
    seed(mongo_client[name], DEFAULT_SCHEMA, days=8, per_day=40, now=AT)
    yield name
    mongo_client.drop_database(name)


@pytest.fixture
def env(monkeypatch, mongo_uri, db_names, seeded_name):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("PAYWATCH_SOURCE_DB", seeded_name)
    monkeypatch.setenv("PAYWATCH_DB", db_names[1])
    monkeypatch.setenv("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "1500")
    return monkeypatch


@pytest.fixture
def state(mongo_client, db_names):
    return mongo_client[db_names[1]]


@pytest.fixture
def cycled(env, make_settings, seeded_name, state):
    """One real worker cycle at AT: states, history, console messages, heartbeat."""
    worker = Worker(make_settings(source_db=seeded_name, alerts={"pace": 0}), use_lease=False)
    assert list(worker.channels) == ["console"]
    report = worker.cycle(AT)
    assert report["firing"] >= 1
    dbmod.reset()
    return report


def open_page(**query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params["at"] = iso(AT)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("views/alerts.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# Each table of the page, known by a column only it has.
TABLES = {"firing": "Data", "rules": "State since", "history": "Event", "silences": "Until", "outbox": "Next try"}


def table(at: AppTest, name: str):
    found = [df.value for df in at.dataframe if TABLES[name] in df.value.columns]
    assert len(found) <= 1
    return found[0] if found else None


def cli_json(capsys, *argv) -> object:
    capsys.readouterr()
    assert alerts_cli(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_the_page_shows_the_stored_states_values_and_thresholds(cycled, state):
    at = open_page()
    stored = {d["_id"]: d for d in state[store.STATE].find()}
    firing = [d for d in stored.values() if d["state"] == "firing"]
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Firing"] == str(len(firing))
    shown_firing = table(at, "firing")
    assert sorted(shown_firing["Rule"]) == sorted(d["rule_id"] for d in firing)
    assert "stuck_payments" in list(shown_firing["Rule"])
    rules = table(at, "rules")
    rows = {(r, s): (v, t, st_) for r, s, v, t, st_ in
            zip(rules["Rule"], rules["Subject"], rules["Value"], rules["Threshold"], rules["State"])}
    for doc in stored.values():
        assert rows[(doc["rule_id"], doc["subject"])] == (doc["value_text"], doc["threshold_text"], doc["state"])
    # A rule the worker could not read (no health URL) is listed, not dropped.
    assert rows[("api_latency", "")][2] == "not evaluated"


def test_history_outbox_console_and_heartbeat_come_from_the_worker(cycled, state):
    at = open_page()
    history = table(at, "history")
    transitions = list(state[store.HISTORY].find())
    assert len(history) == len(transitions)
    assert set(history["Rule"]) == {h["rule_id"] for h in transitions}
    assert at.get("echarts_chart"), "the history timeline is drawn"
    sent = outbox.list_messages(state, [outbox.SENT])
    assert sent and all(m["channel"] == "console" for m in sent)
    shown = [t.value for t in at.text]
    assert any(m["message"]["headline"] in text for m in sent for text in shown)
    assert "Nothing pending or dead" in texts(at.caption)
    assert "The alert worker is running" in texts(at.success)


def test_pending_and_dead_messages_are_listed(env, state):
    state[outbox.OUTBOX].insert_many([
        {"_id": "k1@slack", "key": "k1", "channel": "slack", "status": "dead", "attempts": 8, "seq": 1,
         "created_at": AT, "next_attempt_at": AT, "last_error": "HTTP 404: no_service",
         "message": {"headline": "Payment success rate below 95%: 80.0%"}},
        {"_id": "k2@slack", "key": "k2", "channel": "slack", "status": "pending", "attempts": 2, "seq": 2,
         "created_at": AT, "next_attempt_at": AT + timedelta(seconds=20), "last_error": "HTTP 429",
         "message": {"headline": "Refund rate above 5%: 7.0%"}},
    ])
    at = open_page()
    shown = table(at, "outbox")
    assert list(shown["Status"]) == ["dead", "pending"]
    assert list(shown["Last error"]) == ["HTTP 404: no_service", "HTTP 429"]
    assert list(shown["Attempts"]) == [8, 2]
    tiles = {m.label: m for m in at.metric}
    assert tiles["Outbox"].value == "1"


def test_a_silence_added_and_ended_on_the_page_is_what_the_cli_reads(cycled, capsys):
    at = open_page()
    at.selectbox(key="silence_rule").set_value("stuck_payments")
    at.text_input(key="silence_subject").set_value("usd")
    at.text_input(key="silence_for").set_value("90m")
    at.text_input(key="silence_reason").set_value("known: the processor is slow today")
    next(b for b in at.button if b.label == "Silence").click().run()
    assert not at.exception
    assert "Silenced stuck" in texts(at.success)
    (silence,) = cli_json(capsys, "silences", "--json")
    assert (silence["rule_id"], silence["subject"], silence["by"]) == ("stuck_payments", "usd", "dashboard")
    assert silence["reason"] == "known: the processor is slow today"
    until = datetime.fromisoformat(silence["until"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(silence["created_at"].replace("Z", "+00:00"))
    assert until - created == timedelta(minutes=90)
    shown = table(at, "silences")
    assert list(shown["Id"]) == [silence["_id"]]

    at.selectbox(key="silence_end").set_value(silence["_id"])
    next(b for b in at.button if b.label == "End silence now").click().run()
    assert not at.exception
    assert f"Silence {silence['_id']} ended" in texts(at.success)
    assert cli_json(capsys, "silences", "--json") == []
    assert table(at, "silences") is None


def test_a_bad_duration_is_refused_and_nothing_is_written(cycled, capsys):
    at = open_page()
    at.text_input(key="silence_for").set_value("soon")
    at.text_input(key="silence_reason").set_value("x")
    next(b for b in at.button if b.label == "Silence").click().run()
    assert "Not silenced" in texts(at.error)
    assert cli_json(capsys, "silences", "--json") == []


def test_a_silence_by_a_logged_in_user_records_their_email(env, capsys):
    from test_dashboard import AUTH

    env.setenv("PAYWATCH_AUTH_ALLOWED_DOMAINS", "example.com")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.secrets = AUTH
    at.user = {"is_logged_in": True, "email": "ops@example.com", "email_verified": True}
    at.query_params["at"] = iso(AT)
    at.run()
    at.switch_page("views/alerts.py").run()
    at.text_input(key="silence_reason").set_value("deploying")
    next(b for b in at.button if b.label == "Silence").click().run()
    (silence,) = cli_json(capsys, "silences", "--json")
    assert silence["by"] == "ops@example.com"


def test_markup_in_a_subject_is_shown_inert(env, state):
    now = datetime.now(timezone.utc)
    doc = {"_id": f"failed_payments|{INJECTION}", "rule_id": "failed_payments", "subject": INJECTION,
           "state": "firing", "severity": "warning", "since": now, "fired_at": now, "value": 12.0,
           "value_text": "12", "threshold_text": "> 10", "title": "More than 10 failed payments in 1 hour"}
    state[store.STATE].insert_one(doc)
    state[store.HISTORY].insert_one({"rule_id": "failed_payments", "subject": INJECTION, "event": "transition",
                                     "at": AT - timedelta(minutes=5), "from": "pending", "to": "firing",
                                     "value_text": "12"})
    store.add_silence(state, "failed_payments", INJECTION, now + timedelta(hours=1), INJECTION, "dashboard", now)
    at = open_page()
    # Tables show the text itself (a dataframe renders no Markdown or HTML).
    assert list(table(at, "firing")["Subject"]) == [INJECTION]
    assert INJECTION in list(table(at, "silences")["Subject"])
    assert INJECTION in list(table(at, "history")["Subject"])
    # Nowhere is it passed as Markdown unescaped.
    for element in [*at.markdown, *at.caption, *at.error, *at.warning, *at.success, *at.info]:
        assert "<!channel>" not in str(element.value)
        assert "[click](javascript" not in str(element.value)


def test_heartbeat_late_warns(env, state):
    state["heartbeats"].insert_one({"_id": "worker", "at": datetime.now(timezone.utc) - timedelta(minutes=10),
                                    "late_after_s": 180.0, "host": "worker-1", "pid": 42, "channels": ["console"]})
    at = open_page()
    assert "The alert worker is late" in texts(at.warning)


def test_no_heartbeat_says_the_worker_is_not_running(env):
    at = open_page()
    assert "No heartbeat from the alert worker yet" in texts(at.info)
    assert "Nothing is firing" in texts(at.success)


def test_a_database_down_shows_the_banner_and_no_made_up_zeros(env):
    env.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    env.setenv("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "300")
    at = open_page()
    assert "Data source unavailable since" in texts(at.error)
    assert not at.metric
    assert not at.dataframe


def test_a_firing_alert_without_data_a_flapping_one_and_a_held_one_say_so(env, state):
    base = {"state": "firing", "severity": "critical", "since": AT - timedelta(hours=1),
            "fired_at": AT - timedelta(hours=1), "value_text": "20.0%", "threshold_text": "< 95.0%",
            "title": "Payment success rate below 95%"}
    state[store.STATE].insert_many([
        {**base, "_id": "payment_success_rate|", "rule_id": "payment_success_rate", "subject": "",
         "no_data_since": AT - timedelta(minutes=40)},
        {**base, "_id": "failed_payments|", "rule_id": "failed_payments", "subject": "", "flapping": True},
        {**base, "_id": "stuck_payments|", "rule_id": "stuck_payments", "subject": "",
         "inhibited_by": "webhooks_missing"},
    ])
    at = open_page()
    firing = table(at, "firing").set_index("Rule")
    assert firing.loc["payment_success_rate", "Data"] == "no data since 20 Nov 14:20:00"
    assert firing.loc["failed_payments", "Data"] == "current, flapping"
    assert firing.loc["stuck_payments", "Data"] == "current, held while webhooks_missing fires"
    rules = table(at, "rules").set_index("Rule")
    assert "no data since" in rules.loc["payment_success_rate", "State"]
    assert "flapping" in rules.loc["failed_payments", "State"]
