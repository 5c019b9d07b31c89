"""The report as plain data: built once from ``metrics/``, rendered three ways.

``build_report(src, settings, period)`` asks the metric functions for the
period and for the one before it and returns a :class:`Report`: sections of
:class:`Figure` (one number against the previous period and, where the guide
sets one, its target) and :class:`Table` (the breakdowns).  The HTML, XLSX
and CSV renderers only lay this out; none of them computes a number, so the
three files cannot disagree, and none of them can disagree with the
dashboard, which calls the same ``metrics`` functions.  A figure that is a
metric of the catalogue (``metrics/catalogue.py``, :data:`FIGURE_METRICS`)
takes its label, unit and better direction from it, and its target from
``metrics.targets``, which reads the catalogue with the configured overrides.

Periods are ISO weeks (Monday 00:00 to Monday 00:00) or calendar months in
the configured time zone; the previous period is the week or month before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Literal
from zoneinfo import ZoneInfo

from pymongo.database import Database
from pymongo.errors import PyMongoError

from metrics import catalogue, enrollments, payments, review, series, webhooks
from metrics import format as fmt
from metrics.db import DataSourceUnavailable, Source
from metrics.frames import series_frame
from metrics.probe import probe_summary
from metrics.quality import data_quality
from metrics.settings import Settings
from metrics.stripe import reconcile
from metrics.stripe.store import MirrorStore
from metrics.system import database_health, embedded_storage_path
from metrics.targets import Status, Target, targets
from metrics.windows import Window, utc
from reports import alert_review
from reports.periods import Period

log = logging.getLogger(__name__)

Unit = Literal["count", "rate", "ms", "money", "bytes", "percent", "text", "datetime", "date", "hour"]
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NOT_AVAILABLE = "not available"
AT_THE_END, NOW = " at the end", " (now)"  # a figure that is a state, not a total over the period

# How many rows the breakdown tables keep; the rest is in the metrics, not the review.
TOP_ROWS = 15
LARGEST_FAILED = 10
WORST_HOURS = 5
RECONCILE_ROWS = 50
# The previous period's breakdowns are read deeper so a key that was just below
# the top rows last week still shows its count rather than a blank.
PREVIOUS_DEPTH = 200
# "What changed most" ignores counts this small: 1 -> 3 failures is not news.
MIN_CHANGE_BASE = 10
CHANGES_IN_SUMMARY = 3

# The report's figures that are catalogue metrics, by figure key; a figure per currency
# (``payments.revenue.usd``) is its prefix's.  Every other figure (alert history, data
# quality, reconciliation, the probe count, data and index sizes) is the report's own.
FIGURE_METRICS: dict[str, str] = {
    "payments.created": "payments_created",
    "payments.succeeded": "payments_succeeded",
    "payments.failed": "failed_payments",
    "payments.success_rate": "payment_success_rate",
    "payments.revenue": "revenue",
    "payments.avg_value": "avg_transaction_value",
    "payments.refunds": "refunds",
    "payments.refund_rate": "refund_rate",
    "payments.processing_avg": "payment_processing_ms",
    "payments.processing_p95": "payment_processing_p95_ms",
    "webhooks.received": "webhooks_received",
    "webhooks.processed": "webhooks_processed",
    "webhooks.failed": "webhooks_failed",
    "webhooks.failure_rate": "webhook_failure_rate",
    "webhooks.delivery_rate": "webhook_delivery_rate",
    "webhooks.processing_avg": "webhook_processing_avg_ms",
    "webhooks.processing_p95": "webhook_processing_ms",
    "webhooks.lag_avg": "webhook_delivery_lag_ms",
    "webhooks.lag_p95": "webhook_delivery_lag_p95_ms",
    "enrollments.created": "enrollments_created",
    "enrollments.converted": "enrollments_converted",
    "enrollments.conversion_rate": "conversion_rate",
    "enrollments.refunded": "enrollments_refunded",
    "enrollments.pending_payments": "pending_payments",
    "enrollments.activation_avg": "activation_avg_ms",
    "enrollments.activation_p95": "activation_ms",
    "enrollments.email_avg": "email_avg_ms",
    "enrollments.email_p95": "email_ms",
    "enrollments.duplicates": "duplicate_enrollments",
    "system.connections": "db_connections",
    "system.storage": "db_storage_bytes",
    "system.api_latency_avg": "api_latency_ms",
    "system.api_latency_p95": "api_latency_p95_ms",
    "system.api_error_rate": "api_error_rate",
    "system.memory": "memory_pct",
}
UNITS = {"pct": "percent"}  # the report's name of a catalogue unit, where it has another
BETTER: dict[str, Literal["up", "down"] | None] = {"higher": "up", "lower": "down", "neither": None}

Progress = Callable[[str], None]


# -- the model -----------------------------------------------------------------

def display(value: Any, unit: str, currency: str | None = None, tz: ZoneInfo | None = None, digits: int = 1) -> str:
    """One value as people read it (``metrics.format``), for the HTML and the Slack summary."""
    if value is None:
        return "–"
    if unit == "count":
        return fmt.count(value)
    if unit == "rate":
        return fmt.rate(value, digits)
    if unit == "ms":
        return fmt.duration(value)
    if unit == "money":
        return fmt.money(value, currency or "")
    if unit == "bytes":
        return fmt.size(value)
    if unit == "percent":
        return f"{value:.1f}%"
    if unit in ("datetime", "hour") and isinstance(value, datetime):
        local = utc(value).astimezone(tz or timezone.utc)
        return f"{local:%a %d %b %H:%M}"
    if unit == "date" and isinstance(value, (date, datetime)):
        day = utc(value).astimezone(tz or timezone.utc).date() if isinstance(value, datetime) else value
        return f"{day:%a %d %b}"
    return str(value)


@dataclass(frozen=True)
class Figure:
    """One number for the period, the same number for the previous period, and its target."""

    key: str
    label: str
    unit: Unit
    value: float | int | None
    previous: float | int | None = None
    currency: str | None = None
    target: str = ""  # as people read it: "> 98%" (``metrics.targets``)
    status: Status | None = None  # the target's verdict on ``value``
    target_value: float | None = None  # the threshold itself, for a line on a chart
    better: Literal["up", "down"] | None = None  # which way is good; None: neither
    comparable: bool = True  # False: a state "now", not a period total (no previous)
    digits: int = 1
    metric: str | None = None  # the catalogue metric it is (FIGURE_METRICS), if any

    @property
    def change(self) -> float | int | None:
        if not self.comparable or self.value is None or self.previous is None:
            return None
        return self.value - self.previous

    @property
    def relative_change(self) -> float | None:
        if self.change is None or not self.previous:
            return None
        return self.change / abs(self.previous)

    def text(self, which: Literal["value", "previous"] = "value") -> str:
        return display(getattr(self, which), self.unit, self.currency, digits=self.digits)

    def change_text(self) -> str:
        delta = self.change
        if delta is None:
            return "–"
        sign = "+" if delta > 0 else "-" if delta < 0 else "±"
        if self.unit == "rate":
            return f"{sign}{abs(delta) * 100:.{self.digits}f} pts"
        magnitude = display(abs(delta), self.unit, self.currency)
        rel = self.relative_change
        return f"{sign}{magnitude}" + (f" ({_percent(rel)})" if rel is not None else "")



def _percent(rel: float) -> str:
    """``+12%``; under 1% one decimal (``-0.4%``), so a small change does not read as "-0%"."""
    pct = rel * 100
    if round(pct, 1) == 0:
        return "±0%"
    return f"{pct:+.0f}%" if abs(pct) >= 1 else f"{pct:+.1f}%"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    unit: Unit = "text"
    currency: str | None = None  # money: this currency, or ...
    currency_key: str | None = None  # ... the currency named by this row field
    unit_key: str | None = None  # a column of mixed units (the summary): the row field naming each row's unit


@dataclass(frozen=True)
class Table:
    key: str  # file and sheet name
    title: str
    columns: tuple[Column, ...]
    rows: list[dict] = field(default_factory=list)
    note: str = ""

    def currency_of(self, column: Column, row: dict) -> str | None:
        return column.currency or (row.get(column.currency_key) if column.currency_key else None)


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str = ""  # what the reader should know (e.g. "not available: ...")
    available: bool = True


@dataclass(frozen=True)
class Summary:
    headline: str
    changes: list[str]
    missed: list[str]
    at_risk: list[str]
    unknown: list[str]  # targets with nothing to measure: never counted as met

    def lines(self) -> list[str]:
        out = [self.headline]
        out += [f"Changed most: {c}" for c in self.changes]
        out += [f"Target missed: {m}" for m in self.missed]
        out += [f"At risk: {r}" for r in self.at_risk]
        out += [f"No data for target: {u}" for u in self.unknown]
        if not (self.missed or self.at_risk or self.unknown):
            out.append("Every target was met.")
        return out


@dataclass(frozen=True)
class Report:
    period: Period
    generated_at: datetime
    summary: Summary
    sections: list[Section]

    @property
    def tz(self) -> ZoneInfo:
        return self.period.tz

    @property
    def title(self) -> str:
        return f"Paywatch {self.period.kind} report · {self.period.title}"

    @property
    def file_stem(self) -> str:
        return f"paywatch-{self.period.kind}-{self.period.label}"

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

    def figure(self, key: str) -> Figure:
        return next(f for s in self.sections for f in s.figures if f.key == key)

    def table(self, key: str) -> Table:
        return next(t for s in self.sections for t in s.tables if t.key == key)

    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]

    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]

    def to_record(self) -> dict:
        """What the ``reports`` collection keeps: the summary and every figure (no tables)."""
        return {
            "kind": self.period.kind,
            "period": self.period.label,
            "start": self.period.window.start,
            "end": self.period.window.end,
            "timezone": self.period.timezone,
            "generated_at": self.generated_at,
            "title": self.title,
            "summary": {"headline": self.summary.headline, "changes": self.summary.changes,
                        "missed": self.summary.missed, "at_risk": self.summary.at_risk,
                        "unknown": self.summary.unknown, "lines": self.summary.lines()},
            "figures": [{"section": s.key, "key": f.key, "label": f.label, "unit": f.unit,
                         "currency": f.currency, "value": f.value, "previous": f.previous,
                         "status": f.status} for s in self.sections for f in s.figures],
        }


# -- building ------------------------------------------------------------------

def measured(key: str, value: Any, previous: Any = None, *, currency: str | None = None, suffix: str = "",
             **kw: Any) -> Figure:
    """The figure ``key`` of the catalogue metric :data:`FIGURE_METRICS` names for it.

    Its label (with the currency, then ``suffix``: ``Revenue (USD)``, ``Duplicate
    enrollments at the end``), unit and better direction are the catalogue's.
    """
    m = catalogue.METRICS[FIGURE_METRICS[key.rsplit(".", 1)[0] if currency else key]]
    label = m.label + (f" ({currency.upper()})" if currency else "") + suffix
    return Figure(key, label, UNITS.get(m.unit, m.unit), value, previous, currency=currency,
                  better=BETTER[m.better], metric=m.key, **kw)


@dataclass(frozen=True)
class _Totals:
    """The metric blocks of one window, fetched once and shared by every section."""

    payments: dict
    webhooks: dict
    enrollments: dict
    pending_payments: int
    duplicates: int
    duplicate_pairs: list[dict] | None = None  # the pairs themselves, read for the report's own period only

    def as_snapshot(self) -> dict:
        """Shaped like the snapshot JSON so ``metrics.targets`` reads each value its own way
        (e.g. webhook delivery success = 1 - failure rate is defined there, not here)."""
        return {"payments": {"24h": self.payments}, "webhooks": {"24h": self.webhooks},
                "enrollments": {"24h": self.enrollments, "duplicates": self.duplicates,
                                "pending_payments": self.pending_payments}}


def _totals(src: Source, window: Window, currencies: tuple[str, ...], with_pairs: bool = False) -> _Totals:
    # The duplicate pairs and their count come from one pipeline (metrics.enrollments.duplicates_pipeline);
    # for the report's own period the pairs are listed, so their number is the count (one scan, not two).
    pairs = enrollments.duplicate_pairs(src, window.end, limit=None) if with_pairs else None
    return _Totals(
        payments=payments.window_summary(src, window, currencies),
        webhooks=webhooks.window_summary(src, window),
        enrollments=enrollments.window_summary(src, window),
        # States at the end of the period ("pending at the end of the week").
        pending_payments=enrollments.pending_payments_count(src, window.end),
        duplicates=len(pairs) if pairs is not None else enrollments.duplicate_count(src, window.end),
        duplicate_pairs=pairs,
    )


@dataclass(frozen=True)
class _Context:
    src: Source
    settings: Settings
    period: Period
    now: _Totals
    before: _Totals
    targets: dict[str, Target]
    state: Database | None

    @property
    def tz(self) -> ZoneInfo:
        return self.period.tz

    def pair(self, key: str, read: Callable[[_Totals], Any], **kw) -> Figure:
        """A catalogue figure (:func:`measured`) for the period and the one before."""
        return measured(key, read(self.now), read(self.before), **kw)

    def targeted(self, key: str, **kw) -> Figure:
        """A catalogue figure whose value is the one its target reads (one definition of each),
        with the target as configured (``metrics.targets``: the catalogue's, or an override)."""
        target = self.targets[FIGURE_METRICS[key]]
        value = target.read(self.now.as_snapshot())
        return measured(key, value, target.read(self.before.as_snapshot()), target=target.describe(),
                        status=target.evaluate(value), target_value=target.target, **kw)


def build_report(src: Source, settings: Settings, period: Period, *, state: Database | None = None,
                 progress: Progress | None = None, generated_at: datetime | None = None) -> Report:
    """Every section of the review for ``period``, each figure against the previous period.

    ``state`` is Paywatch's own database (probes, alert history); without it
    those sections say "not available".  A platform database that does not
    answer raises :class:`~metrics.db.DataSourceUnavailable`: a report with
    holes would read as "all clear".
    """
    say = progress or (lambda what: None)
    currencies = tuple(settings.currencies)
    say(f"payments, webhooks and enrollments for {period.label} and {period.previous_label}")
    ctx = _Context(src, settings, period, _totals(src, period.window, currencies, with_pairs=True),
                   _totals(src, period.previous, currencies), targets(settings.targets), state)
    sections = []
    for name, build in (("payments", _payments_section), ("failed payments", _failures_section),
                        ("webhooks", _webhooks_section), ("enrollments", _enrollments_section),
                        ("system performance", _system_section), ("alerts", _alerts_section),
                        ("data quality and reconciliation", _quality_section)):
        say(name)
        sections.append(build(ctx))
    return Report(period, generated_at or datetime.now(timezone.utc).replace(microsecond=0),
                  summarise(period, sections), sections)


# -- sections --------------------------------------------------------------------

def _payments_section(ctx: _Context) -> Section:
    figures = [
        ctx.pair("payments.created", lambda t: sum(t.payments["by_status"].values())),
        ctx.pair("payments.succeeded", lambda t: t.payments["succeeded"]),
        ctx.pair("payments.failed", lambda t: t.payments["failed"]),
        ctx.targeted("payments.success_rate"),
    ]
    seen = sorted(set(ctx.now.payments["revenue"]) | set(ctx.before.payments["revenue"]))
    for cur in seen:
        figures.append(ctx.pair(f"payments.revenue.{cur}", lambda t, c=cur: t.payments["revenue"].get(c, 0),
                                currency=cur))
    for cur in seen:
        figures.append(ctx.pair(f"payments.avg_value.{cur}",
                                lambda t, c=cur: t.payments["avg_transaction_value"].get(c, 0), currency=cur))
    figures += [
        ctx.pair("payments.refunds", lambda t: t.payments["refunds"]),
        ctx.targeted("payments.refund_rate"),
        ctx.targeted("payments.processing_avg"),
        ctx.pair("payments.processing_p95", lambda t: t.payments["processing_ms"]["p95"]),
    ]
    return Section("payments", "Payment statistics", figures,
                   [_payments_by_day(ctx, seen), _payments_by_status(ctx)])


def _payments_by_day(ctx: _Context, currencies: list[str]) -> Table:
    window = ctx.period.window
    # One frame per series, indexed by the local day; joined on it.
    days = series_frame(series.payment_series(ctx.src, window, ctx.tz, "day", tuple(currencies)), ctx.tz)
    refunds = series_frame(series.refund_series(ctx.src, window, ctx.tz, "day"), ctx.tz)
    shown = sorted({c.split(".", 1)[1] for c in days.columns if c.startswith("revenue.")} | set(currencies))
    table = days.join(refunds[["refunds"]] if "refunds" in refunds else refunds, how="left")
    rows = [{"day": day.to_pydatetime(), "succeeded": row["succeeded"], "failed": row["failed"],
             "success_rate": row["success_rate"], "refunds": row.get("refunds") or 0,
             **{f"revenue_{c}": row.get(f"revenue.{c}") or 0 for c in shown}}
            for day, row in table.iterrows()]
    columns = (Column("day", "Day", "date"), Column("succeeded", "Succeeded", "count"),
               Column("failed", "Failed", "count"), Column("success_rate", "Success rate", "rate"),
               *(Column(f"revenue_{c}", f"Revenue {c.upper()}", "money", currency=c) for c in shown),
               Column("refunds", "Refunds", "count"))
    return Table("payments_by_day", "Payments per day", columns, rows)


def _payments_by_status(ctx: _Context) -> Table:
    now, before = ctx.now.payments["by_status"], ctx.before.payments["by_status"]
    rows = [{"status": s, "count": now.get(s, 0), "previous": before.get(s, 0)}
            for s in sorted(set(now) | set(before), key=lambda s: -now.get(s, 0))]
    return Table("payments_by_status", "Payments by status", (
        Column("status", "Status"), Column("count", ctx.period.label, "count"),
        Column("previous", ctx.period.previous_label, "count")), rows)


def _row_key(value: Any) -> str:
    """A breakdown's key as its row reads: platform data may be anything, a row key is text."""
    return "(none)" if value is None else value if isinstance(value, str) else repr(value)


def _breakdown(ctx: _Context, key: str, title: str, field_name: str, label: str) -> Table:
    now = series.failures_by(ctx.src, ctx.period.window, field_name, TOP_ROWS)
    before = {_row_key(r["key"]): r["count"]
              for r in series.failures_by(ctx.src, ctx.period.previous, field_name, PREVIOUS_DEPTH)}
    total = ctx.now.payments["failed"]
    rows = [{"key": _row_key(r["key"]), "count": r["count"],
             "share": r["count"] / total if total else None, "previous": before.get(_row_key(r["key"]), 0)}
            for r in now]
    return Table(key, title, (Column("key", label), Column("count", f"Failed {ctx.period.label}", "count"),
                              Column("share", "Share of failures", "rate"),
                              Column("previous", f"Failed {ctx.period.previous_label}", "count")), rows,
                 note=f"The {TOP_ROWS} largest groups." if len(now) == TOP_ROWS else "")


def _failures_section(ctx: _Context) -> Section:
    window = ctx.period.window
    by_hour = review.failures_by_hour(ctx.src, window, ctx.period.timezone)
    largest = review.largest_failed(ctx.src, window, LARGEST_FAILED)
    mask = fmt.mask_email if ctx.settings.mask_emails else (lambda e: e)
    tables = [
        _breakdown(ctx, "failures_by_decline_code", "Failed payments by decline code", "failureCode", "Decline code"),
        _breakdown(ctx, "failures_by_specialist", "Failed payments by specialist", "specialistId", "Specialist"),
        Table("failures_by_hour", f"Failed payments by weekday and hour ({ctx.period.timezone})", (
            Column("weekday", "Weekday"), Column("hour", "Hour", "count"), Column("failed", "Failed", "count"),
            Column("decided", "Succeeded + failed", "count"), Column("failure_rate", "Failure rate", "rate")),
            [{**r, "weekday": WEEKDAYS[r["weekday"] - 1]} for r in by_hour],
            note="Only the hours with at least one decided payment."),
        Table("largest_failed", "Largest failed payments", (
            Column("createdAt", "Created", "datetime"), Column("paymentId", "Payment"),
            Column("amount", "Amount", "money", currency_key="currency"), Column("currency", "Currency"),
            Column("failureCode", "Decline code"), Column("failureMessage", "Message"),
            Column("specialistId", "Specialist"), Column("customerEmail", "Customer")),
            [{**r, "customerEmail": mask(r["customerEmail"])} for r in largest],
            note=f"The {LARGEST_FAILED} largest per currency." + (" Customer emails masked." if ctx.settings.mask_emails else "")),
    ]
    return Section("failures", "Failed payments: patterns", [], tables)


def _webhooks_section(ctx: _Context) -> Section:
    w = lambda key: (lambda t: t.webhooks[key])  # noqa: E731 - a reader per block key
    figures = [
        ctx.pair("webhooks.received", w("received")),
        ctx.pair("webhooks.processed", w("processed")),
        ctx.pair("webhooks.failed", w("failed")),
        ctx.pair("webhooks.failure_rate", w("failure_rate"), digits=2),
        ctx.targeted("webhooks.delivery_rate", digits=2),
        ctx.pair("webhooks.processing_avg", lambda t: t.webhooks["processing_ms"]["avg"]),
        ctx.targeted("webhooks.processing_p95"),
        ctx.pair("webhooks.lag_avg", lambda t: t.webhooks["delivery_lag_ms"]["avg"]),
        ctx.pair("webhooks.lag_p95", lambda t: t.webhooks["delivery_lag_ms"]["p95"]),
    ]
    window = ctx.period.window
    unit = series.bucket_unit(window)
    worst = review.worst_webhook_hours(ctx.src, window, ctx.period.timezone, WORST_HOURS)
    timeline = series.webhook_series(ctx.src, window, ctx.tz, unit)
    tables = [
        Table("webhooks_worst_hours", "Worst webhook hours", (
            Column("hour", "Hour starting", "hour"), Column("received", "Received", "count"),
            Column("failed", "Failed", "count"), Column("failure_rate", "Failure rate", "rate"),
            Column("processing_p95_ms", "Processing p95", "ms")), worst,
            note="Most failed events first, then the slowest processing."),
        Table(f"webhooks_by_{unit}", f"Webhook events per {unit}", (
            Column("bucket", unit.capitalize(), "hour" if unit == "hour" else "date"),
            Column("received", "Received", "count"), Column("processed", "Processed", "count"),
            Column("failed", "Failed", "count"), Column("failure_rate", "Failure rate", "rate"),
            Column("processing_p95", "Processing p95", "ms"), Column("lag_p95", "Delivery lag p95", "ms")),
            [{"bucket": r["bucket"], "received": r["received"], "processed": r["processed"], "failed": r["failed"],
              "failure_rate": r["failure_rate"], "processing_p95": r["processing_ms"]["p95"],
              "lag_p95": r["delivery_lag_ms"]["p95"]} for r in timeline]),
        Table("webhooks_by_type", "Webhook events by type", (
            Column("type", "Event type"), Column("received", "Received", "count"), Column("failed", "Failed", "count")),
            series.webhook_types(ctx.src, window, TOP_ROWS)),
    ]
    return Section("webhooks", "Webhooks", figures, tables)


def _enrollments_section(ctx: _Context) -> Section:
    e = lambda key: (lambda t: t.enrollments[key])  # noqa: E731
    figures = [
        ctx.pair("enrollments.created", e("created")),
        ctx.pair("enrollments.converted", e("converted")),
        ctx.pair("enrollments.conversion_rate", e("conversion_rate")),
        ctx.pair("enrollments.refunded", e("refunded")),
        # States at the end of the period, not totals over it.
        ctx.pair("enrollments.pending_payments", lambda t: t.pending_payments, suffix=AT_THE_END),
        ctx.pair("enrollments.activation_avg", lambda t: t.enrollments["activation_ms"]["avg"]),
        ctx.targeted("enrollments.activation_p95"),
        ctx.pair("enrollments.email_avg", lambda t: t.enrollments["email_ms"]["avg"]),
        ctx.targeted("enrollments.email_p95"),
        ctx.targeted("enrollments.duplicates", suffix=AT_THE_END),
    ]
    window = ctx.period.window
    days = series.enrollment_series(ctx.src, window, ctx.tz, "day")
    latency = {r["bucket"]: r for r in series.latency_series(ctx.src, window, ctx.tz, "day")}
    funnel = series.enrollment_funnel(ctx.src, window)
    tables = [
        Table("enrollments_by_day", "Enrollments per day", (
            Column("day", "Day", "date"), Column("created", "Created", "count"),
            Column("converted", "Converted", "count"), Column("conversion_rate", "Conversion", "rate"),
            Column("refunded", "Refunded", "count"), Column("activation_p95", "Activation p95", "ms"),
            Column("email_p95", "Email p95", "ms")),
            [{"day": r["bucket"], "created": r["created"], "converted": r["converted"],
              "conversion_rate": r["conversion_rate"], "refunded": r["refunded"],
              "activation_p95": latency.get(r["bucket"], {}).get("activation_ms", {}).get("p95"),
              "email_p95": latency.get(r["bucket"], {}).get("email_ms", {}).get("p95")} for r in days]),
        Table("enrollment_funnel", "Enrollment funnel (created in the period)", (
            Column("stage", "Stage"), Column("count", "Enrollments", "count")),
            [{"stage": stage, "count": n} for stage, n in funnel.items()]),
        Table("duplicate_enrollments", "Duplicate enrollments at the end of the period", (
            Column("customerId", "Customer"), Column("serviceId", "Service"), Column("count", "Enrollments", "count")),
            [{k: r.get(k) for k in ("customerId", "serviceId", "count")} for r in ctx.now.duplicate_pairs[:TOP_ROWS]],
            note=f"The first {TOP_ROWS} of {len(ctx.now.duplicate_pairs)}." if len(ctx.now.duplicate_pairs) > TOP_ROWS else ""),
    ]
    return Section("enrollments", "Enrollments", figures, tables)


def _system_section(ctx: _Context) -> Section:
    figures: list[Figure] = []
    notes = []
    probes = _probe_figures(ctx)
    if probes:
        figures += probes
    else:
        notes.append("API probe: not available (no probe results in this period; set PAYWATCH_HEALTH_URL "
                     "and the alert worker probes it).")
    health = database_health(ctx.src, ctx.settings.embedded, embedded_storage_path(ctx.settings))
    conns, storage = health.get("connections") or {}, health.get("storage") or {}
    figures += [
        measured("system.connections", conns.get("current"), suffix=NOW, comparable=False),
        Figure("system.connections_available", "Connections available (now)", "count", conns.get("available"), comparable=False),
        measured("system.storage", storage.get("storage_bytes"), suffix=NOW, comparable=False),
        Figure("system.data", "Data size (now)", "bytes", storage.get("data_bytes"), comparable=False),
        Figure("system.indexes", "Index size (now)", "bytes", storage.get("index_bytes"), comparable=False),
    ]
    for key in ("connections_error", "storage_error"):
        if health.get(key):
            notes.append(f"{key.split('_')[0].capitalize()}: {NOT_AVAILABLE} ({health[key]}).")
    if health.get("embedded_database"):
        notes.append("The embedded database is in use (demo data, not production).")
    return Section("system", "System performance", figures, [], note=" ".join(notes))


def _probe_figures(ctx: _Context) -> list[Figure]:
    if ctx.state is None:
        return []
    try:
        now, before = probe_summary(ctx.state, ctx.period.window), probe_summary(ctx.state, ctx.period.previous)
    except Exception as exc:  # noqa: BLE001 - a missing figure is reported, never fatal
        log.warning("probe summary unavailable: %s", exc)
        return []
    if not now["samples"]:
        return []
    return [
        Figure("system.probe_samples", "API probes", "count", now["samples"], before["samples"]),
        measured("system.api_latency_avg", now["latency_ms"]["avg"], before["latency_ms"]["avg"]),
        measured("system.api_latency_p95", now["latency_ms"]["p95"], before["latency_ms"]["p95"]),
        measured("system.api_error_rate", now["error_rate"], before["error_rate"], digits=2),
        measured("system.memory", now["memory_pct"], before["memory_pct"]),
    ]


def _alerts_section(ctx: _Context) -> Section:
    title = "Alerts"
    if ctx.state is None:
        return Section("alerts", title, note=f"Alert history: {NOT_AVAILABLE} (Paywatch's own database did not answer).",
                       available=False)
    try:
        if not alert_review.has_history(ctx.state):
            return Section("alerts", title, available=False,
                           note=f"Alert history: {NOT_AVAILABLE} (the alert worker has not recorded any; "
                                "it runs with 'make run' or 'python -m alerts run').")
        now, before = alert_review.alerts_in(ctx.state, ctx.period.window), alert_review.alerts_in(ctx.state, ctx.period.previous)
        silences = alert_review.silences_in(ctx.state, ctx.period.window)
    except PyMongoError as exc:
        return Section("alerts", title, note=f"Alert history: {NOT_AVAILABLE} ({_first_line(exc)}).", available=False)

    def total(rows: list[dict], key: str) -> int:
        return sum(r[key] for r in rows)

    figures = [
        Figure("alerts.fired", "Alerts fired", "count", total(now, "fired"), total(before, "fired"), better="down"),
        Figure("alerts.firing_time", "Time firing (all rules)", "ms", total(now, "firing_ms"), total(before, "firing_ms"),
               better="down"),
        Figure("alerts.resolved", "Alerts resolved", "count", total(now, "resolved"), total(before, "resolved")),
        Figure("alerts.messages", "Messages sent", "count", total(now, "messages"), total(before, "messages")),
        Figure("alerts.silences", "Silences in force", "count", len(silences), comparable=False),
    ]
    tables = [
        Table("alerts_by_rule", "Alerts by rule", (
            Column("title", "Rule"), Column("severity", "Severity"), Column("fired", "Fired", "count"),
            Column("firing_ms", "Time firing", "ms"), Column("resolved", "Resolved", "count"),
            Column("resolve_avg_ms", "Time to resolve (avg)", "ms"), Column("resolve_max_ms", "Time to resolve (max)", "ms"),
            Column("messages", "Messages", "count")), now,
            note="Time firing counts only the part of each episode inside the period."),
        Table("silences", "Silences in force during the period", (
            Column("rule_id", "Rule"), Column("subject", "Subject"), Column("from", "From", "datetime"),
            Column("until", "Until", "datetime"), Column("reason", "Reason"), Column("by", "Set by")), silences),
    ]
    return Section("alerts", title, figures, tables)


def _quality_section(ctx: _Context) -> Section:
    quality = data_quality(ctx.src)
    figures = [Figure(f"quality.{key}", f"Invalid {key.replace('_', ' ')} (whole collection, now)", "count",
                      block["invalid"], comparable=False) for key, block in quality.items()]
    notes = ["Invalid documents are left out of every figure above and counted here."]
    tables: list[Table] = []
    result = _reconciliation(ctx)
    if not result.get("available"):
        notes.append(f"Reconciliation with Stripe: {NOT_AVAILABLE} ({result.get('reason')}).")
    else:
        checked = result["checked"]
        notes.append(f"Reconciliation with Stripe covers {checked['start']} to {checked['end']} "
                     f"(what the Stripe mirror had synced).")
        figures += [
            Figure("reconcile.stripe", "Stripe PaymentIntents checked", "count", result["stripe_payment_intents"], comparable=False),
            Figure("reconcile.db", "Database payments checked", "count", result["db_payments"], comparable=False),
            Figure("reconcile.matched", "Matched", "count", result["matched"], comparable=False),
            Figure("reconcile.mismatches", "Mismatches", "count", len(result["mismatches"]), comparable=False),
            Figure("reconcile.persisting", "Mismatches older than the grace period", "count", result["persisting"],
                   comparable=False),
        ]
        tables += [
            Table("reconcile_by_kind", "Reconciliation mismatches by kind", (
                Column("title", "Mismatch"), Column("count", "Count", "count")),
                [{"title": reconcile.KINDS[k], "count": n} for k, n in result["by_kind"].items()]),
            Table("reconcile_mismatches", "Reconciliation mismatches", (
                Column("title", "Mismatch"), Column("payment_intent", "PaymentIntent"), Column("db_status", "Database"),
                Column("stripe_status", "Stripe"), Column("customer", "Customer"), Column("since", "Since"),
                Column("fix", "Proposed fix")),
                result["mismatches"][:RECONCILE_ROWS],
                note=f"The first {RECONCILE_ROWS} of {len(result['mismatches'])}; "
                     "python -m metrics reconcile lists them all with the runbook's commands."
                     if len(result["mismatches"]) > RECONCILE_ROWS else ""),
        ]
    return Section("quality", "Data quality and reconciliation", figures, tables, note=" ".join(notes))


def _reconciliation(ctx: _Context) -> dict:
    if ctx.state is None:
        return {"available": False, "reason": "Paywatch's own database did not answer"}
    mirror = MirrorStore(db=ctx.state, max_time_ms=ctx.settings.query_timeout_ms)
    try:
        return reconcile.reconcile(ctx.src, mirror, ctx.period.window, mask=ctx.settings.mask_emails)
    except (DataSourceUnavailable, PyMongoError) as exc:
        return {"available": False, "reason": _first_line(exc)}


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


# -- summary ---------------------------------------------------------------------

def _change_score(fig: Figure) -> float | None:
    """How much a figure moved, comparable across units; ``None`` when it says nothing.

    Rates move on their bad side: a success rate from 98% to 95% is failures
    going from 2% to 5% (+150%), which is the news, not "-3%".
    """
    if fig.change is None or fig.unit not in ("count", "rate", "ms", "money"):
        return None
    if fig.unit == "rate":
        bad_now, bad_before = (1 - fig.value, 1 - fig.previous) if fig.better == "up" else (fig.value, fig.previous)
        return abs(bad_now - bad_before) / bad_before if bad_before else None
    if fig.unit == "count" and max(fig.value, fig.previous) < MIN_CHANGE_BASE:
        return None
    return abs(fig.relative_change) if fig.relative_change is not None else None


def describe_change(fig: Figure) -> str:
    """``Failed payments: 12 → 30, +18 (+150%), worse``."""
    verdict = ""
    if fig.better and fig.change:
        verdict = ", better" if (fig.change > 0) == (fig.better == "up") else ", worse"
    return f"{fig.label}: {fig.text('previous')} → {fig.text()}, {fig.change_text()}{verdict}"


def summarise(period: Period, sections: list[Section]) -> Summary:
    figures = {f.key: f for s in sections for f in s.figures}
    # The largest move of each section, largest first: one incident (a refund wave) moves several
    # figures of one area, and the summary should name it once and leave room for the others.
    best: dict[str, tuple[float, Figure]] = {}
    for section in sections:
        for fig in section.figures:
            score = _change_score(fig)
            if score is not None and score > best.get(section.key, (-1.0, fig))[0]:
                best[section.key] = (score, fig)
    ranked = sorted(best.values(), key=lambda pair: -pair[0])
    changes = [describe_change(fig) for _, fig in ranked[:CHANGES_IN_SUMMARY]]
    missed = [f"{f.label} {f.text()} (target {f.target})" for f in figures.values() if f.status == "missed"]
    at_risk = [f"{f.label} {f.text()} (target {f.target})" for f in figures.values() if f.status == "at_risk"]
    unknown = [f"{f.label} (target {f.target})" for f in figures.values() if f.status == "unknown"]

    def text(key: str) -> str:
        fig = figures.get(key)
        return fig.text() if fig else "–"

    revenue = " · ".join(f.text() for k, f in figures.items() if k.startswith("payments.revenue."))
    headline = (f"{text('payments.created')} payments, {text('payments.success_rate')} succeeded, "
                f"revenue {revenue or '–'}; {text('webhooks.received')} webhook events; "
                f"{text('enrollments.created')} new enrollments.")
    return Summary(headline, changes, missed, at_risk, unknown)
