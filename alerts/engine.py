"""One evaluation: read every rule's metric, step its state machine, persist, notify.

:func:`evaluate` only reads (``python -m alerts evaluate`` uses it alone);
:func:`apply` writes, in an order that survives a crash at any point:

1. the new states (a transition is stored before anything is announced);
2. the messages, into the outbox, each under a stable dedup key;
3. what was announced, on the states.

A crash after 1 or 2 makes the next cycle decide the same message with the
same key, which the outbox stores once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from pymongo.database import Database
from pymongo.errors import PyMongoError

from alerts import store
from alerts.config import AlertsConfig
from alerts.messages import alert_message
from alerts.outbox import Outbox
from alerts.readings import METRICS, EvalContext, Reading, explain, format_value
from alerts.rules import Rule
from alerts.state import (FIRING, INACTIVE, NO_DATA, RESOLVED, RESOLVED_MSG, AlertState, Decision, Observation,
                          after_notify, dedup_key, next_state, notify_reason, scope)
from metrics.db import DataSourceUnavailable
from metrics.windows import iso

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    rule: Rule
    subject: str
    prev: AlertState
    new: AlertState
    reading: Reading | None = None
    unknown: bool = False
    note: str | None = None  # why there is no reading (not configured, no data, the error)
    silence: dict | None = None
    inhibited_by: str | None = None  # a firing rule this one depends on: its firing messages wait
    decision: Decision | None = None
    stored: bool = field(default=True)

    @property
    def doc_id(self) -> str:
        return store.state_id(self.rule.id, self.subject)

    def summary(self) -> dict:
        """What ``evaluate --json`` prints and the dashboard shows for one rule and subject."""
        unit = self.rule.unit
        return {
            "rule": self.rule.id,
            "subject": self.subject,
            "title": self.rule.title,
            "severity": self.rule.severity,
            "metric": self.rule.metric,
            "value": None if self.unknown else self.new.value,
            "value_text": "unknown" if self.unknown else format_value(unit, self.new.value),
            "threshold": self.rule.threshold,
            "comparison": self.rule.comparison,
            "threshold_text": self.rule.threshold_text(),
            "samples": self.new.samples,
            "min_samples": self.rule.min_samples,
            "breached": None if self.unknown else self.rule.breached(self.new.value, self.new.samples),
            "judged": None if self.unknown else self.rule.judge(self.new.value, self.new.samples),
            "no_data_since": self.new.no_data_since,
            "flapping": self.new.flapping,
            "flips_last_hour": len(self.new.flips),
            "inhibited_by": self.inhibited_by,
            "state": self.new.state,
            "previous_state": self.prev.state,
            "unknown": self.unknown,
            "since": self.new.since,
            "fired_at": self.new.fired_at,
            "silenced": bool(self.silence),
            "note": self.note,
        }


def _read(ctx: EvalContext, rule: Rule) -> tuple[list[Reading] | None, str | None]:
    """The rule's readings, or ``None`` and the reason when the data is unavailable."""
    metric = METRICS[rule.metric]
    if metric.reads == "platform" and ctx.source_error:
        return None, ctx.source_error
    if metric.reads == "state" and ctx.state_db is None:
        return None, "Paywatch's database is unavailable"
    try:
        return metric.read(ctx, rule), None
    except DataSourceUnavailable as exc:
        ctx.source_error = ctx.source_error or str(exc)
        return None, str(exc)
    except PyMongoError as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def evaluate(ctx: EvalContext, rules: list[Rule], stored: dict[str, dict]) -> list[Evaluation]:
    """Every enabled rule's new state per subject; reads only.

    Rules are evaluated in order, "data source unavailable" last: it fires
    when any platform read failed this cycle.
    """
    out: list[Evaluation] = []
    for rule in rules:
        if not rule.enabled:
            continue
        metric = METRICS[rule.metric]
        readings, error = _read(ctx, rule)
        known = {doc["subject"]: doc for doc in stored.values() if doc.get("rule_id") == rule.id}
        if readings is None:  # unknown: every known subject keeps its state, flagged
            for subject in sorted(known) or [""]:
                prev = store.from_doc(known.get(subject))
                out.append(Evaluation(rule, subject, prev, next_state(rule, None, prev, ctx.at), unknown=True,
                                      note=error, stored=subject in known))
            continue
        by_subject = {r.subject: r for r in readings}
        for subject in sorted(set(by_subject) | set(known)):
            prev = store.from_doc(known.get(subject))
            reading = by_subject.get(subject)
            if reading is None and prev.state in (INACTIVE, RESOLVED):
                continue  # a subject with no data this time and nothing open: nothing to do
            obs = Observation(reading.value, reading.samples) if reading else Observation(None, 0)
            new = next_state(rule, obs, prev, ctx.at)
            out.append(Evaluation(rule, subject, prev, new, reading, note=_no_data_note(rule, obs, new),
                                  stored=subject in known))
        if not by_subject and not any(e.rule is rule for e in out):
            note = f"needs {metric.needs}" if metric.needs and not _configured(ctx, metric.needs) else "no data"
            prev = store.from_doc(known.get(""))
            out.append(Evaluation(rule, "", prev, prev, note=note, stored=False))
    firing = firing_rules(out)
    for ev in out:
        ev.inhibited_by = inhibitor(ev.rule, firing)
    return out


def _no_data_note(rule: Rule, obs: Observation, new: AlertState) -> str | None:
    if rule.judge(obs.value, obs.samples) != NO_DATA:
        return None
    why = ("no data this cycle" if obs.value is None
           else f"too few samples ({obs.samples or 0} of {rule.min_samples})")
    return f"{why}; no data since {iso(new.no_data_since)} ({rule.no_data})"


def firing_rules(evaluations: list[Evaluation]) -> set[str]:
    """The rules firing this cycle, in any subject: the sources of inhibition."""
    return {ev.rule.id for ev in evaluations if ev.new.state == FIRING}


def inhibitor(rule: Rule, firing: set[str]) -> str | None:
    """The first rule this one depends on that fires now (``Rule.inhibitors``), or ``None``."""
    return next((r for r in rule.inhibitors if r in firing), None)


def _configured(ctx: EvalContext, needs: str) -> bool:
    return bool(getattr(ctx.settings, needs.removeprefix("PAYWATCH_").lower(), None))


def _meta(ev: Evaluation) -> dict:
    rule = ev.rule
    return {
        "rule_id": rule.id, "subject": ev.subject, "title": rule.title, "severity": rule.severity,
        "metric": rule.metric, "threshold": rule.threshold, "comparison": rule.comparison,
        "threshold_text": rule.threshold_text(),
        "value_text": "unknown" if ev.unknown else format_value(rule.unit, ev.new.value),
        "inhibited_by": ev.inhibited_by,  # the page says what holds a firing alert's message
    }


def _history(ev: Evaluation, at: datetime, event: str, **extra) -> dict:
    return {**_meta(ev), "event": event, "at": at, "from": ev.prev.state, "to": ev.new.state,
            "value": ev.new.value, "samples": ev.new.samples, "unknown": ev.unknown, **extra}


def apply(db: Database, outbox: Outbox, ctx: EvalContext, evaluations: list[Evaluation], config: AlertsConfig,
          fence: int) -> list[dict]:
    """Persist the cycle's states and queue the messages due; return what was queued."""
    now = ctx.at
    updates, history = [], []
    for ev in evaluations:
        placeholder = ev.reading is None and not ev.unknown and ev.new == ev.prev
        if not placeholder:  # a rule with nothing to read (no health URL) keeps no document
            fields = store.changed_fields(ev.prev, ev.new) if ev.stored else store.all_fields(ev.new)
            updates.append(store.state_update(ev.doc_id, {**fields, **_meta(ev)}, fence))
        if ev.new.state != ev.prev.state:
            history.append(_history(ev, now, "transition"))
            log.info("%s: %s -> %s (value %s, threshold %s)", scope(ev.rule.id, ev.subject),
                     ev.prev.state, ev.new.state, _meta(ev)["value_text"], ev.rule.threshold_text())
    store.write_states(db, updates)
    store.add_history(db, history)

    silences = store.active_silences(db, now)
    firing = firing_rules(evaluations)
    queued, notified, history = [], [], []
    for ev in evaluations:
        ev.silence = store.silenced_by(silences, ev.rule.id, ev.subject)
        ev.inhibited_by = inhibitor(ev.rule, firing)
        ev.decision = notify_reason(ev.new, now, ev.rule.repeat_every(config), ev.silence is not None,
                                    ev.inhibited_by)
        if not ev.decision.send:
            if ev.new.state == FIRING or ev.new.state != ev.prev.state:
                log.debug("%s: no message: %s", scope(ev.rule.id, ev.subject), ev.decision.why)
            continue
        reason = ev.decision.reason
        details = [] if reason == RESOLVED_MSG else explain(ctx, ev.rule, ev.reading or Reading(ev.subject, ev.new.value, ev.new.samples))
        message = alert_message(ev.rule, ev.subject, ev.new, reason, details, ctx.settings, now)
        key = dedup_key(ev.rule.id, ev.subject, ev.new, reason)
        outbox.enqueue(key, message)
        log.info("%s: queued %s message (%s): %s", scope(ev.rule.id, ev.subject),
                 reason, ev.decision.why, key)
        after = after_notify(ev.new, reason, now)
        notified.append(store.state_update(ev.doc_id, store.changed_fields(ev.new, after), fence))
        history.append(_history(ev, now, "notified", reason=reason, key=key))
        ev.new = after
        queued.append({"key": key, "reason": reason, "rule": ev.rule.id, "subject": ev.subject})
    store.write_states(db, notified)
    store.add_history(db, history)
    return queued
