"""``python -m bench rollups`` and ``python -m bench load``: what the figures cost once rollups are built.

**rollups** (``measure``), on one volume, against a server that is already
running (as under ``make run``), with the rollups built and brought up to date:

* the initial build, ``python -m metrics rollups build`` as a person runs it
  (its progress lines go to stderr as they come), skipped when the volume's
  rollups are already built;
* ``build_snapshot`` in this process, through a rollup Source;
* ``python -m metrics snapshot --json`` wall time (a new process, the server
  already up), and ``--raw --json`` once in the same run: the ratio of the
  times, and whether both JSONs agree (every value but the p95s exactly, the
  p95s side by side);
* the database time of each dashboard page view: each page is opened once
  through Streamlit's ``AppTest`` to record which figure functions it calls
  with which arguments, then those calls are replayed against a rollup Source
  (no Streamlit cache), so the figure is the time the database work of one
  page view takes, cold (nothing remembered) and steady (after another
  process wrote the newest hour of every series);
* every page drawn in headless Chromium, cold in a new tab and reached from the sidebar
  (``browser_pages``);
* one alert cycle (``Worker.cycle``) and the weekly report (``build_report``).

**load** (``steady_load``): point 8 of the rollups work, the load on the
platform's database in steady state.  A pymongo ``CommandListener`` counts
every command per database and collection and the documents each returned.
Five minutes are played on a virtual clock that starts where the volume's
data ends: the worker's rollup refresh every 5 s and its evaluation cycle
every 60 s (its own Rollups, as in its own process), and N dashboard sessions
of the Overview in one Streamlit process (``AppTest``, sharing
``st.cache_data`` as Streamlit's sessions do), each redrawn every 30 s.  The
verification step (one day of history every 10 minutes) is measured apart and
added at a tenth per minute.  No new payments arrive during the play.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pymongo import MongoClient, monitoring

from bench.common import QUERY_TIMEOUT_MS, ROOT, Database, Volume, machine, newest_payment, say
from dashboard.process import EVERY_CHART_DRAWN
from metrics.windows import iso

APP = ROOT / "dashboard" / "app.py"
PAGES = ("overview", "payments", "webhooks", "enrollments", "system_health", "alerts", "notifications",
         "reports", "stripe", "reconciliation")
# The environment a child process must not inherit: it is given its own below.
NOT_INHERITED = ("MONGODB_URI", "DATABASE_URL", "PAYWATCH_SOURCE_DB", "PAYWATCH_DB", "PAYWATCH_STATE_URI",
                 "PAYWATCH_CONFIG", "PAYWATCH_HEALTH_URL", "PAYWATCH_HEARTBEAT_URL", "SLACK_WEBHOOK_URL",
                 "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "STRIPE_API_KEY", "STRIPE_API_BASE", "PAYWATCH_HOME")
LOAD_MINUTES = 5
DASHBOARD_REFRESH_S = 30
WORKER_REFRESH_S = 5
WORKER_CYCLE_S = 60
VERIFY_EVERY_MIN = 10


# --- Counting commands and documents per collection ---------------------------------------------

class TrafficLog(monitoring.CommandListener):
    """Commands and documents returned, per (database, collection, command), while recording."""

    NAMED = ("find", "aggregate", "count", "distinct", "insert", "update", "delete", "findAndModify",
             "createIndexes", "listIndexes")

    def __init__(self):
        self.recording = False
        self.rows: dict[tuple[str, str, str], list[int]] = {}
        self._pending: dict[int, tuple[str, str, str]] = {}

    def started(self, event):
        if not self.recording:
            return
        name = event.command_name
        if name == "getMore":
            coll = event.command.get("collection", "?")
        elif name in self.NAMED:
            coll = event.command.get(name)
        else:
            coll = None
        if not isinstance(coll, str):
            coll = "(changeStream, whole database)" if name == "aggregate" else "-"
        self._pending[event.request_id] = (event.database_name, coll, name)

    def succeeded(self, event):
        key = self._pending.pop(event.request_id, None)
        if key is None:
            return
        row = self.rows.setdefault(key, [0, 0, 0.0])
        row[0] += 1
        row[1] += returned(event.reply)
        row[2] += event.duration_micros / 1e6

    def failed(self, event):
        key = self._pending.pop(event.request_id, None)
        if key is not None:
            row = self.rows.setdefault(key, [0, 0, 0.0])
            row[0] += 1
            row[2] += event.duration_micros / 1e6

    @contextmanager
    def counting(self):
        self.rows, self._pending = {}, {}
        self.recording = True
        try:
            yield self
        finally:
            self.recording = False

    def table(self, per: float = 1.0) -> list[dict]:
        return [{"database": db, "collection": coll, "command": cmd, "commands": round(n / per, 2),
                 "documents_returned": round(d / per, 1), "server_s": round(t / per, 3)}
                for (db, coll, cmd), (n, d, t) in sorted(self.rows.items())]

    def totals(self, database: str, per: float = 1.0) -> dict:
        n = sum(v[0] for k, v in self.rows.items() if k[0] == database)
        d = sum(v[1] for k, v in self.rows.items() if k[0] == database)
        return {"commands": round(n / per, 2), "documents_returned": round(d / per, 1)}


def returned(reply) -> int:
    """Documents a command's reply carried: a cursor's batch, or ``n`` of a count."""
    if not isinstance(reply, dict):
        return 0
    cursor = reply.get("cursor")
    if isinstance(cursor, dict):
        return len(cursor.get("firstBatch") or cursor.get("nextBatch") or [])
    if "values" in reply and isinstance(reply["values"], list):  # distinct
        return len(reply["values"])
    return 0


_TRAFFIC: TrafficLog | None = None


def traffic_log() -> TrafficLog:
    """The one traffic listener of this process; registered before any client exists, it sees them all."""
    global _TRAFFIC
    if _TRAFFIC is None:
        _TRAFFIC = TrafficLog()
        monitoring.register(_TRAFFIC)
    return _TRAFFIC


# --- Comparing snapshots ------------------------------------------------------------------------

def compare_snapshots(rolled: dict, raw: dict) -> dict:
    """Every leaf of both snapshot JSONs: equal, or (for a p95) side by side with its relative gap."""
    differ, p95s = [], []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{path}.{key}" if path else key)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif "p95" in path.rsplit(".", 1)[-1]:
            gap = (abs(a - b) / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None)
            p95s.append({"path": path, "rollups": a, "raw": b, "relative_gap": None if gap is None else round(gap, 4)})
        elif a != b:
            differ.append({"path": path, "rollups": a, "raw": b})

    walk(rolled, raw, "")
    return {"equal_except_p95": not differ, "differ": differ, "p95": p95s}


# --- Helpers ------------------------------------------------------------------------------------

def embedded_settings(volume: Volume):
    """As ``make run`` has it: no ``MONGODB_URI``, the embedded server of ``PAYWATCH_HOME`` found running.

    (With a URI the snapshot asks ``dbStats``, which SecantusDB computes by
    encoding every document; on the embedded server it measures the files.)
    """
    from metrics.settings import load_settings

    return load_settings(source_db=volume.database, state_db=f"{volume.database}_state", home=volume.home,
                         query_timeout_ms=QUERY_TIMEOUT_MS)


def child_env(volume: Volume, settings) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update({"PAYWATCH_SOURCE_DB": volume.database, "PAYWATCH_DB": settings.state_db,
                "PAYWATCH_HOME": str(volume.home), "PAYWATCH_QUERY_TIMEOUT_MS": str(settings.query_timeout_ms)})
    return env


def timed(fn, runs: int, before: Callable[[], object] = lambda: None) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn``, each after ``before()`` (not timed)."""
    out = []
    for _ in range(runs):
        before()
        started = time.perf_counter()
        fn()
        out.append(round(time.perf_counter() - started, 3))
    return out


def _commands_of(fn, before: Callable[[], object]) -> dict:
    """What one call of ``fn`` (after ``before()``) sent: commands and documents returned, over all databases."""
    before()
    with traffic_log().counting() as log:
        fn()
    return {"commands": sum(n for n, _, _ in log.rows.values()),
            "documents_returned": sum(d for _, d, _ in log.rows.values())}


def newest_written(settings, at: datetime) -> Callable[[], None]:
    """What the worker does when a payment arrives: the newest hour of every series written again, by
    another process's rollups.  A refresh after it forgets what was read of that hour (and only that)."""
    from metrics.db import source
    from metrics.rollups import attach
    from metrics.rollups.store import SERIES

    worker = attach(source(settings), settings, refresh=False).rollups
    return lambda: [worker.recompute(spec, [at]) for spec in SERIES.values()]


def summary(times: list[float]) -> dict:
    return {"runs": times, "median": round(statistics.median(times), 3), "min": min(times)}


def _configure_env(volume: Volume, settings) -> None:
    """The dashboard (run by AppTest in this process) reads its configuration from the environment."""
    for key in NOT_INHERITED:
        os.environ.pop(key, None)
    os.environ.update(child_env(volume, settings))
    os.environ.setdefault("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "5000")


def _reset_streamlit() -> None:
    import streamlit as st

    from metrics import db as dbmod
    from metrics.settings import get_settings

    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    dbmod.reset()


def rollups_built(src, settings) -> bool:
    from metrics import rollups
    from metrics.quality import COLLECTIONS

    store = rollups.attach(src, settings, refresh=False).rollups
    return all(store.ready(key) for key in COLLECTIONS)


# --- rollups ------------------------------------------------------------------------------------

def measure(volume: Volume, runs: int = 3, raw: bool = True, rebuild: bool = False) -> dict:
    from metrics import rollups

    traffic_log()
    database = Database(volume)
    database.ensure_seeded()
    uri = database.start()
    settings = embedded_settings(volume)
    env = child_env(volume, settings)
    client = MongoClient(uri, tz_aware=True)
    result: dict = {"volume": {"name": volume.name, "describe": volume.describe(), "home": str(volume.home)},
                    "machine_at_start": machine()}
    try:
        plain = database.source(client, settings)
        result["volume"]["documents"] = {k: plain.coll(k).estimated_document_count()
                                         for k in ("payments", "webhook_events", "enrollments")}
        at = newest_payment(client, volume, settings)
        result["at"] = iso(at)

        # The initial build, as a person runs it; its progress lines pass through to stderr.
        if rebuild or not rollups_built(plain, settings):
            say(f"{volume.name}: building the rollups (python -m metrics rollups build) ...")
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "metrics", "rollups", "build"], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            result["initial_build"] = {"seconds": round(time.perf_counter() - started, 1),
                                       "load_average_before_after": [round(load_before, 2),
                                                                     round(os.getloadavg()[0], 2)],
                                       "command": "python -m metrics rollups build"}
            say(f"{volume.name}: rollups built in {result['initial_build']['seconds']} s")
        else:
            result["initial_build"] = "already built (delete the volume's rollup_* collections or pass --rebuild)"

        src = rollups.attach(plain, settings)  # brought up to date: "built and fresh"
        result["refresh_nothing_new_s"] = summary(timed(src.rollups.refresh, runs))

        from metrics.snapshot import build_snapshot
        # Cold: nothing remembered (Rollups.remembered), as in a process that just started.
        result["build_snapshot_in_process_s"] = summary(timed(
            lambda: build_snapshot(src, settings, at), runs, before=src.rollups.forget))
        # Steady: the worker wrote the newest hour of every series since the last snapshot.
        write_newest = newest_written(settings, at)
        result["build_snapshot_in_process_steady_s"] = summary(timed(
            lambda: build_snapshot(src, settings, at), runs, before=lambda: (write_newest(), src.rollups.refresh())))
        say(f"{volume.name}: build_snapshot {result['build_snapshot_in_process_s']['median']} s cold, "
            f"{result['build_snapshot_in_process_steady_s']['median']} s steady")

        def cli(*extra):
            done = subprocess.run([sys.executable, "-m", "metrics", "snapshot", "--json", "--at", iso(at), *extra],
                                  cwd=ROOT, env=env, check=True, capture_output=True, text=True)
            return json.loads(done.stdout)

        walls, rolled_json = [], None
        for _ in range(runs):
            started = time.perf_counter()
            rolled_json = cli()
            walls.append(round(time.perf_counter() - started, 3))
        result["cli_snapshot_json_wall_s"] = summary(walls)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import metrics.snapshot, metrics.rollups"], cwd=ROOT, env=env, check=True)
        result["python_start_and_imports_s"] = round(time.perf_counter() - started, 3)
        say(f"{volume.name}: snapshot --json {result['cli_snapshot_json_wall_s']['median']} s")
        if raw:
            say(f"{volume.name}: snapshot --raw --json (every figure from the raw documents) ...")
            started = time.perf_counter()
            raw_json = cli("--raw")
            raw_s = round(time.perf_counter() - started, 3)
            result["raw_against_rollups"] = {
                "raw_wall_s": raw_s, "rollups_wall_s": walls[-1],
                "ratio": round(raw_s / walls[-1], 1) if walls[-1] else None,
                **compare_snapshots(rolled_json, raw_json)}
            say(f"{volume.name}: --raw {raw_s} s; equal except p95: "
                f"{result['raw_against_rollups']['equal_except_p95']}")

        result["dashboard_page_db_s"] = page_db_times(volume, settings, at, runs)
        result["dashboard_pages_in_chromium"] = browser_pages(volume, settings, at)

        result["alert_cycle_s"] = alert_cycles(settings, at, runs)
        result["weekly_report_s"] = weekly_report(settings, at, max(1, runs - 1))
        result["machine_at_end"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
        return result
    finally:
        client.close()
        _reset_streamlit()
        database.stop()


def record_page_calls(page: str, at: datetime) -> list[tuple[str, str, tuple]]:
    """Open ``page`` through the app (AppTest) at ``at`` and return every figure function it called."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard import common
    from metrics.db import Source

    calls: list[tuple[str, str, tuple]] = []
    original = common._function

    def recording(name):
        fn = original(name)

        def call(first, *args):
            calls.append((name, "platform" if isinstance(first, Source) else "state", args))
            return fn(first, *args)
        return call

    _reset_streamlit()
    common._function = recording
    try:
        app = AppTest.from_file(str(APP), default_timeout=600)
        app.query_params["at"] = iso(at)
        app.run()
        if page != "overview":
            calls.clear()  # the app opened on the Overview first: only the page's own calls count,
            st.cache_data.clear()  # each from the database (a cold page view)
            app.switch_page(f"views/{page}.py").run()
        if app.exception:
            raise RuntimeError(f"{page}: {app.exception[0].value}")
    finally:
        common._function = original
    return calls


def page_db_times(volume, settings, at, runs) -> dict:
    """Per page: the figure calls it makes, replayed against the rollup Source; seconds per page view."""
    from dashboard import common
    from metrics.db import state_db

    from metrics.rollups import live_source

    _configure_env(volume, settings)
    pages = {}
    for page in PAGES:
        calls = record_page_calls(page, at)
        src, state = live_source(settings), state_db(settings)  # recording reset the clients: fresh ones
        write_newest = newest_written(settings, at)
        platform = [c for c in calls if c[1] == "platform"]

        def replay(which):
            for name, kind, args in which:
                common._function(name)(src if kind == "platform" else state, *args)

        def newest_seen():  # the dashboard's refresh after the worker wrote the newest hour
            write_newest()
            src.rollups.refresh(trust_s=3600)

        each = []
        src.rollups.forget()
        for name, kind, args in platform:  # once more, call by call: where a page's time goes
            started = time.perf_counter()
            common._function(name)(src, *args)
            each.append({"call": name, "args": repr(args)[:160], "s": round(time.perf_counter() - started, 3)})
        pages[page] = {"platform_calls": len(platform), "state_calls": len(calls) - len(platform),
                       "slowest_calls": sorted(each, key=lambda c: -c["s"])[:5],
                       # Cold: the first view after the dashboard started, nothing remembered.
                       "platform_s": summary(timed(lambda: replay(platform), runs, before=src.rollups.forget)),
                       # Steady: a view after a refresh that followed the worker's write of the newest hour.
                       "platform_steady_s": summary(timed(lambda: replay(platform), runs, before=newest_seen)),
                       "platform_steady_commands": _commands_of(lambda: replay(platform), before=newest_seen),
                       "all_s": summary(timed(lambda: replay(calls), runs, before=src.rollups.forget))}
        say(f"{volume.name}: page {page}: {len(platform)} platform figure calls, "
            f"{pages[page]['platform_s']['median']} s cold, {pages[page]['platform_steady_s']['median']} s steady "
            f"({pages[page]['platform_steady_commands']} commands; with Paywatch's own reads "
            f"{pages[page]['all_s']['median']} s cold)")
    _reset_streamlit()
    return pages


# A page has finished drawing when no script run is in progress, every chart has drawn (ours in
# ECharts; the floor's Plotly ones too, whose bundle can take longer than SETTLED_S to arrive), and
# nothing in the main section has changed for SETTLED_S (the time taken is up to the last change).
PAGE_STATE = f"""() => {{
    const main = document.querySelector('[data-testid="stMain"]');
    return {{running: !!document.querySelector('[data-testid="stStatusWidget"]'),
            heading: !!document.querySelector('[data-testid="stHeading"]'),
            charts: {EVERY_CHART_DRAWN}
                    && [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                       .every(chart => chart.querySelector('.main-svg')),
            size: main ? main.innerHTML.length : 0,
            text: main ? main.innerText.slice(0, 20000) : ""}};
}}"""
SETTLED_S = 1.5
PAGE_TIMEOUT_S = 600
TROUBLE = ("Data source unavailable", "The database is slow", "ExecutionTimeout", "Traceback")


def _settled(page, began: float, arrived: Callable[[float], bool] = lambda now: True) -> tuple[float, dict | None]:
    """Seconds from ``began`` until the page had drawn everything (``arrived(now)`` true, no script
    run in progress, every chart drawn, nothing changed for ``SETTLED_S``), up to its last change;
    and its state then (``None`` when it did not finish within the timeout)."""
    changed, last = began, None
    while True:
        state = page.evaluate(PAGE_STATE)
        now = time.perf_counter()
        done = arrived(now) and state["heading"] and state["charts"] and not state["running"]
        signature = (state["size"], done)
        if signature != last:
            changed, last = now, signature
        elif done and now - changed >= SETTLED_S:
            return round(changed - began, 2), state
        if now - began > PAGE_TIMEOUT_S:
            return float("nan"), None
        time.sleep(0.05)


def _drawn_seconds(page, url: str, arrived: Callable[[float], bool] = lambda now: True) -> tuple[float, list[str]]:
    """Seconds from navigation until ``url`` had drawn everything (and ``arrived(now)``); and the
    trouble words it showed."""
    began = time.perf_counter()
    page.goto(url)
    seconds, state = _settled(page, began, arrived)
    if state is None:
        return seconds, ["did not finish within the timeout"]
    trouble = [w for w in TROUBLE if w in state["text"]]
    if page.query_selector('[data-testid="stException"]'):
        trouble.append("exception")
    return seconds, trouble


HEADINGS = "() => [...document.querySelectorAll('[data-testid=\"stHeading\"]')].map(e => e.innerText).join('|')"
CLICK_RETRY_S = 10  # a click that lands while the page redraws itself (a live fragment) is lost: click again


def _navigated_seconds(page, title: str) -> float:
    """Seconds from a click on ``title`` in the sidebar until that page had drawn everything (the
    rule of :func:`_settled`, once the page's heading shows)."""
    # The label ends the link's text; its icon's name comes first, and the Alerts icon is named
    # "notifications", so a plain text match would take the Alerts link for Notifications.
    link = page.locator('[data-testid="stSidebarNav"] a', has_text=re.compile(rf"{re.escape(title)}\s*$")).first
    began = time.perf_counter()
    clicked = [began]
    link.click()

    def arrived(now: float) -> bool:
        if title in page.evaluate(HEADINGS):
            return True
        if now - clicked[0] > CLICK_RETRY_S:
            link.click()
            clicked[0] = now
        return False

    return _settled(page, began, arrived)[0]


def browser_pages(volume, settings, at) -> dict:
    """Every page in headless Chromium, cold: a dashboard process as ``make run`` starts it (the
    volume's embedded server found through PAYWATCH_HOME), each page opened once at an instant no
    cache has seen.  The process's first page is opened first and not counted (imports, connection)."""
    from playwright.sync_api import sync_playwright

    from bench.dashboard import ARGS, VIEWPORT, Dashboard, _unseen, chromium_path
    from dashboard.app import PAGES as APP_PAGES

    env = child_env(volume, settings)
    out: dict = {}
    with Dashboard(env, volume.home / "dashboard-pages.log", drop=NOT_INHERITED) as dash, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            first = context.new_page()
            out["first_page_of_the_process_s"] = _drawn_seconds(first, f"{dash.url}/?at={_unseen(at - timedelta(hours=1))}")[0]
            first.close()
            for name, title, _ in APP_PAGES:
                page = context.new_page()
                seconds, trouble = _drawn_seconds(page, f"{dash.url}/{name}?at={_unseen(at)}")
                page.close()
                out[name] = {"cold_s": seconds, "trouble": trouble}
                say(f"{volume.name}: {title} drawn in Chromium in {seconds} s" + (f" ({trouble})" if trouble else ""))
            # As people move between pages: one tab, each page reached from the one before by its
            # sidebar link (the app's scripts are loaded once per tab, not once per page).
            tab = context.new_page()
            _drawn_seconds(tab, f"{dash.url}/?at={_unseen(at)}")
            for name, title, _ in [*APP_PAGES[1:], APP_PAGES[0]]:
                out[name]["navigated_s"] = seconds = _navigated_seconds(tab, title)
                say(f"{volume.name}: {title} reached from the sidebar in {seconds} s")
            tab.close()
        finally:
            browser.close()
        # In a browser of its own: our pages' runs left the chart library compiled in this one.
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            out["framework_floor"] = _floor(browser, env, volume.home)
        finally:
            browser.close()
    out["how"] = (f"cold_s: from navigation to a new tab's URL until the last change in the page (no script run "
                  f"in progress, every chart drawn, nothing changed for {SETTLED_S} s); navigated_s: the same "
                  f"from a click on the page's sidebar link in a tab that shows the page before it (the live "
                  f"instant: the sidebar's links carry no ?at=)")
    return out


FLOOR_APP = ROOT / "bench" / "floor_app.py"
FLOOR_CHARTS = (0, 1, 8)
FLOOR_LIBRARIES = ("echarts", "plotly")
FLOOR_DRAWN = ("() => document.querySelectorAll('[data-testid=\"stEChartsChart\"] canvas, "
               "[data-testid=\"stPlotlyChart\"] .main-svg:first-child').length")


def _floor(browser, env: dict, home: Path, runs: int = 3) -> dict:
    """What Streamlit and a chart library alone take here, drawn as our pages are: in a new tab of a
    browser context whose first page (no chart) loaded Streamlit's scripts, so a page with charts is
    the first to load the library's.  A page with a heading and 0, 1 or 8 charts
    (``bench/floor_app.py``), in ECharts (what the dashboard draws) and in Plotly (what it drew
    before), each in a fresh context; every run."""
    from bench.dashboard import VIEWPORT, Dashboard

    out = {}
    with Dashboard(env, home / "floor.log", drop=NOT_INHERITED, app=FLOOR_APP) as floor:
        for library in FLOOR_LIBRARIES:
            for charts in FLOOR_CHARTS if library == FLOOR_LIBRARIES[0] else FLOOR_CHARTS[1:]:
                times = []
                for _ in range(runs):
                    context = browser.new_context(viewport=VIEWPORT)
                    try:
                        _drawn_seconds(context.new_page(), f"{floor.url}/?charts=0")
                        page = context.new_page()
                        # A chart's element shows only once its library's script has arrived, which
                        # can take longer than SETTLED_S: wait for the page's N charts drawn.
                        times.append(_drawn_seconds(page, f"{floor.url}/?charts={charts}&library={library}",
                                                    lambda now, page=page, n=charts: page.evaluate(FLOOR_DRAWN) >= n)[0])
                    finally:
                        context.close()
                out[f"{library}_charts_{charts}_s"] = summary(times)
                say(f"framework floor: a page with {charts} {library} chart(s) drawn in {times} s")
    return out


def alert_cycles(settings, at, runs) -> dict:
    import logging

    from alerts.worker import Worker

    logging.getLogger("alerts").setLevel(logging.ERROR)
    worker = Worker(settings, use_lease=False)
    worker.cycle(at)  # the first cycle creates the worker's indexes; the rest is steady state
    # Each cycle after the newest hour of every series was written again (new payments), which its
    # refresh follows: what it read of that hour is read again, the rest is remembered.
    return summary(timed(lambda: worker.cycle(at), runs, before=newest_written(settings, at)))


def weekly_report(settings, at, runs) -> dict:
    from metrics.db import state_db
    from metrics.rollups import live_source
    from reports.model import build_report
    from reports.periods import last_complete_week

    period = last_complete_week(at, settings.tz)
    out = summary(timed(lambda: build_report(live_source(settings), settings, period, state=state_db(settings),
                                             generated_at=at), runs))
    out["period"] = period.title
    return out


# --- load ---------------------------------------------------------------------------------------

def steady_load(volume: Volume, dashboards: tuple[int, ...] = (1, 10), minutes: int = LOAD_MINUTES) -> dict:
    """Commands and documents per minute on the platform's database: worker plus N dashboards."""
    import logging

    from streamlit.testing.v1 import AppTest

    import metrics.rollups as rollups_mod
    from alerts.worker import Worker
    from dashboard import common
    from metrics.rollups import live_source

    log = traffic_log()
    logging.getLogger("alerts").setLevel(logging.ERROR)
    database = Database(volume)
    database.ensure_seeded()
    uri = database.start()
    settings = embedded_settings(volume)
    client = MongoClient(uri, tz_aware=True)
    result: dict = {"volume": {"name": volume.name, "describe": volume.describe()}, "minutes_played": minutes,
                    "machine_at_start": machine()}
    try:
        if not rollups_built(database.source(client, settings), settings):
            raise SystemExit(f"python -m bench load: build the rollups first (python -m bench rollups --home "
                             f"{volume.home})")
        start = newest_payment(client, volume, settings)
        _configure_env(volume, settings)
        platform_db, state_name = volume.database, settings.state_db
        worker_live, dashboard_live = {}, {}

        @contextmanager
        def process(live: dict):
            """One of the two processes: its own Rollups (``live_source`` keeps one per process)."""
            saved = rollups_mod._live
            rollups_mod._live = live
            try:
                yield
            finally:
                rollups_mod._live = saved

        # The verification job, once: a day of history, every 10 minutes.
        with process(worker_live):
            src = live_source(settings)
            with log.counting():
                src.rollups.verify_step()
            result["verify_step_every_10_min"] = {"platform": log.totals(platform_db),
                                                  "paywatch": log.totals(state_name), "by_collection": log.table()}
        runs = {}
        for n in dashboards:
            _reset_streamlit()
            worker_live.clear()
            dashboard_live.clear()
            clock = {"now": start}

            def instant():
                now = clock["now"].timestamp()
                return common._floor(now, common.LIVE_TTL_S), common._floor(now, common.SLOW_TTL_S), False, None

            original_instant = common.evaluation_instant
            common.evaluation_instant = instant
            try:
                with process(worker_live):
                    worker = Worker(settings, use_lease=False)
                    worker.cycle(start)  # indexes, first states: start-up, not steady state
                sessions = [AppTest.from_file(str(APP), default_timeout=600) for _ in range(n)]
                with process(dashboard_live):
                    for s in sessions:  # opened before the play: first visits are not steady state
                        s.run()
                clock["now"] = start + timedelta(seconds=DASHBOARD_REFRESH_S)
                wall = time.perf_counter()
                with log.counting():
                    for tick in range(0, minutes * 60, WORKER_REFRESH_S):
                        clock["now"] = start + timedelta(seconds=DASHBOARD_REFRESH_S + tick)
                        with process(worker_live):
                            if tick % WORKER_CYCLE_S == 0:
                                worker.cycle(clock["now"])
                            else:
                                live_source(settings)  # the worker's 5-s rollup refresh job
                        if tick % DASHBOARD_REFRESH_S == 0:
                            with process(dashboard_live):
                                for entry in dashboard_live.values():
                                    entry.refreshed = float("-inf")  # 30 s of real time have passed
                                for s in sessions:
                                    s.run()
                                    if s.exception:
                                        raise RuntimeError(str(s.exception[0].value))
                played = round(time.perf_counter() - wall, 1)
            finally:
                common.evaluation_instant = original_instant
            runs[f"{n}_dashboards"] = {
                "platform_per_minute": log.totals(platform_db, minutes),
                "paywatch_db_per_minute": log.totals(state_name, minutes),
                "by_collection_per_minute": log.table(minutes),
                "real_seconds_to_play": played,
            }
            say(f"{volume.name}, {n} dashboard(s): platform per minute {runs[f'{n}_dashboards']['platform_per_minute']}"
                f", Paywatch's db {runs[f'{n}_dashboards']['paywatch_db_per_minute']} ({played} s to play)")
        result["runs"] = runs
        result["machine_at_end"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
        return result
    finally:
        client.close()
        _reset_streamlit()
        database.stop()
