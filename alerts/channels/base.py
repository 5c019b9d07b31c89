"""What every notification channel is: a class with one ``send(message)``.

A channel says whether a failure is worth retrying (healthchecks'
``TransportError(permanent=...)``): a deleted Slack webhook (404/410) is
permanent, a 429 or a 503 is not.  Channels never retry themselves; the
outbox (:mod:`alerts.outbox`) is the one place that does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from alerts.config import AlertsConfig
from metrics.settings import Settings


class TransportError(Exception):
    """A post that did not go through; ``permanent`` means retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Channel(ABC):
    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings, config: AlertsConfig) -> "Channel | None":
        """The channel as configured, or ``None`` when it is not configured."""

    @abstractmethod
    def send(self, message: dict) -> None:
        """Post one message; raise :class:`TransportError` when it did not arrive."""

    def describe(self) -> str:
        return self.name
