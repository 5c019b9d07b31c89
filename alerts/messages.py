"""What an alert says, independent of where it is posted.

A message is a plain dict (it is stored in the outbox as it is): a kind,
the severity and title, a headline, labelled fields (value against threshold,
window, since), "what is wrong" lines, the runbook and a link to the
dashboard.  Texts are raw: each channel escapes them for its medium (Slack:
``&``, ``<``, ``>``), because any of them may carry platform data.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from alerts.config import human_duration
from alerts.readings import METRICS, format_value
from alerts.rules import Rule
from alerts.state import FIRST, FLAPPING, REPEAT, RESOLVED_MSG, AlertState
from metrics.settings import Settings
from metrics.windows import iso

FIRING, RESOLVED, DEAD_LETTER = "firing", "resolved", "dead_letter"
SEVERITY_MARK = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_MARK = "✅"
DASHBOARD_PAGE = "alerts"


def dashboard_link(settings: Settings, rule_id: str | None = None, subject: str | None = None) -> str:
    query = {k: v for k, v in (("rule", rule_id), ("subject", subject)) if v}
    base = settings.dashboard_url.rstrip("/") + "/" + DASHBOARD_PAGE
    return base + ("?" + urlencode(query) if query else "")


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
        "severity": rule.severity,
        "title": title,
        "headline": headline,
        "fields": fields,
        "details": details if reason != RESOLVED_MSG else [],
        "runbook": rule.runbook.model_dump() if reason in (FIRST, REPEAT, FLAPPING) else None,
        "link": dashboard_link(settings, rule.id, subject or None),
        "at": iso(now),
    }


def dead_letter_message(original: dict, channel: str, attempts: int, error: str | None,
                        settings: Settings, now: datetime) -> dict:
    """Said on the other channels when a message could not be delivered."""
    message = original.get("message", {})
    return {
        "kind": DEAD_LETTER,
        "reason": "dead_letter",
        "rule_id": message.get("rule_id"),
        "subject": message.get("subject", ""),
        "severity": "critical",
        "title": f"Alert delivery to {channel} failed",
        "headline": f"Could not deliver to {channel} after {attempts} attempts: {message.get('headline', '?')}",
        "fields": [["Channel", channel], ["Attempts", str(attempts)], ["Last error", error or "–"]],
        "details": ["Check the channel's configuration (a deleted Slack webhook answers 404/410).",
                    "python -m alerts outbox lists dead messages."],
        "runbook": None,
        "link": dashboard_link(settings),
        "at": iso(now),
    }


def plain_text(message: dict) -> str:
    """Every channel's fallback: a few lines a person can read in a terminal or a notification."""
    mark = RESOLVED_MARK if message["kind"] == RESOLVED else SEVERITY_MARK.get(message["severity"], "")
    lines = [f"{mark} [{message['severity'].upper()}] {message['headline']}".strip()]
    lines.append(" · ".join(f"{label}: {value}" for label, value in message.get("fields", [])))
    lines += message.get("details") or []
    runbook = message.get("runbook") or {}
    if runbook.get("steps"):
        section = f" ({runbook['section']})" if runbook.get("section") else ""
        lines.append(f"Runbook{section}:")
        lines += [f"  {i}. {step}" for i, step in enumerate(runbook["steps"], 1)]
        if runbook.get("url"):
            lines.append(f"  {runbook['url']}")
    lines.append(f"Dashboard: {message['link']}")
    return "\n".join(lines)
