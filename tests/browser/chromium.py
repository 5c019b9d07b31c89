"""Headless Chromium through playwright, and what a Streamlit page needs before a screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

from dashboard.process import EVERY_CHART_DRAWN

CHROMIUM = "/usr/bin/chromium"
# Without the networking flags Chromium keeps trying hosts it cannot reach from here.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1400, 1000


def available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                      args=ARGS, headless=True)


def wait_until_drawn(page, selector: str, count: int = 1, timeout_ms: int = 90_000) -> None:
    """Wait for ``count`` elements matching ``selector`` and for the app to stop running."""
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n",
        arg=[selector, count], timeout=timeout_ms)
    # The status widget shows while a script run is in progress; then each chart draws itself.
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    page.wait_for_function(f"() => {EVERY_CHART_DRAWN}", timeout=timeout_ms)


def full_height(page) -> int:
    """Streamlit scrolls inside its main section, not the document: its scroll height is the page's."""
    return page.evaluate("""() => Math.max(document.body.scrollHeight,
        ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], section')]
            .map(e => e.scrollHeight))""")


def screenshot(page, path: Path, width: int = WIDTH) -> None:
    """The whole page at ``width`` pixels: the viewport grows to the content, then shrinks back."""
    page.set_viewport_size({"width": width, "height": max(HEIGHT, full_height(page) + 40)})
    page.wait_for_timeout(800)  # charts re-lay themselves out at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": HEIGHT})
