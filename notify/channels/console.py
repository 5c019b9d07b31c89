"""The console channel: each message is logged (and the dashboard shows the outbox).

Registered exactly like Slack, and used when no other channel is configured,
so ``make run`` shows alerts firing without any account anywhere.
"""

from __future__ import annotations

import logging

from metrics.settings import Settings
from notify.channels.base import Channel, Post
from notify.message import RESOLVED, plain_text
from notify.options import DeliveryOptions

# The name the alert worker's log has always used for what it posts to the console.
log = logging.getLogger("alerts.console")


class ConsoleChannel(Channel):
    name = "console"

    @classmethod
    def from_settings(cls, settings: Settings, config: DeliveryOptions) -> "ConsoleChannel":
        return cls()

    def send(self, message: dict, *, key: str = "", thread: Post | None = None) -> None:
        level = logging.INFO if message["kind"] == RESOLVED else logging.WARNING
        log.log(level, "\n%s", plain_text(message))
