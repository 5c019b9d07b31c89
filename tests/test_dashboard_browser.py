"""End to end: `streamlit run` over demo data, every page opened in headless Chromium.

Screenshots of each page go to ``$PAYWATCH_SCREENSHOTS`` when it is set, else
to the test's temporary folder, so a test run changes no tracked file.  The
pictures in docs/screenshots/ (the README shows the Overview) are refreshed
on purpose: ``PAYWATCH_SCREENSHOTS=docs/screenshots pytest tests/test_dashboard_browser.py``.
This test must run, not skip: CI installs Debian's chromium (`make browser`)
and runs as root, hence --no-sandbox.

Before the pages open, the alert worker evaluates the last two hours every
ten minutes (console channel), so the Alerts page shows states, a history
and messages, as after ``make run``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from browser import chromium
from browser.server import ROOT, StreamlitServer
from alerts.worker import Worker
from demo.seed import seed

pytestmark = pytest.mark.browser

PAGES = [("overview", "Overview"), ("payments", "Payments"), ("webhooks", "Webhooks"),
         ("enrollments", "Enrollments"), ("system_health", "System Health"), ("alerts", "Alerts")]
SECTIONS = ["Payments", "Webhooks", "Enrollments", "System Health"]


def screenshots_dir(tmp_path: Path) -> Path:
    """``$PAYWATCH_SCREENSHOTS`` (relative to the repository) or a folder of this test's own."""
    configured = os.environ.get("PAYWATCH_SCREENSHOTS")
    return ROOT / configured if configured else tmp_path / "screenshots"


def run_worker(settings, now: datetime) -> None:
    """Evaluate the default rules every ten minutes over the last two hours, then now."""
    worker = Worker(settings, use_lease=False)
    for minutes in range(120, 0, -10):
        worker.cycle(now - timedelta(minutes=minutes))
    assert worker.cycle()["leader"]


def test_every_page_opens_in_chromium_without_an_exception(platform_db, make_settings, db_names, mongo_uri, tmp_path):
    assert chromium.available(), "Debian's chromium is missing: 'make browser' installs it"
    settings = make_settings(alerts={"pace": 0})
    shots = screenshots_dir(tmp_path)
    now = datetime.now(timezone.utc)
    seed(platform_db, settings.schema, days=8, per_day=80, now=now)  # up to now: the live view has data
    run_worker(settings, now)
    env = {"MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
           "PAYWATCH_CURRENCIES": "usd,eur,gbp"}
    no_secrets = ("--secrets.files", str(tmp_path / "no-secrets.toml"))  # a developer's [auth] stays out
    with StreamlitServer(env, tmp_path / "streamlit.log", no_secrets) as server, sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page(viewport={"width": chromium.WIDTH, "height": chromium.HEIGHT})
            for i, (name, title) in enumerate(PAGES):
                page.goto(f"{server.url}/" + ("" if i == 0 else name))  # the default page lives at /
                chromium.wait_until_drawn(page, '[data-testid="stMetric"]')
                assert page.locator('[data-testid="stException"]').count() == 0, server.log()
                assert page.locator("h2", has_text=title).count() >= 1
                assert "Data source unavailable" not in page.inner_text("body")
                if name == "overview":
                    headings = page.locator('[data-testid="stHeadingWithActionElements"] h3').all_inner_texts()
                    assert [h.strip() for h in headings] == SECTIONS
                    assert page.locator('[data-testid="stMetric"]').count() >= 20
                if name == "alerts":
                    # The console message of the firing alert (code blocks draw after the script run ends).
                    page.locator('[data-testid="stCode"]', has_text="Payments stuck in processing").first.wait_for()
                    assert "The alert worker is running" in page.inner_text("body")
                chromium.screenshot(page, shots / f"{name}.png")
                assert (shots / f"{name}.png").stat().st_size > 20_000
        finally:
            browser.close()
