"""Overview: the guide's whole metrics tree at a glance, with its targets (guide section 4)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common
from dashboard.common import Tile, View, delta_count, delta_ms, delta_rate, delta_relative, dig, md
from dashboard.tiles import metric_tile
from metrics import enrollments, payments, series, webhooks
from metrics import format as fmt
from metrics.catalogue import rate
from metrics.frames import column
from metrics.probe import probe_summary
from metrics.quality import data_quality
from metrics.system import database_health, embedded_storage_path

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


def _trend(frame: pd.DataFrame | None, name: str) -> list[float]:
    """A tile's sparkline: the known values of one column of a series."""
    return [] if frame is None else [v for v in column(frame, name) if v is not None]


def render_payments(view: View) -> None:
    now = view.get(payments.window_summary, view.window, view.currencies)
    before = view.get(payments.window_summary, view.previous, view.currencies)
    revenue = {**(view.get(series.revenue_with_previous, {"today": view.periods["today"]}, view.currencies, view.tz) or {}),
               **(view.get(series.revenue_with_previous, {n: view.periods[n] for n in ("week", "month")}, view.currencies, view.tz) or {})}
    stuck = view.get(payments.stuck_count, view.at, view.settings.stuck_minutes)
    trend = view.frame(series.payment_series, view.window, view.settings.timezone, None, view.currencies)
    primary = common.currencies_seen(view.currencies, *(dig(revenue, n, "current") for n in ("today", "week", "month")))[0]
    t = view.targets

    def revenue_tile(name: str) -> Tile:
        current, previous = dig(revenue, name, "current"), dig(revenue, name, "previous")
        value, others = common.money_parts(current, primary)
        notes = ([f"also {others}"] if others else []) + []
        return metric_tile(f"revenue_{name}", value, delta=delta_relative(dig(current, primary), dig(previous, primary)),
                           note=" · ".join(notes) or None,
                           also="The change compares with the same length of time just before.")

    atv, atv_others = common.money_parts(
        None if now is None else {c: v for c, v in now["avg_transaction_value"].items() if v}, primary)

    section("Payments", f"{view.range.label}, except revenue by calendar period")
    view.tiles([
        revenue_tile("today"),
        revenue_tile("week"),
        revenue_tile("month"),
        metric_tile("payment_success_rate", None if now is None else fmt.rate(now["success_rate"]),
                    delta=delta_rate(dig(now, "success_rate"), dig(before, "success_rate")),
                    target=t["payment_success_rate"], raw=dig(now, "success_rate"),
                    trend=_trend(trend, "success_rate")),
        metric_tile("failed_payments", None if now is None else fmt.count(now["failed"]),
                    delta=delta_count(dig(now, "failed"), dig(before, "failed")),
                    trend=_trend(trend, "failed")),
        metric_tile("refund_rate", None if now is None else fmt.rate(now["refund_rate"]),
                    delta=delta_rate(dig(now, "refund_rate"), dig(before, "refund_rate")),
                    target=t["refund_rate"], raw=dig(now, "refund_rate"),
                    note=None if now is None else fmt.count(now['refunds'], 'refund')),
        metric_tile("avg_transaction_value", atv, note=f"also {atv_others}" if atv_others else None),
        metric_tile("payment_processing_ms", None if now is None else fmt.duration(now["processing_ms"]["avg"]),
                    delta=delta_ms(dig(now, "processing_ms", "avg"), dig(before, "processing_ms", "avg")),
                    target=t["payment_processing_ms"], raw=dig(now, "processing_ms", "avg"),
                    note=None if now is None else f"p95 {fmt.duration(now['processing_ms']['p95'])}"),
        metric_tile("stuck_payments", None if stuck is None else fmt.count(stuck),
                    also=f"Here that is {view.settings.stuck_minutes:g} minutes."),
    ], per_row=3)


def render_webhooks(view: View) -> None:
    now = view.get(webhooks.window_summary, view.window)
    before = view.get(webhooks.window_summary, view.previous)
    last = view.get(webhooks.last_received_at, view.at)
    trend = view.frame(series.webhook_series, view.window, view.settings.timezone)
    t = view.targets

    def delivery(summary):
        rate = dig(summary, "failure_rate")
        return None if rate is None else 1 - rate

    section("Webhooks", view.range.label)
    view.tiles([
        metric_tile("webhooks_received", None if now is None else fmt.count(now["received"]),
                    delta=delta_count(dig(now, "received"), dig(before, "received")),
                    trend=_trend(trend, "received"),
                    note=None if now is None else f"{fmt.count(now['failed'])} failed"),
        metric_tile("webhook_delivery_rate", None if now is None else fmt.rate(delivery(now), 2),
                    delta=delta_rate(delivery(now), delivery(before)),
                    target=t["webhook_delivery_rate"], raw=delivery(now)),
        metric_tile("webhook_processing_ms", None if now is None else fmt.duration(now["processing_ms"]["p95"]),
                    delta=delta_ms(dig(now, "processing_ms", "p95"), dig(before, "processing_ms", "p95")),
                    target=t["webhook_processing_ms"], raw=dig(now, "processing_ms", "p95"),
                    note=None if now is None else f"avg {fmt.duration(now['processing_ms']['avg'])}"),
        metric_tile("webhook_last_received_at", None if now is None and last is None else view.ago(last),
                    note=None if last is None else view.when(last)),
    ])


def render_enrollments(view: View) -> None:
    day = view.periods["today"]
    new = view.get(enrollments.created_count, day)
    new_before = view.get(enrollments.created_count, day.previous())
    now = view.get(enrollments.window_summary, view.window)
    before = view.get(enrollments.window_summary, view.previous)
    pending = view.get(enrollments.pending_payments_count, view.at)
    duplicates = view.get(enrollments.duplicate_count, view.at)
    t = view.targets

    section("Enrollments", f"{view.range.label}; new enrollments since local midnight")
    view.tiles([
        metric_tile("new_enrollments_today", None if new is None else fmt.count(new),
                    delta=delta_count(new, new_before)),
        metric_tile("conversion_rate", None if now is None else fmt.rate(now["conversion_rate"]),
                    delta=delta_rate(dig(now, "conversion_rate"), dig(before, "conversion_rate"))),
        metric_tile("pending_payments", None if pending is None else fmt.count(pending)),
        metric_tile("enrollments_refunded", None if now is None else fmt.count(now["refunded"]),
                    delta=delta_count(dig(now, "refunded"), dig(before, "refunded"))),
        metric_tile("activation_ms", None if now is None else fmt.duration(now["activation_ms"]["p95"]),
                    delta=delta_ms(dig(now, "activation_ms", "p95"), dig(before, "activation_ms", "p95")),
                    target=t["activation_ms"], raw=dig(now, "activation_ms", "p95"),
                    note=None if now is None else f"avg {fmt.duration(now['activation_ms']['avg'])}"),
        metric_tile("email_ms", None if now is None else fmt.duration(now["email_ms"]["p95"]),
                    delta=delta_ms(dig(now, "email_ms", "p95"), dig(before, "email_ms", "p95")),
                    target=t["email_ms"], raw=dig(now, "email_ms", "p95"),
                    note=None if now is None else f"avg {fmt.duration(now['email_ms']['avg'])}"),
        metric_tile("duplicate_enrollments", None if duplicates is None else fmt.count(duplicates),
                    target=t["duplicate_enrollments"], raw=duplicates),
    ])


def disk_usage(storage: dict) -> float | None:
    return rate("disk_usage", fs_used_bytes=storage.get("fs_used_bytes") or 0,
                fs_total_bytes=storage.get("fs_total_bytes") or 0)


def render_system(view: View) -> None:
    health = view.get(database_health, view.settings.embedded, embedded_storage_path(view.settings),
                      slow=True, tells_health=False)
    probe = view.state(probe_summary, view.window) if view.settings.health_url else None
    worker = view.worker()
    connections = dig(health, "connections") or {}
    storage = dig(health, "storage") or {}

    section("System Health", f"{view.range.label} for the platform's API probe")
    not_probed = "not configured (PAYWATCH_HEALTH_URL)" if not view.settings.health_url else None
    view.tiles([
        metric_tile("api_latency_ms", fmt.duration(dig(probe, "latency_ms", "avg")) if probe else None,
                    label="API latency",
                    note=not_probed or (f"p95 {fmt.duration(dig(probe, 'latency_ms', 'p95'))} · "
                                        f"{fmt.count(dig(probe, 'samples'), 'probe')}" if probe else None)),
        metric_tile("api_error_rate", fmt.rate(dig(probe, "error_rate"), 2) if probe else None, note=not_probed),
        metric_tile("db_connections", fmt.count(connections.get("current")) if health else None,
                    note=(f"{fmt.count(connections.get('available'))} available"
                          if connections.get("available") is not None else "not reported" if health else None)),
        metric_tile("db_storage_bytes", fmt.size(storage.get("storage_bytes")) if health else None,
                    note=("disk " + fmt.rate(disk_usage(storage)) + " used"
                          if storage.get("fs_total_bytes") else "disk usage not reported" if health else None)),
        Tile("Alert worker", worker.state,
             note=f"last heartbeat {worker.age_text} ago" if worker.at else "no heartbeat recorded yet",
             help=f"Late when its heartbeat is older than {worker.limit_text}."),
    ], per_row=5)


if __name__ == "__main__":
    main()
