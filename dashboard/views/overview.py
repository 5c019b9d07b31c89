"""Overview: the guide's whole metrics tree at a glance, with its targets (guide section 4)."""

from __future__ import annotations

import streamlit as st

from dashboard import common
from dashboard.common import Tile, View, delta_count, delta_ms, delta_rate, delta_relative, dig, md
from metrics import enrollments, payments, series, webhooks
from metrics import format as fmt
from metrics.probe import probe_summary
from metrics.quality import data_quality
from metrics.system import database_health

SECTIONS = ("Payments", "Webhooks", "Enrollments", "System Health")


def main() -> None:
    common.live(render)


def render() -> None:
    with View("Overview") as view:
        render_alerts(view)
        quality = st.container()  # filled last: it scans whole collections
        render_payments(view)
        render_webhooks(view)
        render_enrollments(view)
        render_system(view)
        with quality:
            render_quality(view)


def section(title: str, scope: str) -> None:
    st.subheader(title, anchor=False, divider="gray")
    st.caption(scope)


def alert_line(alert: dict) -> str:
    """``Payment success rate below 95% [usd]: 91.2% (threshold < 95.0%)`` from the worker's state."""
    line = alert.get("title") or alert.get("rule_id") or "alert"
    if alert.get("subject"):
        line += f" [{alert['subject']}]"
    if alert.get("value_text"):
        line += f": {alert['value_text']}"
        if alert.get("threshold_text"):
            line += f" (threshold {alert['threshold_text']})"
    return line


def render_alerts(view: View) -> None:
    beat = view.state(common.worker_heartbeat) or {}
    if beat.get("delivery_failed"):
        n = beat["delivery_failed"]
        st.error(f"**Alert delivery is failing**: {fmt.count(n)} message{'' if n == 1 else 's'} given up, announced "
                 "on the other channels. See Notifications.", icon=":material/notifications_off:")
    firing = view.state(common.firing_alerts)
    if not firing:
        return
    for alert in firing[:5]:
        st.error(f"**Firing · {md(alert.get('severity', 'alert'))}** · {md(alert_line(alert))}"
                 f" · since {view.when(alert.get('fired_at') or alert.get('since'))}",
                 icon=":material/notifications_active:")
    if len(firing) > 5:
        st.error(f"… and {len(firing) - 5} more firing alerts: see the Alerts page.", icon=":material/notifications_active:")


def render_quality(view: View) -> None:
    quality = view.get(data_quality, slow=True)
    invalid = {k: v["invalid"] for k, v in (quality or {}).items() if v.get("invalid")}
    if invalid:
        parts = ", ".join(f"{fmt.count(n)} in {k}" for k, n in invalid.items())
        st.warning(f"Data quality: {parts} are invalid (a required field missing or of the wrong type) "
                   "and left out of every figure. See System Health.", icon=":material/rule:")


def _values(rows: list[dict] | None, pick) -> list[float]:
    return [v for v in (pick(r) for r in rows or []) if v is not None]


def render_payments(view: View) -> None:
    now = view.get(payments.window_summary, view.window, view.currencies)
    before = view.get(payments.window_summary, view.previous, view.currencies)
    revenue = {**(view.get(series.revenue_with_previous, {"today": view.periods["today"]}, view.currencies) or {}),
               **(view.get(series.revenue_with_previous, {n: view.slow_periods[n] for n in ("week", "month")},
                           view.currencies, slow=True) or {})}
    stuck = view.get(payments.stuck_count, view.at, view.settings.stuck_minutes)
    trend = view.get(series.payment_series, view.window, view.settings.timezone, None, view.currencies)
    primary = common.currencies_seen(view.currencies, *(dig(revenue, n, "current") for n in ("today", "week", "month")))[0]
    t = view.targets

    def revenue_tile(name: str, label: str) -> Tile:
        current, previous = dig(revenue, name, "current"), dig(revenue, name, "previous")
        value, others = common.money_parts(current, primary)
        notes = ([f"also {others}"] if others else []) + ([] if name == "today" else [f"as of {view.when(view.slow_at)}"])
        return Tile(label, value, delta=delta_relative(dig(current, primary), dig(previous, primary)),
                    note=" · ".join(notes) or None,
                    help=f"Succeeded payments (completed or refunded) created {label.lower().replace('revenue ', '')}, "
                         "per currency, never converted. The change compares with the same length of time "
                         "just before.")

    atv, atv_others = common.money_parts(
        None if now is None else {c: v for c, v in now["avg_transaction_value"].items() if v}, primary)

    section("Payments", f"{view.range.label}, except revenue by calendar period")
    view.tiles([
        revenue_tile("today", "Revenue today"),
        revenue_tile("week", "Revenue this week"),
        revenue_tile("month", "Revenue this month"),
        Tile("Success rate", None if now is None else fmt.rate(now["success_rate"]),
             delta=delta_rate(dig(now, "success_rate"), dig(before, "success_rate")),
             target=t["payment_success_rate"], raw=dig(now, "success_rate"),
             trend=_values(trend, lambda r: r["success_rate"]),
             help="Succeeded / (succeeded + failed). Pending, processing and canceled payments are in neither."),
        Tile("Failed payments", None if now is None else fmt.count(now["failed"]),
             delta=delta_count(dig(now, "failed"), dig(before, "failed")), delta_color="inverse",
             trend=_values(trend, lambda r: r["failed"]),
             help="Payments with status failed (declined cards and other errors)."),
        Tile("Refund rate", None if now is None else fmt.rate(now["refund_rate"]),
             delta=delta_rate(dig(now, "refund_rate"), dig(before, "refund_rate")), delta_color="inverse",
             target=t["refund_rate"], raw=dig(now, "refund_rate"),
             note=None if now is None else fmt.count(now['refunds'], 'refund'),
             help="Payments refunded in the period / payments succeeded in the period."),
        Tile("Average transaction value", atv, note=f"also {atv_others}" if atv_others else None,
             help="Revenue divided by the number of succeeded payments, per currency."),
        Tile("Processing time (avg)", None if now is None else fmt.duration(now["processing_ms"]["avg"]),
             delta=delta_ms(dig(now, "processing_ms", "avg"), dig(before, "processing_ms", "avg")),
             delta_color="inverse", target=t["payment_processing_ms"], raw=dig(now, "processing_ms", "avg"),
             note=None if now is None else f"p95 {fmt.duration(now['processing_ms']['p95'])}",
             help="From payment created to completed, over succeeded payments."),
        Tile("Stuck payments", None if stuck is None else fmt.count(stuck), delta_color="inverse",
             help=f"Pending or processing for more than {view.settings.stuck_minutes:g} minutes, "
                  "whenever created (the runbook's query)."),
    ], per_row=3)


def render_webhooks(view: View) -> None:
    now = view.get(webhooks.window_summary, view.window)
    before = view.get(webhooks.window_summary, view.previous)
    last = view.get(webhooks.last_received_at, view.at)
    trend = view.get(series.webhook_series, view.window, view.settings.timezone)
    t = view.targets

    def delivery(summary):
        rate = dig(summary, "failure_rate")
        return None if rate is None else 1 - rate

    section("Webhooks", view.range.label)
    view.tiles([
        Tile("Events received", None if now is None else fmt.count(now["received"]),
             delta=delta_count(dig(now, "received"), dig(before, "received")), delta_color="off",
             trend=_values(trend, lambda r: r["received"]),
             note=None if now is None else f"{fmt.count(now['failed'])} failed"),
        Tile("Delivery success", None if now is None else fmt.rate(delivery(now), 2),
             delta=delta_rate(delivery(now), delivery(before)),
             target=t["webhook_delivery_rate"], raw=delivery(now),
             help="Processed / (processed + failed): events the platform handled without error."),
        Tile("Processing time (p95)", None if now is None else fmt.duration(now["processing_ms"]["p95"]),
             delta=delta_ms(dig(now, "processing_ms", "p95"), dig(before, "processing_ms", "p95")),
             delta_color="inverse", target=t["webhook_processing_ms"], raw=dig(now, "processing_ms", "p95"),
             note=None if now is None else f"avg {fmt.duration(now['processing_ms']['avg'])}",
             help="From received to processed."),
        Tile("Last event received", None if now is None and last is None else view.ago(last),
             note=None if last is None else view.when(last),
             help="The guide alerts when no webhook arrives for an hour."),
    ])


def render_enrollments(view: View) -> None:
    day = view.periods["today"]
    new = view.get(enrollments.created_count, day)
    new_before = view.get(enrollments.created_count, day.previous())
    now = view.get(enrollments.window_summary, view.window)
    before = view.get(enrollments.window_summary, view.previous)
    pending = view.get(enrollments.pending_payments_count, view.at)
    duplicates = view.get(enrollments.duplicate_count, view.slow_at, slow=True)
    t = view.targets

    section("Enrollments", f"{view.range.label}; new enrollments since local midnight")
    view.tiles([
        Tile("New enrollments today", None if new is None else fmt.count(new),
             delta=delta_count(new, new_before), delta_color="off"),
        Tile("Conversion rate", None if now is None else fmt.rate(now["conversion_rate"]),
             delta=delta_rate(dig(now, "conversion_rate"), dig(before, "conversion_rate")),
             help="Enrollments created in the period whose payment went through (paid or later refunded)."),
        Tile("Pending payments", None if pending is None else fmt.count(pending), delta_color="inverse",
             help="Enrollments still waiting for their payment, whenever created."),
        Tile("Refunded enrollments", None if now is None else fmt.count(now["refunded"]),
             delta=delta_count(dig(now, "refunded"), dig(before, "refunded")), delta_color="inverse"),
        Tile("Activation time (p95)", None if now is None else fmt.duration(now["activation_ms"]["p95"]),
             delta=delta_ms(dig(now, "activation_ms", "p95"), dig(before, "activation_ms", "p95")),
             delta_color="inverse", target=t["activation_ms"], raw=dig(now, "activation_ms", "p95"),
             note=None if now is None else f"avg {fmt.duration(now['activation_ms']['avg'])}",
             help="From payment completed to enrollment active."),
        Tile("Confirmation email (p95)", None if now is None else fmt.duration(now["email_ms"]["p95"]),
             delta=delta_ms(dig(now, "email_ms", "p95"), dig(before, "email_ms", "p95")),
             delta_color="inverse", target=t["email_ms"], raw=dig(now, "email_ms", "p95"),
             note=None if now is None else f"avg {fmt.duration(now['email_ms']['avg'])}",
             help="From enrollment active to confirmation email sent."),
        Tile("Duplicate enrollments", None if duplicates is None else fmt.count(duplicates),
             target=t["duplicate_enrollments"], raw=duplicates,
             help="Customer and service pairs with more than one active or pending enrollment."),
    ])


def render_system(view: View) -> None:
    health = view.get(database_health, view.settings.embedded, slow=True, tells_health=False)
    probe = view.state(probe_summary, view.window) if view.settings.health_url else None
    worker = view.worker()
    connections = dig(health, "connections") or {}
    storage = dig(health, "storage") or {}

    section("System Health", f"{view.range.label} for the platform's API probe")
    not_probed = "not configured (PAYWATCH_HEALTH_URL)" if not view.settings.health_url else None
    view.tiles([
        Tile("API latency", fmt.duration(dig(probe, "latency_ms", "avg")) if probe else None,
             note=not_probed or (f"p95 {fmt.duration(dig(probe, 'latency_ms', 'p95'))} · "
                                 f"{fmt.count(dig(probe, 'samples'), 'probe')}" if probe else None),
             help="Average time for the platform's health URL to answer, as the probe measures it."),
        Tile("API error rate", fmt.rate(dig(probe, "error_rate"), 2) if probe else None, note=not_probed,
             help="Probes that failed or answered with an HTTP error."),
        Tile("DB connections", fmt.count(connections.get("current")) if health else None,
             note=(f"{fmt.count(connections.get('available'))} available" if connections.get("available") is not None
                   else "not reported" if health else None),
             help="From the database's serverStatus (needs the clusterMonitor role)."),
        Tile("DB storage", fmt.size(storage.get("storage_bytes")) if health else None,
             note=("disk " + fmt.rate(storage["fs_used_bytes"] / storage["fs_total_bytes"]) + " used"
                   if storage.get("fs_total_bytes") else "disk usage not reported" if health else None),
             help="dbStats of the platform database: data and indexes on disk."),
        Tile("Alert worker", worker.state,
             note=f"last heartbeat {worker.age_text} ago" if worker.at else "no heartbeat recorded yet",
             help=f"Late when its heartbeat is older than {worker.limit_text}."),
    ], per_row=5)


if __name__ == "__main__":
    main()
