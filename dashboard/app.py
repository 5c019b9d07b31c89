"""Paywatch's dashboard: ``paywatch dashboard`` (in a clone: ``python -m streamlit run dashboard/app.py``).

This file only decides who may see what and which pages exist; each page is
a module in ``dashboard/views/`` with a ``main()``.  The access check runs on
every run, before any page is registered, so a page a visitor may not see
does not exist for them (not even at its URL).
"""

import streamlit as st

from dashboard import common

# One line per page: (module in dashboard/views/, title, icon).  The first is the default.
PAGES = [
    ("overview", "Overview", ":material/dashboard:"),
    ("payments", "Payments", ":material/payments:"),
    ("webhooks", "Webhooks", ":material/webhook:"),
    ("enrollments", "Enrollments", ":material/school:"),
    ("system_health", "System Health", ":material/monitor_heart:"),
    ("alerts", "Alerts", ":material/notifications:"),
    ("notifications", "Notifications", ":material/outgoing_mail:"),
    ("reports", "Reports", ":material/summarize:"),
    ("stripe", "Stripe", ":material/credit_card:"),
    ("reconciliation", "Reconciliation", ":material/compare_arrows:"),
]


def pages() -> list[st.Page]:
    return [st.Page(f"views/{name}.py", title=title, icon=icon, url_path=name, default=i == 0)
            for i, (name, title, icon) in enumerate(PAGES)]


st.set_page_config(page_title="Paywatch", page_icon=":material/monitoring:", layout="wide")
settings = common.settings()
verdict = common.access(settings)
if not verdict.allowed:
    st.navigation([st.Page(verdict.screen, title="Paywatch", url_path="signin")], position="hidden").run()
    st.stop()
if verdict.banner:
    st.info(verdict.banner, icon=":material/lock_open:")
common.range_picker(settings)
st.navigation(pages()).run()
