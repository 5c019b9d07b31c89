"""The console channel: each message is logged (and the dashboard shows the outbox).

Registered exactly like Slack, and used when no other channel is configured,
so ``make run`` shows alerts firing without any account anywhere.
"""

from __future__ import annotations

import logging

from alerts.channels.base import Channel
from alerts.config import AlertsConfig
from alerts.messages import RESOLVED, plain_text
from metrics.settings import Settings

log = logging.getLogger("alerts.console")


class ConsoleChannel(Channel):
    name = "console"

    @classmethod
    def from_settings(cls, settings: Settings, config: AlertsConfig) -> "ConsoleChannel":
        return cls()

    def send(self, message: dict) -> None:
        level = logging.INFO if message["kind"] == RESOLVED else logging.WARNING
        log.log(level, "\n%s", plain_text(message))
