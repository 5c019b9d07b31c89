"""The one function every error text goes through before a person sees it.

A log line, the outbox's ``last_error``, a dashboard page and a CLI all show
errors from libraries that happily quote what they were given: urllib puts
a whole webhook URL (token included) in ``unknown url type``, pymongo the
URI with its password, Stripe the key.  :func:`redact` keeps the first line,
drops every secret it recognises, cuts to a length, and never fails, not
even on ``None``.  Callers that know their own secrets (a channel its
webhook URL) pass them too, which catches a secret of any shape.

It lives in ``metrics`` because everything imports ``metrics`` and it
imports nothing.
"""

from __future__ import annotations

import re
from typing import Iterable

MASK = "***"

_PATTERNS: list[tuple[re.Pattern, str]] = [
    # Slack incoming webhooks and workflow triggers: the path is the credential.
    (re.compile(r"(hooks\.slack(?:-gov)?\.com)/[^\s'\"<>)]+", re.I), rf"\1/{MASK}"),
    (re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"), f"/services/{MASK}"),
    # Slack tokens (bot, user, app, refresh, config).
    (re.compile(r"\b(xox[abposer]|xapp|xoxe\.xox[bp])-[A-Za-z0-9-]+"), rf"\1-{MASK}"),
    # Stripe secret, restricted and publishable keys, and webhook signing secrets.
    (re.compile(r"\b((?:sk|rk|pk)_(?:live|test))_[A-Za-z0-9]+"), rf"\1_{MASK}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9]+"), f"whsec_{MASK}"),
    # Credentials in a URI (scheme://user:password@host) or bare (user:password@host).
    (re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@'\"]*):[^\s@/'\"]*@", re.I), rf"\1:{MASK}@"),
    (re.compile(r"(?<![\w/:@.-])([\w.%+-]+):[^\s@/:'\"]+@(?=[\w.-]+)"), rf"\1:{MASK}@"),
    # HTTP authorization values.
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+", re.I), rf"\1 {MASK}"),
    # key=value and key: value pairs whose key names a secret (query strings, configs, headers).
    (re.compile(r"\b((?:[a-z_-]*_)?(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
                r"signature|sig|authorization|auth))(\s*[=:]\s*)(?!\s*(?:Bearer|Basic|Token)\b)[^\s&,;'\"]+", re.I),
     rf"\1\2{MASK}"),
]


def redact(text: object, *, secrets: Iterable[str | None] = (), limit: int = 300) -> str:
    """The first line of ``text`` without secrets, at most ``limit`` characters; ``""`` for nothing."""
    if text is None:
        return ""
    try:
        value = str(text)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the original error
        return type(text).__name__
    value = value.strip()
    # The patterns first, so a webhook URL reads hooks.slack.com/***; then what the caller knows.
    for pattern, replacement in _PATTERNS:
        value = pattern.sub(replacement, value)
    for secret in sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True):
        value = value.replace(secret, MASK)
    first = value.splitlines()[0].strip() if value else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def describe(exc: BaseException, *, secrets: Iterable[str | None] = (), limit: int = 300) -> str:
    """``Type: first line of the message``, redacted; the type alone when the message is empty."""
    text = redact(exc, secrets=secrets, limit=limit)
    return f"{type(exc).__name__}: {text}"[:limit] if text else type(exc).__name__


def settings_secrets(settings: object) -> list[str]:
    """Every secret value a settings object holds (its ``SecretStr`` fields), for ``secrets=``."""
    out = []
    for name in getattr(type(settings), "model_fields", {}):
        value = getattr(settings, name, None)
        if hasattr(value, "get_secret_value"):
            out.append(value.get_secret_value())
    return out
