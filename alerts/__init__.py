"""Alerts: the guide's thresholds as rules, their state machine, notification
channels, the outbox and the worker (``python -m alerts``; docs/alerts.md)."""
