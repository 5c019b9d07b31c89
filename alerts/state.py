"""The alert state machine, and the decision to notify: pure functions, no I/O.

Per rule and subject (Prometheus' rule ``for`` and ``keep_firing_for``)::

    inactive --breach--> pending --breach held `for`--> firing --clear for `keep_firing_for`--> resolved
        ^                   |                                                                  |
        +------clear--------+                             resolved --breach--> pending / firing

``for = 0`` goes straight to firing.  An unknown observation (the database
did not answer) changes nothing but the ``unknown`` flag: a firing alert is
never resolved because data is missing.

:func:`notify_reason` decides whether a message is due (Alertmanager's
``needsUpdate``): the first message of a firing episode, the resolved message
of an announced episode, or a repeat every ``repeat_interval`` while firing.
Storing the result is :mod:`alerts.store`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alerts.rules import Rule

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
STATES = (INACTIVE, PENDING, FIRING, RESOLVED)

FIRST, REPEAT, RESOLVED_MSG, NONE = "first", "repeat", "resolved", "none"
SEND_REASONS = (FIRST, REPEAT, RESOLVED_MSG)


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
    unknown: bool = False
    evaluated_at: datetime | None = None
    # What has been announced (see notify_reason).
    notified_fired_at: datetime | None = None  # fired_at of the episode whose first message went out
    notified_resolved_at: datetime | None = None  # resolved_at whose resolved message went out
    last_notified_at: datetime | None = None
    repeats: int = 0

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
    if obs is None:
        return replace(prev, unknown=True, evaluated_at=now)
    breach = rule.breached(obs.value, obs.samples)
    cur = replace(prev, value=obs.value, samples=obs.samples, unknown=False, evaluated_at=now,
                  last_breach_at=now if breach else prev.last_breach_at)
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


@dataclass(frozen=True)
class Decision:
    reason: str  # first | repeat | resolved | none
    why: str  # for the log

    @property
    def send(self) -> bool:
        return self.reason in SEND_REASONS


def notify_reason(st: AlertState, now: datetime, repeat_interval: timedelta, silenced: bool) -> Decision:
    """Whether to send a message for this state now, and why (logged by the caller).

    A silence holds back first and repeat messages.  A resolved message is
    sent for every episode whose firing message went out, silence or not, so
    no announced alert is left open in the channel; an episode that was never
    announced resolves quietly.
    """
    if st.state == FIRING:
        if st.notified_fired_at != st.fired_at:
            if silenced:
                return Decision(NONE, "firing, but silenced")
            return Decision(FIRST, f"began firing at {st.fired_at:%Y-%m-%d %H:%M:%S}")
        if st.unknown:
            return Decision(NONE, "firing and announced; data unknown, no repeat on stale data")
        if st.last_notified_at is not None and now - st.last_notified_at >= repeat_interval:
            if silenced:
                return Decision(NONE, "repeat due, but silenced")
            return Decision(REPEAT, f"still firing after {now - st.last_notified_at} since the last message")
        return Decision(NONE, "firing and already announced")
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
        return replace(st, notified_fired_at=st.fired_at, last_notified_at=now, repeats=0)
    if reason == REPEAT:
        return replace(st, last_notified_at=now, repeats=st.repeats + 1)
    if reason == RESOLVED_MSG:
        return replace(st, notified_resolved_at=st.resolved_at, last_notified_at=now)
    return st


def dedup_key(rule_id: str, subject: str, st: AlertState, reason: str) -> str:
    """The same message always gets the same key, so a retried cycle cannot post it twice."""
    episode = st.fired_at.strftime("%Y%m%dT%H%M%S.%f")[:-3] if st.fired_at else "-"
    suffix = {FIRST: "firing", RESOLVED_MSG: "resolved", REPEAT: f"repeat-{st.repeats + 1}"}[reason]
    return f"{rule_id}|{subject}|{episode}|{suffix}"
