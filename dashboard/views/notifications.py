"""Notifications: every attempt to post a message, and the messages given up.

What the delivery layer recorded in Paywatch's database (``notify.log``,
``notify.outbox``): one row per try of a message on a channel, with the
rule, the outcome, the error (already redacted when it was stored), the
latency and, with a Slack bot token, the link to the Slack message.  A
given-up message is shown as an error above, with a button that queues it
again once its channel is fixed.  Everything is shown as text (tables and
:func:`common.md`), never HTML: errors and headlines may carry platform data.
"""

from __future__ import annotations

import importlib
from datetime import datetime, timezone

import streamlit as st
from pymongo.errors import PyMongoError

from dashboard import common
from dashboard.common import View, md
from metrics.db import DataSourceUnavailable, state_db
from metrics.settings import Settings
from metrics.windows import Window
from notify import log as notify_log
from notify import outbox as outbox_mod

ATTEMPTS_SHOWN = 1000
STATUS_WORDS = {notify_log.SENT: "sent", notify_log.FOUND: "sent (already posted; the lost answer was looked up)",
                notify_log.RETRY: "retry", notify_log.DEAD: "given up"}


# -- reads (``None`` when Paywatch's database does not answer) -------------------------------

def recent(db, window: Window, frozen: bool) -> dict:
    """The attempts in the picked range (up to now when it is live), newest first, and the messages
    given up now."""
    attempts = [a for a in notify_log.attempts(db, since=window.start, limit=ATTEMPTS_SHOWN)
                if not frozen or a["at"] <= window.end]
    return {"attempts": attempts, "dead": outbox_mod.given_up(db, datetime.now(timezone.utc))}


# -- the page -----------------------------------------------------------------------------

def main() -> None:
    common.live(render)


def render() -> None:
    with View("Notifications", caption="Every attempt to post a message, in the picked range, newest first.") as view:
        # Streamlit runs this file as ``__main__``; the cache finds functions by module name.
        reads = importlib.import_module("dashboard.views.notifications")
        data = view.state(reads.recent, view.window, view.range.frozen)
        if data is None:
            st.error("Paywatch's database does not answer: the record of notifications lives there.",
                     icon=":material/cloud_off:")
            return
        render_given_up(view, data["dead"])
        render_attempts(view, data["attempts"])


def rule_of(row: dict) -> str:
    """The rule and subject (as the Alerts page names them), the weekly report, or a failure notice."""
    rule = row["rule_id"] + (f" [{row['subject']}]" if row.get("subject") else "") if row.get("rule_id") else None
    if row.get("kind") == "dead_letter":
        return f"delivery failure: {rule}" if rule else "delivery failure"
    return rule or ("weekly report" if row.get("kind") == "report" else "–")


def render_given_up(view: View, dead: list[dict]) -> None:
    if not dead:
        return
    noun = "message was" if len(dead) == 1 else "messages were"
    st.error(f"Delivery is failing: {len(dead)} {noun} given up. Each was announced on the other channels, and "
             "the heartbeat ping reports a failure until it expires or is queued again.",
             icon=":material/notifications_off:")
    for doc in dead:
        message = doc.get("message") or {}
        with st.container(border=True):
            st.markdown(f"**{md(message.get('title') or doc['key'])}** → {md(doc['channel'])}, given up "
                        f"{md(view.when(doc.get('dead_at')))} after {doc.get('attempts', 0)} attempt"
                        f"{'' if doc.get('attempts') == 1 else 's'}: {md(doc.get('last_error') or '–')}")
            st.button("Queue again", key=f"requeue-{doc['_id']}", icon=":material/replay:", on_click=_requeue,
                      args=(view.settings, doc["_id"]))


def _requeue(settings: Settings, doc_id: str) -> None:
    try:
        done = outbox_mod.requeue(state_db(settings), doc_id, datetime.now(timezone.utc))
    except (PyMongoError, DataSourceUnavailable):
        st.toast("Paywatch's database does not answer; nothing was changed.", icon=":material/cloud_off:")
        return
    common.clear_state_cache()
    st.toast("Queued again: the worker sends it within a few seconds." if done else "It was already queued again.",
             icon=":material/replay:")


def render_attempts(view: View, attempts: list[dict]) -> None:
    st.subheader("Attempts", anchor=False, divider="gray")
    if not attempts:
        st.caption("No message was posted in this range.")
        return
    st.dataframe(
        [{"When": view.when(a.get("at")), "Rule": rule_of(a), "Channel": a.get("channel") or "–",
          "Status": STATUS_WORDS.get(a.get("status"), a.get("status") or "–"), "Error": a.get("error") or "",
          "Latency (ms)": a.get("latency_ms"), "Attempt": a.get("attempt"), "Message": a.get("headline") or "",
          "Slack": a.get("link")} for a in attempts],
        hide_index=True, width="stretch", key="attempts",
        column_config={"Slack": st.column_config.LinkColumn("Slack", display_text="open"),
                       "Latency (ms)": st.column_config.NumberColumn(format="%.0f")})


if __name__ == "__main__":
    main()
