"""Delivery: the notification channels, the outbox and its pacing, and the record of what was sent.

One layer that every job posting to people uses: the alert worker
(``alerts``) and the weekly report (``reports``) both enqueue messages here.
It knows nothing of its users: a message is the plain dict described in
:mod:`notify.message`, the settings it reads are the few delivery keys of
:class:`notify.options.DeliveryOptions`, and it imports only ``metrics``.

- :mod:`notify.channels`: one module per channel, one registry;
- :mod:`notify.outbox`: every message stored before it is sent; the one
  place that retries, paces and gives up;
- :mod:`notify.log`: every attempt, and the Slack message each alert
  episode lives in (so a resolve edits it and a reminder replies to it).
"""
