"""The alert worker's outbox is the delivery layer's (:mod:`notify.outbox`): channels, retries,
pacing and dead letters are shared with the weekly report.  The engine, the CLI and the Alerts
page read it under this name."""

from notify.outbox import (DEAD, EPOCH, OUTBOX, PENDING, SENDING, SENT, Outbox, counts, ensure_indexes, given_up,
                           list_messages, requeue, utcnow)

__all__ = ["DEAD", "EPOCH", "OUTBOX", "PENDING", "SENDING", "SENT", "Outbox", "counts", "ensure_indexes",
           "given_up", "list_messages", "requeue", "utcnow"]
