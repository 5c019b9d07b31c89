"""Alert rules as data: the guide's thresholds (section 4, "Set Up Alerts"),
each with the runbook steps it points to (section 5, "Runbooks & Procedures").

A rule names a metric of :mod:`alerts.readings`, a comparison and a
threshold, the window the metric is computed over, how long the condition
must hold before it fires (``for``), how long it keeps firing after the
condition clears (``keep_firing_for``, which absorbs flapping), the fewest
samples worth judging and what an evaluation without them means
(``no_data``), how many changes an hour make it flapping, the rules whose
firing holds back its messages (``inhibited_by``), a severity, an optional
split (one alert per currency or per specialist) and a repeat interval.
``paywatch.toml`` changes any field of a default rule or adds rules
(``[alerts.rules.<id>]``).

A rule on a metric of the catalogue (``metrics/catalogue.py``) may leave its
title and description out: the title is then the catalogue's label with the
rule's own comparison, threshold and window (``Payment success rate below
95%``, ``More than 10 failed payments in 1 hour``) and the description the
catalogue's definition.  A title written by hand may name the rule's own
figures: ``{threshold}``, ``{window}`` and ``{for}`` are filled in from the
rule.  Either way a changed threshold shows in every title (Slack, the
dashboard, the report) and never the default's; a default whose title names
no threshold takes the derived one when ``paywatch.toml`` changes its
threshold or comparison.
"""

from __future__ import annotations

import math
import operator
import string
from datetime import timedelta
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from alerts.config import AlertsConfig, Duration, human_duration, one_line
from alerts.readings import METRICS, format_value, threshold_words
from alerts.state import BREACH, CLEAR, NO_DATA
from metrics.catalogue import condition_title
from metrics.settings import Settings, SettingsError

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["critical", "warning", "info"]
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}

EMERGENCY = "Emergency Response: Payment Processing Down"
REFUND = "Runbook: Process Refund Manually"
RECONCILE = "Runbook: Reconciliation After Outage"
STRIPE_STATUS = "https://status.stripe.com/"


class Runbook(BaseModel):
    """What to do: the guide's section the steps come from, the steps, and a link."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    section: str = ""
    steps: list[str] = Field(default_factory=list)
    url: str | None = None


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str = ""  # "": derived from the catalogue (a metric of metrics/catalogue.py)
    description: str = ""  # "": the metric's definition
    metric: str
    comparison: Comparison
    threshold: float
    window: Duration = timedelta(hours=1)
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    min_samples: int = Field(default=0, ge=0)
    severity: Severity = "warning"
    runbook: Runbook = Field(default_factory=Runbook)
    split: Literal["currency", "specialist"] | None = None
    repeat_interval: Duration | None = None
    confidence: float | None = Field(default=None, gt=0.5, lt=1)
    no_data: Literal["keep", "alert", "resolve"] = "keep"
    flap_threshold: int = Field(default=4, ge=1)
    inhibited_by: tuple[str, ...] | None = None  # default: the metric's (see readings.Metric.inhibited_by)
    enabled: bool = True

    _title_template: str = PrivateAttr(default="")

    def model_post_init(self, context: Any) -> None:
        # The title as written (with its {threshold}, or "" to derive it) is kept for load_rules;
        # the field reads filled in.  A metric the catalogue does not have cannot derive one:
        # _checked says so.
        self._title_template = self.title
        metric = METRICS.get(self.metric)
        if self.title:
            object.__setattr__(self, "title", self._fill(self.title))
        elif metric is not None and metric.catalogue is not None:
            object.__setattr__(self, "title", self.derived_title())
        if not self.description and metric is not None:
            object.__setattr__(self, "description", metric.description)

    def derived_title(self) -> str:
        """The catalogue's label with this rule's comparison, threshold and (for a count) window."""
        metric = METRICS[self.metric]
        within = (f"{metric.title_window} {window_words(self.window)}"
                  if metric.windowed and self.window else None)
        return condition_title(metric.catalogue, self.comparison, self.threshold, within)

    def _fill(self, template: str) -> str:
        if "{" not in template:
            return template
        figures = {"threshold": threshold_words(self.unit, self.threshold), "window": window_words(self.window),
                   "for": window_words(self.for_)}
        try:
            return template.format(**figures)
        except (KeyError, IndexError, ValueError):
            return template  # a brace the author meant literally

    @property
    def title_template(self) -> str:
        return self._title_template

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(sorted(METRICS))}")
        return value

    @field_validator("title")
    @classmethod
    def _known_figures(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError:
            names = set()
        unknown = names - {"threshold", "window", "for"}
        if unknown:
            raise ValueError(f"a title may name {{threshold}}, {{window}} and {{for}}, not {{{sorted(unknown)[0]}}}")
        return value

    @model_validator(mode="after")
    def _checked(self) -> "Rule":
        if not self.title:
            raise ValueError(f"title: required for metric {self.metric}, which is not in the metric catalogue "
                             "(metrics/catalogue.py) to derive one from")
        if self.split is not None and self.split not in METRICS[self.metric].splits:
            supported = ", ".join(METRICS[self.metric].splits) or "none"
            raise ValueError(f"metric {self.metric} cannot be split by {self.split} (supported: {supported})")
        if self.confidence is not None and METRICS[self.metric].unit != "rate":
            raise ValueError(f"confidence only applies to rates; {self.metric} is not one")
        return self

    # What a reader sees -------------------------------------------------------------

    @property
    def unit(self) -> str:
        return METRICS[self.metric].unit

    def judged_value(self, value: float | None, samples: int | None) -> float | None:
        """The value the threshold is compared with.

        With ``confidence``, a rate is judged by the edge of its Wilson
        interval nearest to "all clear": 2 declines in 30 payments (93 %)
        is not evidence that the success rate is below 95 %; 22 in 52 is.
        """
        if value is None or self.confidence is None or not samples:
            return value
        low, high = wilson_interval(value, samples, self.confidence)
        return high if self.comparison in ("<", "<=") else low if self.comparison in (">", ">=") else value

    def judge(self, value: float | None, samples: int | None) -> str:
        """``breach``, ``clear`` or ``no_data`` (no value, or fewer samples than ``min_samples``).

        ``samples`` is ``None`` for a metric without a sample count (a count
        of failed payments): then there is no minimum to meet.  One declined
        payment is not evidence of recovery any more than of an outage, so
        too few samples is no data on either side of the threshold; a metric
        whose samples are only the *usual* volume (webhooks received) is
        judged clear on its value alone.
        """
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NO_DATA
        crossed = COMPARE[self.comparison](self.judged_value(value, samples), self.threshold)
        if self.min_samples and samples is not None and samples < self.min_samples:
            if crossed or METRICS[self.metric].clear_needs_samples:
                return NO_DATA
        return BREACH if crossed else CLEAR

    def breached(self, value: float | None, samples: int | None) -> bool:
        """True when the value crosses the threshold on enough samples."""
        return self.judge(value, samples) == BREACH

    @property
    def inhibitors(self) -> tuple[str, ...]:
        """The rules whose firing holds back this rule's firing messages (inhibition)."""
        chosen = self.inhibited_by if self.inhibited_by is not None else METRICS[self.metric].inhibited_by
        return tuple(r for r in chosen if r != self.id)

    def threshold_text(self) -> str:
        if self.unit == "flag":
            return "= yes"  # a yes/no metric: the threshold is "it happened"
        return f"{self.comparison} {format_value(self.unit, self.threshold)}"

    def condition_text(self) -> str:
        """``payment_success_rate < 95.0% over 1h, for 5m`` (the rules listing, the docs)."""
        text = f"{self.metric} {self.threshold_text()}"
        if self.window and METRICS[self.metric].windowed:
            text += f" {METRICS[self.metric].window_word} {human_duration(self.window)}"
        if self.for_:
            text += f", for {human_duration(self.for_)}"
        if self.keep_firing_for:
            text += f", keep firing {human_duration(self.keep_firing_for)}"
        if self.min_samples:
            text += f", at least {self.min_samples} sample{'' if self.min_samples == 1 else 's'}"
        if self.confidence:
            text += f", {self.confidence:.0%} sure"
        if self.no_data != "keep":
            text += f", no data: {self.no_data}"
        if self.split:
            text += f", per {self.split}"
        return text

    def repeat_every(self, config: AlertsConfig) -> timedelta:
        return self.repeat_interval if self.repeat_interval is not None else config.repeat_interval


def window_words(td: timedelta) -> str:
    """A window as a title says it: ``1 hour``, ``15 minutes``, ``2 days``; else ``1h 30m``."""
    seconds = int(td.total_seconds())
    for size, noun in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds and seconds % size == 0 and td.total_seconds() == seconds:
            n = seconds // size
            if noun == "day" and n == 1:
                return "24 hours"
            return f"{n} {noun}{'' if n == 1 else 's'}"
    return human_duration(td)


def wilson_interval(rate: float, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion (one-sided ``confidence`` on each edge)."""
    z = NormalDist().inv_cdf(confidence)
    denominator = 1 + z * z / n
    center = (rate + z * z / (2 * n)) / denominator
    margin = z * math.sqrt(max(0.0, rate * (1 - rate)) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - margin), min(1.0, center + margin)


def _defined(metric: str, more: str) -> str:
    """A rule's description: its metric's definition (the catalogue's), then what the rule adds."""
    return f"{METRICS[metric].description} {more}"


def default_rules(settings: Settings) -> list[Rule]:
    """The guide's alerts, with the runbook steps each one points to.

    The rules on a catalogue metric take their title and description from it
    (see the module's docstring); the others, and the stuck payments' title,
    which names no number, are written here.
    """
    stuck_window = timedelta(minutes=settings.stuck_minutes)
    rules: list[dict[str, Any]] = [
        dict(
            id="webhook_failure_rate", severity="critical",
            metric="webhook_failure_rate", comparison=">", threshold=0.01, window="1h", **{"for": "5m"},
            keep_firing_for="10m", min_samples=10, confidence=0.99,
            runbook=dict(section=EMERGENCY, url=STRIPE_STATUS, steps=[
                "Check the webhook delivery logs: tail -f logs/stripe-webhooks.log (the errors below show the most common failure).",
                "Check Stripe status: https://status.stripe.com/ and the endpoint's deliveries in the Stripe Dashboard (Developers → Webhooks).",
                "Recovery: a code issue → deploy the fix; a webhook issue → reconfigure the endpoint (signing secret, URL).",
                "Afterwards run the reconciliation after outage, so payments whose events failed are completed.",
            ])),
        dict(
            id="webhook_processing_slow", severity="warning",
            metric="webhook_processing_p95_ms", comparison=">", threshold=10_000, window="15m", **{"for": "5m"},
            keep_firing_for="10m", min_samples=10,
            runbook=dict(section=EMERGENCY, steps=[
                "Check the webhook handler's logs for slow steps: tail -f logs/stripe-webhooks.log.",
                "If the database is slow: check its connections and load, restart if needed (recovery step).",
                "Stripe times out slow endpoints and retries: move slow work (emails) off the request, as the guide's 'Optimize Webhook Processing' says (message queue, batched emails).",
            ])),
        dict(
            id="webhooks_missing", severity="critical",
            description=_defined("webhooks_received", "0 means Stripe is not reaching the endpoint. Judged only when the same hour of the previous weeks usually receives at least "
                        "min_samples events (a quiet night is not an outage); without that history, always."),
            metric="webhooks_received", comparison="<", threshold=1, window="1h", keep_firing_for="10m", min_samples=5,
            runbook=dict(section=EMERGENCY, url=STRIPE_STATUS, steps=[
                "Check Stripe status: https://status.stripe.com/.",
                "Check the endpoint in the Stripe Dashboard (Developers → Webhooks): failing deliveries, disabled endpoint, wrong URL.",
                "Check the webhook delivery logs and that the server answers at all (API logs).",
                "Recovery: reconfigure the endpoint if needed; then run the reconciliation after outage for the gap.",
            ])),
        dict(
            id="payment_success_rate", severity="critical",
            metric="payment_success_rate", comparison="<", threshold=0.95, window="1h", **{"for": "5m"},
            keep_firing_for="10m", min_samples=20, confidence=0.99,
            runbook=dict(section=EMERGENCY, url=STRIPE_STATUS, steps=[
                "Assess: check Stripe status (https://status.stripe.com/), the API logs for errors and the webhook delivery logs.",
                "Look at the top decline codes below: one issuer or code points at the card side, a spread at our side.",
                "Investigate: tail -f logs/payment-errors.log; db.payments.find({ status: \"processing\" }).count().",
                "If customers are affected: post on the status page and notify them.",
                "Recovery: deploy a fix for a code issue; retry failed payments manually if needed.",
            ])),
        dict(
            id="payments_missing", severity="critical",
            description=_defined("payments_created", "0 means checkout has stopped, which the rates "
                        "cannot say (no payment is no data for them, not an all clear). Judged like "
                        "webhooks_missing: only when the same hour of the previous weeks usually has at least "
                        "min_samples payments; without that history, always."),
            metric="payments_created", comparison="<", threshold=1, window="1h", keep_firing_for="10m",
            min_samples=5,
            runbook=dict(section=EMERGENCY, url=STRIPE_STATUS, steps=[
                "Assess: try a checkout yourself; check the API logs for errors and Stripe status (https://status.stripe.com/).",
                "Check that the platform still writes payments: db.payments.find().sort({ createdAt: -1 }).limit(1).",
                "If customers are affected: post on the status page and notify them.",
                "Recovery: deploy a fix or roll back the last deploy (guide section 8); then run the reconciliation after outage.",
            ])),
        dict(
            id="failed_payments", severity="warning",
            metric="failed_payments", comparison=">", threshold=10, window="1h", keep_firing_for="10m",
            runbook=dict(section=EMERGENCY, steps=[
                "Look at the top decline codes and the revenue at risk below.",
                "Check tail -f logs/payment-errors.log and Stripe status (https://status.stripe.com/).",
                "Weekly review habit: review failed payments for patterns (same card, specialist or service).",
                "Retry failed payments manually if needed, once the cause is fixed.",
            ])),
        dict(
            id="refund_rate", severity="warning",
            metric="refund_rate", comparison=">", threshold=0.05, window="24h", **{"for": "15m"},
            keep_firing_for="1h", min_samples=20, confidence=0.99,
            runbook=dict(section=REFUND, steps=[
                "See which services the refunds are for (below): a cancelled course refunds its buyers in a wave.",
                "Check each refund went through the manual refund runbook: Stripe refund, payment set to refunded, enrollment set to refunded.",
                "If refunds were issued by mistake, contact the customers before the money leaves (Stripe Dashboard).",
            ])),
        dict(
            id="payment_amount_spike", title="Unusual spike in payment amounts", severity="warning",
            description="Average succeeded amount in the window against the same window in each of the previous "
                        "four weeks: (average - median of the weekly averages) / max(1.4826 x MAD, standard error "
                        "of an average of this many payments); at least 3 weeks of history.",
            metric="payment_amount_spike", comparison=">", threshold=6, window="1h", keep_firing_for="30m",
            min_samples=5, split="currency",
            runbook=dict(section=EMERGENCY, steps=[
                "Look at the largest payments below: a price typo (cents vs units) or card fraud.",
                "Check the service prices in the catalogue and recent deploys (a pricing bug).",
                "Monthly review habit: review fraud patterns and suspicious transactions; refund with the manual refund runbook if needed.",
            ])),
        dict(
            id="api_latency", severity="warning",
            description=_defined("api_latency_p95_ms", "The worker probes PAYWATCH_HEALTH_URL every cycle."),
            metric="api_latency_p95_ms", comparison=">", threshold=1000, window="5m", **{"for": "2m"},
            keep_firing_for="5m", min_samples=3,
            runbook=dict(section=EMERGENCY, steps=[
                "Check the API logs for errors and slow requests.",
                "Check the database (connections, slow queries): if a database issue, check connections and restart if needed.",
                "Recovery: deploy a fix or roll back (guide section 8) if a deploy caused it.",
            ])),
        dict(
            id="api_error_rate", severity="critical",
            description=_defined("api_error_rate", "The worker probes PAYWATCH_HEALTH_URL every cycle."),
            metric="api_error_rate", comparison=">", threshold=0.01, window="15m", keep_firing_for="5m", min_samples=5,
            confidence=0.99,
            runbook=dict(section=EMERGENCY, steps=[
                "Assess: check the API logs for errors; check Stripe status (https://status.stripe.com/).",
                "If customers are affected: post on the status page.",
                "Recovery: deploy a fix, or roll back the last deploy (guide section 8).",
            ])),
        dict(
            id="db_connections_high", title="Database connections far above normal", severity="warning",
            description="Current connection count / median of the samples in the window (the worker records one per cycle).",
            metric="db_connections_ratio", comparison=">", threshold=3, window="24h", **{"for": "5m"},
            keep_firing_for="10m", min_samples=30,
            runbook=dict(section=EMERGENCY, steps=[
                "Database issue: check connections (db.serverStatus().connections) and which clients hold them; restart if needed.",
                "A leak usually follows a deploy: use connection pooling (guide section 6), one client per process.",
            ])),
        dict(
            id="memory_high", severity="warning",
            metric="memory_pct", comparison=">", threshold=80, window="5m", **{"for": "5m"}, keep_firing_for="5m",
            min_samples=1,
            runbook=dict(section=EMERGENCY, steps=[
                "Check the API logs and the process memory over time (a leak grows steadily).",
                "Recovery: restart the application if needed; deploy a fix for a leak.",
            ])),
        dict(
            id="stuck_payments", title="Payments stuck in processing", severity="warning",
            metric="stuck_payments", comparison=">", threshold=0, window=stuck_window, keep_firing_for="15m",
            runbook=dict(section=EMERGENCY, steps=[
                "Investigate: db.payments.find({ status: \"processing\" }).count() — the oldest are listed below.",
                "Check each PaymentIntent in the Stripe API (curl .../v1/payment_intents/pi_...): succeeded, failed or still requires_action.",
                "Check the webhook delivery logs: a missed payment_intent.succeeded leaves a payment processing.",
                "Recovery: run the reconciliation after outage to bring the records in line with Stripe.",
            ])),
        dict(
            id="duplicate_enrollments", severity="warning",
            metric="duplicate_enrollments", comparison=">", threshold=0, window="24h", keep_firing_for="30m",
            runbook=dict(section=REFUND, steps=[
                "Find the pairs below; check whether the customer was also charged twice (db.payments.find for the customer).",
                "Cancel the extra enrollment; if charged twice, refund with the manual refund runbook (Stripe refund, payment and enrollment set to refunded).",
                "Root cause: a webhook processed twice; the guide's unique index on stripeEventId prevents it.",
            ])),
        dict(
            id="data_source_unavailable", title="Data source unavailable", severity="critical",
            description="The platform's MongoDB did not answer; every other rule is unknown until it does.",
            metric="data_source_unavailable", comparison=">", threshold=0, window=0, **{"for": "1m"},
            keep_firing_for="10m",
            runbook=dict(section=EMERGENCY, steps=[
                "Database issue: check the cluster is up and reachable from this host (network, credentials, IP allow list).",
                "Check its connections and restart if needed.",
                "Alerts are unknown meanwhile, not clear: watch the platform by hand until this resolves.",
            ])),
        # -- Stripe (from the mirror; "needs STRIPE_API_KEY", never firing, while it is unset) --
        dict(
            id="stripe_disputes_created", title="Dispute opened in Stripe", severity="warning",
            description="Disputes created in the window, from the Stripe mirror (the guide's endpoint subscribes "
                        "to charge.dispute.created). Unknown when the key may not read disputes.",
            metric="stripe_disputes_created", comparison=">", threshold=0, window="1h", keep_firing_for="10m",
            runbook=dict(section=REFUND, steps=[
                "Find the payment (runbook step 1: db.payments.findOne({ paymentId: \"pi_...\" })) and the dispute "
                "below in the Stripe Dashboard (Payments → Disputes).",
                "Answer it in Stripe before the evidence is due (the enrollment, the course delivered, emails sent).",
                "If you accept it or lose it, the money is gone: set the payment and enrollment refunded as in "
                "runbook steps 4 and 5, and send the notification (step 6).",
            ])),
        dict(
            id="stripe_webhook_backlog", title="Stripe cannot deliver webhooks", severity="critical",
            description="Stripe events older than 5 minutes still waiting for delivery (pending_webhooks > 0), "
                        "from the mirror. Unknown when the server does not report deliveries (localstripe).",
            metric="stripe_webhook_backlog", comparison=">", threshold=0, **{"for": "10m"}, keep_firing_for="10m",
            runbook=dict(section=EMERGENCY, url=STRIPE_STATUS, steps=[
                "Assess: check Stripe status (https://status.stripe.com/) and the webhook delivery logs "
                "(tail -f logs/stripe-webhooks.log): is the endpoint answering at all?",
                "Check the endpoint's failed deliveries in the Stripe Dashboard (Developers → Webhooks): wrong URL, "
                "signing secret, timeouts, 5xx from our server.",
                "Recovery: if webhook issue, reconfigure the endpoint; if code issue, deploy the fix. Stripe retries "
                "for 3 days; afterwards run the reconciliation after outage (python -m metrics reconcile).",
            ])),
        dict(
            id="stripe_webhook_endpoint", title="Stripe webhook endpoint disabled or missing events",
            severity="critical",
            description="Webhook endpoints that are disabled, no endpoint at all, or one of the guide's events "
                        "(payment_intent.succeeded, payment_intent.payment_failed, charge.refunded, "
                        "charge.dispute.created) that no enabled endpoint receives.",
            metric="stripe_endpoint_problems", comparison=">", threshold=0, keep_firing_for="10m",
            runbook=dict(section=EMERGENCY, steps=[
                "In the Stripe Dashboard → Developers → Webhooks, check the endpoint named below: enabled, the "
                "production URL (…/api/webhooks/stripe), and the guide's four events selected.",
                "Recovery (webhook issue): reconfigure the endpoint: re-enable it or add the missing events; a "
                "new endpoint needs its signing secret in the platform's environment.",
                "Events missed meanwhile were not delivered: run the reconciliation after outage "
                "(python -m metrics reconcile) for the gap.",
            ])),
        dict(
            id="stripe_api_unreachable", title="Stripe API unreachable", severity="critical",
            description="Minutes from the last Stripe call that was answered to the last one that was not "
                        "(network error, 429 or 5xx after retries), from the mirror sync's recorded calls; "
                        "unknown when no call was made in the last hour.",
            metric="stripe_api_unreachable_minutes", comparison=">", threshold=15, keep_firing_for="10m",
            runbook=dict(section=EMERGENCY, url=STRIPE_STATUS, steps=[
                "Assess: check Stripe status (https://status.stripe.com/); if Stripe is down, payments are down "
                "too: post an incident update on the status page.",
                "If Stripe is up: check this host's network and DNS to api.stripe.com, and the error kinds below "
                "(429: something else uses the key's rate limit).",
                "The mirror resumes where it stopped; once Stripe answers, run the reconciliation after outage "
                "(python -m metrics reconcile --sync).",
            ])),
        dict(
            id="stripe_reconciliation", title="Stripe and the database disagree", severity="warning",
            description="Reconciliation mismatches between the Stripe mirror and the platform's payments and "
                        "enrollments, for payments created in the window, older than the grace period "
                        "(reconcile_grace_minutes, default 30).",
            metric="stripe_reconcile_mismatches", comparison=">", threshold=0, window="24h", keep_firing_for="30m",
            runbook=dict(section=RECONCILE, steps=[
                "List them with their fixes: python -m metrics reconcile (or the dashboard's Reconciliation page).",
                "Succeeded in Stripe but missing or not completed in the database: apply the runbook's "
                "reconcile-payments.js fix (create the record, or set it completed) and activate the enrollment.",
                "Refund mismatches: follow the manual refund runbook, steps 4 and 5.",
                "Paywatch never applies a fix: a person runs each proposed command after checking it.",
            ])),
        # -- Stripe webhook health and the Events API's 30 days (computed in metrics/stripe/) --
        dict(
            id="stripe_endpoint_failing", title="Stripe webhook endpoint failing deliveries", severity="critical",
            description="An enabled webhook endpoint whose oldest undelivered event (events listed with "
                        "delivery_success=false) is older than 6 hours, one alert per endpoint. Stripe emails "
                        "only after days of failures, then disables the endpoint.",
            metric="stripe_endpoint_failing_hours", comparison=">", threshold=6, keep_firing_for="10m",
            runbook=dict(section=EMERGENCY, url=STRIPE_STATUS, steps=[
                "Check the endpoint named below in the Stripe Dashboard (Developers → Webhooks): the failed "
                "deliveries' HTTP status, and tail -f logs/stripe-webhooks.log on our side.",
                "Recovery: if webhook issue, reconfigure the endpoint (URL, signing secret); if code issue, deploy "
                "the fix, before Stripe disables the endpoint.",
                "Then resend what it missed (the dashboard's Stripe page lists each stripe events resend command) "
                "and run the reconciliation after outage (python -m metrics reconcile --sync).",
            ])),
        dict(
            id="stripe_events_expiring", title="Stripe events about to expire unreconciled", severity="warning",
            description="Unreconciled mismatches and undelivered events older than 25 days: Stripe keeps events "
                        "30 days, after which they cannot be listed or resent.",
            metric="stripe_events_expiring", comparison=">", threshold=0, keep_firing_for="10m",
            runbook=dict(section=RECONCILE, steps=[
                "List them: the dashboard's Reconciliation page, or python -m metrics reconcile --since "
                "(30 days ago).",
                "Resend each undelivered event with the stripe events resend command shown, or apply the "
                "mismatch's proposed fix, before the date shown.",
                "After 30 days the monthly review still finds the mismatch from PaymentIntents and Charges; "
                "only the events are gone.",
            ])),
    ]
    return [Rule.model_validate(r) for r in rules]


def _build(fields: dict[str, Any], where: str) -> Rule:
    try:
        return Rule.model_validate(fields)
    except ValidationError as exc:
        raise SettingsError(one_line(exc, where)) from None


def load_rules(settings: Settings, config: AlertsConfig) -> list[Rule]:
    """The default rules with ``[alerts.rules.<id>]`` applied: fields of a default
    replaced, new rules added.  Disabled rules are kept (the listing shows them)."""
    rules = {rule.id: rule for rule in default_rules(settings)}
    for rule_id, table in config.rules.items():
        where = f"[alerts.rules.{rule_id}]"
        if not isinstance(table, dict):
            raise SettingsError(f"configuration error: {where} must be a table")
        if "id" in table and table["id"] != rule_id:
            raise SettingsError(f"configuration error: {where}: id must be {rule_id!r} or left out")
        base = rules[rule_id].model_dump(by_alias=True) if rule_id in rules else {}
        if base:
            base["title"] = _title_for(rules[rule_id], table)  # so the override's threshold shows in it
            if "metric" in table and "description" not in table:
                base["description"] = ""  # the new metric's
        if "runbook" in table and isinstance(table["runbook"], dict) and "runbook" in base:
            table = {**table, "runbook": {**base["runbook"], **table["runbook"]}}
        rules[rule_id] = _build({**base, **table, "id": rule_id}, where)
    for rule in rules.values():
        unknown = [r for r in rule.inhibited_by or () if r not in rules]
        if unknown:
            raise SettingsError(f"configuration error: [alerts.rules.{rule.id}].inhibited_by: unknown rule "
                                f"{unknown[0]!r}; known: {', '.join(sorted(rules))}")
    return sorted(rules.values(), key=lambda r: (r.metric == "data_source_unavailable", SEVERITY_ORDER[r.severity], r.id))


def _title_for(default: Rule, change: dict[str, Any]) -> str:
    """The title template an override of ``default`` starts from.

    A template naming ``{threshold}`` (or "", derived) follows the new threshold by itself.
    One that names none ("Payments stuck in processing") is true only of the default's
    condition: a changed condition on a catalogue metric takes the derived title instead.
    """
    template = default.title_template
    changed = any(k in change and change[k] != getattr(default, k) for k in ("metric", "comparison", "threshold"))
    names_threshold = "{threshold}" in template
    metric = METRICS.get(change.get("metric", default.metric))
    if changed and not names_threshold and metric is not None and metric.catalogue is not None:
        return ""
    return template


def find_rule(rules: list[Rule], rule_id: str) -> Rule:
    for rule in rules:
        if rule.id == rule_id:
            return rule
    raise SettingsError(f"unknown rule {rule_id!r}; known: {', '.join(r.id for r in rules)}")
