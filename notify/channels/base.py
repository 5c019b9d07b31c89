"""What every notification channel is: a class with one ``send(message)``.

A channel says whether a failure is worth retrying (healthchecks'
``TransportError(permanent=...)``): a deleted Slack webhook (404/410) is
permanent, a 429 or a 503 is not.  Channels never retry themselves; the
outbox (:mod:`notify.outbox`) is the one place that does.

A channel that can address its messages (Slack with a bot token) returns a
:class:`Post` from ``send``: the outbox keeps it, so a reminder replies to
the firing message and a resolve edits it; and it can ``find`` a post by
its dedup key, so a post whose answer was lost is looked up before it is
sent again (``exactly_once``).  The others are at-least-once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from metrics.settings import Settings
from notify.options import DeliveryOptions


class TransportError(Exception):
    """A post that did not go through.

    ``permanent``: retrying cannot help (the message is given up at once).
    ``retry_after``: the receiver said when to come back (a 429's ``Retry-After``).
    ``throttled``: a rate limit, which holds the whole channel, not only this message.
    ``maybe_sent``: the receiver may have posted it (a timeout after the request went out),
    so a channel that can look posts up does so before sending again.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None,
                 throttled: bool = False, maybe_sent: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.throttled = throttled
        self.maybe_sent = maybe_sent


@dataclass(frozen=True)
class Post:
    """Where a channel put a message: enough to edit it, reply to it and link to it."""

    ref: dict = field(default_factory=dict)  # Slack: {"channel": "C0…", "ts": "1700000000.000100"}
    link: str | None = None

    def as_doc(self) -> dict:
        return {"ref": dict(self.ref), "link": self.link}

    @classmethod
    def from_doc(cls, doc: dict | None) -> "Post | None":
        return cls(dict(doc.get("ref") or {}), doc.get("link")) if doc and doc.get("ref") else None


class Channel(ABC):
    name: ClassVar[str]
    # True when a post whose answer was lost can be found again, so it is never sent twice.
    exactly_once: bool = False

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings, config: DeliveryOptions) -> "Channel | None":
        """The channel as configured, or ``None`` when it is not configured."""

    @abstractmethod
    def send(self, message: dict, *, key: str = "", thread: Post | None = None) -> Post | None:
        """Post one message; raise :class:`TransportError` when it did not arrive.

        ``thread`` is the post of this alert's firing message, when the channel returned one:
        a reminder goes under it and a resolve edits it.
        """

    def find(self, key: str, since: datetime, thread: Post | None = None) -> Post | None:
        """The earlier post of ``key`` made after ``since``, or ``None`` (also when the channel cannot tell)."""
        return None

    def secrets(self) -> list[str]:
        """What must never appear in an error text about this channel (see ``metrics.redact``)."""
        return []

    def describe(self) -> str:
        return self.name
