"""The delivery settings the layer reads, as an interface.

The alert worker's ``[alerts]`` table (``alerts.config.AlertsConfig``)
provides them; ``docs/alerts.md`` describes each.  A protocol, not a model,
so the layer does not import the table's owner.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol


class DeliveryOptions(Protocol):
    channels: list[str] | None
    outbox_max_attempts: int  # sends that failed for no reason a retry explains (crashes, bugs)
    outbox_backoff: timedelta
    outbox_backoff_max: timedelta
    outbox_interval: timedelta
    outbox_keep: timedelta
    outbox_max_age: timedelta
    outbox_dead_keep: timedelta
    pace: timedelta
    send_timeout: timedelta
    claim_timeout: timedelta
    slack_api_base: str | None
