"""How fast the Overview draws in a real browser, and what open sessions cost the dashboard.

    python -m bench.dashboard http://127.0.0.1:8501      (a running `streamlit run dashboard/app.py`)

``run(url)`` opens the Overview in headless Chromium (Debian's package) and
measures, from navigation to every tile drawn and the script run finished:

- ``cold_s``: the first open at an instant no cache has seen (``?at=`` with
  a fresh timestamp), so every query goes to the database;
- ``warm_s``: the same address again in a new tab, answered from
  ``st.cache_data``;
- ``rss_mb_idle`` / ``rss_mb_10_sessions``: the dashboard process's resident
  memory before and with 10 browser sessions open on the live Overview
  (found through the port it listens on; Linux ``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SESSIONS = 10
TIMEOUT_MS = 300_000
DRAWN = """() => document.querySelectorAll('[data-testid="stMetric"]').length > 0
                 && !document.querySelector('[data-testid="stStatusWidget"]')"""


def listening_pid(port: int) -> int | None:
    """The process listening on this TCP port (Linux: /proc/net/tcp* and each process's sockets)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _open(context, url: str) -> tuple[float, int]:
    """Seconds until the page has drawn its tiles and finished its run; and the tile count."""
    page = context.new_page()
    began = time.perf_counter()
    page.goto(url)
    page.wait_for_function(DRAWN, timeout=TIMEOUT_MS, polling=100)
    elapsed = time.perf_counter() - began
    return elapsed, page.locator('[data-testid="stMetric"]').count()


def run(url: str) -> dict:
    """Figures for docs/performance.md: cold and warm Overview, memory with 10 sessions."""
    base = url.rstrip("/")
    pid = listening_pid(urlsplit(base).port or 80)
    # An instant with milliseconds nobody asked for before: every cached query misses.
    unseen = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat(timespec="milliseconds")
    frozen = f"{base}/?at={unseen.replace('+00:00', 'Z')}"
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            cold_s, tiles = _open(context, frozen)
            warm_s, _ = _open(context, frozen)
            for page in context.pages:
                page.close()
            idle = rss_mb(pid)
            sessions = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(SESSIONS)]
            for session in sessions:
                _open(session, f"{base}/")
            busy = rss_mb(pid)
        finally:
            browser.close()
    return {
        "overview_tiles": tiles,
        "cold_s": round(cold_s, 2),
        "warm_s": round(warm_s, 2),
        "dashboard_pid": pid,
        "rss_mb_idle": idle,
        f"rss_mb_{SESSIONS}_sessions": busy,
        "rss_mb_per_session": None if idle is None or busy is None else round((busy - idle) / SESSIONS, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8501", help="the running dashboard")
    args = parser.parse_args(argv)
    json.dump(run(args.url), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
