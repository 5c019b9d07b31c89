"""What every channel posts: a message is a plain dict, stored in the outbox as it is.

Keys: ``kind`` (``firing``, ``resolved``, ``dead_letter``, ``report``), the
``severity`` and ``title``, a ``headline``, labelled ``fields``, ``details``
lines, an optional ``runbook`` and the dashboard ``link``.  Alert messages
also carry ``rule_id``, ``subject`` and ``episode`` (one firing, from first
message to resolve): messages of one episode go out in order, and with a
Slack bot they share one thread.  Texts are raw: each channel escapes them
for its medium (Slack: ``&``, ``<``, ``>``), because any of them may carry
platform data.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from metrics.settings import Settings
from metrics.windows import iso

FIRING, RESOLVED, DEAD_LETTER, REPORT = "firing", "resolved", "dead_letter", "report"
SEVERITY_MARK = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_MARK = "✅"
DASHBOARD_PAGE = "alerts"
NOTIFICATIONS_PAGE = "notifications"


def dashboard_link(settings: Settings, rule_id: str | None = None, subject: str | None = None,
                   page: str = DASHBOARD_PAGE) -> str:
    query = {k: v for k, v in (("rule", rule_id), ("subject", subject)) if v}
    base = settings.dashboard_url.rstrip("/") + "/" + page
    return base + ("?" + urlencode(query) if query else "")


def dead_letter_message(original: dict, channel: str, attempts: int, error: str | None,
                        settings: Settings, now: datetime) -> dict:
    """Said on every other channel when a message was given up (``error`` is already redacted)."""
    message = original.get("message", {})
    tries = f"{attempts} attempt" + ("" if attempts == 1 else "s")
    return {
        "kind": DEAD_LETTER,
        "reason": "dead_letter",
        "rule_id": message.get("rule_id"),
        "subject": message.get("subject", ""),
        "severity": "critical",
        "title": f"Alert delivery to {channel} failed",
        "headline": f"Could not deliver to {channel} after {tries}: {message.get('headline', '?')}",
        "fields": [["Channel", channel], ["Attempts", str(attempts)], ["Last error", error or "–"]],
        "details": ["Check the channel's configuration (a deleted Slack webhook answers 404/410, "
                    "a revoked bot token invalid_auth).",
                    "The Notifications page and python -m alerts outbox list given-up messages."],
        "runbook": None,
        "link": dashboard_link(settings, page=NOTIFICATIONS_PAGE),
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
