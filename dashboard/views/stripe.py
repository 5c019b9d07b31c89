"""Stripe: payments, declines, refunds, disputes and webhook delivery as Stripe sees them.

Everything here is read from the Stripe mirror in ``PAYWATCH_DB`` that the
worker keeps in sync; a page view makes no Stripe call.
"""

from __future__ import annotations

from datetime import datetime

import streamlit as st
from pymongo.errors import PyMongoError

from dashboard import common
from dashboard.common import Tile, View, md
from metrics import format as fmt
from metrics.db import DataSourceUnavailable
from metrics.settings import get_settings
from metrics.stripe.metrics import GUIDE_EVENTS, stripe_page
from metrics.stripe.store import mirror_store
from metrics.windows import Window

LINK = st.column_config.LinkColumn("Stripe", display_text="open")


@st.cache_data(ttl=common.LIVE_TTL_S, max_entries=50, show_spinner=False)
def load(window: Window, at: datetime) -> dict | None:
    try:
        return stripe_page(mirror_store(get_settings()), window, at)
    except (DataSourceUnavailable, PyMongoError):
        return None


def main() -> None:
    common.live(render)


def render() -> None:
    with View("Stripe", caption="As Stripe records it, from the mirror the worker keeps in sync "
                                "(no Stripe call per page view).") as view:
        data = load(view.window, view.at)
        if data is None:
            st.error("The Stripe mirror (Paywatch's own database) could not be read: Stripe figures are unknown.",
                     icon=":material/cloud_off:")
            return
        render_sync(view, data["sync"], data["unreachable_minutes"])
        render_kpis(view, data)
        render_declines(data)
        render_disputes(data)
        render_webhooks(data)
        render_api(data["api"])


def render_sync(view: View, sync: dict, unreachable: float | None) -> None:
    if sync["last_run_at"] is None:
        st.warning("The Stripe mirror has not synced yet: the worker copies Stripe every few minutes once "
                   "STRIPE_API_KEY is set (make run uses localstripe).", icon=":material/sync_problem:")
        return
    if unreachable:
        st.error(f"Stripe unreachable for {unreachable:g} min: {md(sync['last_error'] or 'no answer')}",
                 icon=":material/cloud_off:")
    elif not sync["last_run_ok"]:
        st.warning(f"The last mirror sync stopped: {md(sync['last_error'] or 'unknown error')}", icon=":material/sync_problem:")
    refused = {name: r["error"] for name, r in sync["resources"].items() if r["status"] == "unavailable"}
    for name, error in refused.items():
        st.info(f"{name.replace('_', ' ').capitalize()}: {md(error)}", icon=":material/info:")
    per_sync = sync["calls_per_sync_24h"]
    st.caption(f"Mirror synced {md(sync['last_ok_at'] or 'never')} · API calls per sync: last "
               f"{fmt.count(sync['calls_last'])}, 24 h average {per_sync['avg'] if per_sync['avg'] is not None else '–'}"
               f" over {fmt.count(per_sync['runs'])} syncs")


def _money(amounts: dict | None) -> str | None:
    """Money for a Markdown caption (a bare ``$`` would open a formula)."""
    return None if amounts is None else common.md_value(fmt.money_map(amounts))


def render_kpis(view: View, data: dict) -> None:
    pay, refunds, disputes, delivery = data["payments"], data["refunds"], data["disputes"], data["delivery"]
    unknown = "unknown: " + (disputes.get("reason") or "")
    view.tiles([
        Tile("Success rate (Stripe)", None if pay is None else fmt.rate(pay["success_rate"]),
             target=view.targets["payment_success_rate"], raw=None if pay is None else pay["success_rate"],
             help="Succeeded / (succeeded + PaymentIntents whose last attempt failed), created in the range.",
             note=None if pay is None else f"{fmt.count(pay['succeeded'])} succeeded · {fmt.count(pay['failed'])} failed"),
        Tile("Refunds (Stripe)", None if refunds is None else fmt.count(refunds["count"]),
             note=None if refunds is None else _money(refunds["amount"]) + f" · rate {fmt.rate(refunds['refund_rate'])}"),
        Tile("Disputes created", fmt.count(disputes["created"]) if disputes["available"] else None,
             note=_money(disputes.get("created_amount")) if disputes["available"] else unknown,
             help="The guide subscribes to charge.dispute.created: every dispute needs an answer before its due date."),
        Tile("Open disputes", fmt.count(disputes["open"]) if disputes["available"] else None,
             note=_money(disputes.get("open_amount")) if disputes["available"] else unknown),
        Tile("Webhook delivery success",
             fmt.rate(delivery["delivery_success"], 2) if delivery["delivery_success"] is not None else None,
             help="Of the guide's events created in the range and older than 5 minutes that an enabled endpoint "
                  "receives, the share Stripe has delivered (pending_webhooks = 0). The guide's target is > 99%.",
             note=f"unknown: {delivery['reason']}" if delivery["delivery_success"] is None and delivery["reason"] else None),
        Tile("Delivery backlog", fmt.count(delivery["backlog"]) if delivery["available"] else None,
             delta_color="inverse", help="Events older than 5 minutes that Stripe is still trying to deliver.",
             note=(f"oldest {delivery['oldest_pending_at']}" if delivery.get("oldest_pending_at") else None)),
    ], per_row=[2, 4])


def render_declines(data: dict) -> None:
    st.subheader("Declines", anchor=False, divider="gray")
    pay = data["payments"]
    if pay is None:
        st.caption("Unknown until the mirror has synced.")
        return
    left, right = st.columns([1, 2])
    with left:
        st.dataframe([{"Decline code": code, "PaymentIntents": n} for code, n in pay["decline_codes"].items()],
                     hide_index=True, width="stretch")
    with right:
        st.dataframe([{"Created": r["created"], "PaymentIntent": r["id"], "Amount": fmt.money(r["amount"], r["currency"]),
                       "Status": r["status"], "Decline code": r["decline_code"], "Stripe": r["stripe_url"]}
                      for r in data["failed"]], hide_index=True, width="stretch", column_config={"Stripe": LINK})


def render_disputes(data: dict) -> None:
    st.subheader("Disputes", anchor=False, divider="gray")
    disputes = data["disputes"]
    if not disputes["available"]:
        st.caption(f"Unknown: {md(disputes['reason'])}")
        return
    st.dataframe([{"Created": d["created"], "Dispute": d["id"], "Amount": fmt.money(d["amount"], d["currency"]),
                   "Status": d["status"], "Reason": d["reason"], "Evidence due": d["evidence_due_by"],
                   "Stripe": d["stripe_url"]} for d in data["dispute_list"]],
                 hide_index=True, width="stretch", column_config={"Stripe": LINK})


def render_webhooks(data: dict) -> None:
    st.subheader("Webhook endpoints and delivery", anchor=False, divider="gray")
    endpoints = data["endpoints"]
    if not endpoints["available"]:
        st.caption(f"Endpoints unknown: {md(endpoints['reason'])}")
    else:
        for problem in endpoints["problems"]:
            st.warning(md(problem), icon=":material/webhook:")
        st.dataframe([{"URL": e["url"], "Status": e["status"],
                       "Missing guide events": ", ".join(e["missing_guide_events"]) or "none",
                       "Stripe": e["stripe_url"]} for e in endpoints["items"]],
                     hide_index=True, width="stretch", column_config={"Stripe": LINK})
        st.caption("The guide's endpoint receives " + ", ".join(GUIDE_EVENTS) + ".")
        for note in endpoints.get("notes") or []:
            st.caption(md(note))
    render_health(data["health"])


def render_health(health: dict) -> None:
    """What Stripe failed to deliver, per endpoint, and the commands that resend it."""
    if not health["available"]:
        st.caption(f"Undelivered events unknown: {md(health['reason'])}")
        return
    failing = [e for e in health["endpoints"] if e["undelivered"]]
    for ep in failing:
        st.warning(f"{md(ep['url'])}: {fmt.count(ep['undelivered'])} undelivered, failing since "
                   f"{md(ep['failing_since'])} ({ep['failing_hours']:g} h). Stripe emails only after days of "
                   f"failures, then disables the endpoint.", icon=":material/webhook:")
    if not health["events"]:
        st.caption("Stripe has delivered every event of its last 30 days (delivery_success=false lists none).")
        return
    st.dataframe([{"Created": e["created"], "Event": e["id"], "Type": e["type"],
                   "Pending deliveries": e["pending_webhooks"], "Endpoints": ", ".join(e["endpoints"]) or "none",
                   "Resend by": e["resend_by"], "Stripe": e["stripe_url"]} for e in health["events"]],
                 hide_index=True, width="stretch", column_config={"Stripe": LINK})
    if health["replay"]:
        st.caption("After the outage, resend them (Stripe CLI; the platform ignores an event it already processed):")
        st.code("\n".join(r["command"] for r in health["replay"]), language="bash")


def render_api(api: dict) -> None:
    st.subheader("Our Stripe API client", anchor=False, divider="gray")
    cols = st.columns(4)
    cols[0].metric("API calls", fmt.count(api["calls"]), help="Every HTTP attempt of the mirror's syncs, retries included.")
    cols[1].metric("Error rate", fmt.rate(api["error_rate"], 2),
                   help="Network errors, 429s and 5xx over all calls (a 4xx is a refusal, shown above).")
    cols[2].metric("Latency avg", fmt.duration(api["latency_ms"]["avg"]))
    cols[3].metric("Latency p95", fmt.duration(api["latency_ms"]["p95"]))


if __name__ == "__main__":
    main()
