"""The ``[alerts]`` table of ``paywatch.toml``: the worker's own settings and the rules.

``metrics.settings`` keeps the table raw (``settings.alerts``); it is checked
here, at start-up, and a bad value stops the program with one line
(:class:`~metrics.settings.SettingsError`).  Every duration is seconds (a
number) or text such as ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"1h30m"``,
so tests can run the same rules in seconds.

    [alerts]
    repeat_interval = "4h"
    outbox_max_attempts = 8

    [alerts.rules.payment_success_rate]   # change a default rule
    threshold = 0.9

    [alerts.rules.eur_failures]            # or add one
    metric = "failed_payments"
    ...
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError

from metrics.settings import Settings, SettingsError

_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w)\s*")


def parse_duration(value: Any) -> timedelta:
    """Seconds as a number, or ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"1h30m"``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration is seconds or text such as '5m'")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f"not a duration: {value!r} (examples: 30, '90s', '5m', '2h', '1d')") from None
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return timedelta(seconds=seconds)


def human_duration(td: timedelta | None) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``1h 30m``; seconds only when under ten minutes."""
    if td is None:
        return "–"
    total = td.total_seconds()
    if total < 1:
        return f"{total * 1000:.0f}ms" if total else "0s"
    parts = []
    days, rest = divmod(int(round(total)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds and total < 600:
        parts.append(f"{seconds}s")
    return " ".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda td: td.total_seconds(), return_type=float, when_used="json"),
]


class AlertsConfig(BaseModel):
    """Settings of the alert worker (``[alerts]``); ``docs/alerts.md`` describes each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repeat_interval: Duration = Field(default=timedelta(hours=4), description="re-send a firing alert this often")
    channels: list[str] | None = Field(default=None, description="channels to post to; default: every configured one, else console")
    outbox_max_attempts: int = Field(default=8, ge=1, le=100, description="failures a retry does not explain (a sender that died mid-send, a bug) before a message is given up; 429, 5xx and timeouts never count")
    outbox_backoff: Duration = Field(default=timedelta(seconds=10), description="first retry delay, doubled per attempt")
    outbox_backoff_max: Duration = Field(default=timedelta(minutes=10), description="longest retry delay")
    outbox_interval: Duration = Field(default=timedelta(seconds=5), description="how often the outbox is worked between evaluations")
    outbox_keep: Duration = Field(default=timedelta(days=30), description="how long sent messages and the record of every attempt stay")
    outbox_max_age: Duration = Field(default=timedelta(hours=24), description="a message still failing this long after it was queued is given up")
    outbox_dead_keep: Duration = Field(default=timedelta(days=7), description="how long a given-up message stays (and fails the heartbeat ping)")
    pace: Duration = Field(default=timedelta(seconds=1), description="at least this long between two posts to one channel")
    send_timeout: Duration = Field(default=timedelta(seconds=10), description="HTTP timeout of one post")
    claim_timeout: Duration = Field(default=timedelta(seconds=60), description="a message claimed by a sender that died is retried after this")
    lease: Duration = Field(default=timedelta(seconds=30), description="leader lease; a standby takes over within two of these")
    misfire_grace: Duration = Field(default=timedelta(minutes=5), description="a late evaluation still runs (once) within this")
    probe_timeout: Duration = Field(default=timedelta(seconds=5), description="health probe timeout")
    heartbeat_late: Duration | None = Field(default=None, description="the worker is late after this; default three evaluation intervals")
    slack_api_base: str | None = Field(default=None, description="Slack Web API base URL (bot token mode); default Slack's")
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict, description="rule overrides and additions, by id")

    def late_after(self, settings: Settings) -> timedelta:
        return self.heartbeat_late or timedelta(seconds=3 * settings.eval_interval)


def one_line(exc: ValidationError, where: str) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        message = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            message = "unknown setting"
        problems.append(f"{where}{'.' + loc if loc else ''}: {message}")
    return "configuration error: " + "; ".join(problems)


def load_config(settings: Settings) -> AlertsConfig:
    """The checked ``[alerts]`` table; raise :class:`SettingsError` with one line."""
    try:
        return AlertsConfig.model_validate(settings.alerts)
    except ValidationError as exc:
        raise SettingsError(one_line(exc, "[alerts]")) from None
