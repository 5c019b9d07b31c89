"""Reconciliation: Stripe (the mirror) against the platform's payments and enrollments.

The guide's "Reconciliation After Outage" runbook and monthly review, as a
list: each mismatch links to the Stripe object and shows the runbook's fix.
Read-only: Paywatch proposes the fix, a person applies it.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import streamlit as st
from pymongo.errors import PyMongoError

from dashboard import common
from dashboard.common import Tile, View, md
from metrics import format as fmt
from metrics.db import DataSourceUnavailable, source
from metrics.settings import get_settings
from metrics.stripe.client import StripeOptions
from metrics.stripe.reconcile import KINDS, reconcile, retention_risk, rows_for_export
from metrics.stripe.store import mirror_store
from metrics.windows import Window
from reports.tabular import neutralise


@st.cache_data(ttl=common.LIVE_TTL_S, max_entries=50, show_spinner=False)
def load(window: Window, at: datetime) -> dict | None:
    settings = get_settings()
    grace = timedelta(minutes=StripeOptions.from_settings(settings).reconcile_grace_minutes)
    try:
        return reconcile(source(settings), mirror_store(settings), window, at, grace=grace, mask=settings.mask_emails)
    except (DataSourceUnavailable, PyMongoError):
        return None


@st.cache_data(ttl=common.LIVE_TTL_S, max_entries=20, show_spinner=False)
def load_retention(at: datetime) -> dict | None:
    settings = get_settings()
    grace = timedelta(minutes=StripeOptions.from_settings(settings).reconcile_grace_minutes)
    try:
        return retention_risk(source(settings), mirror_store(settings), at, grace=grace, mask=settings.mask_emails)
    except (DataSourceUnavailable, PyMongoError):
        return None


def main() -> None:
    common.live(render)


def render() -> None:
    with View("Reconciliation", caption="Stripe against the database, payments created in the range. "
                                        "Nothing is changed: each fix is for a person to apply.") as view:
        result = load(view.window, view.at)
        if result is None:
            st.error("The database or the Stripe mirror could not be read: reconciliation is unknown.",
                     icon=":material/cloud_off:")
            return
        if not result["available"]:
            st.warning(f"Reconciliation unknown: {md(result['reason'])}.", icon=":material/sync_problem:")
            return
        render_kpis(view, result)
        render_retention(load_retention(view.at))
        render_mismatches(result)


def render_kpis(view: View, result: dict) -> None:
    checked = result["checked"]
    st.caption(f"Checked {md(checked['start'])} to {md(checked['end'])}: the mirror covers "
               f"{md(result['coverage']['start'])} to its last complete sync, {md(result['coverage']['end'])}.")
    view.tiles([
        Tile("PaymentIntents in Stripe", fmt.count(result["stripe_payment_intents"])),
        Tile("Payments in the database", fmt.count(result["db_payments"])),
        Tile("Mismatches", fmt.count(len(result["mismatches"])), delta_color="inverse",
             note=", ".join(f"{KINDS[k].lower()} {n}" for k, n in result["by_kind"].items()) or "none"),
        Tile("Persisting", fmt.count(result["persisting"]),
             help=f"Older than the {result['grace_minutes']:g}-minute grace period, in which a late webhook "
                  f"or a retry usually settles it."),
    ])


def render_retention(risk: dict | None) -> None:
    """What is about to leave Stripe's 30 days of events, whatever the range picked."""
    if not risk or not risk["available"] or not risk["count"]:
        return
    st.warning(f"{fmt.count(risk['count'])} older than {risk['warn_days']} days: Stripe keeps events "
               f"{risk['keep_days']} days, after which they cannot be resent.", icon=":material/hourglass_bottom:")
    rows = [{"Gone after": m["events_expire_at"], "What": m["title"], "Object": m["payment_intent"],
             "Do": m["fix"]} for m in risk["mismatches"]]
    rows += [{"Gone after": e["resend_by"], "What": f"Undelivered {e['type']}", "Object": e["id"],
              "Do": "; ".join(e["commands"]) or "no enabled endpoint receives it"} for e in risk["events"]]
    st.dataframe(rows, hide_index=True, width="stretch")


def render_mismatches(result: dict) -> None:
    mismatches = result["mismatches"]
    if not mismatches:
        st.success("Stripe and the database agree on every payment in the range.", icon=":material/task_alt:")
        return
    st.dataframe([{
        "Since": m["since"], "Kind": m["title"], "Payment": m["payment_intent"],
        "Amount": fmt.money(m["stripe_amount"] if m["stripe_amount"] is not None else m["db_amount"], m["currency"])
        if m["currency"] else "–",
        "Stripe": m["stripe_status"], "Database": m["db_status"], "Enrollment": m["enrollment_status"],
        "Customer": m["customer"], "Persisting": m["persisting"], "Check first": m["check_first"], "Fix": m["fix"],
        "Open in Stripe": m["stripe_url"],
    } for m in mismatches], hide_index=True, width="stretch",
        column_config={"Open in Stripe": st.column_config.LinkColumn("Open in Stripe", display_text="open")})
    st.download_button("Download CSV", data=to_csv(mismatches), file_name="paywatch-reconciliation.csv",
                       mime="text/csv", icon=":material/download:")
    st.subheader("Proposed fixes", anchor=False, divider="gray")
    for m in mismatches:
        with st.expander(f"{md(m['title'])} · {md(m['payment_intent'])}"):
            st.write(md(m["detail"]))
            st.write("**Check first:** " + md(m["check_first"]))
            st.write(md(m["fix"]))
            st.code(m["fix_command"], language="javascript")


def to_csv(mismatches: list[dict]) -> bytes:
    """The list as CSV; text a spreadsheet would run as a formula is neutralised."""
    rows = rows_for_export(mismatches)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: neutralise(v) for k, v in row.items()})
    return out.getvalue().encode("utf-8")


if __name__ == "__main__":
    main()
