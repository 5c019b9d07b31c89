"""End to end: `streamlit run` over demo data, every page opened in headless Chromium.

Screenshots of each page land in docs/screenshots/ (the README shows the
Overview).  This test must run, not skip: CI installs Debian's chromium
(`make browser`) and runs as root, hence --no-sandbox.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from browser import chromium
from browser.server import ROOT, StreamlitServer
from demo.seed import seed

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "docs" / "screenshots"
PAGES = [("overview", "Overview"), ("payments", "Payments"), ("webhooks", "Webhooks"),
         ("enrollments", "Enrollments"), ("system_health", "System Health")]
SECTIONS = ["Payments", "Webhooks", "Enrollments", "System Health"]


def test_every_page_opens_in_chromium_without_an_exception(platform_db, settings, db_names, mongo_uri, tmp_path):
    assert chromium.available(), "Debian's chromium is missing: 'make browser' installs it"
    seed(platform_db, settings.schema, days=8, per_day=80)  # up to now: the live view has data
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
                chromium.screenshot(page, SCREENSHOTS / f"{name}.png")
                assert (SCREENSHOTS / f"{name}.png").stat().st_size > 20_000
        finally:
            browser.close()
