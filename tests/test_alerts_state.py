"""The alert state machine and the notify decision: pure functions, table-driven."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from alerts.config import AlertsConfig, human_duration, load_config, parse_duration
from alerts.rules import Rule, default_rules, load_rules
from alerts.state import (FIRING, INACTIVE, PENDING, RESOLVED, AlertState, Observation, after_notify, dedup_key,
                          next_state, notify_reason)
from metrics.settings import SettingsError, load_settings

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(**overrides) -> Rule:
    fields = dict(id="r", title="R", metric="failed_payments", comparison=">", threshold=10, window=60,
                  **{"for": 10}, keep_firing_for=5, min_samples=0)
    fields.update(overrides)
    return Rule.model_validate(fields)


BREACH, CLEAR, FEW = Observation(20, 100), Observation(3, 100), Observation(20, 2)

NEXT_STATE_CASES = [
    # (description, rule overrides, prev, observation, now, expected state)
    ("inactive stays inactive below the threshold", {}, AlertState(), CLEAR, t(0), INACTIVE),
    ("a breach with `for` starts pending", {}, AlertState(), BREACH, t(0), PENDING),
    ("a breach with for=0 fires at once", {"for": 0}, AlertState(), BREACH, t(0), FIRING),
    ("pending before `for` has passed stays pending", {},
     AlertState(state=PENDING, since=t(0), active_at=t(0)), BREACH, t(9), PENDING),
    ("pending fires once `for` has passed", {},
     AlertState(state=PENDING, since=t(0), active_at=t(0)), BREACH, t(10), FIRING),
    ("pending fires at the cycle that comes a fraction of a second short of `for` (clock jitter)", {},
     AlertState(state=PENDING, since=t(0.4), active_at=t(0.4)), BREACH, t(10.1), FIRING),
    ("pending a whole second short of `for` stays pending", {},
     AlertState(state=PENDING, since=t(0), active_at=t(0)), BREACH, t(8.9), PENDING),
    ("pending that clears goes back to inactive, unannounced", {},
     AlertState(state=PENDING, since=t(0), active_at=t(0)), CLEAR, t(5), INACTIVE),
    ("firing keeps firing while breached", {},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), BREACH, t(60), FIRING),
    ("firing keeps firing within keep_firing_for of the last breach", {},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(10)), CLEAR, t(14), FIRING),
    ("firing resolves once keep_firing_for has passed", {},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(10)), CLEAR, t(15), RESOLVED),
    ("without keep_firing_for, firing resolves at the first clear evaluation", {"keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(10)), CLEAR, t(11), RESOLVED),
    ("resolved and breached again starts a new pending episode", {},
     AlertState(state=RESOLVED, fired_at=t(0), resolved_at=t(20)), BREACH, t(30), PENDING),
    ("too few samples is not a breach", {"min_samples": 10}, AlertState(), FEW, t(0), INACTIVE),
    ("too few samples lets a firing alert resolve", {"min_samples": 10, "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), FEW, t(1), RESOLVED),
    ("no value (nothing to divide) is not a breach", {}, AlertState(), Observation(None, 0), t(0), INACTIVE),
    ("unknown data never resolves a firing alert", {"keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), None, t(3600), FIRING),
    ("unknown data never starts an alert either", {}, AlertState(), None, t(0), INACTIVE),
    ("unknown data does not fire a pending alert", {},
     AlertState(state=PENDING, since=t(0), active_at=t(0)), None, t(60), PENDING),
]


@pytest.mark.parametrize("desc,overrides,prev,obs,now,expected", NEXT_STATE_CASES, ids=[c[0] for c in NEXT_STATE_CASES])
def test_next_state_follows_the_table(desc, overrides, prev, obs, now, expected):
    new = next_state(rule(**overrides), obs, prev, now)
    assert new.state == expected
    assert new.unknown == (obs is None)


def test_firing_records_when_the_episode_began_and_resolved_records_when_it_ended():
    r = rule(**{"for": 0, "keep_firing_for": 0})
    firing = next_state(r, BREACH, AlertState(), t(0))
    assert (firing.fired_at, firing.since) == (t(0), t(0))
    resolved = next_state(r, CLEAR, firing, t(42))
    assert (resolved.fired_at, resolved.resolved_at) == (t(0), t(42))


def test_a_flapping_value_stays_one_firing_episode():
    r = rule(**{"for": 0, "keep_firing_for": 5})
    st = AlertState()
    states = []
    for second, obs in enumerate([BREACH, CLEAR, BREACH, CLEAR, BREACH, CLEAR, CLEAR, CLEAR, CLEAR, CLEAR, CLEAR]):
        st = next_state(r, obs, st, t(second * 2))
        states.append(st.state)
    # The last breach is at 8 s: it keeps firing until 8 + 5 s, then stays resolved.
    assert states == [FIRING] * 7 + [RESOLVED] * 4
    assert st.fired_at == t(0)


REPEAT = timedelta(hours=4)
ANNOUNCED = AlertState(state=FIRING, fired_at=t(0), notified_fired_at=t(0), last_notified_at=t(0))

NOTIFY_CASES = [
    ("a new firing episode is announced", AlertState(state=FIRING, fired_at=t(0)), t(0), False, "first"),
    ("a silenced firing episode is held back", AlertState(state=FIRING, fired_at=t(0)), t(0), True, "none"),
    ("an announced firing alert is not announced again", ANNOUNCED, t(60), False, "none"),
    ("an announced firing alert repeats after repeat_interval", ANNOUNCED, t(4 * 3600), False, "repeat"),
    ("a silence holds back the repeat", ANNOUNCED, t(4 * 3600), True, "none"),
    ("no repeat on unknown data", replace(ANNOUNCED, unknown=True), t(5 * 3600), False, "none"),
    ("an announced episode that resolved is announced resolved",
     replace(ANNOUNCED, state=RESOLVED, resolved_at=t(90)), t(90), False, "resolved"),
    ("the resolved message goes out even under a silence",
     replace(ANNOUNCED, state=RESOLVED, resolved_at=t(90)), t(90), True, "resolved"),
    ("an episode never announced resolves quietly",
     AlertState(state=RESOLVED, fired_at=t(0), resolved_at=t(90)), t(90), False, "none"),
    ("a resolved message is sent once",
     replace(ANNOUNCED, state=RESOLVED, resolved_at=t(90), notified_resolved_at=t(90)), t(200), False, "none"),
    ("pending is never announced", AlertState(state=PENDING, active_at=t(0)), t(0), False, "none"),
    ("a new episode after a resolved one is announced again",
     replace(ANNOUNCED, fired_at=t(500), resolved_at=None), t(500), False, "first"),
]


@pytest.mark.parametrize("desc,st,now,silenced,expected", NOTIFY_CASES, ids=[c[0] for c in NOTIFY_CASES])
def test_notify_reason_follows_the_table(desc, st, now, silenced, expected):
    decision = notify_reason(st, now, REPEAT, silenced)
    assert decision.reason == expected
    assert decision.why


def test_after_notify_records_the_announcement_so_the_next_decision_is_none():
    st = AlertState(state=FIRING, fired_at=t(0))
    st = after_notify(st, "first", t(1))
    assert notify_reason(st, t(2), REPEAT, False).reason == "none"
    st = after_notify(st, "repeat", t(4 * 3600 + 1))
    assert st.repeats == 1 and st.last_notified_at == t(4 * 3600 + 1)


def test_dedup_keys_are_stable_per_message_and_differ_between_messages():
    st = AlertState(state=FIRING, fired_at=t(0))
    first = dedup_key("r", "usd", st, "first")
    assert first == dedup_key("r", "usd", st, "first")
    assert len({first, dedup_key("r", "usd", st, "resolved"), dedup_key("r", "usd", st, "repeat"),
                dedup_key("r", "eur", st, "first"), dedup_key("r", "usd", replace(st, fired_at=t(1)), "first")}) == 5


# -- durations and configuration ------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [(30, 30), (1.5, 1.5), ("45", 45), ("90s", 90), ("5m", 300), ("2h", 7200),
                                          ("1d", 86400), ("1h30m", 5400), ("1h 30m", 5400), ("250ms", 0.25),
                                          ("1w", 604800), ("10min", 600)])
def test_durations_read_as_seconds_or_with_units(text, seconds):
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "soon", "5 parsecs", "-5", -1, True, "m5", "5m garbage"])
def test_a_bad_duration_is_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_durations_print_the_way_people_write_them():
    assert human_duration(timedelta(hours=1, minutes=30)) == "1h 30m"
    assert human_duration(timedelta(seconds=90)) == "1m 30s"
    assert human_duration(timedelta(days=1)) == "1d"


def test_every_default_rule_names_runbook_steps_from_the_guide():
    rules = default_rules(load_settings())
    assert len(rules) == len({r.id for r in rules}) >= 20
    for r in rules:
        assert r.runbook.section.startswith(("Emergency Response", "Runbook:")), r.id
        assert len(r.runbook.steps) >= 2, r.id
        assert r.description, r.id


def test_paywatch_toml_changes_a_default_rule_and_adds_one():
    settings = load_settings(alerts={"repeat_interval": "30m", "rules": {
        "payment_success_rate": {"threshold": 0.9, "for": "30s"},
        "eur_failures": {"title": "EUR failures", "metric": "failed_payments", "comparison": ">", "threshold": 3,
                         "window": "15m", "split": "currency"},
    }})
    config = load_config(settings)
    rules = {r.id: r for r in load_rules(settings, config)}
    assert config.repeat_interval == timedelta(minutes=30)
    assert rules["payment_success_rate"].threshold == 0.9
    assert rules["payment_success_rate"].for_ == timedelta(seconds=30)
    assert rules["payment_success_rate"].min_samples == 20  # the rest of the default stays
    assert rules["eur_failures"].split == "currency"


@pytest.mark.parametrize("alerts,fragment", [
    ({"rules": {"payment_success_rate": {"threshold": "high"}}}, "[alerts.rules.payment_success_rate].threshold"),
    ({"rules": {"new_rule": {"title": "x", "metric": "nope", "comparison": ">", "threshold": 1}}}, "unknown metric 'nope'"),
    ({"rules": {"new_rule": {"title": "x", "metric": "stuck_payments", "comparison": ">", "threshold": 1,
                             "split": "currency"}}}, "cannot be split by currency"),
    ({"rules": {"failed_payments": {"severity": "apocalyptic"}}}, "severity"),
    ({"rules": {"failed_payments": {"treshold": 3}}}, "treshold: unknown setting"),
    ({"repeat_interval": "often"}, "[alerts].repeat_interval"),
    ({"outbox_max_attempts": 0}, "outbox_max_attempts"),
    ({"colour": "red"}, "[alerts].colour: unknown setting"),
])
def test_a_bad_alerts_table_stops_with_one_line(alerts, fragment):
    settings = load_settings(alerts=alerts)
    with pytest.raises(SettingsError) as info:
        load_rules(settings, load_config(settings))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and message.startswith("configuration error:")


def test_alerts_config_defaults_match_the_issue():
    config = AlertsConfig()
    assert config.repeat_interval == timedelta(hours=4)
    assert config.pace == timedelta(seconds=1)
