"""The guide's targets as data, and whether a value meets them.

The production guide states what "good" looks like in its Success Metrics
("Payment success rate > 98%", "Zero duplicate enrollments", ...) and in its
monitoring section (refund rate target < 2 %, webhook response time under
10 s).  Each is written once, with its metric, in :mod:`metrics.catalogue`
(``Metric.target``), and becomes a :class:`Target` here; the dashboard colours a tile by
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

from metrics.catalogue import CATALOGUE, Metric, threshold_text

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
        """``> 98%``, ``< 2 s``, ``= 0``: the target as a person reads it (with any override)."""
        return threshold_text(self.unit, self.comparison, self.target)


def _from_catalogue(m: Metric) -> Target:
    goal = m.target
    assert goal is not None
    return Target(m.key, m.label, goal.comparison, goal.value, goal.margin, m.unit,  # type: ignore[arg-type]
                  goal.source, m.read)


# The metrics of the catalogue that have a target, in its order; each target's key is its metric's.
DEFAULTS: tuple[Target, ...] = tuple(_from_catalogue(m) for m in CATALOGUE if m.target is not None)


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
