"""One redaction function for every error text shown to people: the first line, no secrets."""

from __future__ import annotations

import logging

import pytest

from notify.channels import build_channels
from notify.channels.slack import SlackChannel
from alerts.config import load_config
from notify.outbox import Outbox, ensure_indexes
from fakes.fixtures import FAST_ALERTS, slack  # noqa: F401 - fixture
from metrics.db import state_db
from metrics.redact import describe, redact
from metrics.settings import SettingsError

TOKEN = "TOPSECRETTOKEN0123456789"
SCHEMELESS = f"hooks.slack.com/services/T0000000/B0000000/{TOKEN}"


@pytest.mark.parametrize("text, secret, kept", [
    (f"ValueError: unknown url type: '{SCHEMELESS}'", TOKEN, "unknown url type"),
    (f"HTTPSConnectionPool(host='hooks.slack.com'): Max retries exceeded with url: /services/T0/B0/{TOKEN}",
     TOKEN, "Max retries exceeded"),
    ("connection refused: mongodb://admin:s3cr3t-pw@db.example.com:27017/?authSource=admin", "s3cr3t-pw",
     "db.example.com:27017"),
    ("mongodb+srv://paywatch:p%40ss%2Fw0rd@cluster0.example.net/payments", "p%40ss%2Fw0rd", "cluster0.example.net"),
    ("could not parse paywatch:hunter2@localhost:27017", "hunter2", "localhost:27017"),
    ("Invalid API Key provided: sk_live_51HabcDEF0123456789xyz", "51HabcDEF0123456789xyz", "Invalid API Key"),
    ("restricted key rk_test_abcdefghijklmnop0123 is expired", "abcdefghijklmnop0123", "is expired"),
    ("signing secret whsec_0123456789abcdefABCDEF rejected", "0123456789abcdefABCDEF", "rejected"),
    ("Slack said invalid_auth for xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "AbCdEfGhIjKlMnOp", "invalid_auth"),
    ("header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig was refused", "eyJhbGciOiJIUzI1NiJ9", "refused"),
    ("GET https://api.example.com/ping?token=abc123secret&check=1 failed", "abc123secret", "api.example.com/ping"),
    ("password=letmein99 in the config", "letmein99", "in the config"),
])
def test_secrets_are_dropped_and_the_rest_is_kept(text, secret, kept):
    out = redact(text)
    assert secret not in out and kept in out


def test_only_the_first_line_is_kept_and_long_texts_are_cut():
    assert redact("first line\nsecond line: sk_live_abcdefghijklmnop") == "first line"
    assert len(redact("x" * 5000, limit=300)) == 300


def test_an_empty_message_is_never_a_failure():
    assert redact("") == "" and redact(None) == ""
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ValueError(f"bad url {SCHEMELESS}")).startswith("ValueError: bad url hooks.slack.com/")


def test_a_known_secret_is_dropped_wherever_it_appears():
    assert redact("proxy answered for hunter2-but-longer", secrets=["hunter2-but-longer"]) == "proxy answered for ***"


def test_a_webhook_url_without_its_scheme_stops_the_worker_in_one_line_without_the_token(make_settings):
    settings = make_settings(SLACK_WEBHOOK_URL=SCHEMELESS)
    with pytest.raises(SettingsError) as caught:
        build_channels(settings, load_config(settings))
    assert "SLACK_WEBHOOK_URL" in str(caught.value) and TOKEN not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_malformed_webhook_url_leaks_its_token_nowhere(make_settings, caplog):
    settings = make_settings(alerts={**FAST_ALERTS, "outbox_max_attempts": 1})
    box = Outbox(state_db(settings), settings, load_config(settings),
                 {"slack": SlackChannel(webhook_url=SCHEMELESS, timeout_s=1)})
    ensure_indexes(box.db)
    box.enqueue("key-1", {"kind": "firing", "reason": "first", "rule_id": "r", "subject": "", "severity": "warning",
                          "title": "Rule", "headline": "Rule: 12", "fields": [], "details": [], "runbook": None,
                          "link": "http://localhost:8501/alerts", "at": "2026-11-26T12:00:00Z"})
    with caplog.at_level(logging.DEBUG):
        box.deliver(budget_s=1)
    stored = str(list(box.db["outbox"].find())) + str(list(box.db["notify_attempts"].find()))
    assert "unknown url type" in stored or "hooks.slack.com" in stored  # the error is there, without the token
    assert TOKEN not in stored
    assert TOKEN not in caplog.text
