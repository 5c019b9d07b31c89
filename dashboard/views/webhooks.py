"""Webhooks: what Stripe sent, how fast the platform handled it, and what failed."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, common
from dashboard.common import Tile, View, delta_count, delta_ms, delta_rate, dig
from dashboard.tiles import metric_tile
from metrics import format as fmt
from metrics import series, webhooks
from metrics.catalogue import METRICS
from metrics.frames import records_frame

# The guide's alert threshold for the webhook response time (section 4, "Webhook Monitoring").
SLOW_WEBHOOK_KEY = "webhook_processing_ms"
FAILURE_RATE = METRICS["webhook_failure_rate"].tile_label


def main() -> None:
    common.live(render)


def render() -> None:
    with View("Webhooks") as view:
        summary = view.get(webhooks.window_summary, view.window)
        before = view.get(webhooks.window_summary, view.previous)
        buckets = view.frame(series.webhook_series, view.window, view.settings.timezone)
        render_kpis(view, summary, before)
        render_volume(view, buckets)
        render_timing(view, buckets)
        render_types(view)
        render_latest(view)


def _delivery(summary: dict | None) -> float | None:
    rate = dig(summary, "failure_rate")
    return None if rate is None else 1 - rate


def render_kpis(view: View, summary: dict | None, before: dict | None) -> None:
    last = view.get(webhooks.last_received_at, view.at)

    def timing(metric: str, key: str, stat: str, **more) -> Tile:
        return metric_tile(metric, None if summary is None else fmt.duration(summary[key][stat]),
                           delta=delta_ms(dig(summary, key, stat), dig(before, key, stat)), **more)

    slow = view.targets[SLOW_WEBHOOK_KEY]
    view.tiles([
        metric_tile("webhooks_received", None if summary is None else fmt.count(summary["received"]),
                    delta=delta_count(dig(summary, "received"), dig(before, "received")),
                    note=None if summary is None else
                    f"{fmt.count(summary['processed'])} processed · {fmt.count(summary['failed'])} failed"),
        metric_tile("webhook_failure_rate", None if summary is None else fmt.rate(summary["failure_rate"], 2),
                    delta=delta_rate(dig(summary, "failure_rate"), dig(before, "failure_rate")),
                    target=view.targets["webhook_delivery_rate"], raw=_delivery(summary),
                    also="The target is on delivery success, 1 − failure rate.",
                    note=None if summary is None else f"delivery success {fmt.rate(_delivery(summary), 2)}"),
        metric_tile("webhook_last_received_at", None if last is None and summary is None else view.ago(last),
                    label="Time since last event", note=None if last is None else f"at {view.when(last)}"),
        timing("webhook_processing_avg_ms", "processing_ms", "avg"),
        timing(SLOW_WEBHOOK_KEY, "processing_ms", "p95", target=slow,
               raw=dig(summary, "processing_ms", "p95"), also=f"Target {slow.describe()}."),
        timing("webhook_delivery_lag_ms", "delivery_lag_ms", "avg",
               note=None if summary is None else f"p95 {fmt.duration(summary['delivery_lag_ms']['p95'])}"),
    ], per_row=3)


def render_volume(view: View, buckets: pd.DataFrame | None) -> None:
    st.subheader("Volume and failures", anchor=False, divider="gray")
    if buckets is None or buckets.empty:
        charts.empty("Events received", "No data for this range.")
        return
    unit = series.bucket_unit(view.window)
    buckets = buckets.assign(in_flight=buckets["received"] - buckets["processed"] - buckets["failed"])
    left, right = st.columns(2)
    with left:
        charts.show(charts.time_chart(
            buckets, [("Processed", "processed", charts.GOOD), ("Failed", "failed", charts.BAD),
                      ("In flight", "in_flight", charts.MUTED)],
            title=f"Events received per {unit}", y_title="Events", axis=charts.COUNT, kind="bar", stacked=True))
    with right:
        target = view.targets["webhook_delivery_rate"]
        charts.show(charts.time_chart(
            buckets, [(FAILURE_RATE, "failure_rate", charts.BAD)],
            title=f"{FAILURE_RATE} per {unit}", y_title=FAILURE_RATE, axis=charts.FAILURE_RATE,
            line=(1 - target.target, f"limit {fmt.rate(1 - target.target, 0)} (delivery {target.describe()})")))


def render_timing(view: View, buckets: pd.DataFrame | None) -> None:
    st.subheader("Timing", anchor=False, divider="gray")
    if buckets is None or buckets.empty:
        charts.empty("Processing time", "No data for this range.")
        return
    unit = series.bucket_unit(view.window)
    slow = view.targets[SLOW_WEBHOOK_KEY]
    left, right = st.columns(2)
    with left:
        charts.show(charts.time_chart(
            buckets, [("p95", "processing_ms.p95", charts.BAD), ("average", "processing_ms.avg", charts.NEUTRAL)],
            title=f"Processing time per {unit}", y_title="Seconds", axis=charts.SECONDS,
            line=(slow.target, f"alert above {slow.target / 1000:g} s")))
    with right:
        charts.show(charts.time_chart(
            buckets, [("p95", "delivery_lag_ms.p95", charts.BAD), ("average", "delivery_lag_ms.avg", charts.NEUTRAL)],
            title=f"Delivery lag per {unit} (Stripe → platform)", y_title="Seconds", axis=charts.SECONDS))


def render_types(view: View) -> None:
    types = view.get(series.webhook_types, view.window, 20)
    if types:
        charts.show(charts.bar_chart([t["type"] or "(none)" for t in types], [t["received"] for t in types],
                                     title="Events by type", value_title="Events received",
                                     category_title="Stripe event type"))


def render_latest(view: View) -> None:
    st.subheader("Latest events", anchor=False, divider="gray")
    events = view.get(webhooks.latest_events, view.at, view.settings.latest_events)
    if not events:
        st.caption("No events received yet." if events is not None else "Not available.")
        return
    charts.table(records_frame(events, {
        "Received": "receivedAt", "Type": "type", "Status": "status",
        "Processing": lambda e: fmt.duration(e["processing_ms"]), "Event": "eventId", "Error": "error"}, view.tz))


if __name__ == "__main__":
    main()
