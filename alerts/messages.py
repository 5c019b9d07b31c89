"""What an alert says, independent of where it is posted.

A message has the delivery layer's shape (:mod:`notify.message`, stored in
the outbox as it is): a kind, the severity and title, a headline, labelled
fields (value against threshold, window, since), "what is wrong" lines, the
runbook, a link to the dashboard, and the alert's episode (its messages go
out in order, and with a Slack bot share one thread).  Texts are raw: each
channel escapes them for its medium (Slack: ``&``, ``<``, ``>``), because any
of them may carry platform data.
"""

from __future__ import annotations

from datetime import datetime

from alerts.config import human_duration
from alerts.readings import METRICS, format_value
from alerts.rules import Rule
from alerts.state import FIRST, FLAPPING, REPEAT, RESOLVED_MSG, AlertState, dedup_key
from metrics.settings import Settings
from metrics.windows import iso
from notify.message import (DEAD_LETTER, FIRING, RESOLVED, RESOLVED_MARK, SEVERITY_MARK, dashboard_link,
                            dead_letter_message, plain_text)

# The shape every channel posts lives in the delivery layer; alerts only fills it.
__all__ = ["DEAD_LETTER", "FIRING", "RESOLVED", "RESOLVED_MARK", "SEVERITY_MARK", "alert_message",
           "dashboard_link", "dead_letter_message", "plain_text"]


def episode_key(rule_id: str, subject: str, st: AlertState, reason: str, now: datetime) -> str:
    """The episode a message belongs to: its firing episode; while a rule flaps, its flapping
    announcement, so the resolve that closes the flapping edits that post (and threads under it)."""
    flap_at = now if reason == FLAPPING else st.flap_announced_at if reason == RESOLVED_MSG else None
    if flap_at is not None:
        return f"{rule_id}|{subject}|flapping-{flap_at.strftime('%Y%m%dT%H%M%S.%f')[:-3]}"
    return dedup_key(rule_id, subject, st, reason).rsplit("|", 1)[0]


def alert_message(rule: Rule, subject: str, st: AlertState, reason: str, details: list[str],
                  settings: Settings, now: datetime) -> dict:
    """The message for ``reason`` (first / repeat / resolved) about this rule and subject."""
    title = rule.title + (f" — {rule.split} {subject}" if subject else "")
    value = format_value(rule.unit, st.value)
    fields = [["Value", value], ["Threshold", rule.threshold_text()]]
    if METRICS[rule.metric].windowed and rule.window:
        fields.append(["Window", f"{METRICS[rule.metric].window_word} {human_duration(rule.window)}"])
    if st.samples is not None:
        fields.append(["Samples", f"{st.samples:,}"])
    if rule.confidence and st.samples and st.value is not None:
        fields.append([f"Judged ({rule.confidence:.0%} bound)", format_value(rule.unit, rule.judged_value(st.value, st.samples))])
    if st.no_data_since is not None and reason != RESOLVED_MSG:
        fields.append(["No data since", iso(st.no_data_since)])
    if reason == RESOLVED_MSG and st.flap_announced_at is not None:
        headline = f"Resolved: {title} — stopped flapping"
        fields += [["Flapping since", iso(st.flap_announced_at)]]
        kind = RESOLVED
    elif reason == RESOLVED_MSG:
        fired_for = (st.resolved_at - st.fired_at) if st.resolved_at and st.fired_at else None
        headline = f"Resolved: {title} — fired for {human_duration(fired_for)}"
        fields += [["Fired at", iso(st.fired_at)], ["Fired for", human_duration(fired_for)]]
        kind = RESOLVED
    elif reason == FLAPPING:
        headline = (f"{title} is flapping: {len(st.flips)} changes between firing and clear in the last hour "
                    f"(now {value}, threshold {rule.threshold_text()})")
        fields += [["Changes (1h)", str(len(st.flips))], ["First change", iso(st.flips[0] if st.flips else None)]]
        details = [f"Messages about it are held until it settles; then one message says whether it is firing "
                   f"or clear. Changes at: {', '.join(f'{f:%H:%M}' for f in st.flips)} UTC.", *details]
        kind = FIRING
    else:
        headline = f"{title}: {value} (threshold {rule.threshold_text()})"
        if reason == REPEAT:
            headline += f" — still firing after {human_duration(now - st.fired_at) if st.fired_at else '–'}"
        fields.append(["Since", iso(st.fired_at)])
        kind = FIRING
    return {
        "kind": kind,
        "reason": reason,
        "rule_id": rule.id,
        "subject": subject,
        # One firing, from its first message to its resolve: sent in order, one Slack thread.
        "episode": episode_key(rule.id, subject, st, reason, now),
        "severity": rule.severity,
        "title": title,
        "headline": headline,
        "fields": fields,
        "details": details if reason != RESOLVED_MSG else [],
        "runbook": rule.runbook.model_dump() if reason in (FIRST, REPEAT, FLAPPING) else None,
        "link": dashboard_link(settings, rule.id, subject or None),
        "at": iso(now),
    }
