"""The guide's targets as data, and whether a value meets them.

The production guide states what "good" looks like in its Success Metrics
("Payment success rate > 98%", "Zero duplicate enrollments", ...) and in its
monitoring section (refund rate target < 2 %, webhook response time under
10 s).  Each becomes a :class:`Target`; the dashboard colours a tile by
:meth:`Target.evaluate`, and the weekly report can list the same verdicts.

A value that meets the target but lies within the "at risk" margin of it is
``at_risk``: still fine, about to not be.  ``None`` (nothing to measure, or
the database did not answer) is ``unknown``, never ``met``.

``paywatch.toml`` may move a target or its margin::

    [targets]
    payment_success_rate = 0.97
    payment_success_rate_margin = 0.01
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Callable, Literal, Mapping

Status = Literal["met", "at_risk", "missed", "unknown"]
STATUSES: tuple[Status, ...] = ("met", "at_risk", "missed", "unknown")
MARGIN_SUFFIX = "_margin"


class TargetsError(ValueError):
    """A ``[targets]`` key or value that does not make sense."""


@dataclass(frozen=True)
class Target:
    """``value <comparison> target`` is good; ``margin`` is the at-risk band on the good side."""

    key: str
    label: str
    comparison: Literal[">", "<", "<="]
    target: float
    margin: float
    unit: Literal["rate", "ms", "count"]
    source: str  # where the guide says so
    read: Callable[[dict], float | None]  # the value in a snapshot (``metrics.snapshot``)

    def evaluate(self, value: float | None) -> Status:
        if value is None:
            return "unknown"
        good = {">": operator.gt, "<": operator.lt, "<=": operator.le}[self.comparison]
        if not good(value, self.target):
            return "missed"
        if self.margin and self._near(value):
            return "at_risk"
        return "met"

    def _near(self, value: float) -> bool:
        if self.comparison == ">":
            return value < self.target + self.margin
        return value > self.target - self.margin

    def describe(self) -> str:
        """``> 98%``, ``< 2 s``, ``= 0``: the target as a person reads it."""
        if self.comparison == "<=" and self.target == 0:
            return "= 0"
        if self.unit == "rate":
            amount = f"{self.target * 100:g}%"
        elif self.unit == "ms":
            amount = f"{self.target / 1000:g} s" if self.target >= 1000 else f"{self.target:g} ms"
        else:
            amount = f"{self.target:g}"
        return f"{self.comparison} {amount}"


def _dig(*path: str) -> Callable[[dict], float | None]:
    def read(snapshot: dict) -> float | None:
        value: object = snapshot
        for part in path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return read


def _delivery_rate(snapshot: dict) -> float | None:
    """Webhook delivery success = 1 - failure rate (events processed without error)."""
    failure = _dig("webhooks", "24h", "failure_rate")(snapshot)
    return None if failure is None else 1 - failure


DEFAULTS: tuple[Target, ...] = (
    Target("payment_success_rate", "Payment success rate", ">", 0.98, 0.005, "rate",
           "Success Metrics: payment success rate > 98%", _dig("payments", "24h", "success_rate")),
    Target("refund_rate", "Refund rate", "<", 0.02, 0.005, "rate",
           "Monitoring dashboard: refund rate (target < 2%)", _dig("payments", "24h", "refund_rate")),
    Target("webhook_delivery_rate", "Webhook delivery success", ">", 0.99, 0.003, "rate",
           "Success Metrics: webhook delivery success > 99%", _delivery_rate),
    Target("payment_processing_ms", "Payment processing time (avg)", "<", 2000, 500, "ms",
           "Success Metrics: average payment processing time < 2 seconds",
           _dig("payments", "24h", "processing_ms", "avg")),
    Target("activation_ms", "Enrollment activation (p95)", "<", 2000, 500, "ms",
           "Success Metrics: enrollment activation within 2 seconds of payment success",
           _dig("enrollments", "24h", "activation_ms", "p95")),
    Target("email_ms", "Confirmation email (p95)", "<", 5000, 1000, "ms",
           "Success Metrics: all confirmation emails sent within 5 seconds",
           _dig("enrollments", "24h", "email_ms", "p95")),
    Target("duplicate_enrollments", "Duplicate enrollments", "<=", 0, 0, "count",
           "Success Metrics: zero duplicate enrollments", _dig("enrollments", "duplicates")),
    Target("webhook_processing_ms", "Webhook processing time (p95)", "<", 10_000, 2000, "ms",
           "Alerts: webhook response time > 10 seconds", _dig("webhooks", "24h", "processing_ms", "p95")),
)


def targets(overrides: Mapping[str, float] | None = None) -> dict[str, Target]:
    """Every target by key, with ``[targets]`` overrides applied (unknown keys refused)."""
    out = {t.key: t for t in DEFAULTS}
    for name, value in (overrides or {}).items():
        key, is_margin = (name[: -len(MARGIN_SUFFIX)], True) if name.endswith(MARGIN_SUFFIX) else (name, False)
        if key not in out:
            raise TargetsError(f"[targets] has unknown key {name!r}; known: {', '.join(out)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise TargetsError(f"[targets] {name} must be a number >= 0, got {value!r}")
        if out[key].unit == "rate" and value > 1:
            raise TargetsError(f"[targets] {name} is a fraction (0.98 for 98%), got {value!r}")
        out[key] = replace(out[key], **{"margin" if is_margin else "target": float(value)})
    return out


def evaluate_snapshot(snapshot: dict, overrides: Mapping[str, float] | None = None) -> list[dict]:
    """Each target's value and verdict for a snapshot (``metrics.snapshot.build_snapshot``)."""
    rows = []
    for target in targets(overrides).values():
        value = target.read(snapshot)
        rows.append({"key": target.key, "label": target.label, "target": target.describe(),
                     "value": value, "status": target.evaluate(value)})
    return rows
