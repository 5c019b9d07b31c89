"""Shared fixtures: a real MongoDB-wire server for the whole session.

SecantusDB is started once on a free loopback port with a throw-away store
(or ``TEST_MONGODB_URI`` is used, to run the suite against a real MongoDB).
Each test gets its own database names, dropped afterwards, so tests never
see each other's documents.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pymongo import MongoClient

# Keep a developer's own configuration out of the tests.
_EMPTY_CONFIG = Path(__file__).with_name("empty-paywatch.toml")
os.environ["PAYWATCH_CONFIG"] = str(_EMPTY_CONFIG)
os.environ["PAYWATCH_SECRETS_FILE"] = str(Path(__file__).with_name("no-secrets.toml"))
for _name in ("MONGODB_URI", "DATABASE_URL", "PAYWATCH_SOURCE_DB", "PAYWATCH_DB", "PAYWATCH_STATE_URI",
              "PAYWATCH_TIMEZONE", "STRIPE_API_KEY", "STRIPE_API_BASE", "SLACK_WEBHOOK_URL",
              "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "PAYWATCH_HOME"):
    os.environ.pop(_name, None)

from metrics import db as dbmod  # noqa: E402
from metrics.embedded import EmbeddedMongo  # noqa: E402
from metrics.settings import load_settings  # noqa: E402


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory) -> str:
    """The URI of a real server: TEST_MONGODB_URI, or SecantusDB started for this session."""
    configured = os.environ.get("TEST_MONGODB_URI")
    if configured:
        yield configured
        return
    server = EmbeddedMongo(tmp_path_factory.mktemp("mongo"), memory=True, test_commands=True)
    server.ensure()
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def mongo_client(mongo_uri) -> MongoClient:
    client = MongoClient(mongo_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def db_names(mongo_client):
    """Fresh database names for the platform and for Paywatch's state; dropped after the test."""
    token = uuid.uuid4().hex[:10]
    names = (f"platform_{token}", f"paywatch_{token}")
    yield names
    for name in names:
        mongo_client.drop_database(name)


@pytest.fixture
def make_settings(mongo_uri, db_names, tmp_path):
    """Settings pointed at the test server and this test's databases; keyword overrides allowed."""

    def make(**overrides):
        values = {"mongodb_uri": mongo_uri, "source_db": db_names[0], "state_db": db_names[1],
                  "home": tmp_path / "home", "server_selection_timeout_ms": 3000}
        values.update(overrides)
        return load_settings(**values)

    yield make
    dbmod.reset()


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
def platform_db(mongo_client, db_names):
    """The test's platform database, written directly by tests as the platform would."""
    return mongo_client[db_names[0]]


# The metric tests of these modules run twice: on the raw documents, and on the rollups (refreshed
# before every figure), so every fixture of theirs checks that both give the same answer.
ROLLUP_CHECKED_MODULES = ("test_metrics_payments", "test_metrics_enrollments", "test_metrics_webhooks",
                          "test_metrics_quality", "test_series")


def pytest_generate_tests(metafunc):
    if "src" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in ROLLUP_CHECKED_MODULES:
        metafunc.parametrize("src_mode", ["raw", "rollups"])


@pytest.fixture
def src_mode():
    return "raw"


@pytest.fixture
def src(settings, src_mode):
    source = dbmod.source(settings)
    if src_mode == "rollups":
        from metrics.rollups import attach
        return attach(source, settings, refresh=False, auto_refresh=True)
    return source


@pytest.fixture
def env(monkeypatch, mongo_uri, db_names):
    """A page's configuration through the environment, as in production: this test's databases.

    Page tests that need more (a seeded database, a time zone) override it.
    """
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("PAYWATCH_SOURCE_DB", db_names[0])
    monkeypatch.setenv("PAYWATCH_DB", db_names[1])
    monkeypatch.setenv("PAYWATCH_SERVER_SELECTION_TIMEOUT_MS", "1500")
    return monkeypatch


@pytest.fixture
def fresh_streamlit():
    """For tests that run Streamlit in this process: empty caches and re-read settings, before and after."""
    import streamlit as st

    from metrics.settings import get_settings

    def reset():
        get_settings.cache_clear()
        st.cache_data.clear()
        st.cache_resource.clear()
        dbmod.reset()
    reset()
    yield
    reset()


@pytest.fixture
def run(mongo_uri, db_names, tmp_path):
    """Run ``python -m metrics ARGS`` on the test's databases (no Stripe key: a snapshot never calls Stripe)."""

    def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
        environ = {**os.environ, "MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0],
                   "PAYWATCH_DB": db_names[1], "PAYWATCH_HOME": str(tmp_path / "home"), **env}
        return subprocess.run([sys.executable, "-m", "metrics", *args], cwd=Path(__file__).resolve().parents[1],
                              env=environ, capture_output=True, text=True, timeout=120)

    return run_cli
