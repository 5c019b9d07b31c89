"""Payments: revenue, success rate, failures, refunds and amounts over the chosen range."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, common
from dashboard.common import Tile, View, delta_count, delta_rate, delta_relative, dig
from dashboard.tiles import metric_tile
from metrics import format as fmt
from metrics import payments, series
from metrics.catalogue import METRICS
from metrics.frames import columns_under, records_frame

SUCCESS_RATE = METRICS["payment_success_rate"].tile_label


def main() -> None:
    common.live(render)


def render() -> None:
    with View("Payments") as view:
        summary = view.get(payments.window_summary, view.window, view.currencies)
        before = view.get(payments.window_summary, view.previous, view.currencies)
        buckets = view.frame(series.payment_series, view.window, view.settings.timezone, None, view.currencies)
        currency = pick_currency(view, summary, buckets)
        render_kpis(view, summary, before, currency)
        render_revenue(view, buckets, currency)
        render_success(view, buckets)
        render_failures(view)
        render_refunds_and_amounts(view, currency)
        render_recent_failures(view)


def pick_currency(view: View, summary: dict | None, buckets: pd.DataFrame | None) -> str:
    """Money is never converted: the page shows one currency at a time, the others beneath."""
    revenue = None if buckets is None else columns_under(buckets, "revenue").sum().to_dict()
    choices = common.currencies_seen(view.currencies, dig(summary, "revenue"), revenue)
    picked = st.segmented_control("Currency", choices, default=choices[0], key="payments_currency",
                                  format_func=str.upper)
    return picked if picked in choices else choices[0]


def render_kpis(view: View, summary: dict | None, before: dict | None, currency: str) -> None:
    revenue = {**(view.get(series.revenue_with_previous, {"today": view.periods["today"]}, view.currencies, view.tz) or {}),
               **(view.get(series.revenue_with_previous, {n: view.periods[n] for n in ("week", "month")}, view.currencies, view.tz) or {})}

    def money_tile(key: str, now: dict | None, then: dict | None, **more) -> Tile:
        value, others = common.money_parts(now, currency)
        previous = None if then is None else fmt.money(then.get(currency) or 0, currency)
        notes = [f"before {previous}"] if previous else []
        notes += [f"also {others}"] if others else []
        return metric_tile(key, value, delta=delta_relative(dig(now, currency), dig(then, currency)),
                           note=" · ".join(notes) or None, **more)

    tiles = [
        money_tile(f"revenue_{name}", dig(revenue, name, "current"), dig(revenue, name, "previous"),
                   also="The change compares with the same length of time just before." + (
                       "" if name == "today" else f" Recomputed every {common.SLOW_TTL_S // 60} minutes."))
        for name in ("today", "week", "month")
    ]
    tiles.append(money_tile("revenue", dig(summary, "revenue"), dig(before, "revenue"),
                            label=f"Revenue · {view.range.label.lower()}"))
    tiles += [
        metric_tile("payment_success_rate", None if summary is None else fmt.rate(summary["success_rate"]),
                    delta=delta_rate(dig(summary, "success_rate"), dig(before, "success_rate")),
                    target=view.targets["payment_success_rate"], raw=dig(summary, "success_rate"),
                    note=None if summary is None else f"{fmt.count(summary['succeeded'])} succeeded"),
        metric_tile("failed_payments", None if summary is None else fmt.count(summary["failed"]),
                    delta=delta_count(dig(summary, "failed"), dig(before, "failed"))),
        metric_tile("refund_rate", None if summary is None else fmt.rate(summary["refund_rate"]),
                    delta=delta_rate(dig(summary, "refund_rate"), dig(before, "refund_rate")),
                    target=view.targets["refund_rate"], raw=dig(summary, "refund_rate"),
                    note=None if summary is None else fmt.count(summary['refunds'], 'refund')),
        money_tile("avg_transaction_value",
                   None if summary is None else {c: v for c, v in summary["avg_transaction_value"].items() if v},
                   None if before is None else {c: v for c, v in before["avg_transaction_value"].items() if v}),
    ]
    view.tiles(tiles)


def render_revenue(view: View, buckets: pd.DataFrame | None, currency: str) -> None:
    st.subheader("Revenue", anchor=False, divider="gray")
    if buckets is None or buckets.empty:
        charts.empty("Revenue over time", "No data for this range.")
        return
    left, right = st.columns(2)
    with left:
        charts.show(charts.time_chart(
            buckets, [("Revenue", f"revenue.{currency}", charts.NEUTRAL)],
            title=f"Revenue per {_unit(view)} ({currency.upper()})", y_title=f"Revenue ({currency.upper()})",
            axis=charts.money_axis(currency), kind="bar"))
    with right:
        charts.show(charts.time_chart(
            buckets, [("Average value", f"avg_transaction_value.{currency}", charts.NEUTRAL)],
            title=f"Average transaction value ({currency.upper()})", y_title=f"Average ({currency.upper()})",
            axis=charts.money_axis(currency)))


def render_success(view: View, buckets: pd.DataFrame | None) -> None:
    st.subheader("Success and failures", anchor=False, divider="gray")
    if buckets is None or buckets.empty:
        charts.empty(f"{SUCCESS_RATE} over time", "No data for this range.")
        return
    target = view.targets["payment_success_rate"]
    left, right = st.columns(2)
    with left:
        charts.show(charts.time_chart(
            buckets, [(SUCCESS_RATE, "success_rate", charts.GOOD)],
            title=f"{SUCCESS_RATE} per {_unit(view)}", y_title=SUCCESS_RATE, axis=charts.RATE,
            line=(target.target, f"target {target.describe()}")))
    with right:
        charts.show(charts.time_chart(
            buckets, [("Succeeded", "succeeded", charts.GOOD), ("Failed", "failed", charts.BAD)],
            title=f"Payments per {_unit(view)}", y_title="Payments", axis=charts.COUNT, kind="bar", stacked=True))


def render_failures(view: View) -> None:
    by_code = view.get(series.failures_by, view.window, "failureCode", 10)
    by_specialist = view.get(series.failures_by, view.window, "specialistId", 10)
    left, right = st.columns(2)
    for column, rows, title, axis_title in ((left, by_code, "Failed payments by decline code", "Decline code"),
                                            (right, by_specialist, "Failed payments by specialist", "Specialist")):
        with column:
            if not rows:
                charts.empty(title, "No failed payments in this range.")
                continue
            charts.show(charts.bar_chart([r["key"] or "(none)" for r in rows], [r["count"] for r in rows],
                                         title=title, value_title="Failed payments", colour=charts.BAD,
                                         category_title=axis_title))


def render_refunds_and_amounts(view: View, currency: str) -> None:
    st.subheader("Refunds and amounts", anchor=False, divider="gray")
    refunds = view.frame(series.refund_series, view.window, view.settings.timezone)
    histogram = view.get(series.amount_histogram, view.window, currency)
    left, right = st.columns(2)
    with left:
        if refunds is not None and not refunds.empty:
            charts.show(charts.time_chart(
                refunds, [("Refunds", "refunds", charts.BAD)],
                title=f"Refunds per {_unit(view)} (by refund time)", y_title="Refunds", axis=charts.COUNT,
                kind="bar"))
        else:
            charts.empty("Refunds over time", "No data for this range.")
    with right:
        if histogram and any(b["count"] for b in histogram):
            labels = [_band(b, currency) for b in histogram]
            charts.show(charts.bar_chart(labels, [b["count"] for b in histogram], horizontal=False,
                                         title=f"Amount distribution, succeeded payments ({currency.upper()})",
                                         value_title="Payments", category_title="Amount"))
        else:
            charts.empty(f"Amount distribution ({currency.upper()})", "No succeeded payments in this currency.")


def _band(band: dict, currency: str) -> str:
    """``$10–25``, ``$5,000+``: the symbol once, whole units."""
    low = fmt.money(band["lower"], currency).replace(".00", "")
    if band["upper"] is None:
        return f"{low}+"
    high = charts.major(band["upper"], currency)
    return f"{low}–{high:,.0f}"


def render_recent_failures(view: View) -> None:
    st.subheader("Recent failed payments", anchor=False, divider="gray")
    rows = view.get(series.recent_failed_payments, view.window, 50)
    if not rows:
        st.caption("No failed payments in this range." if rows is not None else "Not available.")
        return
    charts.table(records_frame(rows, {
        "Created": "createdAt", "Payment": "paymentId", "Amount": common.amount_text, "Decline code": "failureCode",
        "Message": "failureMessage", "Customer": lambda r: view.email(r["customerEmail"]),
        "Specialist": "specialistId", "Service": "serviceId"}, view.tz))


def _unit(view: View) -> str:
    return series.bucket_unit(view.window)


if __name__ == "__main__":
    main()
