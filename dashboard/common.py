"""What every page shares: access, the time range, cached data, tiles and banners.

Pages only ask ``metrics`` and draw.  They do it through a :class:`View`::

    with common.View("Payments") as view:
        summary = view.get(payments.window_summary, view.window, view.currencies)
        view.tiles([...])

``View.get`` runs a metric function through ``st.cache_data`` (so ten open
browsers cost one query per TTL), remembers the last good value of each
query, and when the database is down or slow serves that value instead,
marked stale under a "data source unavailable since ..." banner: never a 0
that was not measured.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import pandas as pd
import streamlit as st
from pymongo.errors import PyMongoError

from metrics import format as fmt
from metrics.db import DataSourceSlow, DataSourceUnavailable, Source, state_db
from metrics.frames import series_frame
from metrics.redact import describe
from metrics.rollups import live_source
from metrics.settings import Settings, SettingsError, get_settings
from metrics.targets import Target, TargetsError, targets
from metrics.windows import CALENDAR, PRESETS, Window, parse_instant, previous_period, utc

log = logging.getLogger(__name__)

LIVE_TTL_S = 30  # cache lifetime of live figures, and how often live pages redraw
SLOW_TTL_S = 300  # whole-collection scans (data quality) and server statistics
# A page's figures come from the rollups; the process brings them up to date at most this often
# (the worker keeps them fresh within seconds between).
ROLLUP_MAX_AGE_S = 5
ROLLUP_TRUST_S = 15  # the worker follows every 5 s: while it does, pages add no work per change
RETRY_S = 15  # after a failed query, serve last good values this long before asking again
LAST_GOOD_MAX = 2000  # remembered query results (a few per tile and chart)

RANGES = {"today": "Today", "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom"}
DEFAULT_RANGE = "24h"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

STATUS_BADGE = {  # target verdict -> (text, colour, icon)
    "met": ("met", "green", ":material/check_circle:"),
    "at_risk": ("at risk", "orange", ":material/warning:"),
    "missed": ("missed", "red", ":material/error:"),
    "unknown": ("no data", "gray", ":material/help:"),
}


# -- settings and access ----------------------------------------------------------

def settings() -> Settings:
    """The process's settings; a configuration error is one line on the page, not a traceback."""
    try:
        return get_settings()
    except SettingsError as exc:
        st.error(str(exc), icon=":material/settings_alert:")
        st.stop()


def auth_configured() -> bool:
    """True when ``.streamlit/secrets.toml`` has an ``[auth]`` section (Streamlit's OIDC login)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all: Streamlit raises its own error type
        return False


def is_allowed(email: str | None, emails: Iterable[str], domains: Iterable[str]) -> bool:
    """Is this login's email, or its domain, on the allow-list (both compared in lower case)?"""
    if not email or "@" not in email:
        return False
    email = email.strip().lower()
    return email in {e.lower() for e in emails} or email.rpartition("@")[2] in {d.lower() for d in domains}


def serving_loopback_only() -> bool:
    """True when the server listens on this machine only (``server.address`` is a loopback name)."""
    return (st.get_option("server.address") or "").strip() in LOOPBACK


@dataclass(frozen=True)
class Access:
    allowed: bool
    screen: Callable[[], None] | None = None  # what to show instead of the pages
    banner: str | None = None  # shown above every page when allowed


def access(cfg: Settings) -> Access:
    """Who may see the dashboard: decided on every run, before any page is registered."""
    if not auth_configured():
        if not serving_loopback_only():
            return Access(False, _exposed_screen)
        return Access(True, banner="No login is configured, so this dashboard is served on 127.0.0.1 "
                                   "only (this machine). See docs/dashboard.md to enable login.")
    user = st.user
    if not user.get("is_logged_in"):
        return Access(False, _login_screen)
    # Only a provider that vouches for the address may be matched against the allow-list: an
    # omitted claim is not a yes (OpenID Connect Core 1.0, section 5.1: email_verified is a boolean).
    if user.get("email_verified") is not True:
        return Access(False, _unverified_screen)
    if not is_allowed(user.get("email"), cfg.auth_allowed_emails, cfg.auth_allowed_domains):
        return Access(False, _refused_screen)
    return Access(True)


def _login_screen() -> None:
    st.title("Paywatch")
    st.write("Payment monitoring. Log in to continue.")
    st.button("Log in", on_click=st.login, type="primary", icon=":material/login:")


def _refused_screen() -> None:
    st.title("Paywatch")
    st.error("Your account is not on this dashboard's allow-list. Ask an administrator to add your "
             "email or domain (PAYWATCH_AUTH_ALLOWED_EMAILS / PAYWATCH_AUTH_ALLOWED_DOMAINS).",
             icon=":material/block:")
    st.button("Log out", on_click=st.logout, icon=":material/logout:")


def _unverified_screen() -> None:
    st.title("Paywatch")
    st.error("Your identity provider has not verified your email address (email_verified is not true), "
             "so it cannot be checked against this dashboard's allow-list. Verify it with the provider, "
             "or ask an administrator.", icon=":material/block:")
    st.button("Log out", on_click=st.logout, icon=":material/logout:")


def _exposed_screen() -> None:
    st.title("Paywatch")
    st.error("No login is configured, yet this server listens beyond this machine "
             f"(server.address = {st.get_option('server.address') or 'all interfaces'}). "
             "Nothing is shown. Serve on 127.0.0.1 or configure [auth] in .streamlit/secrets.toml "
             "(docs/dashboard.md).", icon=":material/lock:")


def page_allowed() -> bool:
    """The same check again inside a page (pages are only registered for allowed users anyway)."""
    return access(settings()).allowed


# -- time ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    key: str
    label: str
    window: Window
    at: datetime  # the evaluation instant: the window's end for presets
    frozen: bool  # ``?at=`` in the address fixes the instant
    slow_at: datetime  # the instant for heavy figures, which are recomputed every SLOW_TTL_S


def _floor(now: float, period: int) -> datetime:
    return datetime.fromtimestamp(now - now % period, timezone.utc)


def evaluation_instant() -> tuple[datetime, datetime, bool, str | None]:
    """Now, rounded down to the cache period so every browser asks the same question
    (and to the slow period for heavy figures); or the ``?at=`` instant of a shared
    link.  Returns (at, slow_at, frozen, problem)."""
    raw = st.query_params.get("at")
    problem = None
    if raw:
        try:
            at = parse_instant(raw)
            return at, at, True, None
        except ValueError as exc:
            problem = str(exc)
    now = time.time()
    # One page reads one instant: the figures come from the rollups, so none needs an older one.
    at = _floor(now, LIVE_TTL_S)
    return at, at, False, problem


def range_picker(cfg: Settings) -> None:
    """The sidebar's time-range picker; drawn by ``app.py`` so it keeps its value across pages."""
    with st.sidebar:
        st.radio("Time range", list(RANGES), format_func=RANGES.get, key="range",
                 index=list(RANGES).index(DEFAULT_RANGE))
        if st.session_state.get("range") == "custom":
            local_today = evaluation_instant()[0].astimezone(cfg.tz).date()
            st.date_input("From – to (inclusive)", value=(local_today - timedelta(days=6), local_today),
                          max_value=local_today, key="range_dates", format="YYYY-MM-DD")
        st.caption(f"Times are in {cfg.timezone}.")


def current_range(cfg: Settings) -> tuple[Range, str | None]:
    at, slow_at, frozen, problem = evaluation_instant()
    key = st.session_state.get("range", DEFAULT_RANGE)
    if key == "custom":
        window, label = _custom_window(st.session_state.get("range_dates"), at, cfg)
    else:
        key = key if key in PRESETS else DEFAULT_RANGE
        window, label = PRESETS[key](at, cfg.tz), RANGES[key]
    return Range(key, label, window, at, frozen, slow_at), problem


def _custom_window(dates: Any, at: datetime, cfg: Settings) -> tuple[Window, str]:
    """Whole local days from the first to the last picked date, cut at ``at``."""
    picked = [d for d in (dates or ()) if isinstance(d, date)]
    if not picked:
        return PRESETS["7d"](at, cfg.tz), RANGES["7d"]
    first, last = min(picked), max(picked)
    start = datetime(first.year, first.month, first.day, tzinfo=cfg.tz).astimezone(timezone.utc)
    end_day = last + timedelta(days=1)
    end = min(datetime(end_day.year, end_day.month, end_day.day, tzinfo=cfg.tz).astimezone(timezone.utc), at)
    start = min(start, end)
    label = f"{first:%d %b %Y}" if first == last else f"{first:%d %b} – {last:%d %b %Y}"
    return Window(start, end), label


# -- data: cached, remembered, never a made-up zero ----------------------------------

def _function(name: str) -> Callable:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _name(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def platform_source() -> Source:
    """The platform's database with this process's rollups, as every page reads its figures."""
    return live_source(get_settings(), ROLLUP_MAX_AGE_S, ROLLUP_TRUST_S)


@st.cache_data(ttl=LIVE_TTL_S, max_entries=2000, show_spinner=False)
def _platform_live(name: str, db: str, args: tuple) -> Any:
    return _function(name)(platform_source(), *args)


@st.cache_data(ttl=SLOW_TTL_S, max_entries=200, show_spinner=False)
def _platform_slow(name: str, db: str, args: tuple) -> Any:
    return _function(name)(platform_source(), *args)


@st.cache_data(ttl=LIVE_TTL_S, max_entries=200, show_spinner=False)
def _state_live(name: str, db: str, args: tuple) -> Any:
    return _function(name)(state_db(get_settings()), *args)


@dataclass
class _Memory:
    """Process-wide: is the data source up, and the last good value of each query."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    down_since: datetime | None = None
    error: str | None = None
    slow_since: datetime | None = None  # the database answers, but a query ran past its time budget
    retry_at: float = 0.0
    last_good: OrderedDict = field(default_factory=OrderedDict)

    def skipping(self) -> bool:
        with self.lock:
            return self.down_since is not None and time.monotonic() < self.retry_at

    def slowed(self) -> None:
        with self.lock:
            if self.slow_since is None:
                self.slow_since = datetime.now(timezone.utc)

    def failed(self, error: str) -> None:
        with self.lock:
            if self.down_since is None:
                self.down_since = datetime.now(timezone.utc)
            self.error = error
            self.retry_at = time.monotonic() + RETRY_S

    def succeeded(self, key: tuple, value: Any, tells_health: bool = True) -> None:
        with self.lock:
            if tells_health:
                self.down_since = self.error = self.slow_since = None
            self.last_good[key] = (value, datetime.now(timezone.utc))
            self.last_good.move_to_end(key)
            while len(self.last_good) > LAST_GOOD_MAX:
                self.last_good.popitem(last=False)

    def remembered(self, key: tuple) -> tuple[Any, datetime | None]:
        with self.lock:
            return self.last_good.get(key, (None, None))


@st.cache_resource(show_spinner=False)
def _memory() -> _Memory:
    return _Memory()


def source_slow_since() -> datetime | None:
    """Since when a query of this process last ran past its time budget (``None``: none since a success)."""
    memory = _memory()
    with memory.lock:
        return memory.slow_since


def source_status() -> tuple[datetime | None, str | None]:
    """(down since, last error) of the platform database as this process last saw it."""
    memory = _memory()
    with memory.lock:
        return memory.down_since, memory.error


# -- Paywatch's own records (state database), read with a time limit -------------------

STATE_MAX_TIME_MS = 5000


def firing_alerts(db, limit: int = 20) -> list[dict]:
    """Alerts the worker holds as firing (collection ``alert_state``), oldest first."""
    fields = {"_id": 0, "rule_id": 1, "subject": 1, "severity": 1, "since": 1, "fired_at": 1, "title": 1,
              "value_text": 1, "threshold_text": 1}
    return list(db["alert_state"].find({"state": "firing"}, fields, sort=[("since", 1)], limit=limit,
                                       max_time_ms=STATE_MAX_TIME_MS))


def worker_heartbeat(db) -> dict | None:
    """The alert worker's last sign of life (collection ``heartbeats``, ``_id: "worker"``)."""
    return db["heartbeats"].find_one({"_id": "worker"}, max_time_ms=STATE_MAX_TIME_MS)


@dataclass(frozen=True)
class WorkerStatus:
    """The one answer to "is the alert worker running?" that every page shows."""

    state: str  # running | late | not seen
    at: datetime | None  # its last heartbeat
    age_s: float | None
    late_after_s: float
    limit_text: str  # where the limit comes from, for the page
    beat: dict | None

    @property
    def late(self) -> bool:
        return self.state == "late"

    @property
    def age_text(self) -> str:
        return fmt.duration((self.age_s or 0) * 1000)


def worker_late_after(settings: Settings, beat: dict | None) -> tuple[float, str]:
    """How old a heartbeat may be, and why: what the worker recorded in it (it knows its own
    settings), else ``[alerts] heartbeat_late``, else three evaluation intervals."""
    recorded = fmt.number((beat or {}).get("late_after_s"))
    if recorded is not None and recorded > 0:
        return float(recorded), f"{recorded:g} s, the worker's heartbeat_late"
    from alerts.config import load_config  # the dashboard reads the worker's settings, never the reverse
    try:
        config = load_config(settings)
    except SettingsError:
        config = None
    if config is not None and config.heartbeat_late is not None:
        limit = config.heartbeat_late.total_seconds()
        return limit, f"{limit:g} s, [alerts] heartbeat_late"
    limit = 3.0 * settings.eval_interval
    return limit, f"3 × the evaluation interval ({limit:g} s)"


def worker_status(settings: Settings, beat: dict | None, now: datetime) -> WorkerStatus:
    limit, why = worker_late_after(settings, beat)
    at = beat.get("at") if beat else None
    if not isinstance(at, datetime):
        return WorkerStatus("not seen", None, None, limit, why, beat)
    age = (now - utc(at)).total_seconds()
    return WorkerStatus("late" if age > limit else "running", utc(at), age, limit, why, beat)


def md(text: object) -> str:
    """Data as literal text inside Markdown (alert summaries, error messages, labels)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>$~:=^&])", r"\\\1", str(text))


@dataclass
class Tile:
    """One figure: a formatted value, its change, and the guide's target when it has one."""

    label: str
    value: str | None
    delta: str | int | None = None
    delta_color: str = "normal"  # "inverse" where lower is better, "off" where neither
    help: str | None = None
    target: Target | None = None
    raw: float | None = None  # the number the target judges
    trend: list[float] | None = None
    note: str | None = None


class View:
    """One run of one page: settings, time range, data access and the banners above it."""

    def __init__(self, title: str, caption: str | None = None):
        self.title = title
        self.caption = caption
        self.settings = settings()
        self.range, self._range_problem = current_range(self.settings)
        self.at = self.range.at
        self.window = self.range.window
        # "Today" compares with yesterday until the same local time; a rolling range with the one before it.
        self.previous = previous_period(self.range.key, self.window, self.settings.tz)
        self.tz = self.settings.tz
        self.currencies = tuple(self.settings.currencies)
        try:
            self.targets = targets(self.settings.targets)
        except TargetsError as exc:
            st.error(str(exc), icon=":material/settings_alert:")
            st.stop()
        self.periods = {name: make(self.at, self.tz) for name, make in CALENDAR.items()}
        # Week and month figures scan weeks of documents: they move every SLOW_TTL_S.
        self.slow_at = self.range.slow_at
        self.slow_periods = {name: make(self.slow_at, self.tz) for name, make in CALENDAR.items()}
        self._names = {self.window: "range", self.previous: "range-1",
                       **{w: name for name, w in self.periods.items()},
                       **{w.previous(): f"{name}-1" for name, w in self.periods.items()},
                       **{w: f"slow-{name}" for name, w in self.slow_periods.items()},
                       **{w.previous(): f"slow-{name}-1" for name, w in self.slow_periods.items()}}
        self.stale_since: datetime | None = None  # oldest remembered value shown in this run
        self._slot = None

    # The page frame ---------------------------------------------------------------

    def __enter__(self) -> "View":
        if not page_allowed():
            st.stop()
        st.header(self.title, anchor=False)
        span = f"{self.when(self.window.start)} → {self.when(self.window.end)}"
        st.caption(f"{self.range.label} · {span} ({self.settings.timezone}) · data as of {self.when(self.at)}"
                   + (" · frozen by ?at= in the address" if self.range.frozen else ""))
        self._slot = st.container()
        if self.caption:
            st.caption(self.caption)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._banners()
        return False

    def _banners(self) -> None:
        with self._slot:
            down_since, error = source_status()
            slow_since = source_slow_since()
            if down_since is not None or (self.stale_since is not None and slow_since is None):
                since = self.when(down_since) if down_since else "the last attempt"
                shown = (f" Figures marked stale are the last good values, from {self.when(self.stale_since)}."
                         if self.stale_since else " No earlier values are known, so figures show –.")
                st.error(f"Data source unavailable since {since}: {md(error or 'no answer')}.{shown}",
                         icon=":material/cloud_off:")
            elif slow_since is not None:
                shown = f", from {self.when(self.stale_since)}" if self.stale_since else ""
                st.warning(f"The database is slow: a query ran past its time budget "
                           f"(PAYWATCH_QUERY_TIMEOUT_MS) at {self.when(slow_since)}. Figures marked stale are "
                           f"the last good values{shown}.", icon=":material/hourglass_top:")
            if self._range_problem:
                st.warning(f"Ignored ?at= in the address: {md(self._range_problem)}. Showing live data.",
                           icon=":material/event_busy:")

    # Data -----------------------------------------------------------------------------

    def _key(self, name: str, args: tuple) -> tuple:
        """A name for a query that survives the clock moving on: windows by their role."""
        def part(arg):
            if isinstance(arg, Window):
                return self._names.get(arg) or (arg.start - self.at, arg.end - self.at)
            if isinstance(arg, datetime) and arg in (self.at, self.slow_at):
                return "at" if arg == self.at else "slow_at"
            if isinstance(arg, dict):
                return tuple((k, part(v)) for k, v in arg.items())
            if isinstance(arg, (list, tuple)):
                return tuple(part(v) for v in arg)
            return arg
        return (name, self.settings.source_db_name, self.range.key, tuple(part(a) for a in args))

    def get(self, fn: Callable, *args: Any, slow: bool = False, tells_health: bool = True) -> Any:
        """``fn(source, *args)`` through the cache; the last good value when the database fails.

        ``None`` when the database fails and no value was ever read: pages
        show "–" then, never 0.  ``tells_health=False`` for functions that
        report errors inside their result (server statistics): their
        answering says nothing about the database being back.
        """
        memory = _memory()
        name = _name(fn)
        key = self._key(name, args)
        if not memory.skipping():
            began = time.perf_counter()
            try:
                # Only server statistics stay on the slow cache: every figure is cheap from the rollups, and
                # figures of one page must come from one instant (month never below today).
                heavy = slow and getattr(fn, "expensive", False)
                value = (_platform_slow if heavy else _platform_live)(name, self.settings.source_db_name, args)
            except DataSourceSlow as exc:
                # Up but slow: the last good value, marked stale, and a "slow" banner, never "unavailable".
                log.warning("%s was slow: %s", name, exc)
                memory.slowed()
            except DataSourceUnavailable as exc:
                log.warning("%s failed: %s", name, exc)
                memory.failed(str(exc))
            else:
                log.debug("%s answered in %.3f s", name, time.perf_counter() - began)
                memory.succeeded(key, value, tells_health)
                return value
        value, when = memory.remembered(key)
        if when is not None:
            self.stale_since = min(self.stale_since or when, when)
        return value

    def frame(self, fn: Callable, *args: Any) -> pd.DataFrame | None:
        """A series, ``fn(source, *args)`` through :meth:`get`, as a DataFrame indexed by local time
        (``metrics.frames.series_frame``): built once per page run, drawn by every chart that shows it.
        ``None`` when it was never read."""
        rows = self.get(fn, *args)
        return None if rows is None else series_frame(rows, self.tz)

    def worker(self) -> WorkerStatus:
        """The alert worker's status, as every page shows it: its heartbeat's age from the present,
        unrounded, even on a page frozen by ``?at=`` (a sign of life is about now)."""
        return worker_status(self.settings, self.state(worker_heartbeat), datetime.now(timezone.utc))

    def state(self, fn: Callable, *args: Any) -> Any:
        """``fn(state_db, *args)`` (Paywatch's own records: probes, alerts).

        When Paywatch's database does not answer: the last good value, marked
        stale like the platform's figures; ``None`` when none was ever read.
        """
        memory = _memory()
        name = _name(fn)
        key = ("state", *self._key(name, args))
        try:
            value = _state_live(name, self.settings.state_db, args)
        except (PyMongoError, DataSourceUnavailable) as exc:
            log.warning("%s (Paywatch's database) failed: %s", name, describe(exc) if isinstance(exc, PyMongoError) else exc)
        else:
            memory.succeeded(key, value, tells_health=False)
            return value
        value, when = memory.remembered(key)
        if when is not None:
            self.stale_since = min(self.stale_since or when, when)
        return value

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    # People's formats ------------------------------------------------------------------

    def local(self, when: datetime | None) -> datetime | None:
        return None if when is None else utc(when).astimezone(self.tz)

    def when(self, when: datetime | None) -> str:
        """``26 Nov 14:05:30`` in the configured zone."""
        return "–" if when is None else f"{self.local(when):%d %b %H:%M:%S}"

    def ago(self, when: datetime | None) -> str:
        if when is None:
            return "never"
        seconds = (self.at - utc(when)).total_seconds()
        return "just now" if seconds < 1 else f"{fmt.duration(seconds * 1000)} ago"

    def email(self, value: object) -> str | None:
        return fmt.mask_email(value) if self.settings.mask_emails else (None if value is None else str(value))

    # Drawing ---------------------------------------------------------------------------

    def tiles(self, items: list[Tile], per_row: int | list[int] = 4) -> None:
        """Tiles in rows: ``per_row`` tiles each, or a list of row lengths (the last repeats)."""
        lengths = [per_row] if isinstance(per_row, int) else list(per_row)
        start = row = 0
        while start < len(items):
            n = lengths[min(row, len(lengths) - 1)]
            for column, tile in zip(st.columns(n), items[start:start + n]):
                with column:
                    self._tile(tile)
            start, row = start + n, row + 1

    def _tile(self, tile: Tile) -> None:
        with st.container(border=True, height="stretch"):
            st.metric(tile.label, md_value(tile.value), delta=tile.delta, delta_color=tile.delta_color,
                      help=tile.help, chart_data=tile.trend if tile.trend and any(
                          v is not None for v in tile.trend) else None,
                      delta_description="vs prev. period" if tile.delta not in (None, "") else None)
            badges = []
            if tile.target is not None:
                text, colour, icon = STATUS_BADGE[tile.target.evaluate(tile.raw)]
                badges.append((f"{text} · target {tile.target.describe()}", colour, icon))
            if self.stale:
                badges.append((f"stale · {self.when(self.stale_since)}", "gray", ":material/history:"))
            for text, colour, icon in badges:
                st.badge(text, color=colour, icon=icon)
            if tile.note:
                st.caption(md_value(tile.note))


def md_value(value: str | None) -> str | None:
    """A formatted figure for Markdown (``st.metric``, captions): a ``$`` would start a formula.

    Idempotent: an already escaped ``\\$`` stays as it is.
    """
    return None if value is None else re.sub(r"(?<!\\)\$", r"\\$", value)


def live(render: Callable[[], None]) -> None:
    """Run a page's body as a fragment that redraws itself every ``LIVE_TTL_S`` seconds."""
    st.fragment(render, run_every=timedelta(seconds=LIVE_TTL_S))()


# -- deltas: the change against the previous period, as a person reads it ------------

def delta_count(current: int | None, previous: int | None) -> str | int | None:
    if current is None or previous is None:
        return None
    diff = current - previous
    return 0 if diff == 0 else f"{diff:+,}"


def delta_rate(current: float | None, previous: float | None) -> str | int | None:
    """In percentage points: 98.0% -> 98.5% is ``+0.5 pp``."""
    if current is None or previous is None:
        return None
    diff = round((current - previous) * 100, 1)
    return 0 if diff == 0 else f"{diff:+.1f} pp"


def delta_ms(current: float | None, previous: float | None) -> str | int | None:
    if current is None or previous is None:
        return None
    diff = current - previous
    if abs(diff) < 0.5:
        return 0
    return ("+" if diff > 0 else "-") + fmt.duration(abs(diff))


def delta_relative(current: float | None, previous: float | None) -> str | int | None:
    """Relative change: ``+12.5%``; ``None`` when there was nothing before."""
    if current is None or not previous:
        return None
    diff = round((current - previous) / previous * 100, 1)
    return 0 if diff == 0 else f"{diff:+.1f}%"


def currencies_seen(configured: Iterable[str], *amounts: dict | None) -> list[str]:
    """Currencies with money in any of ``amounts``: configured ones first, then the rest A-Z."""
    configured = list(configured)
    seen = {c for m in amounts if m for c, v in m.items() if v}
    return [c for c in configured if c in seen] + sorted(seen - set(configured)) or configured


def money_parts(amounts: dict | None, currency: str) -> tuple[str | None, str | None]:
    """(``currency``'s amount, the other currencies') for a tile: one big figure, the rest beneath."""
    if amounts is None:
        return None, None
    others = {c: v for c, v in amounts.items() if c != currency and v}
    return fmt.money(amounts.get(currency) or 0, currency), (fmt.money_map(others) if others else None)


def amount_text(payment: dict) -> str:
    """A payment's amount as people read it (``$12.34``); a bare number when it names no currency."""
    amount, currency = payment.get("amount"), payment.get("currency")
    return fmt.money(amount, currency) if currency else fmt.count(amount)


def dig(data: Any, *path: str) -> Any:
    """``data[a][b]...`` or ``None`` when any step is missing (a query that never answered)."""
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def clear_state_cache() -> None:
    """Forget cached reads of Paywatch's own records (after this page wrote one)."""
    _state_live.clear()
