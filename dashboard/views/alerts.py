"""Alerts: what the alert worker holds as firing, each rule against its threshold, the history,
silences, the outbox and the worker's heartbeat.

Everything here is what the worker stored in Paywatch's database (``alerts.store``,
``alerts.outbox``); the page evaluates nothing itself.  Silences are written with the
same function as ``python -m alerts silence``, so the CLI and the page agree.
Platform data (a subject, an error, a message) is shown as text: tables, ``st.text``
and :func:`common.md`, never HTML.
"""

from __future__ import annotations

import importlib
from datetime import datetime, timedelta, timezone

import streamlit as st
from pymongo import DESCENDING
from pymongo.errors import PyMongoError

from alerts import store
from alerts import outbox as outbox_mod
from alerts.config import load_config, parse_duration
from alerts.messages import plain_text
from alerts.rules import Rule, load_rules
from alerts.state import FIRING, PENDING, RESOLVED, scope
from dashboard import charts, common
from dashboard.common import Tile, View, md
from metrics import format as fmt
from metrics.db import DataSourceUnavailable, state_db
from metrics.settings import Settings, SettingsError
from metrics.windows import Window, utc

CONSOLE_SHOWN = 10  # last console messages shown when Slack is not configured
STATE_COLOUR = {FIRING: charts.BAD, PENDING: "#e59c2f", RESOLVED: charts.GOOD}
WHO_DEFAULT = "dashboard"  # who set a silence when nobody is logged in


# -- reads (``None`` when Paywatch's database does not answer) -------------------------------

def current(db) -> dict:
    """The worker's stored states, unsent and dead messages, and its heartbeat."""
    return {
        "states": sorted(store.load_states(db).values(), key=lambda d: (d.get("rule_id", ""), d.get("subject", ""))),
        "outbox": outbox_mod.list_messages(db),
        "console": list(db[outbox_mod.OUTBOX].find({"status": outbox_mod.SENT, "channel": "console"})
                        .sort("sent_at", DESCENDING).limit(CONSOLE_SHOWN)),
        "heartbeat": common.worker_heartbeat(db),
    }


def active_silences(settings: Settings, now: datetime) -> list[dict] | None:
    """Read at each run, not cached: a silence just added or ended shows at once."""
    try:
        return store.active_silences(state_db(settings), now)
    except (PyMongoError, DataSourceUnavailable):
        return None


def history_in(db, window: Window) -> list[dict]:
    return [h for h in store.history(db, since=window.start, limit=2000) if utc(h["at"]) <= window.end]


# -- the page -----------------------------------------------------------------------------

def main() -> None:
    common.live(render)


def render() -> None:
    with View("Alerts", caption="As the alert worker stored them; the history follows the picked range.") as view:
        rules = _rules(view.settings)
        now = datetime.now(timezone.utc)
        # Streamlit runs this file as ``__main__``; the cache finds functions by module name,
        # so the reads are passed as the importable module's.
        reads = importlib.import_module("dashboard.views.alerts")
        data = view.state(reads.current)
        history = None if data is None else view.state(reads.history_in, view.window)
        silences = None if history is None else active_silences(view.settings, now)
        if data is None or history is None or silences is None:
            render_unavailable(view)
            return
        _outage()["since"] = None
        render_tiles(view, data, silences)
        render_heartbeat(view, data["heartbeat"], now)
        render_firing(view, data["states"])
        render_rules(view, rules, data["states"])
        render_history(view, history)
        render_silences(view, rules, silences)
        render_outbox(view, data["outbox"])
        render_console(view, data["console"])


def _rules(settings: Settings) -> list[Rule]:
    try:
        return load_rules(settings, load_config(settings))
    except SettingsError as exc:
        st.error(str(exc), icon=":material/settings_alert:")
        st.stop()


@st.cache_resource(show_spinner=False)
def _outage() -> dict:
    """Since when Paywatch's database has not answered this process (shared by every session)."""
    return {"since": None}


def render_unavailable(view: View) -> None:
    outage = _outage()
    outage["since"] = outage["since"] or datetime.now(timezone.utc)
    try:
        state_db(view.settings).command("ping")
        error = "a read failed or took too long"
    except (PyMongoError, DataSourceUnavailable) as exc:
        error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    st.error(f"Data source unavailable since {view.when(outage['since'])}: {md(error)}. Alert states, silences "
             "and the outbox live in Paywatch's database; nothing is shown until it answers (the worker "
             "treats every rule as unknown meanwhile, never as clear).", icon=":material/cloud_off:")


def render_tiles(view: View, data: dict, silences: list[dict]) -> None:
    by_state = {s: sum(d.get("state") == s for d in data["states"]) for s in (FIRING, PENDING)}
    unknown = sum(bool(d.get("unknown")) for d in data["states"])
    waiting = [m for m in data["outbox"] if m["status"] != outbox_mod.DEAD]
    dead = len(data["outbox"]) - len(waiting)
    view.tiles([
        Tile("Firing", fmt.count(by_state[FIRING]), note=f"{fmt.count(unknown)} unknown" if unknown else None,
             help="Rule and subject pairs the worker holds as firing."),
        Tile("Pending", fmt.count(by_state[PENDING]), help="Breaching, but not yet for the rule's `for` period."),
        Tile("Active silences", fmt.count(len(silences))),
        Tile("Outbox", fmt.count(len(waiting)), note=f"{fmt.count(dead)} dead" if dead else "none dead",
             help="Messages waiting to be sent (pending or being sent); dead ones were given up."),
    ])


def render_heartbeat(view: View, beat: dict | None, now: datetime) -> None:
    worker = common.worker_status(view.settings, beat, now)
    if worker.at is None:
        st.info("No heartbeat from the alert worker yet: it is not running, or has not started "
                "(python -m alerts run; make run starts it).", icon=":material/heart_broken:")
        return
    at, age = worker.at, worker.age_s
    where = f"{md(beat.get('host') or '?')} pid {md(beat.get('pid') or '?')}"
    if worker.late:
        st.warning(f"The alert worker is late: its last heartbeat is {worker.age_text} old "
                   f"({view.when(at)}, {where}), older than {worker.limit_text}. Alerts may not be evaluated.",
                   icon=":material/heart_broken:")
    else:
        cycle = beat.get("cycle_ms")
        st.success(f"The alert worker is running: last cycle {fmt.duration(age * 1000)} ago ({view.when(at)}, "
                   f"{where}){f', took {fmt.duration(cycle)}' if cycle is not None else ''}; "
                   f"channels: {md(', '.join(str(c) for c in beat.get('channels') or []) or '–')}.",
                   icon=":material/favorite:")
    if beat.get("source_error"):
        st.error(f"In its last cycle the worker could not read the platform: {md(beat['source_error'])}",
                 icon=":material/cloud_off:")


def _scope(doc: dict) -> str:
    return doc.get("subject") or ""


def render_firing(view: View, states: list[dict]) -> None:
    st.subheader("Firing now", anchor=False, divider="gray")
    firing = sorted((d for d in states if d.get("state") == FIRING), key=lambda d: utc(d["since"]) if d.get("since") else view.at)
    if not firing:
        st.success("Nothing is firing.", icon=":material/check_circle:")
        return
    st.dataframe([{"Rule": d.get("rule_id"), "Subject": _scope(d), "Severity": d.get("severity"),
                   "Title": d.get("title"), "Value": d.get("value_text"), "Threshold": d.get("threshold_text"),
                   "Since": view.when(d.get("fired_at") or d.get("since")),
                   "Data": ", ".join(_marks(view, d, "current"))} for d in firing],
                 hide_index=True, width="stretch", key="firing")


def render_rules(view: View, rules: list[Rule], states: list[dict]) -> None:
    st.subheader("Every rule against its threshold", anchor=False, divider="gray")
    evaluated = max((utc(d["evaluated_at"]) for d in states if d.get("evaluated_at")), default=None)
    st.caption(f"The value each rule read in the worker's last evaluation ({view.when(evaluated)}). A rule "
               "without a stored state has not been evaluated with data yet (or needs a setting, e.g. "
               "PAYWATCH_HEALTH_URL).")
    by_rule: dict[str, list[dict]] = {}
    for doc in states:
        by_rule.setdefault(doc.get("rule_id"), []).append(doc)
    rows = []
    for rule in rules:
        for doc in by_rule.pop(rule.id, None) or [None]:
            rows.append(_rule_row(view, rule.id, rule.title, rule.severity, doc, rule.threshold_text(), rule.enabled))
    for rule_id, docs in by_rule.items():  # states of rules no longer configured
        for doc in docs:
            rows.append(_rule_row(view, rule_id, doc.get("title"), doc.get("severity"), doc, doc.get("threshold_text"), False))
    narrow = {name: st.column_config.TextColumn(width="small") for name in ("Subject", "Severity", "Value", "Samples")}
    narrow["Title"] = st.column_config.TextColumn(width="medium")  # the whole table fits a laptop screen
    st.dataframe(rows, hide_index=True, width="stretch", key="rules", column_config=narrow,
                 height=35 * (len(rows) + 1) + 3)  # every rule visible, no scrolling inside the table


def _marks(view: View, doc: dict, known: str | None) -> list[str]:
    """What qualifies a state: its data (unknown, no data since …), flapping, held by inhibition.

    "No data since" matters where it keeps an alert open (firing, pending); an inactive rule on a
    quiet hour just shows its value and samples."""
    marks = []
    open_ = doc.get("state") in (FIRING, PENDING)
    if doc.get("unknown"):
        marks.append("unknown" + (f", no data since {view.when(doc['no_data_since'])}"
                                  if open_ and isinstance(doc.get("no_data_since"), datetime) else ""))
    elif open_ and isinstance(doc.get("no_data_since"), datetime):
        marks.append(f"no data since {view.when(doc['no_data_since'])}")
    elif known:
        marks.append(known)
    if doc.get("flapping"):
        marks.append("flapping")
    if doc.get("inhibited_by") and doc.get("state") == FIRING:
        marks.append(f"held while {doc['inhibited_by']} fires")
    return marks


def _rule_row(view: View, rule_id: str, title, severity, doc: dict | None, threshold, enabled: bool) -> dict:
    doc = doc or {}
    state = doc.get("state") or ("disabled" if not enabled else "not evaluated")
    marks = _marks(view, doc, None)
    if marks:
        state += f" ({'; '.join(marks)})"
    samples = doc.get("samples")
    return {"Rule": rule_id, "Subject": _scope(doc), "Title": title, "Severity": severity,
            "Value": doc.get("value_text") or "–", "Threshold": doc.get("threshold_text") or threshold,
            "Samples": "" if samples is None else fmt.count(samples), "State": state,
            "State since": view.when(doc.get("since"))}


def render_history(view: View, history: list[dict]) -> None:
    st.subheader("History", anchor=False, divider="gray")
    transitions = [h for h in reversed(history) if h.get("event") == "transition"]
    if not transitions:
        charts.empty("Alert transitions", f"No alert changed state in {view.range.label.lower()}.")
    else:
        charts.show(timeline(transitions, view), key="alert_timeline")
    with st.expander(f"Every transition and message ({fmt.count(len(history))})"):
        st.dataframe([{"At": view.when(h.get("at")), "Rule": h.get("rule_id"), "Subject": h.get("subject") or "",
                       "Event": h.get("event") if h.get("event") != "notified" else f"sent ({h.get('reason')})",
                       "From": h.get("from"), "To": h.get("to"), "Value": h.get("value_text")} for h in history],
                     hide_index=True, width="stretch", key="history")


def timeline(transitions: list[dict], view: View) -> charts.Chart:
    """One row per rule and subject: a bar while firing, a dot at each change of state."""
    open_at: dict[str, datetime] = {}
    episodes: list[tuple[str, datetime, datetime]] = []
    # A row names a subject, which is platform data: a category and a tooltip value, which ECharts
    # draws as text (charts' module docstring), never part of a template.
    row_of = lambda h: scope(h["rule_id"], h.get("subject"))  # noqa: E731
    for h in transitions:  # oldest first
        row = row_of(h)
        when = utc(h["at"])
        if h.get("to") == FIRING:
            open_at[row] = when
        elif h.get("from") == FIRING and row in open_at:
            episodes.append((row, open_at.pop(row), when))
    episodes += [(row, start, view.window.end) for row, start in open_at.items()]
    local = lambda t: charts.wall_clock(t.astimezone(view.tz))  # noqa: E731
    series = [{"type": "line", "data": [[local(start), row], [local(end), row]], "symbol": "none", "silent": True,
               "lineStyle": {"color": charts.BAD, "width": 10}, "tooltip": {"show": False}}
              for row, start, end in episodes]
    states = [state for state in (FIRING, PENDING, RESOLVED, "inactive") if any(h.get("to") == state for h in transitions)]
    for state in states:
        points = [h for h in transitions if h.get("to") == state]
        series.append({"type": "scatter", "name": state, "symbolSize": 9,
                       "itemStyle": {"color": STATE_COLOUR.get(state, charts.MUTED)},
                       "data": [[local(utc(h["at"])), row_of(h), str(h.get("value_text") or "–"), str(h.get("from"))]
                                for h in points],
                       "tooltip": {"formatter": "{@[1]}: {@[3]} → " + state + " (value {@[2]})"}})
    rows = list(dict.fromkeys(row_of(h) for h in transitions))
    # From a little before the first change (not the whole range): a 10-minute episode stays visible.
    first = max(view.window.start, utc(transitions[0]["at"]) - (view.window.end - utc(transitions[0]["at"])) * 0.1)
    return charts.Chart({
        "useUTC": True, "animation": False,
        "title": {**charts.TITLE, "text": "Alert transitions (bars: firing)"},
        "grid": charts.GRID, "legend": {**charts.LEGEND, "data": states}, "tooltip": {"trigger": "item"},
        "xAxis": charts.time_axis(f"Time ({view.tz.key})", min=local(first), max=local(view.window.end)),
        "yAxis": {"type": "category", "data": rows, "inverse": True,
                  "axisLabel": {"width": 260, "overflow": "truncate"}},
        "series": series,
    }, height=max(200, 40 * len(rows) + 130))


# -- silences ---------------------------------------------------------------------------

def _who() -> str:
    """The logged-in user's email when login is on; else ``dashboard``."""
    if common.auth_configured():
        email = st.user.get("email")
        if email:
            return str(email)
    return WHO_DEFAULT


def _add_silence(settings: Settings) -> None:
    state = st.session_state
    rule_id, reason = state.get("silence_rule"), (state.get("silence_reason") or "").strip()
    subject = (state.get("silence_subject") or "").strip() or None
    try:
        duration = parse_duration(state.get("silence_for") or "")
        if duration <= timedelta(0):
            raise ValueError("the duration must be longer than 0")
        if not reason:
            raise ValueError("give a reason, for whoever wonders later")
        now = datetime.now(timezone.utc)
        sid = store.add_silence(state_db(settings), rule_id, subject, now + duration, reason, _who(), now)
    except ValueError as exc:
        state["silence_note"] = ("error", f"Not silenced: {exc}")
        return
    except (PyMongoError, DataSourceUnavailable) as exc:
        state["silence_note"] = ("error", f"Not silenced: Paywatch's database did not answer ({str(exc).splitlines()[0][:150]})")
        return
    common.clear_state_cache()
    state["silence_note"] = ("success", f"Silenced {scope(rule_id, subject)} for {state.get('silence_for')} (id {sid}).")
    state["silence_reason"] = state["silence_subject"] = ""


def _end_silence(settings: Settings) -> None:
    state = st.session_state
    sid = state.get("silence_end")
    try:
        ended = store.remove_silence(state_db(settings), str(sid), datetime.now(timezone.utc))
    except (PyMongoError, DataSourceUnavailable) as exc:
        state["silence_note"] = ("error", f"Not ended: Paywatch's database did not answer ({str(exc).splitlines()[0][:150]})")
        return
    common.clear_state_cache()
    state["silence_note"] = ("success", f"Silence {sid} ended.") if ended else ("error", f"Silence {sid} had already ended.")


def render_silences(view: View, rules: list[Rule], silences: list[dict]) -> None:
    st.subheader("Silences", anchor=False, divider="gray")
    st.caption("A silence holds back a rule's firing and repeat messages (for one subject, or all); an alert "
               "whose firing message already went out still gets its resolved message. The CLI sees the same "
               "silences: python -m alerts silences.")
    note = st.session_state.pop("silence_note", None)
    if note:
        (st.success if note[0] == "success" else st.error)(md(note[1]))
    if silences:
        st.dataframe([{"Rule": s["rule_id"], "Subject": s.get("subject") or "(all)", "Until": view.when(s["until"]),
                       "Reason": s.get("reason"), "By": s.get("by"),
                       "Id": str(s["_id"])} for s in silences], hide_index=True, width="stretch", key="silences")
    else:
        st.caption("No active silences.")
    add, end = st.columns(2)
    with add, st.form("silence_add", border=True):
        st.markdown("**Silence a rule**")
        ids = [r.id for r in rules]
        wanted = st.query_params.get("rule")  # the dashboard link in a Slack message names the rule
        st.session_state.setdefault("silence_subject", st.query_params.get("subject") or "")
        st.session_state.setdefault("silence_for", "2h")
        st.selectbox("Rule", ids, index=ids.index(wanted) if wanted in ids else 0, key="silence_rule")
        st.text_input("Subject (optional)", key="silence_subject", placeholder="a currency or specialist id; empty = all")
        st.text_input("For", key="silence_for", help="e.g. 30m, 2h, 1d")
        st.text_input("Reason", key="silence_reason")
        st.form_submit_button("Silence", icon=":material/notifications_off:", on_click=_add_silence, args=(view.settings,))
    with end, st.container(border=True):
        st.markdown("**End a silence**")
        if not silences:
            st.caption("Nothing to end.")
        else:
            labels = {str(s["_id"]): f"{s['rule_id']}{' [' + s['subject'] + ']' if s.get('subject') else ''} "
                                     f"until {view.when(s['until'])}" for s in silences}
            st.selectbox("Silence", list(labels), format_func=labels.get, key="silence_end")
            st.button("End silence now", icon=":material/notifications_active:", on_click=_end_silence,
                      args=(view.settings,))


# -- delivery -----------------------------------------------------------------------------

def render_outbox(view: View, messages: list[dict]) -> None:
    st.subheader("Outbox", anchor=False, divider="gray")
    if not messages:
        st.caption("Nothing pending or dead: every message went out (python -m alerts outbox --all lists the sent ones).")
        return
    st.dataframe([{"Status": m["status"], "Channel": m["channel"], "Queued": view.when(m.get("created_at")),
                   "Attempts": m.get("attempts", 0),
                   "Next try": view.when(m.get("next_attempt_at")) if m["status"] == outbox_mod.PENDING else "",
                   "Message": (m.get("message") or {}).get("headline", ""), "Last error": m.get("last_error") or "",
                   "Key": m.get("key")} for m in messages], hide_index=True, width="stretch", key="outbox")


def render_console(view: View, sent: list[dict]) -> None:
    if view.settings.slack_webhook_url or view.settings.slack_bot_token:
        return
    st.subheader("Console messages", anchor=False, divider="gray")
    st.caption("Slack is not configured (docs/alerts.md says how), so the worker logs each message; the last "
               f"{CONSOLE_SHOWN} are here.")
    if not sent:
        st.caption("None sent yet.")
    # Plain text in a box, not st.code: a code block makes a new tab load and run Streamlit's syntax
    # highlighter (1.5 MB of script, about 0.4 s here) for messages that have no syntax.
    for m in sent:
        with st.container(border=True):
            st.text(plain_text(m["message"]))
            st.caption(f"Sent {view.when(m.get('sent_at'))}")


if __name__ == "__main__":
    main()
