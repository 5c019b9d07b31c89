"""Charts in headless Chromium: platform text holding markup is shown as text in the chart and in its
tooltip, and runs nothing (ECharts draws names on a canvas and escapes them in tooltips; our options
never put them in a template, tests/test_dashboard_charts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from browser import chromium
from browser.server import ROOT, StreamlitServer

pytestmark = pytest.mark.browser

EVIL = '<img src=x onerror="window.__pwned=1">{b}'
APP = f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import streamlit as st

from dashboard import charts
from dashboard.views.alerts import timeline
from metrics.frames import series_frame
from metrics.windows import Window

EVIL = {EVIL!r}
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
st.header("Charts", anchor=False)
charts.show(charts.bar_chart([EVIL, "card_declined"], [3, 1], title="Failed payments by decline code",
                             value_title="Failed payments"), key="bars")
frame = series_frame([{{"bucket": T0 + timedelta(hours=h), "revenue": 12345 * (h + 1)}} for h in range(6)], "UTC")
charts.show(charts.time_chart(frame, [(EVIL, "revenue", charts.NEUTRAL)], title="Revenue per hour",
                              y_title="Revenue", axis=charts.money_axis("usd"), kind="bar"), key="revenue")
view = SimpleNamespace(window=Window(T0 - timedelta(hours=1), T0), tz=ZoneInfo("UTC"))
charts.show(timeline([{{"rule_id": "failed_payments", "subject": EVIL, "at": T0 - timedelta(minutes=30),
                       "from": "pending", "to": "firing", "value_text": EVIL}}], view), key="timeline")
'''
TOOLTIP = """(i) => [...document.querySelectorAll('[data-testid="stEChartsChart"]')[i].querySelectorAll('div')]
    .filter(d => d.style.zIndex === '9999999' && d.style.display !== 'none' && d.style.opacity !== '0')
    .map(d => d.innerText).join('\\n')"""


# Where a chart's canvas first shows this colour (left to right): the firing marker starts the red bar.
FIRST_PIXEL = """([i, r, g, b]) => {
    const canvas = document.querySelectorAll('[data-testid="stEChartsChart"]')[i].querySelector('canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const scale = canvas.width / canvas.getBoundingClientRect().width;
    for (let x = 0; x < canvas.width; x++)
        for (let y = 0; y < canvas.height; y++) {
            const k = (y * canvas.width + x) * 4;
            if (Math.abs(data[k] - r) < 8 && Math.abs(data[k + 1] - g) < 8 && Math.abs(data[k + 2] - b) < 8)
                return [x / scale, y / scale];
        }
    return null;
}"""


def hover_until_tooltip(page, chart: int, points: list[tuple[float, float]]) -> str:
    """Move over ``points`` (fractions of the chart's box) until its tooltip shows; its text."""
    box = page.locator('[data-testid="stEChartsChart"]').nth(chart).bounding_box()
    for fx, fy in points:
        page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        page.wait_for_timeout(60)
        text = page.evaluate(TOOLTIP, chart)
        if text.strip():
            return text
    return ""


def test_markup_in_platform_text_is_shown_as_text_in_charts_and_tooltips(tmp_path: Path):
    assert chromium.available(), "Debian's chromium is missing: 'make browser' installs it"
    app = tmp_path / "charts_app.py"
    app.write_text(APP)
    with StreamlitServer({}, tmp_path / "streamlit.log", ("--secrets.files", str(tmp_path / "none.toml")),
                         app=app) as server, sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page(viewport={"width": chromium.WIDTH, "height": chromium.HEIGHT})
            page.goto(server.url)
            chromium.wait_until_drawn(page, '[data-testid="stEChartsChart"] canvas', count=3)
            assert page.locator('[data-testid="stException"]').count() == 0, server.log()
            bars = hover_until_tooltip(page, 0, [(0.5, y / 20) for y in range(4, 12)])
            revenue = hover_until_tooltip(page, 1, [(x / 10, 0.6) for x in range(3, 9)])
            page.wait_for_timeout(1500)  # ECharts' first animation
            timeline = page.locator('[data-testid="stEChartsChart"]').nth(2)
            timeline.scroll_into_view_if_needed()
            box = timeline.bounding_box()
            x, y = page.evaluate(FIRST_PIXEL, [2, 0xd6, 0x45, 0x45])
            firing = hover_until_tooltip(page, 2, [((x + dx) / box["width"], (y + dy) / box["height"])
                                                   for dx in (4, 2, 6) for dy in (4, 2, 6)])
            assert EVIL in bars, bars
            assert EVIL in revenue and "$" in revenue, revenue
            assert f"failed_payments [{EVIL}]: pending → firing (value {EVIL})" in firing, firing
            assert page.evaluate("() => window.__pwned") is None
            assert page.locator("img[src=x]").count() == 0
        finally:
            browser.close()
