"""Every metric written once: its key, label, unit, better direction, definition,
default target, splits, formula and place in the snapshot.

One table, many readers (as Datasette's ``SETTINGS`` drives its ``--help``,
its docs and its docs test): the guide's targets (:mod:`metrics.targets`), the
dashboard's tiles and their help text, the alert metrics (``alerts/readings.py``)
and the titles and descriptions of the rules on them (:func:`condition_title`,
with each rule's own threshold), the weekly report's figures
(``reports/model.py``) and the metric tables of ``docs/metrics.md`` are
derived from :data:`METRICS`, and the metric functions compute their rates
with :func:`rate`, so "success rate" means one thing everywhere.
``tests/test_catalogue.py`` fails when a metric has no definition, when its
snapshot path is missing from a snapshot, when a docs row, an alert metric or
a report figure disagrees with this table, or when a rule's title does not
follow its threshold.

A rate's :class:`Ratio` names its numerator and denominator as sums of
counts: the fields of a window summary (``payments.24h`` in the snapshot)
and of the rollup figures computed from the buckets, which carry the same
names.

``python -m metrics.catalogue`` prints the docs tables;
``python -m metrics.catalogue --write docs/metrics.md`` rewrites them in place.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from metrics.stats import ratio

Unit = Literal["rate", "ms", "count", "money", "instant", "pct", "bytes"]
Better = Literal["higher", "lower", "neither"]
Comparison = Literal[">", "<", "<="]

# The splits an alert rule can ask of a payment metric (one alert per currency, per specialist).
PAYMENT_SPLITS = ("currency", "specialist")

SECTIONS = {"payments": "Payments", "webhooks": "Webhooks", "enrollments": "Enrollments", "system": "System"}


@dataclass(frozen=True)
class Ratio:
    """``sum(numerator) / sum(denominator)`` over named counts; ``None`` when the denominator is 0."""

    numerator: tuple[str, ...]
    denominator: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.numerator + self.denominator))

    def __call__(self, counts: Mapping[str, int]) -> float | None:
        missing = [f for f in self.fields if f not in counts]
        if missing:
            raise KeyError(f"{self.text()} needs {', '.join(missing)}")
        return ratio(sum(counts[f] for f in self.numerator), sum(counts[f] for f in self.denominator))

    def text(self) -> str:
        """``succeeded / (succeeded + failed)``."""
        def side(names: tuple[str, ...]) -> str:
            return names[0] if len(names) == 1 else "(" + " + ".join(names) + ")"
        return f"{side(self.numerator)} / {side(self.denominator)}"


@dataclass(frozen=True)
class Goal:
    """A default target: ``value <comparison> target`` is good; ``margin`` is the at-risk band."""

    comparison: Comparison
    value: float
    margin: float
    source: str  # where the production guide says so


@dataclass(frozen=True)
class Metric:
    key: str
    section: str  # a key of SECTIONS
    label: str  # as it reads on its own (a report line, a target, an alert title)
    unit: Unit
    better: Better
    definition: str
    path: str | None  # where it is in the snapshot JSON (dotted); None when derived
    formula: Ratio | None = None
    target: Goal | None = None
    splits: tuple[str, ...] = ()
    short: str | None = None  # the label within its section (a dashboard tile)
    complement_of: str | None = None  # 1 − that metric (delivery success from the failure rate)

    @property
    def tile_label(self) -> str:
        return self.short or self.label

    def read(self, snapshot: Mapping) -> float | None:
        """This metric's number in a snapshot (``metrics.snapshot.build_snapshot``); ``None`` when absent."""
        if self.complement_of is not None:
            other = METRICS[self.complement_of].read(snapshot)
            return None if other is None else 1 - other
        value: object = snapshot
        for part in (self.path or "").split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def rate(self, **counts: int) -> float | None:
        """The formula applied to counts: ``METRICS["payment_success_rate"].rate(succeeded=9, failed=1)``."""
        if self.formula is None:
            raise TypeError(f"{self.key} is not a ratio")
        return self.formula(counts)

    def target_text(self) -> str:
        """``> 98%``, ``< 2 s``, ``= 0``; empty without a target."""
        if self.target is None:
            return ""
        return threshold_text(self.unit, self.target.comparison, self.target.value)


def amount(unit: str, value: float) -> str:
    """A threshold as a person writes it: ``98%``, ``2 s``, ``500 ms``, ``80%``, ``1,000``."""
    if unit == "rate":
        return f"{value * 100:g}%"
    if unit == "ms":
        return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"
    if unit == "pct":
        return f"{value:g}%"
    return f"{value:,g}"


def threshold_text(unit: str, comparison: str, value: float) -> str:
    if comparison == "<=" and value == 0:
        return "= 0"
    return f"{comparison} {amount(unit, value)}"


_ABOVE_BELOW = {"<": "below", "<=": "at most", ">": "above", ">=": "at least", "==": "equal to", "!=": "not"}
_HOW_MANY = {">": "More than", ">=": "At least", "<": "Fewer than", "<=": "At most", "==": "Exactly",
             "!=": "Other than"}


def _noun(label: str) -> str:
    """A label inside a sentence: ``failed payments``; an acronym keeps its capitals (``API probes``)."""
    return label if label[1:2].isupper() else label[:1].lower() + label[1:]


def condition_title(key: str, comparison: str, threshold: float, window: str | None = None) -> str:
    """An alert title from the metric's label and the rule's own comparison and threshold.

    ``Payment success rate below 95%``.  A count reads as the guide's alerts do, with the
    rule's window (``window`` as it reads after the count: ``in 1 hour``): ``More than 10
    failed payments in 1 hour``, ``No webhook events received in 1 hour``; above 0 it is the
    label alone (``Duplicate enrollments``).
    """
    m = METRICS[key]
    if m.unit != "count":
        return f"{m.label} {_ABOVE_BELOW.get(comparison, comparison)} {amount(m.unit, threshold)}"
    if comparison == ">" and threshold == 0:
        return m.label
    within = f" {window}" if window else ""
    if (comparison, threshold) in (("<", 1), ("<=", 0), ("==", 0)):
        return f"No {_noun(m.label)}{within}"
    return f"{_HOW_MANY.get(comparison, comparison)} {amount(m.unit, threshold)} {_noun(m.label)}{within}"


# -- the catalogue -----------------------------------------------------------------

_SUCCESS = Ratio(("succeeded",), ("succeeded", "failed"))
_REFUND = Ratio(("refunds",), ("succeeded",))
_WEBHOOK_FAILURE = Ratio(("failed",), ("processed", "failed"))
_WEBHOOK_DELIVERY = Ratio(("processed",), ("processed", "failed"))
_CONVERSION = Ratio(("converted",), ("created",))
_API_ERRORS = Ratio(("errors",), ("samples",))
_DISK = Ratio(("fs_used_bytes",), ("fs_total_bytes",))

_REVENUE = ("The sum of amount over succeeded payments (completed or refunded) created {when}, per currency, "
            "in minor units; currencies are never converted.")

CATALOGUE: tuple[Metric, ...] = (
    # payments
    Metric("revenue_today", "payments", "Revenue today", "money", "higher",
           _REVENUE.format(when="since local midnight"), "payments.revenue.today"),
    Metric("revenue_week", "payments", "Revenue this week", "money", "higher",
           _REVENUE.format(when="since Monday 00:00 local"), "payments.revenue.week"),
    Metric("revenue_month", "payments", "Revenue this month", "money", "higher",
           _REVENUE.format(when="since the 1st 00:00 local"), "payments.revenue.month"),
    Metric("payments_created", "payments", "Payments created", "count", "higher",
           "Payments created in the window, whatever their status (the sum of payments.24h.by_status).", None,
           short="Payments"),
    Metric("payments_succeeded", "payments", "Payments succeeded", "count", "higher",
           "Payments created in the window with status completed or refunded (the money was captured).",
           "payments.24h.succeeded", short="Succeeded"),
    Metric("failed_payments", "payments", "Failed payments", "count", "lower",
           "Payments created in the window with status failed (declined cards and other errors).",
           "payments.24h.failed", splits=PAYMENT_SPLITS),
    Metric("payment_success_rate", "payments", "Payment success rate", "rate", "higher",
           "succeeded / (succeeded + failed) over payments created in the window; pending, processing "
           "and canceled payments are in neither.",
           "payments.24h.success_rate", formula=_SUCCESS,
           target=Goal(">", 0.98, 0.005, "Success Metrics: payment success rate > 98%"),
           splits=PAYMENT_SPLITS, short="Success rate"),
    Metric("revenue", "payments", "Revenue", "money", "higher",
           _REVENUE.format(when="in the window"), "payments.24h.revenue"),
    Metric("avg_transaction_value", "payments", "Average transaction value", "money", "neither",
           "Revenue divided by the number of succeeded payments, per currency.",
           "payments.24h.avg_transaction_value"),
    Metric("refunds", "payments", "Refunds", "count", "lower",
           "Payments whose refundedAt falls in the window, whatever their createdAt.", "payments.24h.refunds"),
    Metric("refund_rate", "payments", "Refund rate", "rate", "lower",
           "refunds / succeeded: payments refunded in the window over payments succeeded in the window.",
           "payments.24h.refund_rate", formula=_REFUND,
           target=Goal("<", 0.02, 0.005, "Monitoring dashboard: refund rate (target < 2%)"), splits=PAYMENT_SPLITS),
    Metric("payment_processing_ms", "payments", "Payment processing time (avg)", "ms", "lower",
           "Average of completedAt − createdAt over succeeded payments created in the window that have a "
           "completedAt.",
           "payments.24h.processing_ms.avg",
           target=Goal("<", 2000, 500, "Success Metrics: average payment processing time < 2 seconds"),
           short="Processing time (avg)"),
    Metric("payment_processing_p95_ms", "payments", "Payment processing time (p95)", "ms", "lower",
           "95th percentile of completedAt − createdAt over the same payments.",
           "payments.24h.processing_ms.p95", short="Processing time (p95)"),
    Metric("payments_by_status", "payments", "Payments by status", "count", "neither",
           "How many payments of each status were created in the window.", "payments.24h.by_status"),
    Metric("stuck_payments", "payments", "Stuck payments", "count", "lower",
           "Payments pending or processing for longer than PAYWATCH_STUCK_MINUTES (default 30), "
           "whenever created (the runbook's query).", "payments.stuck"),
    # webhooks
    Metric("webhooks_received", "webhooks", "Webhook events received", "count", "neither",
           "Webhook events whose receivedAt is in the window, whatever their status.",
           "webhooks.24h.received", short="Events received"),
    Metric("webhooks_processed", "webhooks", "Webhook events processed", "count", "higher",
           "Events received in the window with status processed.", "webhooks.24h.processed", short="Processed"),
    Metric("webhooks_failed", "webhooks", "Webhook events failed", "count", "lower",
           "Events received in the window with status failed.", "webhooks.24h.failed", short="Failed"),
    Metric("webhook_failure_rate", "webhooks", "Webhook failure rate", "rate", "lower",
           "failed / (processed + failed) over events received in the window; events still in flight "
           "are in neither.", "webhooks.24h.failure_rate", formula=_WEBHOOK_FAILURE, short="Failure rate"),
    Metric("webhook_delivery_rate", "webhooks", "Webhook delivery success", "rate", "higher",
           "processed / (processed + failed): events the platform handled without error, "
           "1 − the failure rate.", None, formula=_WEBHOOK_DELIVERY,
           target=Goal(">", 0.99, 0.003, "Success Metrics: webhook delivery success > 99%"),
           short="Delivery success", complement_of="webhook_failure_rate"),
    Metric("webhook_processing_avg_ms", "webhooks", "Webhook processing time (avg)", "ms", "lower",
           "Average of processedAt − receivedAt over events received in the window that have a processedAt.",
           "webhooks.24h.processing_ms.avg", short="Processing time (avg)"),
    Metric("webhook_processing_ms", "webhooks", "Webhook processing time (p95)", "ms", "lower",
           "95th percentile of processedAt − receivedAt over events received in the window that have a "
           "processedAt.",
           "webhooks.24h.processing_ms.p95",
           target=Goal("<", 10_000, 2000, "Alerts: webhook response time > 10 seconds"),
           short="Processing time (p95)"),
    Metric("webhook_delivery_lag_ms", "webhooks", "Webhook delivery lag (avg)", "ms", "lower",
           "Average of receivedAt − stripeCreatedAt: from Stripe creating the event to the platform receiving it.",
           "webhooks.24h.delivery_lag_ms.avg", short="Delivery lag (avg)"),
    Metric("webhook_delivery_lag_p95_ms", "webhooks", "Webhook delivery lag (p95)", "ms", "lower",
           "95th percentile of receivedAt − stripeCreatedAt over the same events.",
           "webhooks.24h.delivery_lag_ms.p95", short="Delivery lag (p95)"),
    Metric("webhook_last_received_at", "webhooks", "Last webhook event received", "instant", "neither",
           "The latest receivedAt before the evaluation instant, in any window; the guide alerts when "
           "no webhook arrives for an hour.", "webhooks.last_received_at", short="Last event received"),
    # enrollments
    Metric("new_enrollments_today", "enrollments", "New enrollments today", "count", "higher",
           "Enrollments created since local midnight.", "enrollments.new_today"),
    Metric("enrollments_created", "enrollments", "New enrollments", "count", "higher",
           "Enrollments created in the window.", "enrollments.24h.created"),
    Metric("enrollments_converted", "enrollments", "Enrollments paid", "count", "higher",
           "Enrollments created in the window whose paymentStatus is paid or refunded.",
           "enrollments.24h.converted", short="Paid"),
    Metric("conversion_rate", "enrollments", "Conversion rate", "rate", "higher",
           "converted / created: enrollments created in the window whose payment went through "
           "(paid or later refunded).", "enrollments.24h.conversion_rate", formula=_CONVERSION),
    Metric("enrollments_refunded", "enrollments", "Refunded enrollments", "count", "lower",
           "Enrollments whose refundedAt is in the window, whatever their createdAt.", "enrollments.24h.refunded"),
    Metric("activation_avg_ms", "enrollments", "Enrollment activation (avg)", "ms", "lower",
           "Average of the enrollment's activatedAt − its payment's completedAt, over enrollments activated "
           "in the window.", "enrollments.24h.activation_ms.avg", short="Activation time (avg)"),
    Metric("activation_ms", "enrollments", "Enrollment activation (p95)", "ms", "lower",
           "95th percentile of activatedAt − the payment's completedAt (from payment completed to enrollment "
           "active), over enrollments activated in the window.", "enrollments.24h.activation_ms.p95",
           target=Goal("<", 2000, 500,
                       "Success Metrics: enrollment activation within 2 seconds of payment success"),
           short="Activation time (p95)"),
    Metric("email_avg_ms", "enrollments", "Confirmation email (avg)", "ms", "lower",
           "Average of confirmationEmailSentAt − activatedAt over the same enrollments.",
           "enrollments.24h.email_ms.avg"),
    Metric("email_ms", "enrollments", "Confirmation email (p95)", "ms", "lower",
           "95th percentile of confirmationEmailSentAt − activatedAt (from enrollment active to confirmation "
           "email sent), over enrollments activated in the window.", "enrollments.24h.email_ms.p95",
           target=Goal("<", 5000, 1000, "Success Metrics: all confirmation emails sent within 5 seconds")),
    Metric("pending_payments", "enrollments", "Pending payments", "count", "lower",
           "Enrollments still waiting for their payment (paymentStatus pending), whenever created.",
           "enrollments.pending_payments"),
    Metric("duplicate_enrollments", "enrollments", "Duplicate enrollments", "count", "lower",
           "Customer and service pairs with more than one active or pending enrollment.",
           "enrollments.duplicates", target=Goal("<=", 0, 0, "Success Metrics: zero duplicate enrollments")),
    # system: the platform's API as the health probe sees it (PAYWATCH_HEALTH_URL), and its database
    Metric("api_latency_ms", "system", "API latency (avg)", "ms", "lower",
           "Average time for the platform's health URL to answer, over the probes of the window; "
           "the guide alerts when API latency exceeds 1 second.", None),
    Metric("api_latency_p95_ms", "system", "API latency (p95)", "ms", "lower",
           "95th percentile of the health probes' answer times in the window.", None),
    Metric("api_error_rate", "system", "API error rate", "rate", "lower",
           "errors / samples: health probes of the window that failed (no answer, a timeout) or answered "
           "with an HTTP error; "
           "the guide alerts above 1%.", None, formula=_API_ERRORS),
    Metric("memory_pct", "system", "Memory usage", "pct", "lower",
           "Average memory use the platform's health endpoint reported over the probes of the window, "
           "where it reports it; the guide alerts above 80%.", None),
    Metric("db_connections", "system", "Database connections", "count", "neither",
           "Open connections to the database server (serverStatus.connections; needs the clusterMonitor role).",
           "system.connections.current", short="Connections"),
    Metric("db_storage_bytes", "system", "Database storage", "bytes", "neither",
           "Data and indexes of the platform database on disk (dbStats storage size).",
           "system.storage.storage_bytes", short="Storage"),
    Metric("disk_usage", "system", "Disk usage", "rate", "lower",
           "fs_used_bytes / fs_total_bytes: the used share of the database's file system, where the server "
           "reports it.", None, formula=_DISK),
    Metric("db_documents", "system", "Documents", "count", "neither",
           "Documents in the platform database (dbStats objects).", "system.storage.objects"),
)

METRICS: dict[str, Metric] = {m.key: m for m in CATALOGUE}


def rate(key: str, **counts: int) -> float | None:
    """A catalogue rate from its counts: ``rate("payment_success_rate", succeeded=9, failed=1)`` is 0.9."""
    return METRICS[key].rate(**counts)


# -- the docs tables ---------------------------------------------------------------

TABLE_HEADER = ("| key | label | unit | better | target | snapshot key | definition |\n"
                "|---|---|---|---|---|---|---|")
_BEGIN = "<!-- catalogue:{section} (generated by python -m metrics.catalogue; edit metrics/catalogue.py) -->"
_END = "<!-- /catalogue -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def docs_row(m: Metric) -> str:
    target = f"`{m.target_text()}`" if m.target else ""
    path = f"`{m.path}`" if m.path else f"1 − `{METRICS[m.complement_of].path}`" if m.complement_of else ""
    return (f"| `{m.key}` | {_cell(m.label)} | {m.unit} | {m.better} | {target} | {path} | "
            f"{_cell(m.definition)} |")


def docs_table(section: str) -> str:
    rows = [docs_row(m) for m in CATALOGUE if m.section == section]
    return "\n".join([_BEGIN.format(section=section), TABLE_HEADER, *rows, _END])


def write_tables(text: str) -> str:
    """``text`` with every generated table replaced by the catalogue's current one."""
    for section in SECTIONS:
        pattern = re.compile(re.escape(_BEGIN.format(section=section)) + r".*?" + re.escape(_END), re.S)
        if not pattern.search(text):
            raise ValueError(f"no generated table for {section} (a line {_BEGIN.format(section=section)})")
        text = pattern.sub(lambda _m, s=section: docs_table(s), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metrics.catalogue",
                                     description="Print the metric tables of docs/metrics.md, or rewrite them.")
    parser.add_argument("--write", metavar="FILE", type=Path, help="rewrite the generated tables in FILE")
    args = parser.parse_args(argv)
    if args.write is None:
        print("\n\n".join(docs_table(s) for s in SECTIONS))
        return 0
    try:
        args.write.write_text(write_tables(args.write.read_text()))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
