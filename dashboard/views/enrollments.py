"""Enrollments: new ones, how far they get, what waits for payment, and the guide's latency targets."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, common
from dashboard.common import View, delta_count, delta_rate, dig
from dashboard.tiles import metric_tile
from metrics import enrollments, payments, series
from metrics import format as fmt
from metrics.frames import records_frame


def main() -> None:
    common.live(render)


def render() -> None:
    with View("Enrollments") as view:
        summary = view.get(enrollments.window_summary, view.window)
        before = view.get(enrollments.window_summary, view.previous)
        render_kpis(view, summary, before)
        render_volume(view)
        render_latency(view)
        render_pending(view)
        render_duplicates(view)


def render_kpis(view: View, summary: dict | None, before: dict | None) -> None:
    pending = view.get(enrollments.pending_payments_count, view.at)
    duplicates = view.get(enrollments.duplicate_count, view.at)
    t = view.targets
    view.tiles([
        metric_tile("enrollments_created", None if summary is None else fmt.count(summary["created"]),
                    delta=delta_count(dig(summary, "created"), dig(before, "created"))),
        metric_tile("conversion_rate", None if summary is None else fmt.rate(summary["conversion_rate"]),
                    delta=delta_rate(dig(summary, "conversion_rate"), dig(before, "conversion_rate")),
                    note=None if summary is None else f"{fmt.count(summary['converted'])} paid"),
        metric_tile("pending_payments", None if pending is None else fmt.count(pending)),
        metric_tile("enrollments_refunded", None if summary is None else fmt.count(summary["refunded"]),
                    delta=delta_count(dig(summary, "refunded"), dig(before, "refunded"))),
        metric_tile("activation_ms", None if summary is None else fmt.duration(summary["activation_ms"]["p95"]),
                    target=t["activation_ms"], raw=dig(summary, "activation_ms", "p95"),
                    note=None if summary is None else f"avg {fmt.duration(summary['activation_ms']['avg'])}"),
        metric_tile("email_ms", None if summary is None else fmt.duration(summary["email_ms"]["p95"]),
                    target=t["email_ms"], raw=dig(summary, "email_ms", "p95"),
                    note=None if summary is None else f"avg {fmt.duration(summary['email_ms']['avg'])}"),
        metric_tile("duplicate_enrollments", None if duplicates is None else fmt.count(duplicates),
                    target=t["duplicate_enrollments"], raw=duplicates),
    ])


def render_volume(view: View) -> None:
    st.subheader("New, paid and refunded", anchor=False, divider="gray")
    buckets = view.frame(series.enrollment_series, view.window, view.settings.timezone)
    funnel = view.get(series.enrollment_funnel, view.window)
    left, right = st.columns(2)
    with left:
        if buckets is not None and not buckets.empty:
            charts.show(charts.time_chart(
                buckets, [("New", "created", charts.NEUTRAL), ("Refunded", "refunded", charts.BAD)],
                title=f"Enrollments per {series.bucket_unit(view.window)}", y_title="Enrollments",
                axis=charts.COUNT, kind="bar"))
        else:
            charts.empty("Enrollments over time", "No data for this range.")
    with right:
        if funnel and funnel["created"]:
            charts.show(charts.funnel_chart(
                [("Created", funnel["created"]), ("Paid", funnel["paid"]), ("Activated", funnel["activated"]),
                 ("Email sent", funnel["emailed"])], title="Funnel of the enrollments created in this range"))
        else:
            charts.empty("Funnel", "No enrollments created in this range.")


def render_latency(view: View) -> None:
    st.subheader("Activation and confirmation email", anchor=False, divider="gray")
    buckets = view.frame(series.latency_series, view.window, view.settings.timezone)
    if buckets is None or buckets.empty:
        charts.empty("Latency", "No data for this range.")
        return
    unit = series.bucket_unit(view.window)
    left, right = st.columns(2)
    for column, key, name, target in ((left, "activation_ms", "Activation after payment", view.targets["activation_ms"]),
                                      (right, "email_ms", "Confirmation email after activation", view.targets["email_ms"])):
        with column:
            charts.show(charts.time_chart(
                buckets, [("p95", f"{key}.p95", charts.BAD), ("average", f"{key}.avg", charts.NEUTRAL)],
                title=f"{name} per {unit}", y_title="Seconds", axis=charts.SECONDS,
                line=(target.target, f"target {target.describe()}")))


def render_pending(view: View) -> None:
    st.subheader("Waiting for payment", anchor=False, divider="gray")
    ages = view.get(series.pending_by_age, view.at)
    stuck = view.get(payments.stuck_payments, view.at, view.settings.stuck_minutes, 50)
    left, right = st.columns(2)
    with left:
        if ages and any(b["count"] for b in ages):
            charts.show(charts.bar_chart([_age(b) for b in ages], [b["count"] for b in ages], horizontal=False,
                                         title="Enrollments with a pending payment, by age",
                                         value_title="Enrollments", category_title="Waiting for"))
        else:
            charts.empty("Pending payments by age", "No enrollment is waiting for its payment.")
    with right:
        st.markdown(f"**Stuck payments** (pending or processing for more than "
                    f"{view.settings.stuck_minutes:g} min)")
        if stuck:
            charts.table(records_frame(stuck, {
                "Created": "createdAt", "Payment": "paymentId", "Status": "status", "Amount": common.amount_text,
                "Customer": lambda p: view.email(p["customerEmail"]), "Specialist": "specialistId"}, view.tz))
        else:
            st.caption("None." if stuck is not None else "Not available.")


def _age(band: dict) -> str:
    """``< 5 min``, ``5–30 min``, ``30 min–1 h``, ``1–4 h``, ``> 24 h``."""
    low, high = band["lower_min"], band["upper_min"]
    if high is None:
        return f"> {low // 60} h" if low >= 60 else f"> {low} min"
    if low == 0:
        return f"< {high // 60} h" if high >= 60 else f"< {high} min"
    if low >= 60:
        return f"{low // 60}–{high // 60} h"
    return f"{low}–{high} min" if high < 60 else f"{low} min–{high // 60} h"


def render_duplicates(view: View) -> None:
    st.subheader("Duplicate enrollments", anchor=False, divider="gray")
    pairs = view.get(enrollments.duplicate_pairs, view.at, 50)
    if not pairs:
        st.caption("None: every customer has at most one active or pending enrollment per service."
                   if pairs is not None else "Not available.")
        return
    # A pair's customer or service may be missing from the platform's documents: it shows empty.
    charts.table(records_frame(pairs, {
        "Customer": "customerId", "Service": "serviceId", "Enrollments": "count",
        "Enrollment ids": lambda p: ", ".join(str(i) for i in p.get("enrollment_ids") or [])}, view.tz))


if __name__ == "__main__":
    main()
