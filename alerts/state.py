"""The alert state machine, and the decision to notify: pure functions, no I/O.

Per rule and subject (Prometheus' rule ``for`` and ``keep_firing_for``)::

    inactive --breach--> pending --breach held `for`--> firing --clear for `keep_firing_for`--> resolved
        ^                   |                                                                  |
        +------clear--------+                             resolved --breach--> pending / firing

``for = 0`` goes straight to firing.  Each evaluation is judged one of three
ways (:meth:`alerts.rules.Rule.judge`): a *breach*, a *clear*, or *no data*
(no value, or fewer samples than ``min_samples``).  No data is what the
rule's ``no_data`` says (Grafana's "alert state if no data"): ``keep`` (the
default) changes nothing but the ``no_data_since`` mark, ``alert`` counts
as a breach, ``resolve`` as a clear.  An unreadable source (``obs is None``)
always keeps: a firing alert is never resolved because data is missing, and
only a real observation on the good side, on enough samples, resolves it.

A rule that changes between firing and not firing more than
``flap_threshold`` times in an hour is *flapping* (Nagios' flap detection);
it stops once the last hour holds at most half as many changes.

:func:`notify_reason` decides whether a message is due (Alertmanager's
``needsUpdate``): the first message of a firing episode, the resolved message
of an announced episode, a repeat every ``repeat_interval`` while firing, or
one "flapping" message in place of the flips.  A silence or a firing
dependency (inhibition) holds back firing messages, never a resolve.
Storing the result is :mod:`alerts.store`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from metrics.windows import utc

if TYPE_CHECKING:
    from alerts.rules import Rule

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
STATES = (INACTIVE, PENDING, FIRING, RESOLVED)

FIRST, REPEAT, RESOLVED_MSG, FLAPPING, NONE = "first", "repeat", "resolved", "flapping", "none"
SEND_REASONS = (FIRST, REPEAT, RESOLVED_MSG, FLAPPING)

# How an evaluation is judged (Rule.judge), and what no data may count as (Rule.no_data).
BREACH, CLEAR, NO_DATA = "breach", "clear", "no_data"
KEEP, ALERT, RESOLVE = "keep", "alert", "resolve"
NO_DATA_POLICIES = (KEEP, ALERT, RESOLVE)

FLAP_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Observation:
    """What a rule read this cycle for one subject; ``None`` instead of this means unknown."""

    value: float | None
    samples: int | None = None


@dataclass(frozen=True)
class AlertState:
    state: str = INACTIVE
    since: datetime | None = None  # when the current state began
    active_at: datetime | None = None  # first breach of the current episode (start of pending)
    fired_at: datetime | None = None  # when the current (or last) episode began firing
    last_breach_at: datetime | None = None
    resolved_at: datetime | None = None
    value: float | None = None
    samples: int | None = None
    unknown: bool = False  # the source could not be read this cycle
    no_data_since: datetime | None = None  # first of the evaluations without a judgeable value, up to now
    evaluated_at: datetime | None = None
    flips: tuple[datetime, ...] = field(default=())  # changes between firing and not, in the last hour
    flapping: bool = False
    # What has been announced (see notify_reason).
    notified_fired_at: datetime | None = None  # fired_at of the episode whose first message went out
    notified_resolved_at: datetime | None = None  # resolved_at whose resolved message went out
    last_notified_at: datetime | None = None
    flap_announced_at: datetime | None = None  # the "flapping" message went out; a resolve is owed
    repeats: int = 0

    def __post_init__(self):
        # Stored as a BSON array of naive datetimes: read back as a tuple of aware ones.
        object.__setattr__(self, "flips", tuple(utc(f) for f in self.flips or ()))

    @property
    def breaching(self) -> bool:
        return self.state in (PENDING, FIRING)


def scope(rule_id: str, subject: str | None) -> str:
    """How an alert is named in logs, the CLI and the dashboard: ``payment_amount_spike [usd]``."""
    return f"{rule_id} [{subject}]" if subject else rule_id


# Each cycle reads the clock a little after its scheduled tick, by a varying fraction of a second;
# without this slack a `for` that is a whole number of intervals would fire one interval late.
FOR_JITTER = timedelta(seconds=1)


def _jitter(for_: timedelta) -> timedelta:
    return min(FOR_JITTER, for_ / 20)


def next_state(rule: "Rule", obs: Observation | None, prev: AlertState, now: datetime) -> AlertState:
    """The state after one evaluation at ``now``; ``obs is None`` means the data was unavailable."""
    return _track_flaps(rule, prev, _step(rule, obs, prev, now), now)


def _step(rule: "Rule", obs: Observation | None, prev: AlertState, now: datetime) -> AlertState:
    if obs is None:  # unreadable: nothing changes but the marks
        return replace(prev, unknown=True, evaluated_at=now, no_data_since=prev.no_data_since or now)
    verdict = rule.judge(obs.value, obs.samples)
    cur = replace(prev, value=obs.value, samples=obs.samples, unknown=False, evaluated_at=now,
                  no_data_since=(prev.no_data_since or now) if verdict == NO_DATA else None)
    if verdict == NO_DATA:
        if rule.no_data == KEEP:
            return cur
        verdict = BREACH if rule.no_data == ALERT else CLEAR
    breach = verdict == BREACH
    if breach:
        cur = replace(cur, last_breach_at=now)
    if prev.state in (INACTIVE, RESOLVED):
        if not breach:
            return cur
        if rule.for_ <= timedelta(0):
            return replace(cur, state=FIRING, since=now, active_at=now, fired_at=now, resolved_at=None)
        return replace(cur, state=PENDING, since=now, active_at=now)
    if prev.state == PENDING:
        if not breach:
            return replace(cur, state=INACTIVE, since=now, active_at=None)
        if now - (prev.active_at or now) >= rule.for_ - _jitter(rule.for_):
            return replace(cur, state=FIRING, since=now, fired_at=now, resolved_at=None)
        return cur
    # FIRING
    if breach:
        return cur
    if prev.last_breach_at is not None and now - prev.last_breach_at < rule.keep_firing_for:
        return cur  # a flap: keep firing rather than send a resolved/firing pair
    return replace(cur, state=RESOLVED, since=now, resolved_at=now, active_at=None)


def _track_flaps(rule: "Rule", prev: AlertState, new: AlertState, now: datetime) -> AlertState:
    flips = tuple(f for f in new.flips if now - f < FLAP_WINDOW)
    if (prev.state == FIRING) != (new.state == FIRING):
        flips += (now,)
    # Hysteresis: it starts above the threshold and stops at half of it, so it does not flap in and out.
    limit = rule.flap_threshold // 2 if prev.flapping else rule.flap_threshold
    return replace(new, flips=flips, flapping=len(flips) > limit)


@dataclass(frozen=True)
class Decision:
    reason: str  # first | repeat | resolved | none
    why: str  # for the log

    @property
    def send(self) -> bool:
        return self.reason in SEND_REASONS


def notify_reason(st: AlertState, now: datetime, repeat_interval: timedelta, silenced: bool,
                  inhibited_by: str | None = None) -> Decision:
    """Whether to send a message for this state now, and why (logged by the caller).

    A silence, or a firing rule this one depends on (``inhibited_by``: the
    data source is down, webhooks stopped), holds back first and repeat
    messages: the held episode is announced once neither holds it.  A
    resolved message is sent for every episode whose firing message went out,
    silenced, inhibited or not, so no announced alert is left open in the
    channel (the bug Alertmanager's inhibition had, its issue 2638); an
    episode that was never announced resolves quietly.  While a rule flaps,
    one "flapping" message stands for all its episodes, and one resolved
    message closes it once it settles clear.
    """
    if st.state == FIRING:
        if st.notified_fired_at != st.fired_at:
            if silenced:
                return Decision(NONE, "firing, but silenced")
            if inhibited_by:
                return Decision(NONE, f"firing, but held while {inhibited_by} fires")
            if st.flapping:
                if st.flap_announced_at is None:
                    return Decision(FLAPPING, f"{len(st.flips)} changes in the last hour")
                return Decision(NONE, f"flapping, announced at {st.flap_announced_at:%Y-%m-%d %H:%M:%S}")
            return Decision(FIRST, f"began firing at {st.fired_at:%Y-%m-%d %H:%M:%S}")
        if st.unknown or st.no_data_since:
            return Decision(NONE, "firing and announced; no data, no repeat on stale data")
        if st.last_notified_at is not None and now - st.last_notified_at >= repeat_interval:
            if silenced:
                return Decision(NONE, "repeat due, but silenced")
            if inhibited_by:
                return Decision(NONE, f"repeat due, but held while {inhibited_by} fires")
            return Decision(REPEAT, f"still firing after {now - st.last_notified_at} since the last message")
        return Decision(NONE, "firing and already announced")
    if st.flap_announced_at is not None:
        if st.flapping:
            return Decision(NONE, "flapping, announced; waiting for it to settle")
        return Decision(RESOLVED_MSG, "stopped flapping and is clear")
    if st.state == RESOLVED:
        announced = st.notified_fired_at is not None and st.notified_fired_at == st.fired_at
        if announced and st.notified_resolved_at != st.resolved_at:
            return Decision(RESOLVED_MSG, "announced episode resolved")
        if not announced and st.notified_resolved_at != st.resolved_at:
            return Decision(NONE, "resolved before it was announced")
        return Decision(NONE, "resolved and announced")
    return Decision(NONE, st.state)


def after_notify(st: AlertState, reason: str, now: datetime) -> AlertState:
    """What the state records once the message for ``reason`` is in the outbox."""
    if reason == FIRST:
        return replace(st, notified_fired_at=st.fired_at, last_notified_at=now, repeats=0, flap_announced_at=None)
    if reason == REPEAT:
        return replace(st, last_notified_at=now, repeats=st.repeats + 1)
    if reason == RESOLVED_MSG:
        return replace(st, notified_resolved_at=st.resolved_at, last_notified_at=now, flap_announced_at=None)
    if reason == FLAPPING:
        return replace(st, flap_announced_at=now, last_notified_at=now)
    return st


def dedup_key(rule_id: str, subject: str, st: AlertState, reason: str) -> str:
    """The same message always gets the same key, so a retried cycle cannot post it twice."""
    episode = st.fired_at.strftime("%Y%m%dT%H%M%S.%f")[:-3] if st.fired_at else "-"
    suffix = {FIRST: "firing", RESOLVED_MSG: "resolved", REPEAT: f"repeat-{st.repeats + 1}",
              FLAPPING: "flapping"}[reason]
    return f"{rule_id}|{subject}|{episode}|{suffix}"
