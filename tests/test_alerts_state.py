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
NONE_OBS = Observation(None, 0)

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
    ("too few samples never resolves a firing alert", {"min_samples": 10, "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), FEW, t(3600), FIRING),
    ("too few samples on the good side never resolves it either", {"min_samples": 10, "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), Observation(3, 2), t(3600), FIRING),
    ("no value (nothing to divide) is not a breach", {}, AlertState(), Observation(None, 0), t(0), INACTIVE),
    ("no value never resolves a firing alert", {"keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), NONE_OBS, t(3600), FIRING),
    ("a NaN is no data, not a clear", {"keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), Observation(float("nan"), 100), t(60), FIRING),
    ("a real observation on the good side resolves it", {"min_samples": 10, "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0), no_data_since=t(30)), CLEAR, t(60), RESOLVED),
    ("no data keeps a pending alert pending, without firing it", {},
     AlertState(state=PENDING, since=t(0), active_at=t(0)), NONE_OBS, t(60), PENDING),
    ("no_data = alert: no data counts as a breach", {"no_data": "alert", "for": 0}, AlertState(), NONE_OBS, t(0), FIRING),
    ("no_data = alert: too few samples counts as a breach", {"no_data": "alert", "for": 0, "min_samples": 10},
     AlertState(), Observation(3, 2), t(0), FIRING),
    ("no_data = resolve: no data resolves, as chosen", {"no_data": "resolve", "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), NONE_OBS, t(60), RESOLVED),
    ("no_data = resolve still waits out keep_firing_for", {"no_data": "resolve"},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), NONE_OBS, t(3), FIRING),
    ("no_data = resolve: an unreadable source still never resolves", {"no_data": "resolve", "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), None, t(60), FIRING),
    ("no_data = alert: an unreadable source does not fire (data_source_unavailable does)",
     {"no_data": "alert", "for": 0}, AlertState(), None, t(0), INACTIVE),
    ("webhooks received on a quiet hour (samples = the usual volume) are a real clear",
     {"metric": "webhooks_received", "comparison": "<", "threshold": 1, "min_samples": 5, "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), Observation(3, 2), t(60), RESOLVED),
    ("no webhook on a quiet hour is no data: an outage at night keeps firing",
     {"metric": "webhooks_received", "comparison": "<", "threshold": 1, "min_samples": 5, "keep_firing_for": 0},
     AlertState(state=FIRING, fired_at=t(0), last_breach_at=t(0)), Observation(0, 2), t(60), FIRING),
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
    judged = obs is not None and rule(**overrides).judge(obs.value, obs.samples) != "no_data"
    assert (new.no_data_since is None) == judged


def test_no_data_since_marks_the_first_cycle_without_data_and_clears_on_a_real_observation():
    r = rule(**{"for": 0, "keep_firing_for": 0, "min_samples": 10})
    st = next_state(r, BREACH, AlertState(), t(0))
    st = next_state(r, FEW, st, t(60))
    st = next_state(r, None, st, t(120))
    st = next_state(r, NONE_OBS, st, t(180))
    assert (st.state, st.no_data_since) == (FIRING, t(60))
    st = next_state(r, CLEAR, st, t(240))
    assert (st.state, st.no_data_since) == (RESOLVED, None)


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
    ("no repeat while there is no data", replace(ANNOUNCED, no_data_since=t(60)), t(5 * 3600), False, "none"),
    ("a flapping episode is announced as flapping, once",
     AlertState(state=FIRING, fired_at=t(0), flapping=True, flips=(t(0),) * 5), t(0), False, "flapping"),
    ("a flapping rule announced as flapping stays quiet while it flaps",
     AlertState(state=FIRING, fired_at=t(900), flapping=True, flap_announced_at=t(0)), t(900), False, "none"),
    ("a flapping rule's resolves are quiet while it flaps",
     AlertState(state=RESOLVED, fired_at=t(900), resolved_at=t(950), flapping=True, flap_announced_at=t(0)),
     t(950), False, "none"),
    ("once it settles clear, one resolved message closes the flapping announcement",
     AlertState(state=RESOLVED, fired_at=t(900), resolved_at=t(950), flap_announced_at=t(0)), t(4000), False,
     "resolved"),
    ("once it settles firing, its episode is announced",
     AlertState(state=FIRING, fired_at=t(900), flap_announced_at=t(0)), t(4000), False, "first"),
]

INHIBITED = "data_source_unavailable"
INHIBIT_CASES = [
    ("a firing message waits while a rule it depends on fires", AlertState(state=FIRING, fired_at=t(0)), t(0), "none"),
    ("a repeat waits too", ANNOUNCED, t(4 * 3600), "none"),
    ("a resolve is never held back (Alertmanager issue 2638)",
     replace(ANNOUNCED, state=RESOLVED, resolved_at=t(90)), t(90), "resolved"),
    ("a flapping announcement waits too",
     AlertState(state=FIRING, fired_at=t(0), flapping=True, flips=(t(0),) * 5), t(0), "none"),
]


@pytest.mark.parametrize("desc,st,now,expected", INHIBIT_CASES, ids=[c[0] for c in INHIBIT_CASES])
def test_inhibition_holds_firing_messages_never_resolves(desc, st, now, expected):
    decision = notify_reason(st, now, REPEAT, False, INHIBITED)
    assert decision.reason == expected
    if expected == "none":
        assert INHIBITED in decision.why
        # ... and the held message goes out once the dependency stops firing.
        assert notify_reason(st, now, REPEAT, False, None).reason != "none"


def test_a_held_episode_that_resolves_while_held_resolves_quietly():
    st = AlertState(state=RESOLVED, fired_at=t(0), resolved_at=t(90))  # never announced: held throughout
    assert notify_reason(st, t(90), REPEAT, False, INHIBITED).reason == "none"
    assert notify_reason(st, t(90), REPEAT, False, None).reason == "none"


FLAP = dict(**{"for": 0}, keep_firing_for=0, flap_threshold=4)


def flip_through(r: Rule, pattern: list[bool], step: float, start: AlertState | None = None, t0: float = 0):
    """Evaluate the pattern (True = breach) every ``step`` seconds; return the states and the messages sent."""
    st, sent = start or AlertState(), []
    for i, breach in enumerate(pattern):
        now = t(t0 + i * step)
        st = next_state(r, BREACH if breach else CLEAR, st, now)
        decision = notify_reason(st, now, REPEAT, False)
        if decision.send:
            sent.append((decision.reason, now))
            st = after_notify(st, decision.reason, now)
    return st, sent


def test_more_than_flap_threshold_changes_an_hour_mark_it_flapping_and_announce_it_once():
    r = rule(**FLAP)
    st, sent = flip_through(r, [True, False] * 12, 300)  # a change every 5 minutes for 2 hours
    reasons = [reason for reason, _ in sent]
    assert st.flapping
    assert reasons.count("flapping") == 1
    # Before it counted as flapping: 4 changes, 2 firing and 2 resolved messages; afterwards nothing.
    assert reasons == ["first", "resolved", "first", "resolved", "flapping"]


def test_a_flapping_rule_that_settles_sends_one_closing_message():
    r = rule(**FLAP)
    st, _ = flip_through(r, [True, False] * 6, 300)
    assert st.flapping and st.flap_announced_at is not None
    st, sent = flip_through(r, [False] * 14, 300, st, t0=3600)  # clear for 70 minutes
    assert not st.flapping
    assert [reason for reason, _ in sent] == ["resolved"]
    assert st.flap_announced_at is None


def test_flapping_stops_only_at_half_the_threshold():
    r = rule(**FLAP)
    st = AlertState(state=RESOLVED, flapping=True, flips=(t(0), t(60), t(120)))
    assert next_state(r, CLEAR, st, t(180)).flapping  # 3 changes: above half of 4
    assert not next_state(r, CLEAR, st, t(3601)).flapping  # the first has left the hour: 2


def test_flips_survive_a_round_trip_through_the_database_as_a_list_of_naive_datetimes():
    st = AlertState(flips=[f.replace(tzinfo=None) for f in (t(0), t(60))])
    assert st.flips == (t(0), t(60))



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
    ({"rules": {"stuck_payments": {"inhibited_by": ["webhook_missing"]}}}, "unknown rule 'webhook_missing'"),
    ({"rules": {"failed_payments": {"no_data": "ignore"}}}, "[alerts.rules.failed_payments].no_data"),
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


def test_an_overridden_threshold_and_window_show_in_the_title_never_the_default():
    settings = load_settings(alerts={"rules": {
        "payment_success_rate": {"threshold": 0.9},
        "failed_payments": {"threshold": 25, "window": "15m"},
        "webhook_processing_slow": {"threshold": 30_000},
        "custom": {"title": "Over {threshold} failed in {window}", "metric": "failed_payments", "comparison": ">",
                   "threshold": 3, "window": "2h"},
    }})
    rules = {r.id: r for r in load_rules(settings, load_config(settings))}
    assert rules["payment_success_rate"].title == "Payment success rate below 90%"
    assert rules["failed_payments"].title == "More than 25 failed payments in 15 minutes"
    assert rules["webhook_processing_slow"].title == "Webhook processing time (p95) above 30 s"
    assert rules["custom"].title == "Over 3 failed in 2 hours"
    defaults = {r.id: r for r in default_rules(load_settings())}
    assert defaults["payment_success_rate"].title == "Payment success rate below 95%"
    assert defaults["failed_payments"].title == "More than 10 failed payments in 1 hour"


def test_a_title_naming_an_unknown_figure_stops_with_one_line():
    settings = load_settings(alerts={"rules": {"failed_payments": {"title": "Over {limit}"}}})
    with pytest.raises(SettingsError, match=r"title.*\{limit\}"):
        load_rules(settings, load_config(settings))


def test_every_default_rule_keeps_firing_through_a_flap():
    for r in default_rules(load_settings()):
        assert r.keep_firing_for >= timedelta(minutes=5), r.id


def breach_and_clear(r: Rule) -> tuple[Observation, Observation]:
    """An observation on each side of the rule's threshold, with enough samples to be judged."""
    samples = max(r.min_samples, 1) * 1000
    if r.unit == "flag":
        return Observation(1.0, None), Observation(0.0, None)
    above, below = (r.threshold + 1) * 10, (r.threshold / 10 if r.threshold else -1)
    if r.unit == "rate":
        above, below = min(1.0, r.threshold * 5 + 0.05), r.threshold / 10
    if r.comparison in ("<", "<="):
        above, below = below, above
    return Observation(max(above, 0.0), samples), Observation(max(below, 0.0), samples)


@pytest.mark.parametrize("rule_id", [r.id for r in default_rules(load_settings())])
def test_a_value_flipping_every_minute_posts_at_most_two_messages_in_ten_minutes(rule_id):
    r = next(x for x in default_rules(load_settings()) if x.id == rule_id)
    breach, clear = breach_and_clear(r)
    assert r.breached(breach.value, breach.samples) and r.judge(clear.value, clear.samples) == "clear", r.id
    for first in (breach, clear):
        st, sent = AlertState(), []
        for minute in range(11):  # 0..10 minutes: flips once a minute
            now = t(minute * 60)
            obs = first if minute % 2 == 0 else (clear if first is breach else breach)
            st = next_state(r, obs, st, now)
            decision = notify_reason(st, now, r.repeat_every(AlertsConfig()), False)
            if decision.send:
                sent.append(decision.reason)
                st = after_notify(st, decision.reason, now)
        assert len(sent) <= 2, (r.id, sent)


def test_every_rule_field_is_documented():
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "docs" / "alerts.md").read_text()
    names = [field.alias or name for name, field in Rule.model_fields.items()]
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"rule fields missing from docs/alerts.md: {missing}"


def test_inhibited_by_replaces_the_metrics_list_and_an_empty_one_turns_inhibition_off():
    settings = load_settings(alerts={"rules": {"stuck_payments": {"inhibited_by": []},
                                               "failed_payments": {"inhibited_by": ["webhooks_missing"]}}})
    rules = {r.id: r for r in load_rules(settings, load_config(settings))}
    assert rules["stuck_payments"].inhibitors == ()
    assert rules["failed_payments"].inhibitors == ("webhooks_missing",)
    assert rules["webhook_failure_rate"].inhibitors == ("data_source_unavailable", "webhooks_missing")
