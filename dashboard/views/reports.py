"""Reports: the weekly review (guide section 9) for a chosen week or month, and the ones the worker sent.

The report is built once per period (``reports.model``, cached) for the
preview; each file is rendered from it only when its download button is
clicked (Streamlit's deferred download).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import streamlit as st
from pymongo.errors import PyMongoError

from dashboard import common
from dashboard.common import md
from metrics.db import DataSourceUnavailable, state_db
from metrics.settings import Settings, get_settings
from reports.job import past_reports
from reports.model import Report, build_report
from reports.periods import (Period, PeriodError, last_complete_month, last_complete_week, month_period, parse_month,
                             parse_week, week_period)
from reports.render import FORMATS, file_name, render

CHOICES = 26  # weeks (or months) to pick from
REPORT_TTL_S = 3600  # a finished period changes only when late data arrives
FORMAT_LABELS = {"html": "HTML (charts, printable)", "xlsx": "Excel workbook", "csv": "CSV files (zip)"}


def main() -> None:
    if not common.page_allowed():
        st.stop()
    cfg = common.settings()
    st.header("Reports", anchor=False)
    st.caption(f"The weekly review as files to send around: every figure against the period before, "
               f"the targets, and where failures cluster. Weeks run Monday to Sunday in {cfg.timezone}.")
    period = pick_period(cfg)
    report = load_report(cfg, period)
    if report is not None:
        render_summary(report)
        render_downloads(report)
    render_past(cfg)


def pick_period(cfg: Settings) -> Period:
    now = datetime.now(timezone.utc)
    kind = st.segmented_control("Period", ["Week", "Month"], default="Week", required=True, key="report_kind") or "Week"
    if kind == "Week":
        latest = last_complete_week(now, cfg.tz)
        choices = [latest] + [_weeks_before(latest, n, cfg) for n in range(1, CHOICES)]
        wanted = _from_address(parse_week, cfg)
    else:
        latest = last_complete_month(now, cfg.tz)
        choices = [latest] + [_months_before(latest, n, cfg) for n in range(1, CHOICES)]
        wanted = None
    labels = [p.label for p in choices]
    index = labels.index(wanted.label) if wanted is not None and wanted.label in labels else 0
    picked = st.selectbox(kind, choices, index=index, format_func=lambda p: p.title, key=f"report_{kind}")
    return picked


def _from_address(parse, cfg: Settings) -> Period | None:
    """``?week=2026-W47`` (the link in the Slack summary)."""
    raw = st.query_params.get("week")
    if not raw:
        return None
    try:
        return parse(raw, cfg.tz)
    except PeriodError as exc:
        st.warning(f"Ignored ?week= in the address: {md(exc)}", icon=":material/event_busy:")
        return None


def _weeks_before(period: Period, n: int, cfg: Settings) -> Period:
    monday: date = period.first_day - timedelta(days=7 * n)
    year, week_no, _ = monday.isocalendar()
    return week_period(year, week_no, cfg.tz)


def _months_before(period: Period, n: int, cfg: Settings) -> Period:
    index = period.first_day.year * 12 + period.first_day.month - 1 - n
    return month_period(index // 12, index % 12 + 1, cfg.tz)


@st.cache_data(ttl=REPORT_TTL_S, max_entries=20, show_spinner=False)
def _build(kind: str, label: str, source_db: str, state: str) -> Report:
    settings = get_settings()
    period = parse_week(label, settings.tz) if kind == "weekly" else parse_month(label, settings.tz)
    try:
        paywatch = state_db(settings)
    except DataSourceUnavailable:
        paywatch = None
    return build_report(common.platform_source(), settings, period, state=paywatch)


def load_report(cfg: Settings, period: Period) -> Report | None:
    with st.spinner(f"Building the report for {period.label} (it reads two {period.noun}s of data)…"):
        try:
            return _build(period.kind, period.label, cfg.source_db_name, cfg.state_db)
        except (DataSourceUnavailable, PyMongoError) as exc:
            st.error(f"Data source unavailable: {md(str(exc).splitlines()[0])}. The report needs the platform's "
                     "database; try again when it answers.", icon=":material/cloud_off:")
            return None


def render_summary(report: Report) -> None:
    st.subheader(report.period.title, anchor=False, divider="gray")
    st.markdown(md(report.summary.headline))
    for line in report.summary.missed:
        st.error(f"Target missed: {md(line)}", icon=":material/error:")
    for line in report.summary.at_risk:
        st.warning(f"At risk: {md(line)}", icon=":material/warning:")
    for line in report.summary.unknown:
        st.info(f"No data for target: {md(line)}", icon=":material/help:")
    if not (report.summary.missed or report.summary.at_risk or report.summary.unknown):
        st.success("Every target was met.", icon=":material/check_circle:")
    if report.summary.changes:
        st.markdown("**What changed most**\n\n" + "\n".join(f"- {md(line)}" for line in report.summary.changes))
    with st.expander(f"Every figure against {report.period.previous_label}"):
        st.dataframe(figure_rows(report), hide_index=True, width="stretch")


def figure_rows(report: Report) -> list[dict]:
    """The figures as text for people, as the HTML file shows them."""
    return [{"Section": section.title, "Metric": fig.label, report.period.label: fig.text(),
             report.period.previous_label: fig.text("previous") if fig.comparable else "",
             "Change": fig.change_text() if fig.comparable else "", "Target": fig.target,
             "Status": common.STATUS_BADGE[fig.status][0] if fig.status else ""}
            for section in report.sections for fig in section.figures]


def render_downloads(report: Report) -> None:
    st.markdown("**Download**")
    columns = st.columns(len(FORMATS))
    for column, (name, spec) in zip(columns, FORMATS.items()):
        with column:
            # A callable: the file is rendered when the button is clicked, not on every page run.
            st.download_button(FORMAT_LABELS[name], data=lambda r=report, n=name: render(r, n),
                               file_name=file_name(report, name), mime=spec.mime, on_click="ignore",
                               icon=":material/download:", key=f"download_{name}_{report.period.label}",
                               width="stretch")


def render_past(cfg: Settings) -> None:
    st.subheader("Sent by the worker", anchor=False, divider="gray")
    try:
        kept = past_reports(state_db(cfg))
    except (DataSourceUnavailable, PyMongoError) as exc:
        st.warning(f"Paywatch's own database did not answer: {md(str(exc).splitlines()[0])}", icon=":material/cloud_off:")
        return
    if not kept:
        st.caption("None yet. The alert worker sends each week's report on Monday at 09:00 "
                   "(see docs/reports.md to change the day and time, or to connect Slack).")
        return
    rows = []
    for doc in kept:
        summary = doc.get("summary") or {}
        sent = doc.get("sent_at")
        rows.append({"Period": doc.get("period"), "State": doc.get("state"),
                     "Sent": f"{sent.astimezone(cfg.tz):%a %d %b %Y %H:%M}" if sent else "",
                     "Targets missed": len(summary.get("missed") or []), "Summary": summary.get("headline") or "",
                     "Problem": doc.get("error") or ""})
    st.dataframe(rows, hide_index=True, width="stretch")


if __name__ == "__main__":
    main()
