"""The weekly report's data model: built once from ``metrics/``, equal to it, over a seeded test database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from alerts import store as alert_store
from demo.seed import seed
from metrics import db as dbmod
from metrics import enrollments, payments, review, series, webhooks
from metrics.catalogue import CATALOGUE, METRICS
from metrics.format import mask_email
from metrics.probe import ProbeResult, record_probe
from metrics.settings import load_settings
from metrics.targets import targets
from metrics.windows import Window
from reports import alert_review
from reports.model import BETTER, FIGURE_METRICS, UNITS, Figure, Report, Section, build_report, summarise
from reports.periods import (PeriodError, last_complete_month, last_complete_week, parse_month, parse_week,
                             require_complete)

BERLIN = ZoneInfo("Europe/Berlin")
# A Monday: the demo's incidents (2 to 6 days back) all fall in the last complete week, 2026-W48.
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
CURRENCIES = "usd,eur,gbp"


@pytest.fixture(scope="module")
def seeded(mongo_uri, mongo_client, tmp_path_factory):
    """Fifteen days of demo history (about 40 payments a day) in a database of this module's own."""
    token = uuid.uuid4().hex[:10]
    names = (f"platform_{token}", f"paywatch_{token}")
    result = seed(mongo_client[names[0]], load_settings().schema, days=15, per_day=40, now=NOW, rng_seed=11)
    settings = load_settings(mongodb_uri=mongo_uri, source_db=names[0], state_db=names[1], timezone="Europe/Berlin",
                             currencies=CURRENCIES, home=tmp_path_factory.mktemp("home"))
    yield settings, result
    dbmod.reset()
    for name in names:
        mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def week_report(seeded):
    settings, _ = seeded
    period = last_complete_week(NOW, settings.tz)
    return build_report(dbmod.source(settings), settings, period, state=dbmod.state_db(settings))


# -- periods ---------------------------------------------------------------------------

def test_an_iso_week_runs_from_monday_midnight_to_monday_midnight_local_time():
    period = parse_week("2026-W47", BERLIN)
    assert period.window.start == datetime(2026, 11, 15, 23, 0, tzinfo=timezone.utc)
    assert period.window.end == datetime(2026, 11, 22, 23, 0, tzinfo=timezone.utc)
    assert (period.label, period.previous_label) == ("2026-W47", "2026-W46")
    assert period.previous.end == period.window.start
    assert period.title == "Week 2026-W47: Mon 16 Nov – Sun 22 Nov 2026"


def test_the_week_the_clocks_go_back_is_an_hour_longer():
    period = parse_week("2026-W43", BERLIN)  # Berlin leaves summer time on Sunday 25 October 2026
    assert period.window.length == timedelta(days=7, hours=1)
    assert period.last_day.isoformat() == "2026-10-25"


def test_the_first_week_of_a_year_follows_the_last_week_of_the_one_before():
    assert parse_week("2027-W01", BERLIN).previous_label == "2026-W53"
    assert parse_week("2026w5", BERLIN).label == "2026-W05"


@pytest.mark.parametrize("text, words", [
    ("2026-W54", "not an ISO week"), ("2025-W53", "2025 has 52 weeks"), ("last week", "example: 2026-W47"),
])
def test_a_week_that_does_not_exist_is_refused_in_one_line(text, words):
    with pytest.raises(PeriodError, match=words) as info:
        parse_week(text, BERLIN)
    assert "\n" not in str(info.value)


def test_the_default_week_is_the_last_complete_one_in_local_time():
    # Monday 00:30 in Berlin is still Sunday 23:30 UTC: the week that just ended is complete.
    at = datetime(2026, 11, 22, 23, 30, tzinfo=timezone.utc)
    assert last_complete_week(at, BERLIN).label == "2026-W47"
    assert last_complete_week(at, ZoneInfo("UTC")).label == "2026-W46"


def test_a_week_that_has_not_ended_is_refused():
    with pytest.raises(PeriodError, match="has not ended yet"):
        require_complete(parse_week("2026-W49", BERLIN), NOW)
    assert require_complete(parse_week("2026-W48", BERLIN), NOW).label == "2026-W48"


def test_a_month_is_compared_with_the_calendar_month_before():
    period = parse_month("2026-03", BERLIN)
    assert period.previous_label == "2026-02"
    assert period.previous.length == timedelta(days=28)
    assert last_complete_month(NOW, BERLIN).label == "2026-10"
    with pytest.raises(PeriodError, match="not a month"):
        parse_month("2026-13", BERLIN)


# -- the numbers are the metrics' numbers ------------------------------------------------

def test_every_payment_webhook_and_enrollment_figure_equals_the_metrics_over_the_week(seeded, week_report):
    settings, _ = seeded
    src = dbmod.source(settings)
    cur = tuple(settings.currencies)
    for window, which in ((week_report.period.window, "value"), (week_report.period.previous, "previous")):
        pay = payments.window_summary(src, window, cur)
        web = webhooks.window_summary(src, window)
        enr = enrollments.window_summary(src, window)
        expected = {
            "payments.created": sum(pay["by_status"].values()),
            "payments.succeeded": pay["succeeded"], "payments.failed": pay["failed"],
            "payments.success_rate": pay["success_rate"], "payments.refunds": pay["refunds"],
            "payments.refund_rate": pay["refund_rate"], "payments.processing_avg": pay["processing_ms"]["avg"],
            "payments.processing_p95": pay["processing_ms"]["p95"],
            **{f"payments.revenue.{c}": v for c, v in pay["revenue"].items()},
            **{f"payments.avg_value.{c}": v for c, v in pay["avg_transaction_value"].items()},
            "webhooks.received": web["received"], "webhooks.failed": web["failed"],
            "webhooks.failure_rate": web["failure_rate"], "webhooks.processing_p95": web["processing_ms"]["p95"],
            "webhooks.lag_avg": web["delivery_lag_ms"]["avg"], "webhooks.lag_p95": web["delivery_lag_ms"]["p95"],
            "webhooks.delivery_rate": 1 - web["failure_rate"],
            "enrollments.created": enr["created"], "enrollments.converted": enr["converted"],
            "enrollments.conversion_rate": enr["conversion_rate"], "enrollments.refunded": enr["refunded"],
            "enrollments.activation_p95": enr["activation_ms"]["p95"], "enrollments.email_p95": enr["email_ms"]["p95"],
            "enrollments.pending_payments": enrollments.pending_payments_count(src, window.end),
            "enrollments.duplicates": enrollments.duplicate_count(src, window.end),
        }
        got = {key: getattr(week_report.figure(key), which) for key in expected}
        assert got == pytest.approx(expected), which
    assert week_report.figure("payments.succeeded").value > 0


def test_the_failed_payments_counted_by_hand_match_the_report(seeded, week_report, platform_window_docs):
    failed = [d for d in platform_window_docs if d["status"] == "failed"]
    assert week_report.figure("payments.failed").value == len(failed)
    by_code: dict[str, int] = {}
    for doc in failed:
        by_code[doc["failureCode"]] = by_code.get(doc["failureCode"], 0) + 1
    table = {row["key"]: row["count"] for row in week_report.table("failures_by_decline_code").rows}
    assert table == by_code


@pytest.fixture(scope="module")
def platform_window_docs(seeded, mongo_client, week_report):
    """The week's valid payments read directly, without ``metrics``, for an independent count."""
    settings, _ = seeded
    window = week_report.period.window
    docs = mongo_client[settings.source_db]["payments"].find({"createdAt": {"$gte": window.start, "$lt": window.end}})
    return [d for d in docs if isinstance(d.get("amount"), int) and d.get("status") in
            ("pending", "processing", "completed", "failed", "canceled", "refunded")]


def test_the_breakdowns_are_the_series_and_review_functions_over_the_week(seeded, week_report):
    settings, _ = seeded
    src = dbmod.source(settings)
    window, tz = week_report.period.window, settings.tz
    specialists = series.failures_by(src, window, "specialistId", 15)
    assert [(r["key"], r["count"]) for r in week_report.table("failures_by_specialist").rows] == \
        [(r["key"], r["count"]) for r in specialists]
    days = series.payment_series(src, window, tz, "day", tuple(settings.currencies))
    assert [(r["day"], r["succeeded"], r["failed"]) for r in week_report.table("payments_by_day").rows] == \
        [(r["bucket"], r["succeeded"], r["failed"]) for r in days]
    assert len(days) == 7
    assert sum(r["failed"] for r in week_report.table("failures_by_hour").rows) == week_report.figure("payments.failed").value
    worst = review.worst_webhook_hours(src, window, settings.timezone, 5)
    assert week_report.table("webhooks_worst_hours").rows == worst
    hours = week_report.table("webhooks_by_hour").rows
    assert len(hours) == 7 * 24 and sum(r["received"] for r in hours) == week_report.figure("webhooks.received").value


def test_the_decline_spike_is_the_worst_hour_of_the_week(seeded, week_report):
    _, result = seeded
    spike = result["incidents"]["decline_spike"]
    local = spike["start"].astimezone(BERLIN)
    cells = week_report.table("failures_by_hour").rows
    worst = max(cells, key=lambda r: r["failed"])
    assert (worst["weekday"], worst["hour"]) == (local.strftime("%A"), local.hour)
    assert worst["failed"] >= spike["failed"]


def test_the_largest_failed_payments_come_largest_first_with_emails_masked(week_report):
    rows = week_report.table("largest_failed").rows
    assert rows
    for currency in {r["currency"] for r in rows}:
        amounts = [r["amount"] for r in rows if r["currency"] == currency]
        assert amounts == sorted(amounts, reverse=True)
    assert all(r["customerEmail"] == mask_email(r["customerEmail"]) and "***@" in r["customerEmail"] for r in rows)


def test_targets_are_judged_by_the_metrics_targets(week_report):
    defaults = targets()
    success = week_report.figure("payments.success_rate")
    assert success.target == defaults["payment_success_rate"].describe()
    assert success.status == defaults["payment_success_rate"].evaluate(success.value)
    duplicates = week_report.figure("enrollments.duplicates")
    assert (duplicates.value, duplicates.status) == (1, "missed")  # the demo's duplicate enrollment


def assert_figures_are_the_catalogues(report: Report) -> set[str]:
    """Every figure of ``report`` that is a catalogue metric states its label, unit, better direction
    and target as the catalogue (and the configured targets) do; the others reuse no catalogue label.
    Returns the keys of FIGURE_METRICS seen."""
    labels = {m.label for m in CATALOGUE}
    seen = set()
    for f in report.figures():
        key = f.key.rsplit(".", 1)[0] if f.currency else f.key
        if key not in FIGURE_METRICS:
            assert f.metric is None and f.label not in labels, f"{f.key} is a catalogue metric: map it in FIGURE_METRICS"
            continue
        m = METRICS[FIGURE_METRICS[key]]
        currency = f" ({f.currency.upper()})" if f.currency else ""
        assert f.metric == m.key, f.key
        assert f.label in (m.label + currency, m.label + " at the end", m.label + " (now)"), f.key
        assert (f.unit, f.better) == (UNITS.get(m.unit, m.unit), BETTER[m.better]), f.key
        if m.target:
            assert f.target == targets()[m.key].describe(), f.key
        seen.add(key)
    return seen


def test_a_figure_that_is_a_catalogue_metric_says_what_the_catalogue_says(week_report, make_settings):
    settings = make_settings(timezone="Europe/Berlin")
    period = parse_week("2026-W47", BERLIN)
    record_probe(dbmod.state_db(settings), ProbeResult(period.window.start + timedelta(hours=1), "http://platform/health",
                                                       True, 200, 120.0, None, memory_pct=55.0))
    probed = build_report(dbmod.source(settings), settings, period, state=dbmod.state_db(settings))
    seen = assert_figures_are_the_catalogues(week_report) | assert_figures_are_the_catalogues(probed)
    assert seen == set(FIGURE_METRICS)
    assert week_report.figure("payments.revenue.usd").label == "Revenue (USD)"
    assert week_report.figure("enrollments.duplicates").label == "Duplicate enrollments at the end"
    assert probed.figure("system.memory").text() == "55.0%"


def test_an_overridden_target_shows_in_the_report(make_settings):
    settings = make_settings(timezone="Europe/Berlin", targets={"payment_success_rate": 0.9})
    report = build_report(dbmod.source(settings), settings, parse_week("2026-W47", BERLIN))
    assert report.figure("payments.success_rate").target == "> 90%"
    assert report.figure("payments.refund_rate").target == "< 2%"  # the catalogue's


def test_the_summary_names_the_missed_targets_and_what_changed_most(week_report):
    summary = week_report.summary
    missed = [f for f in week_report.figures() if f.status == "missed"]
    assert missed and len(summary.missed) == len(missed)
    assert any(line.startswith("Duplicate enrollments") for line in summary.missed)
    assert 1 <= len(summary.changes) <= 3
    assert "payments" in summary.headline and "Target missed: " + summary.missed[0] in summary.lines()


def test_what_changed_most_ranks_rates_by_their_bad_side_and_ignores_tiny_counts():
    sections = [
        Section("a", "A", [Figure("a", "Success rate", "rate", 0.95, 0.98, better="up")]),  # failures 2% -> 5%: +150%
        Section("b", "B", [Figure("b", "Payments", "count", 1100, 1000, better="up")]),  # +10%
        Section("c", "C", [Figure("c", "Duplicates", "count", 3, 1, better="down")]),  # tiny: not news
        Section("d", "D", [Figure("d", "Revenue", "money", 50_000, 40_000, currency="usd", better="up")]),  # +25%
    ]
    summary = summarise(parse_week("2026-W47", BERLIN), sections)
    assert [line.split(":")[0] for line in summary.changes] == ["Success rate", "Revenue", "Payments"]
    assert summary.changes[0].endswith("worse") and summary.changes[1].endswith("better")
    assert summary.changes[2] == "Payments: 1,000 → 1,100, +100 (+10%), better"


def test_what_changed_most_names_one_figure_per_section():
    refunds = [Figure("r", "Refunds", "count", 60, 20, better="down"), Figure("rr", "Refund rate", "rate", 0.03, 0.01,
                                                                              better="down")]
    lag = [Figure("l", "Delivery lag", "ms", 900, 600, better="down")]
    summary = summarise(parse_week("2026-W47", BERLIN), [Section("p", "P", refunds), Section("w", "W", lag)])
    assert [line.split(":")[0] for line in summary.changes] == ["Refunds", "Delivery lag"]


def test_a_target_with_nothing_to_measure_is_never_reported_as_met():
    figure = Figure("x", "Activation time (p95)", "ms", None, None, target="< 2 s", status="unknown")
    summary = summarise(parse_week("2026-W47", BERLIN), [Section("s", "S", [figure])])
    assert summary.unknown and "Every target was met." not in summary.lines()


def test_a_week_without_any_data_builds_a_report_of_dashes_not_zeros(make_settings):
    settings = make_settings(timezone="Europe/Berlin")
    report = build_report(dbmod.source(settings), settings, parse_week("2026-W47", BERLIN))
    assert report.figure("payments.created").value == 0
    assert report.figure("payments.success_rate").value is None
    assert report.figure("payments.success_rate").status == "unknown"
    assert report.figure("payments.success_rate").text() == "–"
    assert report.table("payments_by_day").rows and report.table("largest_failed").rows == []


# -- Paywatch's own records: probes, alerts, reconciliation --------------------------------

def test_without_alert_history_or_a_stripe_mirror_those_parts_say_not_available(week_report):
    alerts = week_report.section("alerts")
    assert not alerts.available and "not available" in alerts.note
    quality = week_report.section("quality")
    assert "Reconciliation with Stripe: not available" in quality.note
    assert "API probe: not available" in week_report.section("system").note


def test_probe_results_of_the_week_become_latency_and_error_rate_figures(make_settings):
    settings = make_settings(timezone="Europe/Berlin")
    state = dbmod.state_db(settings)
    period = parse_week("2026-W47", BERLIN)
    start = period.window.start
    for i, (ok, latency) in enumerate([(True, 100.0), (True, 300.0), (False, None), (True, 200.0)]):
        record_probe(state, ProbeResult(start + timedelta(hours=i), "http://platform/health", ok,
                                        200 if ok else None, latency, None if ok else "timed out"))
    report = build_report(dbmod.source(settings), settings, period, state=state)
    assert report.figure("system.probe_samples").value == 4
    assert report.figure("system.api_error_rate").value == pytest.approx(0.25)
    assert report.figure("system.api_latency_avg").value == pytest.approx(200.0)


def _transition(rule_id: str, at: datetime, to: str, frm: str, subject: str = "") -> dict:
    return {"rule_id": rule_id, "subject": subject, "title": rule_id.replace("_", " "), "severity": "warning",
            "event": "transition", "at": at, "from": frm, "to": to}


def test_alerts_of_the_week_are_counted_per_rule_with_time_firing_and_time_to_resolve(make_settings):
    settings = make_settings(timezone="Europe/Berlin")
    state = dbmod.state_db(settings)
    period = parse_week("2026-W47", BERLIN)
    w0, w1 = period.window.start, period.window.end
    hour = timedelta(hours=1)
    alert_store.add_history(state, [
        # fired and resolved inside the week: 2 h
        _transition("webhook_failure_rate", w0 + hour, "firing", "pending"),
        _transition("webhook_failure_rate", w0 + 3 * hour, "resolved", "firing"),
        # fired before the week, resolved an hour into it: counts 1 h of firing, not a new alert
        _transition("stuck_payments", w0 - 2 * hour, "firing", "pending"),
        _transition("stuck_payments", w0 + hour, "resolved", "firing"),
        # fired in the last hour and still firing when the week ended
        _transition("failed_payments", w1 - hour, "firing", "pending", subject="usd"),
        # next week: not this week's
        _transition("refund_rate", w1 + hour, "firing", "pending"),
        {"rule_id": "webhook_failure_rate", "subject": "", "event": "notified", "at": w0 + hour, "reason": "first"},
    ])
    alert_store.add_silence(state, "refund_rate", None, w0 + 30 * hour, "known incident", "ops@example.com", w0 + 2 * hour)
    rows = {r["rule_id"]: r for r in alert_review.alerts_in(state, period.window)}
    assert set(rows) == {"webhook_failure_rate", "stuck_payments", "failed_payments"}
    assert (rows["webhook_failure_rate"]["fired"], rows["webhook_failure_rate"]["firing_ms"]) == (1, 2 * 3_600_000)
    assert rows["webhook_failure_rate"]["resolve_avg_ms"] == 2 * 3_600_000
    assert rows["webhook_failure_rate"]["messages"] == 1
    assert (rows["stuck_payments"]["fired"], rows["stuck_payments"]["firing_ms"]) == (0, 3_600_000)
    assert rows["stuck_payments"]["resolve_avg_ms"] == 3 * 3_600_000
    assert (rows["failed_payments"]["fired"], rows["failed_payments"]["resolved"]) == (1, 0)

    report = build_report(dbmod.source(settings), settings, period, state=state)
    assert report.section("alerts").available
    assert report.figure("alerts.fired").value == 2
    assert report.figure("alerts.firing_time").value == 4 * 3_600_000
    assert report.figure("alerts.silences").value == 1
    assert report.table("silences").rows[0]["reason"] == "known incident"


def test_a_window_summary_of_alerts_ignores_history_from_other_rules_windows(make_settings):
    settings = make_settings()
    state = dbmod.state_db(settings)
    window = Window(NOW - timedelta(days=7), NOW)
    alert_store.add_history(state, [_transition("r", NOW - timedelta(days=30), "firing", "pending"),
                                    _transition("r", NOW - timedelta(days=29), "resolved", "firing")])
    assert alert_review.alerts_in(state, window) == []


def test_a_failed_payment_with_a_dict_specialist_or_a_list_decline_code_is_a_row_not_a_crash(make_settings, platform_db):
    from fakes.platform import payment
    week = last_complete_week(NOW, ZoneInfo("UTC"))
    when = week.window.start + timedelta(days=2)
    platform_db.payments.insert_many([
        payment(when, "failed", specialist={"id": "spec-x", "name": "X"}, code=["card_declined", "expired_card"]),
        payment(when, "failed", specialist=["spec-y"], code={"code": "do_not_honor"}),
        payment(week.previous.start + timedelta(days=1), "failed", specialist={"id": "spec-x", "name": "X"}),
        payment(when, "failed"),
    ])
    settings = make_settings()
    report = build_report(dbmod.source(settings), settings, week)
    tables = {t.key: t for s in report.sections for t in s.tables}
    specialists = {r["key"]: r for r in tables["failures_by_specialist"].rows}
    codes = {r["key"] for r in tables["failures_by_decline_code"].rows}
    assert all(isinstance(k, str) for k in [*specialists, *codes])
    assert sum(r["count"] for r in specialists.values()) == 3
    assert specialists["spec-ana"]["count"] == 1
    assert "card_declined" in codes
    # The same malformed value last week is counted as the same row's "previous".
    assert max(r["previous"] for r in specialists.values()) == 1
