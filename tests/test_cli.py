"""``python -m metrics`` as a user runs it: a subprocess against the test server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from metrics.embedded import free_port

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# The snapshot keys scripts depend on (spec section 5); more may be added, none renamed.
SPEC_KEYS = {
    "at": None, "timezone": None,
    "payments": {
        "revenue": {"today": None, "week": None, "month": None},
        "24h": {"succeeded": None, "failed": None, "success_rate": None, "revenue": None,
                "avg_transaction_value": None, "refunds": None, "refund_rate": None,
                "processing_ms": {"avg": None, "p95": None}},
        "stuck": None,
    },
    "webhooks": {
        "24h": {"received": None, "processed": None, "failed": None, "failure_rate": None,
                "processing_ms": {"avg": None, "p95": None}, "delivery_lag_ms": {"avg": None, "p95": None}},
        "last_received_at": None, "latest": None,
    },
    "enrollments": {
        "new_today": None,
        "24h": {"created": None, "converted": None, "conversion_rate": None, "refunded": None,
                "activation_ms": {"avg": None, "p95": None}, "email_ms": {"avg": None, "p95": None}},
        "pending_payments": None, "duplicates": None,
    },
    "system": None,
    "data_quality": {"payments": {"invalid": None}, "enrollments": {"invalid": None},
                     "webhook_events": {"invalid": None}},
}


def missing_keys(spec: dict, data: dict, path: str = "") -> list[str]:
    missing = []
    for key, sub in spec.items():
        if key not in data:
            missing.append(path + key)
        elif sub is not None:
            missing += missing_keys(sub, data[key], f"{path}{key}.")
    return missing


@pytest.fixture
def platform(platform_db):
    platform_db.payments.insert_many([
        {"paymentId": "pi_1", "amount": 1200, "currency": "usd", "status": "completed",
         "createdAt": AT - timedelta(hours=1), "completedAt": AT - timedelta(hours=1) + timedelta(milliseconds=900)},
        {"paymentId": "pi_2", "amount": 800, "currency": "eur", "status": "completed", "createdAt": AT - timedelta(hours=2)},
        {"paymentId": "pi_3", "amount": 500, "currency": "usd", "status": "failed", "createdAt": AT - timedelta(hours=3)},
        {"paymentId": "pi_4", "amount": 9999, "currency": "usd", "status": "completed", "createdAt": AT + timedelta(hours=1)},
    ])
    platform_db.webhook_events.insert_one({"eventId": "evt_1", "type": "payment_intent.succeeded", "status": "processed",
                                           "receivedAt": AT - timedelta(minutes=5)})
    return platform_db


def test_snapshot_json_has_every_spec_key_and_the_hand_worked_values(run, platform):
    result = run("snapshot", "--json", "--at", "2026-11-26T12:00:00Z")
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert missing_keys(SPEC_KEYS, snap) == []
    assert snap["at"] == "2026-11-26T12:00:00Z"
    # pi_1 usd 1200 and pi_2 eur 800 succeeded, pi_3 failed; pi_4 is after --at.
    assert snap["payments"]["24h"]["revenue"] == {"eur": 800, "usd": 1200}
    assert snap["payments"]["24h"]["success_rate"] == pytest.approx(2 / 3)
    assert snap["payments"]["24h"]["processing_ms"] == {"avg": 900, "p95": 900}
    assert snap["webhooks"]["last_received_at"] == "2026-11-26T11:55:00Z"
    assert snap["enrollments"]["24h"]["conversion_rate"] is None  # no enrollments: null, not 0
    assert snap["system"]["connections"]["current"] >= 1


def test_snapshot_at_a_fixed_instant_is_reproducible(run, platform):
    first = json.loads(run("snapshot", "--json", "--at", "2026-11-26T07:00:00-05:00").stdout)
    second = json.loads(run("snapshot", "--json", "--at", "2026-11-26T12:00:00Z").stdout)
    # The same instant written two ways; the live system figures are the only part that may move.
    first.pop("system"), second.pop("system")
    assert first == second
    assert first["at"] == "2026-11-26T12:00:00Z"


def test_snapshot_without_json_prints_a_readable_table(run, platform):
    result = run("snapshot", "--at", "2026-11-26T12:00:00Z", PAYWATCH_TIMEZONE="Asia/Tokyo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Paywatch snapshot at 2026-11-26T12:00:00Z (Asia/Tokyo)")
    assert "€8.00 · $12.00" in out  # revenue today in Tokyo (from 11-25T15:00Z): both payments
    assert "66.7%" in out  # success rate 2 / 3
    assert "900 ms / 900 ms" in out
    for label in ("Revenue this month", "Stuck payments", "Events received (24h)", "Duplicate enrollments",
                  "Invalid payments documents"):
        assert label in out


def test_help_describes_the_commands(run):
    result = run("--help")
    assert result.returncode == 0
    assert "snapshot" in result.stdout and "indexes" in result.stdout
    sub = run("snapshot", "--help")
    assert sub.returncode == 0 and "--at" in sub.stdout and "--json" in sub.stdout


def test_an_unreachable_database_is_one_line_on_stderr_and_a_nonzero_exit(run):
    port = free_port()  # nobody listens here
    result = run("snapshot", "--json", MONGODB_URI=f"mongodb://127.0.0.1:{port}/?directConnection=true",
                 PAYWATCH_SERVER_SELECTION_TIMEOUT_MS="1000")
    assert result.returncode != 0
    assert result.stdout == ""  # no half-written JSON for a script to misread
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unavailable" in result.stderr


def test_indexes_on_an_unreachable_database_is_one_line_too(run):
    result = run("indexes", MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
                 PAYWATCH_SERVER_SELECTION_TIMEOUT_MS="1000")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bad_at_is_a_usage_error(run):
    result = run("snapshot", "--at", "yesterday")
    assert result.returncode == 2
    assert "usage:" in result.stderr and "not an ISO-8601 instant" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_setting_is_one_line_and_exit_2(run):
    result = run("snapshot", PAYWATCH_TIMEZONE="Mars/Olympus_Mons")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "paywatch: configuration error: PAYWATCH_TIMEZONE: unknown time zone 'Mars/Olympus_Mons' "
        "(use an IANA name such as Europe/Berlin)"]


def test_indexes_lists_the_missing_ones_and_create_makes_them(run, platform):
    listed = run("indexes")
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if line.startswith(("MISSING", "ok"))]
    assert len(lines) == 10 and all(line.startswith("MISSING") for line in lines)
    assert "MISSING payments {createdAt: 1}" in listed.stdout
    assert "10 missing; create them with: python -m metrics indexes --create" in listed.stdout

    created = run("indexes", "--create")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created 10 index(es)")
    assert "paywatch_status_1_createdAt_1" in created.stdout
    assert "paywatch_createdAt_1" in platform.payments.index_information()

    again = run("indexes")
    assert "MISSING" not in again.stdout and "missing;" not in again.stdout
    assert run("indexes", "--create").stdout.strip() == "created 0 index(es)"
