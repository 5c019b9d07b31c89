"""The dashboard's Reports page, run by Streamlit's AppTest over a seeded test database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.common import md
from demo.seed import seed
from metrics import db as dbmod
from metrics.embedded import free_port
from metrics.settings import get_settings
from reports import render as render_mod
from reports.job import COLLECTION, ReportsConfig, deliver_weekly_report
from reports.model import build_report
from reports.periods import last_complete_week

PAGE = "from dashboard.views.reports import main\nmain()\n"
TIMEOUT_S = 120


@pytest.fixture(autouse=True)
def _fresh(fresh_streamlit):
    """Empty caches and re-read settings before and after each test (tests/conftest.py)."""


@pytest.fixture
def env(env):
    """The shared page environment (tests/conftest.py), with local weeks in Berlin."""
    env.setenv("PAYWATCH_TIMEZONE", "Europe/Berlin")
    return env


@pytest.fixture
def seeded(env, platform_db, settings):
    return seed(platform_db, settings.schema, days=15, per_day=20, now=datetime.now(timezone.utc))


def open_page(**query) -> AppTest:
    at = AppTest.from_string(PAGE, default_timeout=TIMEOUT_S)
    for name, value in query.items():
        at.query_params[name] = value
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_the_page_previews_the_last_complete_weeks_summary_without_rendering_a_file(seeded, monkeypatch):
    rendered: list[str] = []
    real = render_mod.render
    monkeypatch.setattr("dashboard.views.reports.render", lambda report, fmt: rendered.append(fmt) or real(report, fmt))
    at = open_page()
    assert not at.exception, [e.value for e in at.exception]
    settings = get_settings()
    period = last_complete_week(datetime.now(timezone.utc), settings.tz)
    expected = build_report(dbmod.source(settings), settings, period)
    assert at.subheader[0].value == period.title
    assert md(expected.summary.headline) in [m.value for m in at.markdown]
    shown_missed = [e.value for e in at.error if str(e.value).startswith("Target missed")]
    assert len(shown_missed) == len(expected.summary.missed)
    downloads = at.get("download_button")
    assert len(downloads) == 3
    assert rendered == []  # each file is built when its button is clicked, not on every run


def test_a_week_named_in_the_address_is_preselected(seeded):
    settings = get_settings()
    earlier = last_complete_week(datetime.now(timezone.utc) - timedelta(days=7), settings.tz)
    at = open_page(week=earlier.label)
    assert not at.exception
    assert at.subheader[0].value == earlier.title


def test_reports_the_worker_sent_are_listed(seeded):
    settings = get_settings()
    state = dbmod.state_db(settings)
    period = last_complete_week(datetime.now(timezone.utc), settings.tz)
    assert deliver_weekly_report(settings, state, period, ReportsConfig(), now=datetime.now(timezone.utc),
                                 enqueue=lambda key, message: None, upload=None, holder="test") == "sent"
    at = open_page()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["Period"]) == [period.label] and list(table["State"]) == ["sent"]
    assert state[COLLECTION].count_documents({}) == 1


def test_a_database_that_does_not_answer_is_one_clear_line_not_a_traceback(env):
    env.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    at = open_page()
    assert not at.exception
    assert "Data source unavailable" in texts(at.error)
    assert not at.get("download_button")


def test_the_page_builds_its_report_from_the_rollups_not_from_the_raw_weeks(seeded, monkeypatch):
    """At a year of history the page spun for minutes on "Building the report" while the worker's
    weekly report took 1.5 s: the page read the two weeks' raw documents instead of the rollups."""
    import dashboard.views.reports as page
    sources = []
    real = page.build_report
    monkeypatch.setattr(page, "build_report", lambda src, *a, **kw: sources.append(src) or real(src, *a, **kw))
    at = open_page()
    assert not at.exception, [e.value for e in at.exception]
    assert sources and all(getattr(src, "rollups", None) is not None for src in sources)
