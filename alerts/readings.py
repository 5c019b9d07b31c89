"""The metrics a rule can watch: how each is read from ``metrics/`` and what
its message shows when it fires.

A metric that is one of the catalogue's (``metrics/catalogue.py``) is made by
:func:`catalogued`: its label, unit, splits and definition are the
catalogue's, written once there; only the metrics the catalogue does not have
(the amount spike, the connections ratio, Stripe's) describe themselves here.

Every metric returns one :class:`Reading` per subject (``""`` when the rule is
not split): the value, the number of samples behind it, and numbers for the
message.  ``explain`` adds "a sample of what is wrong" (top decline codes,
revenue at risk, the oldest stuck payments), computed only when a message is
written.  Nothing here decides anything: :mod:`alerts.state` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from pymongo.database import Database
from pymongo.errors import PyMongoError

from metrics import catalogue
from metrics import format as fmt
from metrics import payments, probe, signals, webhooks
from metrics.db import DataSourceUnavailable, Source
from metrics.settings import Settings
from metrics.stripe import metrics as sm
from metrics.stripe.client import StripeOptions
from metrics.stripe.reconcile import persistent_mismatch_count, reconcile, retention_risk, retention_risk_count
from metrics.stripe.store import MirrorStore
from metrics.windows import Window, iso, last, parse_instant

if TYPE_CHECKING:
    from alerts.rules import Rule

SAMPLE_ROWS = 3


@dataclass(frozen=True)
class Reading:
    subject: str
    value: float | None
    samples: int | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class EvalContext:
    """What one evaluation reads from: the instant, the platform, Paywatch's own database."""

    settings: Settings
    at: datetime
    src: Source | None = None
    state_db: Database | None = None
    source_error: str | None = None
    memo: dict = field(default_factory=dict)

    def source(self) -> Source:
        if self.src is None or self.source_error:
            raise DataSourceUnavailable(self.source_error or "no data source")
        return self.src

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """Several rules read the same figures (success rate and failed count): one query per cycle."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def window(self, rule: "Rule") -> Window:
        return last(self.at, seconds=rule.window.total_seconds())


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    unit: str  # how values read: rate, ms, count, score, ratio, pct, flag, min
    read: Callable[[EvalContext, "Rule"], list[Reading]]
    explain: Callable[[EvalContext, "Rule", Reading], list[str]] = lambda ctx, rule, reading: []
    reads: str = "platform"  # platform | state | worker: which failure makes it unknown
    splits: tuple[str, ...] = ()
    windowed: bool = True
    window_word: str = "over"  # how the window reads in a condition: "over 1h", "older than 30m"
    needs: str | None = None  # a setting without which there is nothing to read
    # False when "samples" is the usual volume, not what the value was computed from (webhooks
    # received): a value on the good side is then a real observation whatever the samples.
    clear_needs_samples: bool = True
    # The rules whose firing holds back this metric's firing messages: its data is known missing.
    inhibited_by: tuple[str, ...] = ()
    catalogue: str | None = None  # the catalogue metric this is (metrics/catalogue.py), which titles it
    label: str = ""  # the catalogue's label; "" for a metric the catalogue does not have
    title_window: str = "in"  # how the window reads in a derived title: "in 1 hour", "older than 30 minutes"


def catalogued(key: str, read: Callable[[EvalContext, "Rule"], list[Reading]],
               explain: Callable[[EvalContext, "Rule", Reading], list[str]], *, name: str | None = None,
               narrower: str | None = None, **options: Any) -> Metric:
    """The alert metric that is the catalogue's ``key``: its label, unit, splits and definition.

    ``name`` when the alert metric is called otherwise (``webhook_processing_p95_ms``);
    ``narrower`` is the definition of an alert metric that reads only part of the
    catalogue's (duplicates *created in the window*), which therefore cannot state it.
    """
    m = catalogue.METRICS[key]
    return Metric(name or key, narrower or m.definition, m.unit, read, explain, splits=m.splits,
                  catalogue=key, label=m.label, **options)


def format_value(unit: str, value: float | None) -> str:
    if value is None:
        return "–"
    if unit == "rate":
        return fmt.rate(value, 2 if abs(value) < 0.1 else 1)
    if unit == "ms":
        return fmt.duration(value)
    if unit == "count":
        return fmt.count(int(value)) if float(value).is_integer() else f"{value:,.1f}"
    if unit == "score":
        return f"{value:.1f}σ"
    if unit == "ratio":
        return f"{value:.1f}×"
    if unit == "pct":
        return f"{value:.0f}%"
    if unit == "flag":
        return "yes" if value else "no"
    if unit == "min":
        return f"{value:,.0f} min" if float(value).is_integer() else f"{value:,.1f} min"
    if unit == "h":
        return f"{value:,.0f} h" if float(value).is_integer() else f"{value:,.1f} h"
    return f"{value:g}"


def threshold_words(unit: str, value: float) -> str:
    """A threshold as a title says it: ``95%``, ``10 s``, ``10``, ``3×`` (no needless decimals).

    The catalogue's units read as the catalogue writes them (:func:`metrics.catalogue.amount`).
    """
    if unit in ("rate", "ms", "pct", "count"):
        return catalogue.amount(unit, value)
    if unit == "ratio":
        return f"{value:g}×"
    if unit == "min":
        return f"{value:g} min"
    return f"{value:,g}"


def _email(settings: Settings, email: Any) -> Any:
    return fmt.mask_email(email) if settings.mask_emails else email


# -- webhooks -------------------------------------------------------------------------

def _webhook_summary(ctx: EvalContext, rule: "Rule") -> dict:
    window = ctx.window(rule)
    return ctx.cached(("webhooks", window), lambda: webhooks.window_summary(ctx.source(), window))


def read_webhook_failure_rate(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    s = _webhook_summary(ctx, rule)
    return [Reading("", s["failure_rate"], s["processed"] + s["failed"],
                    {"failed": s["failed"], "processed": s["processed"]})]


def read_webhook_p95(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    s = _webhook_summary(ctx, rule)
    return [Reading("", s["processing_ms"]["p95"], s["processed"] + s["failed"],
                    {"avg_ms": s["processing_ms"]["avg"]})]


def explain_webhook_errors(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    lines = []
    if "failed" in reading.detail:
        lines.append(f"{reading.detail['failed']:,} failed of {reading.detail['failed'] + reading.detail['processed']:,} events.")
    elif reading.detail.get("avg_ms") is not None:
        lines.append(f"Average processing time {fmt.duration(reading.detail['avg_ms'])}.")
    errors = signals.webhook_errors(ctx.source(), ctx.window(rule), SAMPLE_ROWS)
    if errors:
        lines.append("Most common errors: " + "; ".join(
            f"{e['error']} ×{e['count']} ({', '.join(e['types'])})" if e["types"] else f"{e['error']} ×{e['count']}"
            for e in errors))
    return lines


def read_webhooks_received(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    activity = signals.webhook_activity(ctx.source(), ctx.window(rule))
    # samples = the events this window usually receives: a quiet night is not an outage.
    usual = activity["usual"]
    return [Reading("", activity["received"], None if usual is None else int(usual),
                    {"last_received_at": iso(activity["last_received_at"]), "weekly": activity["weekly"]})]


def explain_activity(items: str, last_key: str, last_words: str, never: str):
    """What a data-absence reading shows: the usual count for the window and when the last one came."""
    def explain(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
        lines = []
        if reading.samples is not None:
            lines.append(f"Usually {reading.samples} {items} in this window (same time, previous weeks: "
                         f"{', '.join(str(c) for c in reading.detail.get('weekly', []))}).")
        last_at = reading.detail.get(last_key)
        if not last_at:
            return lines + [never]
        ago = (ctx.at - parse_instant(last_at)).total_seconds() * 1000
        return lines + [f"{last_words} at {last_at} ({fmt.duration(ago)} before this check)."]
    return explain


explain_webhooks_received = explain_activity("events", "last_received_at", "Last event received",
                                             "No webhook event was ever received.")


# -- payments -------------------------------------------------------------------------

def read_payments_created(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    activity = signals.payment_activity(ctx.source(), ctx.window(rule))
    usual = activity["usual"]
    return [Reading("", activity["created"], None if usual is None else int(usual),
                    {"last_created_at": iso(activity["last_created_at"]), "weekly": activity["weekly"]})]


explain_payments_created = explain_activity("payments", "last_created_at", "Last payment created",
                                            "No payment was ever created.")


def _outcomes(ctx: EvalContext, rule: "Rule") -> dict[str, dict]:
    window = ctx.window(rule)
    return ctx.cached(("outcomes", window, rule.split),
                      lambda: signals.payment_outcomes(ctx.source(), window, rule.split))


def read_success_rate(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    return [Reading(subject, o["success_rate"], o["succeeded"] + o["failed"],
                    {"failed": o["failed"], "succeeded": o["succeeded"], "failed_amount": o["failed_amount"]})
            for subject, o in _outcomes(ctx, rule).items()]


def read_failed_payments(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    readings = [Reading(subject, o["failed"], o["succeeded"] + o["failed"],
                        {"failed": o["failed"], "succeeded": o["succeeded"], "failed_amount": o["failed_amount"]})
                for subject, o in _outcomes(ctx, rule).items()]
    return readings or ([Reading("", 0, 0)] if rule.split is None else [])


def explain_declines(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    lines = [f"{reading.detail.get('failed', 0):,} failed, {reading.detail.get('succeeded', 0):,} succeeded."]
    if reading.detail.get("failed_amount"):
        lines.append(f"Revenue at risk (declined amounts): {fmt.money_map(reading.detail['failed_amount'])}.")
    codes = signals.decline_codes(ctx.source(), ctx.window(rule), SAMPLE_ROWS, rule.split, reading.subject or None)
    if codes:
        lines.append("Top decline codes: " + ", ".join(
            f"{c['code']} ×{c['count']} ({fmt.money_map(c['amount'])})" for c in codes) + ".")
    return lines


def read_refund_rate(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    outcomes = signals.refund_outcomes(ctx.source(), ctx.window(rule), rule.split)
    return [Reading(subject, o["refund_rate"], o["succeeded"],
                    {"refunds": o["refunds"], "refunded_amount": o["refunded_amount"]})
            for subject, o in outcomes.items()]


def explain_refunds(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    lines = [f"{reading.detail.get('refunds', 0):,} refunds ({fmt.money_map(reading.detail.get('refunded_amount'))}) "
             f"against {reading.samples or 0:,} succeeded payments."]
    top = signals.refunds_by(ctx.source(), ctx.window(rule), "serviceId", SAMPLE_ROWS)
    if top:
        lines.append("Most refunded services: " + ", ".join(f"{t['key']} ×{t['count']}" for t in top) + ".")
    return lines


def read_amount_spike(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    spikes = signals.amount_spike(ctx.source(), ctx.window(rule), weeks=4, split=rule.split)
    return [Reading(subject, s["score"], s["count"],
                    {"mean": s["mean"], "median": s["median"], "weekly_means": s["weekly_means"]})
            for subject, s in spikes.items()]


def explain_amount_spike(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    currency = reading.subject if rule.split == "currency" else "usd"
    d = reading.detail
    lines = [f"Average payment {fmt.money(d.get('mean'), currency)} over {reading.samples or 0} payments, against "
             f"a usual {fmt.money(d.get('median'), currency)} at this time in the previous weeks "
             f"({', '.join(fmt.money(m, currency) for m in d.get('weekly_means', []))})."]
    biggest = signals.largest_payments(ctx.source(), ctx.window(rule), SAMPLE_ROWS, rule.split, reading.subject or None)
    if biggest:
        lines.append("Largest: " + "; ".join(
            f"{p['paymentId']} {fmt.money(p['amount'], p['currency'] or currency)} "
            f"({_email(ctx.settings, p['customerEmail'])}, {p['specialistId']})" for p in biggest) + ".")
    return lines


def read_stuck(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    minutes = rule.window.total_seconds() / 60
    count = payments.stuck_count(ctx.source(), ctx.at, minutes)
    return [Reading("", count, None, {"minutes": minutes})]


def explain_stuck(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    stuck = payments.stuck_payments(ctx.source(), ctx.at, reading.detail.get("minutes", 30), limit=50)
    at_risk: dict[str, int] = {}
    for p in stuck:
        if isinstance(p.get("amount"), (int, float)) and p.get("currency"):
            at_risk[str(p["currency"]).lower()] = at_risk.get(str(p["currency"]).lower(), 0) + int(p["amount"])
    lines = [f"Revenue at risk: {fmt.money_map(at_risk)}."] if at_risk else []
    lines.append("Oldest: " + "; ".join(
        f"{p['paymentId']} {p['status']} since {iso(p['createdAt'])} ({_email(ctx.settings, p['customerEmail'])})"
        for p in stuck[:SAMPLE_ROWS]) + ".")
    return lines


def read_duplicates(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    pairs = ctx.cached(("duplicates", ctx.window(rule)),
                       lambda: signals.recent_duplicates(ctx.source(), ctx.window(rule)))
    return [Reading("", len(pairs), None)]


def explain_duplicates(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    pairs = signals.recent_duplicates(ctx.source(), ctx.window(rule), SAMPLE_ROWS)
    return ["Pairs: " + "; ".join(
        f"customer {p['customerId']} × service {p['serviceId']}: {p['count']} enrollments ({', '.join(p['enrollment_ids'])})"
        for p in pairs) + "."] if pairs else []


# -- the platform's API (health probe) and its database -----------------------------------

def _probe_summary(ctx: EvalContext, rule: "Rule") -> dict | None:
    if not ctx.settings.health_url or ctx.state_db is None:
        return None
    window = ctx.window(rule)
    return ctx.cached(("probe", window), lambda: probe.probe_summary(ctx.state_db, window))


def _probe_reading(pick: Callable[[dict], float | None]) -> Callable[[EvalContext, "Rule"], list[Reading]]:
    def read(ctx: EvalContext, rule: "Rule") -> list[Reading]:
        summary = _probe_summary(ctx, rule)
        if summary is None:
            return []
        last_probe = summary["last"] or {}
        return [Reading("", pick(summary), summary["samples"],
                        {"last_status": last_probe.get("status"), "last_error": last_probe.get("error"),
                         "avg_ms": summary["latency_ms"]["avg"]})]
    return read


def explain_probe(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    d = reading.detail
    text = f"{reading.samples or 0} probes of {ctx.settings.health_url}; average latency {fmt.duration(d.get('avg_ms'))}"
    if d.get("last_error"):
        text += f"; last error: {d['last_error']}"
    return [text + "."]


def read_connections(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    if ctx.state_db is None:
        return []
    base = signals.connections_vs_baseline(ctx.state_db, ctx.window(rule))
    if not base["samples"]:
        return []
    return [Reading("", base["ratio"], base["samples"], {"current": base["current"], "median": base["median"]})]


def explain_connections(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    return [f"{reading.detail.get('current')} connections now, against a median of "
            f"{reading.detail.get('median'):.0f} over the window ({reading.samples} samples)."]


def read_data_source(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    return [Reading("", 1.0 if ctx.source_error else 0.0, None, {"error": ctx.source_error})]


def explain_data_source(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    return [f"Error: {reading.detail['error']}"] if reading.detail.get("error") else []


# -- Stripe, from the mirror in PAYWATCH_DB ------------------------------------------------
# Each reader returns no reading (the rule shows "needs STRIPE_API_KEY" or "no data", neither
# firing nor all clear) when Stripe is not configured or the mirror cannot tell: never synced,
# the resource unavailable (localstripe has no disputes), no API call in the last hour.

class MirrorUnreadable(PyMongoError):
    """The mirror (Paywatch's database) did not answer: this rule is unknown.

    Raised as a driver error on purpose: the engine treats ``DataSourceUnavailable``
    as the *platform's* database being down, which would fire that rule wrongly.
    """


def _stripe_configured(ctx: EvalContext) -> bool:
    return ctx.settings.stripe_api_key is not None and ctx.state_db is not None


def _mirror(ctx: EvalContext) -> MirrorStore:
    return MirrorStore(db=ctx.state_db, max_time_ms=ctx.settings.query_timeout_ms)


def _mirror_reading(compute: Callable[[EvalContext, "Rule", MirrorStore], float | None]):
    def read(ctx: EvalContext, rule: "Rule") -> list[Reading]:
        if not _stripe_configured(ctx):
            return []
        try:
            value = compute(ctx, rule, _mirror(ctx))
            return [] if value is None else [Reading("", value, None)]
        except DataSourceUnavailable as exc:
            raise MirrorUnreadable(f"the Stripe mirror could not be read: {exc}") from exc
    return read


def _disputes_created(ctx: EvalContext, rule: "Rule", ms: MirrorStore) -> int | None:
    return sm.disputes_created_count(ms, ctx.window(rule))


def explain_disputes(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    disputes = [d for d in sm.recent_disputes(_mirror(ctx), ctx.window(rule), 50)
                if d["created"] and parse_instant(d["created"]) >= ctx.window(rule).start][:SAMPLE_ROWS]
    return ["Newest: " + "; ".join(
        f"{d['id']} {fmt.money(d['amount'], d['currency'])} ({d['reason'] or 'no reason'}, {d['status']}, "
        f"evidence due {d['evidence_due_by'] or '–'}, payment {d['payment_intent'] or '–'}) {d['stripe_url']}"
        for d in disputes) + "."] if disputes else []


def _webhook_backlog(ctx: EvalContext, rule: "Rule", ms: MirrorStore) -> int | None:
    return sm.webhook_backlog_count(ms, ctx.at)


def explain_backlog(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    pending = sm.pending_events(_mirror(ctx), ctx.at, SAMPLE_ROWS)
    return ["Oldest undelivered: " + "; ".join(
        f"{e['id']} {e['type']} created {e['created']} ({e['pending_webhooks']} endpoint(s) pending)"
        for e in pending) + "."] if pending else []


def _endpoint_problems(ctx: EvalContext, rule: "Rule", ms: MirrorStore) -> int | None:
    return sm.endpoint_problem_count(ms)


def explain_endpoints(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    status = sm.endpoint_status(_mirror(ctx))
    return [f"{p[0].upper()}{p[1:]}." for p in status.get("problems") or []]


def _unreachable(ctx: EvalContext, rule: "Rule", ms: MirrorStore) -> float | None:
    return sm.api_unreachable_minutes(ms, ctx.at)


def explain_unreachable(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    ms = _mirror(ctx)
    api = sm.api_summary(ms, last(ctx.at, hours=1))
    sync = sm.sync_summary(ms, ctx.at)
    lines = [f"{api['errors']:,} of {api['calls']:,} calls failed in the last hour ({fmt.rate(api['error_rate'])}: "
             + ", ".join(f"{k} ×{v}" for k, v in api["by_kind"].items()) + ")."]
    if sync["last_error"]:
        lines.append(f"Last sync error: {sync['last_error']}")
    lines.append(f"Last good sync: {sync['last_ok_at'] or 'never'}.")
    return lines


def read_reconcile(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    if not _stripe_configured(ctx):
        return []
    grace = timedelta(minutes=StripeOptions.from_settings(ctx.settings).reconcile_grace_minutes)
    count = persistent_mismatch_count(ctx.source(), _mirror(ctx), ctx.at, window=rule.window, grace=grace)
    return [] if count is None else [Reading("", count, None, {"grace_minutes": grace.total_seconds() / 60})]


def explain_reconcile(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    grace_minutes = reading.detail.get("grace_minutes", 30)
    result = reconcile(ctx.source(), _mirror(ctx), ctx.window(rule), ctx.at,
                       grace=timedelta(minutes=grace_minutes), mask=ctx.settings.mask_emails)
    persisting = [m for m in result.get("mismatches", []) if m["persisting"]]
    kinds = ", ".join(f"{k} ×{v}" for k, v in sorted(Counter(m["kind"] for m in persisting).items()))
    lines = [f"Older than the {grace_minutes:g}-minute grace period: {kinds}."] if kinds else []
    lines += [f"{m['payment_intent']}: {m['title']}. Fix: {m['fix']}" for m in persisting[:SAMPLE_ROWS]]
    return lines


# The rules that say a source of data is missing: while one fires, the rules reading that data hold
# their firing messages (Alertmanager's inhibition); see Metric.inhibited_by and docs/alerts.md.
SOURCE_DOWN, WEBHOOKS_MISSING, STRIPE_DOWN = "data_source_unavailable", "webhooks_missing", "stripe_api_unreachable"


METRICS: dict[str, Metric] = {m.name: m for m in (
    catalogued("webhook_failure_rate", read_webhook_failure_rate, explain_webhook_errors,
               inhibited_by=(SOURCE_DOWN, WEBHOOKS_MISSING)),
    catalogued("webhook_processing_ms", read_webhook_p95, explain_webhook_errors, name="webhook_processing_p95_ms",
               inhibited_by=(SOURCE_DOWN, WEBHOOKS_MISSING)),
    catalogued("webhooks_received", read_webhooks_received, explain_webhooks_received, clear_needs_samples=False,
               inhibited_by=(SOURCE_DOWN,)),
    catalogued("payments_created", read_payments_created, explain_payments_created, clear_needs_samples=False,
               inhibited_by=(SOURCE_DOWN,)),
    catalogued("payment_success_rate", read_success_rate, explain_declines, inhibited_by=(SOURCE_DOWN,)),
    catalogued("failed_payments", read_failed_payments, explain_declines, inhibited_by=(SOURCE_DOWN,)),
    catalogued("refund_rate", read_refund_rate, explain_refunds, inhibited_by=(SOURCE_DOWN,)),
    Metric("payment_amount_spike", "robust score of the average succeeded amount in the window against the "
           "same window in the previous four weeks", "score", read_amount_spike, explain_amount_spike, splits=signals.SPLITS,
           inhibited_by=(SOURCE_DOWN,)),
    # The catalogue's stuck payments with the rule's window as the age (PAYWATCH_STUCK_MINUTES by default).
    catalogued("stuck_payments", read_stuck, explain_stuck, window_word="older than", title_window="older than",
               narrower="Payments pending or processing, whenever created, for longer than the rule's window "
                         "(PAYWATCH_STUCK_MINUTES by default).",
               inhibited_by=(SOURCE_DOWN, WEBHOOKS_MISSING)),
    # The catalogue's count is every duplicate pair; an alert is about the ones that just happened.
    catalogued("duplicate_enrollments", read_duplicates, explain_duplicates,
               narrower="Customer and service pairs with more than one active or pending enrollment created "
                         "in the window.", inhibited_by=(SOURCE_DOWN,)),
    catalogued("api_latency_p95_ms", _probe_reading(lambda s: s["latency_ms"]["p95"]), explain_probe,
               reads="state", needs="PAYWATCH_HEALTH_URL"),
    catalogued("api_error_rate", _probe_reading(lambda s: s["error_rate"]), explain_probe, reads="state",
               needs="PAYWATCH_HEALTH_URL"),
    catalogued("memory_pct", _probe_reading(lambda s: s["memory_pct"]), explain_probe, reads="state",
               needs="PAYWATCH_HEALTH_URL"),
    Metric("db_connections_ratio", "current database connections / their median over the window", "ratio",
           read_connections, explain_connections, reads="state"),
    Metric("data_source_unavailable", "1 when the platform's database did not answer this cycle", "flag",
           read_data_source, explain_data_source, reads="worker", windowed=False),
    Metric("stripe_disputes_created", "disputes created in the window (Stripe mirror)", "count",
           _mirror_reading(_disputes_created), explain_disputes, reads="state", needs="STRIPE_API_KEY",
           inhibited_by=(STRIPE_DOWN,)),
    Metric("stripe_webhook_backlog", "events older than 5 minutes with pending_webhooks > 0 (Stripe mirror)",
           "count", _mirror_reading(_webhook_backlog), explain_backlog, reads="state", windowed=False,
           needs="STRIPE_API_KEY", inhibited_by=(STRIPE_DOWN,)),
    Metric("stripe_endpoint_problems", "webhook endpoints disabled, none configured, or a guide event no "
           "enabled endpoint receives (Stripe mirror)", "count", _mirror_reading(_endpoint_problems),
           explain_endpoints, reads="state", windowed=False, needs="STRIPE_API_KEY", inhibited_by=(STRIPE_DOWN,)),
    Metric("stripe_api_unreachable_minutes", "minutes from the last Stripe call answered to the last one not "
           "answered (network error, 429, 5xx), over the mirror's calls of the last hour", "min",
           _mirror_reading(_unreachable), explain_unreachable, reads="state", windowed=False, needs="STRIPE_API_KEY"),
    Metric("stripe_reconcile_mismatches", "reconciliation mismatches older than the grace period, payments "
           "created in the window", "count", read_reconcile, explain_reconcile, needs="STRIPE_API_KEY",
           inhibited_by=(SOURCE_DOWN, STRIPE_DOWN, WEBHOOKS_MISSING)),
)}


def explain(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    """The message's sample of what is wrong; a failure here never stops the message."""
    try:
        return METRICS[rule.metric].explain(ctx, rule, reading)
    except DataSourceUnavailable as exc:
        return [f"(details unavailable: {exc})"]
    except Exception as exc:  # noqa: BLE001 - the alert matters more than its detail
        return [f"(details unavailable: {type(exc).__name__})"]


# -- Stripe webhook health and the Events API's 30 days (metrics/stripe/) ----------------

def read_endpoint_failing(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    """One reading per enabled endpoint (its URL): hours its oldest undelivered event has waited."""
    if not _stripe_configured(ctx):
        return []
    try:
        hours = sm.endpoint_failing_hours(_mirror(ctx), ctx.at)
    except DataSourceUnavailable as exc:
        raise MirrorUnreadable(f"the Stripe mirror could not be read: {exc}") from exc
    return [] if hours is None else [Reading(url, value, None) for url, value in sorted(hours.items())]


def explain_endpoint_failing(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    health = sm.webhook_health(_mirror(ctx), ctx.at, limit=200)
    ep = next((e for e in health["endpoints"] if e["label"] == reading.subject), None)
    if ep is None or not ep["oldest"]:
        return []
    lines = [f"{ep['undelivered']:,} undelivered event(s) for {ep['url']}, failing since {ep['failing_since']} "
             f"(oldest {ep['oldest']['id']} {ep['oldest']['type']}). Stripe disables an endpoint that keeps failing "
             f"for days and emails only then."]
    if ep["shared"]:
        lines.append("Another enabled endpoint receives some of the same events: Stripe does not say which one failed.")
    replay = [r["command"] for r in health["replay"] if r["endpoint_id"] == ep["id"]][:SAMPLE_ROWS]
    if replay:
        lines.append("Once it answers again, resend: " + "; ".join(replay) + ".")
    return lines


def read_events_expiring(ctx: EvalContext, rule: "Rule") -> list[Reading]:
    if not _stripe_configured(ctx):
        return []
    grace = timedelta(minutes=StripeOptions.from_settings(ctx.settings).reconcile_grace_minutes)
    count = retention_risk_count(ctx.source(), _mirror(ctx), ctx.at, grace=grace)
    return [] if count is None else [Reading("", count, None)]


def explain_events_expiring(ctx: EvalContext, rule: "Rule", reading: Reading) -> list[str]:
    risk = retention_risk(ctx.source(), _mirror(ctx), ctx.at, mask=ctx.settings.mask_emails)
    lines = [f"{m['payment_intent']}: {m['title']} since {m['since']}; its events leave Stripe at "
             f"{m['events_expire_at']}. Fix: {m['fix']}" for m in risk["mismatches"][:SAMPLE_ROWS]]
    lines += [f"{e['id']} {e['type']} undelivered since {e['created']}, resend by {e['resend_by']}: "
              + ("; ".join(e["commands"]) or "no enabled endpoint receives it") for e in risk["events"][:SAMPLE_ROWS]]
    return lines


METRICS["stripe_endpoint_failing_hours"] = Metric(
    "stripe_endpoint_failing_hours", "per enabled webhook endpoint, hours since the oldest event Stripe has not "
    "delivered to it was created (events listed with delivery_success=false, Stripe mirror)", "h",
    read_endpoint_failing, explain_endpoint_failing, reads="state", windowed=False, needs="STRIPE_API_KEY",
    inhibited_by=(STRIPE_DOWN,))
METRICS["stripe_events_expiring"] = Metric(
    "stripe_events_expiring", "unreconciled mismatches and undelivered events older than 25 days, about to leave "
    "the Events API's 30 days", "count", read_events_expiring, explain_events_expiring, windowed=False,
    needs="STRIPE_API_KEY", inhibited_by=(SOURCE_DOWN, STRIPE_DOWN))
