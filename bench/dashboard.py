"""``python -m bench dashboard``: how fast the Overview draws in a real browser, and what sessions cost.

``measure(volume)`` starts ``streamlit run dashboard/app.py`` (a child
process on a free loopback port) over the volume's database, then ``run``
opens the Overview in headless Chromium (Debian's package, through
playwright) and times, from navigation to every tile drawn (the metric tiles
are there, the script run has finished, every chart has drawn):

- ``first_visit_s``: the first page of a freshly started dashboard process
  (imports, the database connection, and empty caches);
- ``cold_s``: a new tab at an instant no cache has seen (``?at=`` with
  milliseconds nobody asked for), so every figure is read from the database;
- ``warm_s``: the same address again in a new tab, answered from
  ``st.cache_data``;
- ``rss_mib_idle`` / ``rss_mib_10_sessions``: the dashboard process's
  resident memory with no page open, and with 10 browser sessions open on
  the live Overview (Linux ``/proc``).

Against a dashboard that is already running (found by its port)::

    python -m bench.dashboard http://127.0.0.1:8501
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


from dashboard.process import EVERY_CHART_DRAWN, DashboardProcess

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SESSIONS = 10
TIMEOUT_MS = 1_800_000  # the reference volume's cold Overview takes minutes on a small machine
VIEWPORT = {"width": 1400, "height": 1000}
# Every tile drawn: metric tiles present, no script run in progress, every chart drawn.
DRAWN = f"""() => document.querySelectorAll('[data-testid="stMetric"]').length > 0
                 && !document.querySelector('[data-testid="stStatusWidget"]')
                 && {EVERY_CHART_DRAWN}"""
# Settings of a developer's shell that would make the measured dashboard differ from the volume's.
NOT_INHERITED = ("MONGODB_URI", "DATABASE_URL", "PAYWATCH_SOURCE_DB", "PAYWATCH_DB", "PAYWATCH_STATE_URI",
                 "PAYWATCH_CONFIG", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "STRIPE_API_KEY", "STRIPE_API_BASE")


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


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


def _open(context, url: str) -> tuple[float, int]:
    """Seconds until the page has drawn every tile and finished its run; and the tile count."""
    page = context.new_page()
    began = time.perf_counter()
    page.goto(url)
    page.wait_for_function(DRAWN, timeout=TIMEOUT_MS, polling=50)
    elapsed = time.perf_counter() - began
    return elapsed, page.locator('[data-testid="stMetric"]').count()


def _unseen(at: datetime) -> str:
    """``at`` as a ``?at=`` value with milliseconds no earlier request used: every cached figure misses."""
    unique = at.replace(microsecond=(int(time.time() * 1000) % 1000) * 1000)
    return unique.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run(url: str, at: datetime | None = None, pid: int | None = None, *, first_visit: bool = True,
        live_sessions: bool = True) -> dict:
    """Figures for docs/performance.md: first visit, cold and warm Overview, memory with 10 sessions.

    ``at``: the instant the cold/warm pages show (default: a second ago); ``pid``: the dashboard
    process (default: whoever listens on the URL's port).  ``first_visit=False`` skips the separate
    first visit (the cold open is then also the process's first page); ``live_sessions=False`` opens
    the 10 sessions on the cold/warm address (answered from the cache) instead of the live Overview,
    which redraws every 30 s and, on a volume where that takes minutes, never settles."""
    from playwright.sync_api import sync_playwright

    base = url.rstrip("/")
    pid = pid or listening_pid(urlsplit(base).port or 80)
    at = at or datetime.now(timezone.utc) - timedelta(seconds=1)
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("chromium is not installed ('make browser' installs Debian's package)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            # The first visit: a different instant, so the cold one below still misses every cache.
            first_s = _open(context, f"{base}/?at={_unseen(at - timedelta(minutes=1))}")[0] if first_visit else None
            frozen = f"{base}/?at={_unseen(at)}"
            cold_s, tiles = _open(context, frozen)
            warm_s, _ = _open(context, frozen)
            for page in context.pages:
                page.close()
            context.close()
            time.sleep(2)  # let the closed sessions go
            idle = rss_mib(pid)
            sessions = [browser.new_context(viewport=VIEWPORT) for _ in range(SESSIONS)]
            session_url = f"{base}/" if live_sessions else frozen
            session_s = [round(_open(session, session_url)[0], 2) for session in sessions]
            busy = rss_mib(pid)
        finally:
            browser.close()
    return {
        "overview_tiles": tiles,
        "first_visit_s": None if first_s is None else round(first_s, 2),
        "cold_is_first_visit": first_s is None,
        "cold_s": round(cold_s, 2),
        "warm_s": round(warm_s, 2),
        "at": at.isoformat(),
        "dashboard_pid": pid,
        "rss_mib_idle": idle,
        f"rss_mib_{SESSIONS}_sessions": busy,
        "rss_mib_per_session": None if idle is None or busy is None else round((busy - idle) / SESSIONS, 1),
        "sessions_on": "the live Overview (/)" if live_sessions else "the cold/warm ?at= address (cached)",
        "session_open_s": session_s,
    }


class Dashboard(DashboardProcess):
    """The dashboard over one volume, with no secrets file: a developer's [auth] section would put a
    login page in front of the Overview."""

    def __init__(self, env: dict[str, str], log_path: Path, drop: tuple[str, ...] = (), app: Path | None = None):
        super().__init__(env, log_path, ("--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
                                         "--secrets.files", str(log_path.parent / "no-secrets.toml")), drop,
                         **({"app": app} if app else {}))


def measure(volume) -> dict:
    """Start a dashboard over ``volume`` and measure it (``python -m bench dashboard``).

    On the reference volume a full Overview takes minutes here, so the cold open is the first
    visit and the 10 sessions open the cached address (see :func:`run`)."""
    from pymongo import MongoClient

    from bench.common import Database, newest_payment, say, settings_for

    database = Database(volume)
    database.ensure_seeded()
    uri = database.start()
    settings = settings_for(uri, volume)
    try:
        with MongoClient(uri, tz_aware=True) as client:
            at = newest_payment(client, volume, settings)
        env = {"MONGODB_URI": uri, "PAYWATCH_SOURCE_DB": volume.database,
               "PAYWATCH_DB": f"{volume.database}_state", "PAYWATCH_HOME": str(volume.home),
               "PAYWATCH_QUERY_TIMEOUT_MS": str(600_000)}
        say(f"starting the dashboard over the {volume.name} volume ...")
        with Dashboard(env, volume.home / "dashboard-bench.log", drop=NOT_INHERITED) as dash:
            small = volume.name == "demo"
            result = run(dash.url, at=at, pid=dash.proc.pid, first_visit=small, live_sessions=small)
        say(f"{volume.name} Overview: first visit {result['first_visit_s'] or '(= cold)'} s, cold {result['cold_s']} s, "
            f"warm {result['warm_s']} s; RSS {result['rss_mib_idle']} MiB idle, "
            f"{result[f'rss_mib_{SESSIONS}_sessions']} MiB with {SESSIONS} sessions")
        return {"volume": {"name": volume.name, "describe": volume.describe()}, **result,
                "command": f"python -m bench dashboard --volume {volume.name}"}
    finally:
        database.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard",
                                     description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8501", help="the running dashboard")
    args = parser.parse_args(argv)
    json.dump(run(args.url), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
