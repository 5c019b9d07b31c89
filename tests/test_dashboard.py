"""The dashboard's pages, run by Streamlit's AppTest over a seeded test database.

Every page is opened at a fixed instant (``?at=`` in the address) so the
figures it shows can be compared with what ``metrics`` returns for the same
windows.  The database is the session's real SecantusDB server.
"""

from __future__ import annotations

import ast
import importlib
import json
import threading
import tomllib
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import streamlit as st
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from dashboard import common
from demo.seed import seed
from metrics.db import Source
from metrics import enrollments, payments, series, webhooks
from metrics import format as fmt
from metrics.embedded import EmbeddedMongo, free_port
from metrics.schema import DEFAULT_SCHEMA
from metrics.settings import get_settings
from metrics.windows import CALENDAR, Window, iso, last

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
AT = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
PAGES = ["overview", "payments", "webhooks", "enrollments", "system_health"]
TIMEOUT_S = 90


def shown(value: str | None) -> str | None:
    """What a person reads: st.metric renders Markdown, so ``$`` arrives escaped."""
    return None if value is None else value.replace("\\$", "$")


def metrics_by_label(at: AppTest) -> dict[str, str]:
    return {m.label: shown(m.value) for m in at.metric}


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


@pytest.fixture(autouse=True)
def _fresh(fresh_streamlit):
    """Empty caches and re-read settings before and after each test (tests/conftest.py)."""


@pytest.fixture(scope="module")
def seeded_name(mongo_client):
    """One seeded platform database for the module (seeding is the slow part); pages only read it."""
    name = f"dashboard_{uuid.uuid4().hex[:10]}"
    seed(mongo_client[name], DEFAULT_SCHEMA, days=8, per_day=40, now=AT)
    yield name
    mongo_client.drop_database(name)


@pytest.fixture
def seeded(mongo_client, seeded_name) -> Source:
    """The seeded database as ``metrics`` reads it: the expected values come from here."""
    return Source(db=mongo_client[seeded_name], schema=DEFAULT_SCHEMA, max_time_ms=30_000)


@pytest.fixture
def src(seeded) -> Source:
    return seeded


@pytest.fixture
def env(monkeypatch, mongo_uri, db_names, seeded_name):
    """The dashboard's configuration, through the environment as in production; a fresh state db."""
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("PAYWATCH_SOURCE_DB", seeded_name)
    monkeypatch.setenv("PAYWATCH_DB", db_names[1])
    monkeypatch.setenv("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "1500")
    return monkeypatch


def open_app(at_instant: datetime | None = AT, page: str | None = None, **attrs) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    if at_instant is not None:
        at.query_params["at"] = iso(at_instant)
    for name, value in attrs.items():
        setattr(at, name, value)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    return at


def test_no_pages_folder_beside_the_entry_script():
    """Streamlit serves a dashboard/pages/*.py file at its URL without running app.py's login check."""
    assert not (ROOT / "dashboard" / "pages").exists()


def registered_pages() -> list[tuple[str, str, str]]:
    """``PAGES`` of app.py, read without running the app."""
    tree = ast.parse(APP.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PAGES")
    return ast.literal_eval(node.value)


def test_every_page_of_this_issue_is_registered_with_a_module_that_has_main():
    names = [name for name, _title, _icon in registered_pages()]
    assert names[:5] == PAGES
    for name in PAGES:
        assert callable(importlib.import_module(f"dashboard.views.{name}").main)


@pytest.mark.parametrize("name,title", [(n, t) for n, t, _ in registered_pages()])
def test_every_registered_page_draws_its_header_when_opened_through_the_app(env, name, title):
    """A page module is run as a script: without its ``main()`` call it would show an empty page."""
    at = open_app(page=name)
    assert not at.exception, [e.value for e in at.exception]
    assert title in texts(at.header), f"{name}: the page drew nothing (does it call main()?)"


def opened_cleanly(at: AppTest) -> bool:
    assert not at.exception, [e.value for e in at.exception]
    assert at.metric, "every page draws figures"
    assert "Data source unavailable" not in texts(at.error)
    return True


def test_overview_shows_the_four_sections_with_the_metrics_values_targets_and_banners(env, src, settings):
    at = open_app()
    assert opened_cleanly(at)
    assert [s.value for s in at.subheader] == ["Payments", "Webhooks", "Enrollments", "System Health"]
    tiles = metrics_by_label(at)
    day = last(AT, hours=24)
    pay = payments.window_summary(src, day, tuple(settings.currencies))
    web = webhooks.window_summary(src, day)
    enr = enrollments.window_summary(src, day)
    today = CALENDAR["today"](AT, settings.tz)
    revenue_today = payments.revenue_by_period(src, {"today": today})["today"]
    assert tiles["Revenue today"] == fmt.money(revenue_today["usd"], "usd")
    assert tiles["Success rate"] == fmt.rate(pay["success_rate"])
    assert tiles["Failed payments"] == fmt.count(pay["failed"])
    assert tiles["Refund rate"] == fmt.rate(pay["refund_rate"])
    assert tiles["Processing time (avg)"] == fmt.duration(pay["processing_ms"]["avg"])
    assert tiles["Stuck payments"] == fmt.count(payments.stuck_count(src, AT, settings.stuck_minutes))
    assert tiles["Events received"] == fmt.count(web["received"])
    assert tiles["Delivery success"] == fmt.rate(1 - web["failure_rate"], 2)
    assert tiles["Processing time (p95)"] == fmt.duration(web["processing_ms"]["p95"])
    assert tiles["New enrollments today"] == fmt.count(enrollments.created_count(src, today))
    assert tiles["Conversion rate"] == fmt.rate(enr["conversion_rate"])
    assert tiles["Pending payments"] == fmt.count(enrollments.pending_payments_count(src, AT))
    assert tiles["Activation time (p95)"] == fmt.duration(enr["activation_ms"]["p95"])
    assert tiles["Confirmation email (p95)"] == fmt.duration(enr["email_ms"]["p95"])
    assert tiles["Duplicate enrollments"] == fmt.count(enrollments.duplicate_count(src, AT))
    # Targets coloured by the guide's thresholds; the demo has one duplicate enrollment.
    badges = texts(at.markdown)
    assert enrollments.duplicate_count(src, AT) >= 1
    assert ":red-badge[:material/error: missed · target = 0]" in badges
    assert "target > 98%" in badges and "target < 2%" in badges and "target < 5 s" in badges
    # Banners: the demo's malformed documents, and no login configured.
    assert "Data quality" in texts(at.warning)
    assert "served on 127.0.0.1 only" in texts(at.info)


def test_payments_page_masks_emails_and_shows_the_metrics_of_the_picked_range(env, src, settings):
    at = open_app(page="payments")
    assert opened_cleanly(at)
    customers = list(at.dataframe[0].value["Customer"])
    originals = [p["customerEmail"] for p in series.recent_failed_payments(src, last(AT, hours=24), 50)]
    assert customers == [fmt.mask_email(e) for e in originals]
    assert all("***@" in c for c in customers)

    at.sidebar.radio(key="range").set_value("7d").run()
    week = last(AT, days=7)
    pay = payments.window_summary(src, week, tuple(settings.currencies))
    tiles = metrics_by_label(at)
    assert tiles["Revenue · last 7 days"] == fmt.money(pay["revenue"]["usd"], "usd")
    assert tiles["Success rate"] == fmt.rate(pay["success_rate"])
    assert tiles["Failed payments"] == fmt.count(pay["failed"])
    assert tiles["Refund rate"] == fmt.rate(pay["refund_rate"])
    failed = series.recent_failed_payments(src, week, 50)
    table = at.dataframe[0].value
    assert list(table["Payment"]) == [p["paymentId"] for p in failed]


def test_emails_are_shown_in_full_when_masking_is_turned_off(env, src):
    env.setenv("PAYWATCH_MASK_EMAILS", "false")
    at = open_app(page="payments")
    originals = [p["customerEmail"] for p in series.recent_failed_payments(src, last(AT, hours=24), 50)]
    assert list(at.dataframe[0].value["Customer"]) == originals


def test_webhooks_page_shows_the_metrics_and_the_latest_events(env, src, settings):
    at = open_app(page="webhooks")
    assert opened_cleanly(at)
    web = webhooks.window_summary(src, last(AT, hours=24))
    tiles = metrics_by_label(at)
    assert tiles["Events received"] == fmt.count(web["received"])
    assert tiles["Failure rate"] == fmt.rate(web["failure_rate"], 2)
    assert tiles["Processing time (p95)"] == fmt.duration(web["processing_ms"]["p95"])
    assert tiles["Delivery lag (avg)"] == fmt.duration(web["delivery_lag_ms"]["avg"])
    latest = webhooks.latest_events(src, AT, settings.latest_events)
    assert list(at.dataframe[0].value["Event"]) == [e["eventId"] for e in latest]


def test_enrollments_page_shows_the_metrics_and_the_duplicates(env, src):
    at = open_app(page="enrollments")
    assert opened_cleanly(at)
    enr = enrollments.window_summary(src, last(AT, hours=24))
    tiles = metrics_by_label(at)
    assert tiles["New enrollments"] == fmt.count(enr["created"])
    assert tiles["Refunded enrollments"] == fmt.count(enr["refunded"])
    assert tiles["Pending payments"] == fmt.count(enrollments.pending_payments_count(src, AT))
    pairs = enrollments.duplicate_pairs(src, AT)
    duplicates_table = at.dataframe[-1].value
    assert list(duplicates_table["Customer"]) == [p["customerId"] for p in pairs]


def test_system_health_page_reports_the_database_and_a_missing_worker(env):
    at = open_app(page="system_health")
    assert opened_cleanly(at)
    tiles = metrics_by_label(at)
    assert tiles["Connections"] not in (None, "–")
    assert "No heartbeat from the alert worker" in texts(at.info)
    assert "No health URL is configured" in texts(at.info)


def test_system_health_warns_when_the_workers_heartbeat_is_old(env, mongo_client, db_names):
    mongo_client[db_names[1]]["heartbeats"].insert_one({"_id": "worker", "at": AT - timedelta(minutes=10)})
    at = open_app(page="system_health")
    assert "older than 3 × the evaluation interval" in texts(at.warning)


def test_overview_shows_firing_alerts_as_text_not_markdown(env, mongo_client, db_names):
    mongo_client[db_names[1]]["alert_state"].insert_many([
        {"rule_id": "payment_success_rate", "state": "firing", "severity": "critical",
         "since": AT - timedelta(minutes=6), "fired_at": AT - timedelta(minutes=5),
         "title": "Payment success rate below 95%", "subject": "[click](javascript:alert(1))",
         "value_text": "91.2%", "threshold_text": "< 95.0%"},
        {"rule_id": "refund_rate", "state": "resolved", "severity": "warning", "since": AT,
         "title": "Refund rate above 5%", "value_text": "1.0%", "threshold_text": "> 5.0%"},
    ])
    at = open_app()
    errors = texts(at.error)
    assert (r"Payment success rate below 95% \[\[click\]\(javascript\:alert\(1\)\)\]\: 91\.2% "
            r"\(threshold \< 95\.0%\)") in errors
    assert "since " + f"{AT - timedelta(minutes=5):%d %b %H:%M:%S}" in errors
    assert "Refund rate" not in errors


def test_a_bad_at_in_the_address_is_named_and_live_data_shown(env):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params["at"] = "yesterday"
    at.run()
    assert not at.exception
    assert "Ignored ?at=" in texts(at.warning)


def test_down_database_shows_a_banner_and_the_last_good_values_marked_stale(env, tmp_path):
    server = EmbeddedMongo(tmp_path / "own", memory=True)
    server.ensure()
    try:
        from pymongo import MongoClient

        client = MongoClient(server.uri, tz_aware=True)
        seed(client["platform"], DEFAULT_SCHEMA, days=8, per_day=20, now=AT)
        client.close()
        env.setenv("MONGODB_URI", server.uri)
        env.setenv("PAYWATCH_SOURCE_DB", "platform")
        env.setenv("PAYWATCH_DB", "paywatch")
        env.setenv("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "300")
        get_settings.cache_clear()
        at = open_app()
        before = metrics_by_label(at)
        assert before["Success rate"] not in (None, "–")
    finally:
        server.stop()
    st.cache_data.clear()  # as when the cache's time is up
    at.run()
    assert not at.exception
    banner = texts(at.error)
    assert "Data source unavailable since" in banner
    after = metrics_by_label(at)
    assert after["Success rate"] == before["Success rate"]
    assert after["Events received"] == before["Events received"]
    assert "stale" in texts(at.markdown)


def test_a_database_down_from_the_start_shows_dashes_not_zeros(env):
    env.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    env.setenv("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "300")
    at = open_app()
    assert not at.exception
    assert "Data source unavailable since" in texts(at.error)
    values = [m.value for m in at.metric if m.label in ("Success rate", "Failed payments", "Events received")]
    assert values == ["—", "—", "—"]  # None, drawn by st.metric as a dash


AUTH = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-only-secret",
                 "client_id": "paywatch", "client_secret": "test-only",
                 "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"}}


@pytest.mark.parametrize(("email", "allowed"), [
    ("ops@example.com", True), ("OPS@Example.com", True), ("anyone@paywatch.example", True),
    ("ops@example.com.evil.test", False), ("intruder@example.org", False), ("", False), (None, False),
    ("paywatch.example", False),
])
def test_the_allow_list_matches_whole_emails_and_whole_domains(email, allowed):
    assert common.is_allowed(email, ["ops@example.com"], ["paywatch.example"]) is allowed


def test_an_allowed_user_sees_the_dashboard(env):
    env.setenv("PAYWATCH_AUTH_ALLOWED_EMAILS", "ops@example.com")
    env.setenv("PAYWATCH_AUTH_ALLOWED_DOMAINS", "paywatch.example")
    at = open_app(secrets=AUTH, user={"is_logged_in": True, "email": "Anyone@Paywatch.Example",
                                                     "email_verified": True})
    assert opened_cleanly(at)
    assert [s.value for s in at.subheader][:1] == ["Payments"]
    assert "served on 127.0.0.1 only" not in texts(at.info)


def test_a_user_not_on_the_allow_list_sees_nothing(env):
    env.setenv("PAYWATCH_AUTH_ALLOWED_EMAILS", "ops@example.com")
    at = open_app(secrets=AUTH, user={"is_logged_in": True, "email": "intruder@example.org",
                                                     "email_verified": True})
    assert "not on this dashboard's allow-list" in texts(at.error)
    assert not at.metric
    assert [b.label for b in at.button] == ["Log out"]


def test_a_user_with_an_unverified_email_is_refused(env):
    env.setenv("PAYWATCH_AUTH_ALLOWED_DOMAINS", "example.com")
    at = open_app(secrets=AUTH, user={"is_logged_in": True, "email": "ops@example.com", "email_verified": False})
    assert not at.metric
    assert "not verified" in texts(at.error)


def test_a_logged_out_visitor_is_asked_to_log_in(env):
    at = open_app(secrets=AUTH, user={"is_logged_in": False})
    assert not at.metric
    assert [b.label for b in at.button] == ["Log in"]


def test_a_page_url_does_not_bypass_the_login(env):
    at = open_app(secrets=AUTH, user={"is_logged_in": False})
    with pytest.raises(ValueError):
        at.switch_page("views/payments.py")  # not registered for this visitor


def test_without_login_a_server_listening_beyond_this_machine_shows_nothing(env):
    previous = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    try:
        at = open_app()
    finally:
        st_config.set_option("server.address", previous)
    assert not at.metric
    assert "listens beyond this machine" in texts(at.error)


def test_a_custom_range_covers_whole_local_days(env, src, settings):
    at = open_app(page="payments")
    at.sidebar.radio(key="range").set_value("custom").run()
    first, last_day = (AT - timedelta(days=3)).date(), (AT - timedelta(days=2)).date()
    at.sidebar.date_input(key="range_dates").set_value((first, last_day)).run()
    assert not at.exception
    window = Window(datetime(first.year, first.month, first.day, tzinfo=timezone.utc),
                    datetime(last_day.year, last_day.month, last_day.day, tzinfo=timezone.utc) + timedelta(days=1))
    pay = payments.window_summary(src, window, tuple(settings.currencies))
    tiles = metrics_by_label(at)
    label = f"{first:%d %b} – {last_day:%d %b %Y}".lower()
    assert tiles[f"Revenue · {label}"] == fmt.money(pay["revenue"]["usd"], "usd")
    assert tiles["Failed payments"] == fmt.count(pay["failed"])


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"status": "ok", "memory_pct": 42.5}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_probe_now_asks_the_health_url_and_shows_latency_and_memory(env):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env.setenv("PAYWATCH_HEALTH_URL", f"http://127.0.0.1:{server.server_port}/health")
        at = open_app(at_instant=None, page="system_health")
        assert "No probe results in this range yet" in texts(at.caption)
        at.button[0].click().run()
    finally:
        server.shutdown()
        thread.join()
    assert not at.exception
    assert "Probe answered HTTP 200" in texts(at.success)
    tiles = metrics_by_label(at)
    assert tiles["API error rate"] == "0.00%"
    assert tiles["Memory usage"] == "42.5%"
    assert tiles["API latency (avg)"].endswith(("ms", "s"))


def test_the_streamlit_configuration_is_the_safe_one():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["address"] == "127.0.0.1"


def test_the_dashboard_never_lets_data_through_as_html():
    sources = [p.read_text() for p in (ROOT / "dashboard").rglob("*.py")]
    assert not [s for s in sources if "unsafe_allow_html" in s]


def test_a_slow_database_shows_slow_and_the_last_good_values_not_an_outage(env, tmp_path):
    server = EmbeddedMongo(tmp_path / "own", memory=True, test_commands=True)
    server.ensure()
    try:
        from pymongo import MongoClient

        client = MongoClient(server.uri, tz_aware=True)
        seed(client["platform"], DEFAULT_SCHEMA, days=8, per_day=20, now=AT)
        env.setenv("MONGODB_URI", server.uri)
        env.setenv("PAYWATCH_SOURCE_DB", "platform")
        env.setenv("PAYWATCH_DB", "paywatch")
        get_settings.cache_clear()
        at = open_app()
        before = metrics_by_label(at)
        assert before["Success rate"] not in (None, "–")
        # Every query now runs past its maxTimeMS, as on an overloaded cluster (MaxTimeMSExpired, code 50).
        client.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn",
                              "data": {"failCommands": ["find", "aggregate", "getMore"], "errorCode": 50}})
        st.cache_data.clear()
        at.run()
        assert not at.exception
        assert "Data source unavailable" not in texts(at.error)
        assert "The database is slow" in texts(at.warning)
        assert "errmsg" not in texts(at.warning)  # one readable line, never a driver error dict
        assert metrics_by_label(at)["Success rate"] == before["Success rate"]
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        client.close()
    finally:
        server.stop()
