"""Fixtures for the alert tests: a fake Slack, and workers pointed at it and at the test databases."""

from __future__ import annotations

import pytest

from alerts.rules import Rule
from alerts.worker import Worker
from fakes.slack import FakeSlack

# Fast enough for tests, the same code paths as production.
FAST_ALERTS = {"pace": 0.02, "outbox_backoff": 0.1, "outbox_backoff_max": 1, "send_timeout": 3,
               "claim_timeout": 5, "lease": 2}


def make_rule(**fields) -> Rule:
    base = dict(id="too_many_failures", title="Too many failed payments", metric="failed_payments",
                comparison=">", threshold=2, window=60, keep_firing_for=0,
                runbook={"section": "Emergency Response", "steps": ["Look at the decline codes."]})
    base.update(fields)
    return Rule.model_validate(base)


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def worker_for(make_settings, slack):
    """``worker_for(rules, alerts={...}, **settings)``: a worker posting to the fake Slack's webhook."""

    def make(rules, *, alerts: dict | None = None, use_lease: bool = False, holder: str | None = None,
             **overrides) -> Worker:
        values = {"SLACK_WEBHOOK_URL": slack.webhook_url, "alerts": {**FAST_ALERTS, **(alerts or {})},
                  "eval_interval": 2}
        values.update(overrides)
        return Worker(make_settings(**values), rules=rules, use_lease=use_lease, holder=holder)

    return make
