"""End to end: `streamlit run` over demo data, every page opened in headless Chromium.

Screenshots of each page go to ``$PAYWATCH_SCREENSHOTS`` when it is set, else
to the test's temporary folder, so a test run changes no tracked file.  The
pictures in docs/screenshots/ (the README shows the Overview) are refreshed
on purpose: ``PAYWATCH_SCREENSHOTS=docs/screenshots pytest tests/test_dashboard_browser.py``.
This test must run, not skip: CI installs Debian's chromium (`make browser`)
and runs as root, hence --no-sandbox.

Before the pages open, a few payments go through localstripe and the Stripe
mirror syncs once, and the alert worker evaluates the last two hours every
ten minutes (console channel), so the Stripe, Reconciliation and Alerts
pages show data, as after ``make run``.
"""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from browser import chromium
from browser.server import ROOT, StreamlitServer
from dashboard.common import LIVE_TTL_S
from alerts.worker import Worker
from demo.seed import seed
from demo.stripe_platform import StripePlatform
from fakes.stripe_extras import localstripe  # noqa: F401 - the session's localstripe
from metrics.stripe.client import StripeOptions
from metrics.stripe.mirror import sync

pytestmark = pytest.mark.browser

# (page, its title, what shows it has drawn): every page app.py registers.
PAGES = [("overview", "Overview", "stMetric"), ("payments", "Payments", "stMetric"),
         ("webhooks", "Webhooks", "stMetric"), ("enrollments", "Enrollments", "stMetric"),
         ("system_health", "System Health", "stMetric"), ("alerts", "Alerts", "stMetric"),
         ("notifications", "Notifications", "stDataFrame"), ("reports", "Reports", "stDownloadButton"), ("stripe", "Stripe", "stMetric"),
         ("reconciliation", "Reconciliation", "stMetric")]
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


def pay_through_stripe(platform_db, settings, localstripe) -> datetime:
    """A few checkouts through localstripe, as ``make run``'s warm-up does, then one mirror sync."""
    platform = StripePlatform(platform_db, settings.schema, api_key=localstripe.api_key,
                              api_base=localstripe.base_url, rng=random.Random(5))
    platform.warm_up(10)
    # The seeded history never went through Stripe: look back only over these checkouts.
    report = sync(settings, StripeOptions(backfill_days=2 / 1440, max_requests_per_second=0))
    assert report.ok and report.synced_through, (report.error, report.skipped,
                                                  {n: (r.status, r.stored) for n, r in report.resources.items()})
    return report.started_at


def wait_until_pages_see(instant: datetime) -> None:
    """Live pages show the figures as of the last whole LIVE_TTL_S seconds: wait until that is past ``instant``."""
    while True:
        now = time.time()
        if now - now % LIVE_TTL_S > instant.timestamp():
            return
        time.sleep(LIVE_TTL_S - now % LIVE_TTL_S + 0.1)


def test_every_page_opens_in_chromium_without_an_exception(platform_db, make_settings, db_names, mongo_uri, tmp_path,
                                                           localstripe):
    assert chromium.available(), "Debian's chromium is missing: 'make browser' installs it"
    stripe_env = {"STRIPE_API_KEY": localstripe.api_key, "STRIPE_API_BASE": localstripe.base_url}
    settings = make_settings(alerts={"pace": 0}, **stripe_env)
    shots = screenshots_dir(tmp_path)
    now = datetime.now(timezone.utc)
    seed(platform_db, settings.schema, days=8, per_day=80, now=now - timedelta(minutes=5))  # the live view has data
    synced_at = pay_through_stripe(platform_db, settings, localstripe)
    run_worker(settings, now)
    env = {"MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
           "PAYWATCH_CURRENCIES": "usd,eur,gbp", **stripe_env}
    no_secrets = ("--secrets.files", str(tmp_path / "no-secrets.toml"))  # a developer's [auth] stays out
    with StreamlitServer(env, tmp_path / "streamlit.log", no_secrets) as server, sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page(viewport={"width": chromium.WIDTH, "height": chromium.HEIGHT})
            for i, (name, title, drawn) in enumerate(PAGES):
                if name == "stripe":
                    wait_until_pages_see(synced_at)  # usually long past by now
                page.goto(f"{server.url}/" + ("" if i == 0 else name))  # the default page lives at /
                chromium.wait_until_drawn(page, f'[data-testid="{drawn}"]')
                assert page.locator('[data-testid="stException"]').count() == 0, server.log()
                assert page.locator("h2", has_text=title).count() >= 1
                assert "Data source unavailable" not in page.inner_text("body")
                if name == "overview":
                    headings = page.locator('[data-testid="stHeadingWithActionElements"] h3').all_inner_texts()
                    assert [h.strip() for h in headings] == SECTIONS
                    assert page.locator('[data-testid="stMetric"]').count() >= 20
                if name == "alerts":
                    # The console message of the firing alert.
                    page.locator('[data-testid="stText"]', has_text="Payments stuck in processing").first.wait_for()
                    assert "The alert worker is running" in page.inner_text("body")
                if name == "stripe":
                    assert "has not synced yet" not in page.inner_text("body")
                chromium.screenshot(page, shots / f"{name}.png")
                assert (shots / f"{name}.png").stat().st_size > 20_000
        finally:
            browser.close()
