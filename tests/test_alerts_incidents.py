"""Each default rule fires on the demo's matching incident, and stays quiet on an ordinary hour.

The demo history is seeded once for the module at the demo's own volume
(``DEFAULT_PER_DAY`` payments a day: the rules' minimum samples and
confidence bounds are judged at the volume ``make run`` shows) over 34 days,
so the amount-spike rule has its four weeks of baseline.  Each case runs
``python -m alerts evaluate --once --at ISO --json`` in-process at an instant
inside the incident (the times come from the seed's ``incidents``).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from alerts.__main__ import main as alerts_cli
from demo.seed import DEFAULT_PER_DAY, seed
from metrics import db as dbmod
from metrics.schema import DEFAULT_SCHEMA
from metrics.windows import iso

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)  # a Thursday, as in tests/test_demo.py
DAYS = 34  # the amount spike (D-4) needs four earlier weeks of the same hour


@pytest.fixture(scope="module")
def demo(mongo_client):
    """(database name, incidents) of one seeded demo history, shared by every case (the seed is slow)."""
    name = f"incidents_{uuid.uuid4().hex[:10]}"
    result = seed(mongo_client[name], DEFAULT_SCHEMA, days=DAYS, per_day=DEFAULT_PER_DAY, now=NOW)
    yield name, result["incidents"]
    mongo_client.drop_database(name)


@pytest.fixture
def evaluate(monkeypatch, mongo_uri, db_names, demo, capsys):
    """``evaluate(at)``: the CLI's JSON for that instant, as {(rule, subject): summary}."""
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("PAYWATCH_SOURCE_DB", demo[0])
    monkeypatch.setenv("PAYWATCH_DB", db_names[1])

    def run(at: datetime) -> dict:
        capsys.readouterr()
        assert alerts_cli(["evaluate", "--once", "--at", iso(at), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["source_error"] is None and not out["notes"]
        return {(r["rule"], r["subject"]): r for r in out["rules"]}

    yield run
    dbmod.reset()


def breaching(result: dict) -> set[tuple[str, str]]:
    return {key for key, r in result.items() if r["breached"]}


# incident -> (instant inside it, the rules (and subjects) that must fire there)
CASES = {
    "decline_spike": (lambda i: i["start"] + timedelta(minutes=50),
                      {("payment_success_rate", ""), ("failed_payments", "")}),
    # The 1 h window lies wholly inside the 70-minute outage.
    "webhook_outage": (lambda i: i["start"] + timedelta(minutes=65), {("webhooks_missing", "")}),
    "amount_spike": (lambda i: i["end"] - timedelta(minutes=5), {("payment_amount_spike", "usd")}),
    "duplicate_enrollment": (lambda i: i["end"] + timedelta(minutes=5), {("duplicate_enrollments", "")}),
    "refund_wave": (lambda i: i["end"] - timedelta(minutes=5), {("refund_rate", "")}),
    "stuck_payments": (lambda i: NOW, {("stuck_payments", "")}),
}


@pytest.mark.parametrize("incident", list(CASES))
def test_the_matching_rule_fires_inside_the_incident(demo, evaluate, incident):
    instant, expected = CASES[incident]
    at = instant(demo[1][incident])
    result = evaluate(at)
    assert expected <= breaching(result), {k: (r["value_text"], r["samples"]) for k, r in result.items() if k in expected}
    for key in expected:
        rule = result[key]
        assert rule["state"] in ("pending", "firing")  # from inactive: firing at once, or after `for`
        assert not rule["unknown"]


def test_the_webhook_outage_rule_clears_once_the_backlog_arrives(demo, evaluate):
    outage = demo[1]["webhook_outage"]
    assert ("webhooks_missing", "") not in breaching(evaluate(outage["end"] + timedelta(minutes=10)))


def test_the_decline_spike_rules_are_quiet_the_hour_before(demo, evaluate):
    spike = demo[1]["decline_spike"]
    before = breaching(evaluate(spike["start"] - timedelta(minutes=1)))
    assert not before & CASES["decline_spike"][1]


def test_malformed_documents_are_left_out_without_making_a_rule_unknown_or_fire(demo, evaluate):
    """The malformed hour has no rule of its own: the metrics count those documents as invalid and carry on."""
    result = evaluate(demo[1]["malformed"]["end"] - timedelta(minutes=5))
    assert not [k for k, r in result.items() if r["unknown"]]
    assert not breaching(result)
    assert result[("payment_success_rate", "")]["samples"] > 0


def test_an_ordinary_afternoon_fires_nothing(demo, evaluate):
    quiet = NOW.replace(hour=15) - timedelta(days=9)  # a weekday afternoon, days from every incident
    result = evaluate(quiet)
    assert not breaching(result), {k: r["value_text"] for k, r in result.items() if r["breached"]}
    # The rules were judged on data, not skipped for lack of it.
    for rule in ("payment_success_rate", "refund_rate", "webhooks_missing"):
        assert result[(rule, "")]["samples"], rule
