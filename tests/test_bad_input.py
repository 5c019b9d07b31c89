"""Bad input everywhere: documents with the wrong type in every field of every collection.

The platform's data is not ours: a field may hold a number where a string
belongs, a dict, a list, a string where a date belongs, NaN, a huge number,
or nothing at all.  With such documents in a real database (beside an
ordinary demo history), the snapshot, every dashboard page, the weekly and
monthly report in every format and every alert message still build.

``bad_documents()`` breaks every field of every collection with every kind of
bad value, one document each; the property-based test (hypothesis) then
mixes random values into random fields, a few examples at a time (the
embedded database writes some thousands of documents a second).
"""

from __future__ import annotations

import ast
import itertools
import math
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from streamlit.testing.v1 import AppTest

from notify.channels import slack as slack_channel
from alerts.engine import evaluate
from alerts.messages import alert_message, plain_text
from alerts.readings import METRICS, EvalContext
from alerts.rules import default_rules
from alerts.state import FIRING, FIRST, FLAPPING, REPEAT, RESOLVED, RESOLVED_MSG, AlertState
from demo.seed import seed
from fakes.platform import enrollment, payment, webhook_event
from metrics import db as dbmod
from metrics.db import Source
from metrics.schema import DEFAULT_FIELDS, DEFAULT_SCHEMA
from metrics.settings import load_settings
from metrics.snapshot import build_snapshot, to_json
from metrics.windows import iso
from reports.model import build_report
from reports.periods import last_complete_month, last_complete_week
from reports.render import FORMATS, render

# A Tuesday: the last complete week (2026-W48) and month (November) both hold the documents.
AT = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")

BAD_VALUES: dict[str, object] = {
    "number": 5,
    "float": 2.5,
    "negative": -7,
    "nan": float("nan"),
    "infinity": float("inf"),
    "huge int": 2**63 - 1,
    "huge float": 1e308,
    "dict": {"a": 1, "b": [2, "x"]},
    "list": ["completed", 3, None],
    "empty list": [],
    "date as string": "2026-11-30T10:00:00Z",
    "text": "not a date",
    "field path": "$specialistId",
    "markup": "[click](javascript:alert(1)) <b>x</b> <!channel> *bold*",
    "bool": True,
    "null": None,
}
MISSING = object()


_SEQ = itertools.count()


STATUSES = {"payments": ("failed", "completed", "refunded", "processing"),
            "webhook_events": ("failed", "processed", "received"),
            "enrollments": ("active", "pending", "cancelled", "refunded")}


def valid(key: str, when: datetime, status: str | None = None) -> dict:
    """A well-formed document of the collection, in the windows the pages, rules and reports read."""
    status = status or STATUSES[key][next(_SEQ) % len(STATUSES[key])]
    if key == "payments":
        return payment(when, status, code="card_declined", refundedAt=when + timedelta(hours=1))
    if key == "webhook_events":
        return webhook_event(when, status, error="timeout")
    doc = enrollment(when, f"cus_{uuid.uuid4().hex[:6]}", "svc-yoga", status)
    doc.update(paymentId=f"pi_{uuid.uuid4().hex[:8]}", activatedAt=when + timedelta(seconds=30),
               confirmationEmailSentAt=when + timedelta(seconds=60))
    return doc


def broken(key: str, field: str, value: object, when: datetime, status: str | None = None) -> dict:
    doc = valid(key, when, status)
    if value is MISSING:
        doc.pop(field, None)
    else:
        doc[field] = value
    return doc


def instants(n: int) -> list[datetime]:
    """Half in the last hour (the alert rules' windows), half over the last nine days (the reports')."""
    return [instant(i) for i in range(n)]


def instant(i: int) -> datetime:
    return AT - (timedelta(minutes=1 + i % 55) if i % 2 else timedelta(hours=1 + (i * 7) % 210))


def bad_documents() -> dict[str, list[dict]]:
    """Every field of every collection broken with every bad value (and left out), in each status the
    metrics tell apart; for one field, alternately in the last hour and earlier."""
    out: dict[str, list[dict]] = {}
    for key, fields in DEFAULT_FIELDS.items():
        kinds = [*BAD_VALUES.values(), MISSING]
        out[key] = [broken(key, field, value, instant(fi + vi + si + 1), status)
                    for fi, field in enumerate(fields) for vi, value in enumerate(kinds)
                    for si, status in enumerate(STATUSES[key])]
    return out


def insert(db, docs: dict[str, list[dict]]) -> None:
    for key, rows in docs.items():
        if rows:
            db[getattr(DEFAULT_SCHEMA, key).name].insert_many([dict(r) for r in rows])


@pytest.fixture(scope="module")
def bad_db(mongo_uri, mongo_client, tmp_path_factory):
    """(settings, source) over a demo history with every bad document beside it; the source is made
    per test (another test's ``dbmod.reset()`` closes cached clients)."""
    token = uuid.uuid4().hex[:10]
    names = (f"bad_{token}", f"badstate_{token}")
    seed(mongo_client[names[0]], DEFAULT_SCHEMA, days=9, per_day=10, now=AT, rng_seed=3)
    insert(mongo_client[names[0]], bad_documents())
    settings = load_settings(mongodb_uri=mongo_uri, source_db=names[0], state_db=names[1],
                             home=tmp_path_factory.mktemp("home"))
    yield settings
    dbmod.reset()
    for name in names:
        mongo_client.drop_database(name)


# -- what must still build ------------------------------------------------------------------

def check_snapshot(src: Source, settings) -> None:
    snap = to_json(build_snapshot(src, settings, AT, system=False))
    assert snap["payments"] is not None


def check_reports(src: Source, settings, state) -> None:
    for period in (last_complete_week(AT, settings.tz), last_complete_month(AT, settings.tz)):
        report = build_report(src, settings, period, state=state)
        for fmt in FORMATS:
            assert render(report, fmt), (period.label, fmt)


def check_alert_messages(src: Source, settings) -> int:
    """Every default rule read and explained, and each kind of message built and laid out for Slack."""
    ctx = EvalContext(settings, AT, src, None)
    built = 0
    for ev in evaluate(ctx, default_rules(settings), {}):
        if ev.reading is None:
            continue
        details = METRICS[ev.rule.metric].explain(ctx, ev.rule, ev.reading)  # unguarded: a crash shows here
        for reason, state in ((FIRST, FIRING), (REPEAT, FIRING), (FLAPPING, FIRING), (RESOLVED_MSG, RESOLVED)):
            st_ = AlertState(state=state, fired_at=AT - timedelta(minutes=30), resolved_at=AT,
                             value=ev.reading.value, samples=ev.reading.samples, flips=(AT,) * 5,
                             no_data_since=AT if reason == REPEAT else None)
            message = alert_message(ev.rule, ev.subject, st_, reason, details, settings, AT)
            assert plain_text(message) and slack_channel.blocks(message) and slack_channel.fallback_text(message)
            built += 1
    return built


def test_every_field_of_every_collection_is_broken_by_every_kind_of_bad_value():
    docs = bad_documents()
    for key, fields in DEFAULT_FIELDS.items():
        for field in fields:
            seen = [d.get(field, MISSING) for d in docs[key]]
            assert any(v is MISSING for v in seen), (key, field)
            for value in BAD_VALUES.values():
                assert any(v is value or (isinstance(v, float) and isinstance(value, float) and math.isnan(v)
                                          and math.isnan(value)) or v == value for v in seen), (key, field, value)


def test_the_snapshot_builds_with_bad_documents_present(bad_db):
    settings, src = bad_db, dbmod.source(bad_db)
    check_snapshot(src, settings)


def test_the_weekly_and_monthly_reports_build_in_every_format(bad_db):
    settings, src = bad_db, dbmod.source(bad_db)
    check_reports(src, settings, dbmod.state_db(settings))


def test_every_alert_rule_reads_and_every_message_builds(bad_db):
    settings, src = bad_db, dbmod.source(bad_db)
    assert check_alert_messages(src, settings) > 0


@pytest.fixture
def dashboard_env(monkeypatch, mongo_uri, bad_db, fresh_streamlit):
    settings = bad_db
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("PAYWATCH_SOURCE_DB", settings.source_db)
    monkeypatch.setenv("PAYWATCH_DB", settings.state_db)
    return settings


def registered_pages() -> list[str]:
    tree = ast.parse(Path(APP).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PAGES")
    return [name for name, _title, _icon in ast.literal_eval(node.value)]


@pytest.mark.parametrize("page", registered_pages())
def test_every_dashboard_page_opens_with_bad_documents_present(dashboard_env, page):
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["at"] = iso(AT)
    at.run()
    if page != registered_pages()[0]:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Data source unavailable" not in "\n".join(str(e.value) for e in at.error)


# -- the property: random bad values in random fields --------------------------------------

def bad_value():
    leaf = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(), st.text(max_size=12),
                     st.booleans(), st.none(), st.datetimes(), st.sampled_from(list(BAD_VALUES.values())))
    keys = st.text(alphabet="abcxyz", min_size=1, max_size=3)
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                        max_leaves=5)


@st.composite
def bad_batch(draw) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key, fields in DEFAULT_FIELDS.items():
        rows = []
        for when in instants(draw(st.integers(min_value=1, max_value=4))):
            doc = valid(key, when)
            for field in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4, unique=True)):
                if draw(st.booleans()) and draw(st.booleans()):
                    doc.pop(field, None)
                else:
                    doc[field] = draw(bad_value())
            rows.append(doc)
        out[key] = rows
    return out


@hsettings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(batch=bad_batch())
def test_random_bad_values_in_random_fields_break_nothing(mongo_client, mongo_uri, tmp_path_factory, batch):
    name = f"prop_{uuid.uuid4().hex[:10]}"
    insert(mongo_client[name], batch)
    settings = load_settings(mongodb_uri=mongo_uri, source_db=name, state_db=name + "_state",
                             home=tmp_path_factory.mktemp("home"))
    try:
        src = dbmod.source(settings)
        check_snapshot(src, settings)
        check_alert_messages(src, settings)
        check_reports(src, settings, None)
    finally:
        dbmod.reset()
        mongo_client.drop_database(name)


def test_the_snapshot_and_reports_build_from_rollups_with_bad_documents_present(bad_db):
    from metrics.rollups import attach
    settings, src = bad_db, dbmod.source(bad_db)
    rolled = attach(src, settings, refresh=False, auto_refresh=True)
    check_snapshot(rolled, settings)
    check_reports(rolled, settings, dbmod.state_db(settings))
