"""Rollups: the same figures as the raw documents, at any instant, in any zone, after any change.

The metric tests of test_metrics_*.py and test_series.py run on the rollups
too (conftest ``src_mode``); these tests cover what only rollups have:
bucket edges, changes after a bucket closed, resume tokens, the fallback
without change streams, and verification.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone

import pytest
from bson import Decimal128, ObjectId

from metrics import enrollments, payments, rollups, series
from metrics.db import source
from metrics.rollups import buckets as bk
from metrics.rollups.store import BUCKETS, META
from metrics.snapshot import build_snapshot

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 7, 31, 500_000, tzinfo=UTC)  # inside a bucket: both edges are partial


def mixed_platform(db, at: datetime = AT, days: int = 12, seed: int = 7) -> None:
    """Payments, webhook events and enrollments of every kind over ``days``, plus malformed ones."""
    rnd = random.Random(seed)
    pays, events, enrolls = [], [], []
    for i in range(days * 60):
        created = at - timedelta(seconds=rnd.uniform(-3600, days * 86400))
        status = rnd.choices(["completed", "failed", "refunded", "pending", "processing", "canceled"],
                             [60, 15, 6, 4, 3, 2])[0]
        doc = {"_id": ObjectId(), "paymentId": f"pi_{i}", "amount": rnd.choice([1500, 2500, 9900, 49900, 250.0,
                                                                                Decimal128("1200")]),
               "currency": rnd.choice(["usd", "usd", "eur", "EUR", "jpy"]), "status": status,
               "customerId": f"cus_{i % 40}", "customerEmail": f"u{i}@example.com",
               "specialistId": rnd.choice(["sp_1", "sp_2", "sp_3", None]), "serviceId": f"svc_{i % 5}",
               "createdAt": created, "stripeEventId": f"evt_p{i}"}
        if status in ("completed", "refunded"):
            doc["completedAt"] = created + timedelta(milliseconds=rnd.randint(300, 9000))
        if status == "refunded":
            doc["refundedAt"] = created + timedelta(hours=rnd.uniform(1, 200))
        if status == "failed":
            doc["failureCode"] = rnd.choice(["card_declined", "insufficient_funds", "expired_card"])
        pays.append(doc)
        if status in ("completed", "refunded") and rnd.random() < 0.8:
            activated = doc["completedAt"] + timedelta(milliseconds=rnd.randint(100, 4000))
            enrolls.append({"customerId": doc["customerId"], "specialistId": "sp_1", "serviceId": doc["serviceId"],
                            "paymentId": doc["_id"], "status": "refunded" if status == "refunded" else "active",
                            "paymentStatus": "refunded" if status == "refunded" else "paid",
                            "createdAt": created - timedelta(seconds=30), "activatedAt": activated,
                            "confirmationEmailSentAt": activated + timedelta(milliseconds=rnd.randint(200, 8000)),
                            **({"refundedAt": doc["refundedAt"]} if status == "refunded" else {})})
        elif rnd.random() < 0.3:
            enrolls.append({"customerId": doc["customerId"], "serviceId": doc["serviceId"], "paymentId": doc["_id"],
                            "status": "pending", "paymentStatus": rnd.choice(["pending", "failed"]),
                            "createdAt": created - timedelta(seconds=30)})
        received = created + timedelta(seconds=rnd.uniform(0.2, 40))
        wstatus = rnd.choices(["processed", "failed", "received"], [90, 7, 3])[0]
        event = {"eventId": f"evt_{i}", "type": rnd.choice(["payment_intent.succeeded", "charge.refunded",
                                                            "payment_intent.payment_failed"]),
                 "stripeCreatedAt": created, "receivedAt": received, "status": wstatus}
        if wstatus != "received":
            event["processedAt"] = received + timedelta(milliseconds=rnd.randint(5, 3000))
        if wstatus == "failed":
            event["error"] = "handler timeout"
        events.append(event)
    pays += [{"paymentId": "pi_bad1", "amount": "250", "currency": "usd", "status": "completed", "createdAt": at - timedelta(hours=1)},
             {"paymentId": "pi_bad2", "amount": 100, "currency": 5, "status": ["completed"], "createdAt": at - timedelta(hours=2)},
             {"paymentId": "pi_bad3", "amount": float("nan"), "currency": "usd", "status": "completed", "createdAt": at - timedelta(hours=3)}]
    events += [{"eventId": "evt_bad", "type": "x", "receivedAt": "yesterday", "status": "processed"}]
    enrolls += [{"customerId": "dup", "serviceId": "svc_1", "status": "active", "paymentStatus": "paid", "createdAt": at - timedelta(days=2)},
                {"customerId": "dup", "serviceId": "svc_1", "status": "pending", "paymentStatus": "pending", "createdAt": at - timedelta(hours=5)},
                {"customerId": "dup", "serviceId": "svc_1", "status": "active", "paymentStatus": "paid", "createdAt": at + timedelta(hours=1)},
                {"customerId": "bad", "status": "active", "createdAt": "2026-11-20"}]
    db.payments.insert_many(pays)
    db.webhook_events.insert_many(events)
    db.enrollments.insert_many(enrolls)


def p95_bounds(values: list[int]) -> tuple[int, int]:
    """The spec's tolerance for a p95: between the 93rd and the 97th nearest-rank percentiles."""
    ordered = sorted(values)
    rank = lambda q: ordered[max(1, math.ceil(q * len(ordered))) - 1]  # noqa: E731
    return rank(0.93), rank(0.97)


def strip_p95(tree):
    """The tree with every p95 taken out (they are compared against their bounds instead)."""
    if isinstance(tree, dict):
        return {k: strip_p95(v) for k, v in tree.items() if k != "p95"}
    if isinstance(tree, list):
        return [strip_p95(v) for v in tree]
    return tree


def rolled(src, settings, **kw):
    return rollups.attach(src, settings, **kw)


def test_snapshot_from_rollups_equals_the_raw_snapshot_at_an_instant_inside_a_bucket(platform_db, settings):
    mixed_platform(platform_db)
    raw = source(settings)
    want = build_snapshot(raw, settings, AT, system=False)
    got = build_snapshot(rolled(raw, settings), settings, AT, system=False)
    assert strip_p95(got) == strip_p95(want)
    assert got["data_quality"] == {"payments": {"invalid": 3}, "enrollments": {"invalid": 1},
                                   "webhook_events": {"invalid": 1}}
    assert got["enrollments"]["duplicates"] > 1
    pairs = {(p["customerId"], p["serviceId"]): p["count"] for p in enrollments.duplicate_pairs(rolled(raw, settings), AT)}
    assert pairs[("dup", "svc_1")] == 2  # the third "dup" enrollment is created after at


def test_a_p95_from_the_rollups_lies_within_the_spec_tolerance(platform_db, settings):
    mixed_platform(platform_db)
    day = (AT - timedelta(hours=24), AT)
    got = build_snapshot(rolled(source(settings), settings), settings, AT, system=False)
    processing = [(d["completedAt"] - d["createdAt"]) // timedelta(milliseconds=1)
                  for d in platform_db.payments.find({"status": {"$in": ["completed", "refunded"]},
                                                      "completedAt": {"$exists": True},
                                                      "createdAt": {"$gte": day[0], "$lt": day[1]}})
                  if not isinstance(d["amount"], str)]
    low, high = p95_bounds(processing)
    assert low <= got["payments"]["24h"]["processing_ms"]["p95"] <= high
    lags = [(d["receivedAt"] - d["stripeCreatedAt"]) // timedelta(milliseconds=1)
            for d in platform_db.webhook_events.find({"receivedAt": {"$gte": day[0], "$lt": day[1]}})]
    low, high = p95_bounds(lags)
    assert low <= got["webhooks"]["24h"]["delivery_lag_ms"]["p95"] <= high


def test_a_histogram_p95_is_exact_for_small_samples_and_close_for_large_ones():
    small = bk.Hist()
    for v in (120, 480, 3000, 90, 15):
        small.add(v)
    assert small.quantile() == 3000 and small.avg() == 741
    large, values = bk.Hist(), [random.Random(1).randint(1, 60_000) for _ in range(5000)]
    for v in values:
        large.add(v)
    low, high = p95_bounds(values)
    assert low <= large.quantile() <= high


@pytest.mark.parametrize("zone, at", [
    ("Asia/Kolkata", datetime(2026, 11, 26, 18, 37, 12, tzinfo=UTC)),      # 00:07 local, just after midnight
    ("America/New_York", datetime(2026, 11, 2, 5, 2, 0, tzinfo=UTC)),      # 00:02 local, the day after DST ended
    ("America/New_York", datetime(2026, 11, 1, 7, 30, 0, tzinfo=UTC)),     # 02:30 EST on the day DST ended
])
def test_calendar_periods_from_rollups_match_the_raw_documents_in_any_zone(platform_db, make_settings, zone, at):
    settings = make_settings(timezone=zone)
    from metrics.windows import CALENDAR
    periods = {name: make(at, settings.tz) for name, make in CALENDAR.items()}
    docs = []
    for w in periods.values():
        for offset in (timedelta(0), -timedelta(milliseconds=1), timedelta(minutes=14, seconds=59),
                       timedelta(minutes=15), timedelta(minutes=31)):
            when = w.start + offset
            if when < at + timedelta(hours=1):
                docs.append({"paymentId": f"pi_{len(docs)}", "amount": 100 * (len(docs) + 1), "currency": "usd",
                             "status": "completed", "createdAt": when, "completedAt": when + timedelta(seconds=1)})
    docs.append({"paymentId": "pi_at", "amount": 7, "currency": "usd", "status": "completed", "createdAt": at})
    platform_db.payments.insert_many(docs)
    platform_db.enrollments.insert_many([{"status": "active", "paymentStatus": "paid", "createdAt": d["createdAt"]}
                                         for d in docs])
    raw = source(settings)
    fast = rolled(raw, settings)
    assert payments.revenue_by_period(fast, periods, ("usd",)) == payments.revenue_by_period(raw, periods, ("usd",))
    assert enrollments.created_count(fast, periods["today"]) == enrollments.created_count(raw, periods["today"])
    day = periods["today"]
    assert series.payment_series(fast, day, zone, "hour") == series.payment_series(raw, day, zone, "hour")
    month = periods["month"]
    assert series.payment_series(fast, month, zone, "day") == series.payment_series(raw, month, zone, "day")


def test_bucket_edges_fall_on_local_midnight_in_half_hour_and_dst_zones():
    from zoneinfo import ZoneInfo
    for zone in ("Asia/Kolkata", "America/New_York", "Asia/Kathmandu", "Australia/Adelaide"):
        for day in range(1, 30):
            midnight = datetime(2026, 11, day, tzinfo=ZoneInfo(zone)).astimezone(UTC)
            assert bk.floor(midnight) == midnight, (zone, day)
    buckets, edges = bk.segments(datetime(2026, 10, 31, 18, 30, tzinfo=UTC), AT)
    assert [e[1] - e[0] for e in edges] == [AT - bk.floor(AT)]
    assert {level for level, _ in buckets} == {"1h", "1d", "15m"}
    covered = sorted((t, t + bk.LEVELS[level]) for level, t in buckets)
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # no gap, no overlap


def test_a_payment_changed_after_its_bucket_closed_shows_in_the_figures(platform_db, settings):
    mixed_platform(platform_db)
    raw = source(settings)
    fast = rolled(raw, settings)
    week = (AT - timedelta(days=7), AT)
    old = platform_db.payments.find_one({"status": "completed", "createdAt": {"$lt": AT - timedelta(days=3)},
                                         "amount": {"$type": "int"}})
    failed = platform_db.payments.find_one({"status": "failed", "createdAt": {"$gte": week[0], "$lt": AT - timedelta(days=2)}})
    # A refund days later, and a late status change, both long after their buckets closed.
    platform_db.payments.update_one({"_id": old["_id"]}, {"$set": {"status": "refunded",
                                                                  "refundedAt": AT - timedelta(minutes=20)}})
    platform_db.payments.update_one({"_id": failed["_id"]}, {"$set": {"status": "completed",
                                                                     "completedAt": failed["createdAt"] + timedelta(seconds=2)}})
    platform_db.enrollments.update_one({"paymentId": old["_id"]}, {"$set": {"status": "refunded", "paymentStatus": "refunded",
                                                                           "refundedAt": AT - timedelta(minutes=19)}})
    fast.rollups.refresh()
    want = build_snapshot(raw, settings, AT, system=False)
    got = build_snapshot(fast, settings, AT, system=False)
    assert strip_p95(got) == strip_p95(want)
    assert got["payments"]["24h"]["refunds"] >= 1
    from metrics.windows import Window
    w = Window(*week)
    assert payments.window_summary(fast, w, ("usd",)) | {"processing_ms": None} == \
        payments.window_summary(raw, w, ("usd",)) | {"processing_ms": None}


def test_a_new_payment_shows_at_the_next_refresh_and_a_deleted_one_goes(platform_db, settings):
    mixed_platform(platform_db, days=2)
    raw = source(settings)
    fast = rolled(raw, settings)
    now = datetime.now(UTC)
    from metrics.windows import last
    before = payments.window_summary(fast, last(now, hours=1), ("usd",))["succeeded"]
    pid = platform_db.payments.insert_one({"paymentId": "pi_new", "amount": 500, "currency": "usd", "status": "completed",
                                           "createdAt": now - timedelta(minutes=40)}).inserted_id
    fast.rollups.refresh()
    assert payments.window_summary(fast, last(now, hours=1), ("usd",))["succeeded"] == before + 1
    platform_db.payments.delete_one({"_id": pid})
    fast.rollups.refresh()
    assert payments.window_summary(fast, last(now, hours=1), ("usd",))["succeeded"] == before


def test_data_quality_and_duplicates_follow_changes_without_scanning_the_collection(platform_db, settings):
    mixed_platform(platform_db, days=2)
    fast = rolled(source(settings), settings)
    dups = enrollments.duplicate_count(fast, AT)
    bad = platform_db.payments.insert_one({"paymentId": "pi_x", "amount": "12", "status": "completed",
                                           "createdAt": AT}).inserted_id
    platform_db.enrollments.insert_one({"customerId": "dup2", "serviceId": "s", "status": "active",
                                        "paymentStatus": "paid", "createdAt": AT - timedelta(hours=1)})
    second = platform_db.enrollments.insert_one({"customerId": "dup2", "serviceId": "s", "status": "pending",
                                                 "paymentStatus": "pending", "createdAt": AT - timedelta(hours=2)}).inserted_id
    fast.rollups.refresh()
    assert payments_invalid(fast) == 4
    assert enrollments.duplicate_count(fast, AT) == dups + 1
    platform_db.payments.update_one({"_id": bad}, {"$set": {"amount": 12}})
    platform_db.enrollments.update_one({"_id": second}, {"$set": {"status": "cancelled"}})
    fast.rollups.refresh()
    assert payments_invalid(fast) == 3
    assert enrollments.duplicate_count(fast, AT) == dups == enrollments.duplicate_count(source(settings), AT)
    assert payments_invalid(fast) == payments_invalid(source(settings))


def payments_invalid(src) -> int:
    from metrics.quality import data_quality
    return data_quality(src)["payments"]["invalid"]


def test_a_lost_resume_token_leads_to_a_rebuild(platform_db, settings, caplog):
    mixed_platform(platform_db, days=2)
    raw = source(settings)
    fast = rolled(raw, settings)
    state = fast.rollups.state
    # The server no longer knows the token (the oplog rolled over past it): here, one it cannot parse.
    state[META].update_one({"_id": "payments"}, {"$set": {"token": {"_data": "00"}}})
    fast.rollups.close()
    platform_db.payments.insert_one({"paymentId": "pi_late", "amount": 999, "currency": "usd", "status": "completed",
                                     "createdAt": AT - timedelta(hours=1)})
    with caplog.at_level("WARNING", logger="paywatch.rollups"):
        result = fast.rollups.refresh()
    assert result["payments"] == "rebuilt"
    assert "cannot resume" in caplog.text
    assert state[META].find_one({"_id": "payments"})["token"] != {"_data": "00"}
    assert strip_p95(build_snapshot(fast, settings, AT, system=False)) == \
        strip_p95(build_snapshot(raw, settings, AT, system=False))


def test_without_change_streams_the_trailing_window_is_reaggregated_every_refresh(platform_db, settings, mongo_client, caplog):
    mixed_platform(platform_db, days=2)
    raw = source(settings)
    # A standalone mongod answers a change stream with error 40573; the server says so here through a fail point.
    mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                                "data": {"failCommands": ["aggregate"], "errorCode": 40573}})
    try:
        with caplog.at_level("WARNING", logger="paywatch.rollups"):
            fast = rolled(raw, settings, refresh=False)
            fast.rollups.build(["payments"])
    finally:
        mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert "change streams unavailable" in caplog.text
    fast.rollups.refresh()
    assert fast.rollups.status()["payments"]["mode"] == "poll"
    now = datetime.now(UTC)
    from metrics.windows import last
    hour = last(now, hours=1)
    before = payments.window_summary(fast, hour, ("usd",))
    platform_db.payments.insert_one({"paymentId": "pi_poll", "amount": 300, "currency": "usd", "status": "completed",
                                     "createdAt": now - timedelta(minutes=50)})
    old = platform_db.payments.find_one({"status": "completed", "createdAt": {"$lt": now - timedelta(days=1)}})
    platform_db.payments.update_one({"_id": old["_id"]}, {"$set": {"status": "refunded", "refundedAt": now - timedelta(minutes=5)}})
    fast.rollups.refresh()
    after = payments.window_summary(fast, hour, ("usd",))
    assert after["succeeded"] == before["succeeded"] + 1
    assert after["refunds"] == before["refunds"] + 1
    day = last(now, days=2)
    assert payments.window_summary(fast, day, ("usd",)) == payments.window_summary(raw, day, ("usd",))


def test_verification_finds_and_repairs_a_corrupted_bucket(platform_db, settings, caplog):
    mixed_platform(platform_db, days=3)
    raw = source(settings)
    fast = rolled(raw, settings)
    buckets = fast.rollups.state[BUCKETS]
    hour = next(h for h in buckets.find({"s": "payments", "l": "1h"}) if h["q"][0] is not None)
    corrupted = hour["q"]
    corrupted[0]["c"]["status"][0][1] += 5
    buckets.update_one({"_id": hour["_id"]}, {"$set": {"q": corrupted}})
    day = bk.floor(hour["t"].astimezone(UTC), "1d")
    buckets.update_one({"s": "webhooks", "l": "1d", "t": day}, {"$set": {"b": {}}})
    with caplog.at_level("WARNING", logger="paywatch.rollups"):
        report = fast.rollups.verify(AT - timedelta(days=4), AT + timedelta(hours=2))
    assert report["payments"]["differ"] == [hour["t"].astimezone(UTC)]
    assert report["webhooks"]["differ"] == [day]
    assert "differed from the raw documents and were repaired" in caplog.text
    again = fast.rollups.verify(AT - timedelta(days=4), AT + timedelta(hours=2))
    assert all(not r["differ"] for r in again.values())
    assert strip_p95(build_snapshot(fast, settings, AT, system=False)) == \
        strip_p95(build_snapshot(raw, settings, AT, system=False))


def test_snapshot_and_snapshot_raw_agree_from_the_command_line(platform_db, run):
    mixed_platform(platform_db, days=3)
    at = "2026-11-26T12:07:31.500Z"
    fast = run("snapshot", "--json", "--at", at)
    slow = run("snapshot", "--json", "--raw", "--at", at)
    assert fast.returncode == 0, fast.stderr
    assert slow.returncode == 0, slow.stderr
    a, b = json.loads(fast.stdout), json.loads(slow.stdout)
    for snap in (a, b):
        snap.pop("system", None), snap.pop("stripe", None)
    assert strip_p95(a) == strip_p95(b)
    assert "rollups:" in fast.stderr  # the first snapshot built them, with progress


def test_rollups_status_build_and_verify_commands(platform_db, run):
    mixed_platform(platform_db, days=2)
    status = run("rollups", "status")
    assert status.returncode == 0 and "not built" in status.stdout
    built = run("rollups", "build")
    assert built.returncode == 0, built.stderr
    assert "built payments" in built.stdout and "rollups: payments" in built.stderr
    status = run("rollups", "status", "--json")
    data = json.loads(status.stdout)
    assert data["payments"]["mode"] == "change_stream" and data["payments"]["current"]
    verify = run("rollups", "verify", "--no-repair")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "payments" in verify.stdout and "ok" in verify.stdout


@pytest.mark.parametrize("split, subject", [(None, None), ("currency", "eur"), ("specialist", "sp_2")])
def test_the_alert_signals_from_rollups_equal_the_raw_ones(platform_db, settings, split, subject):
    from metrics import signals
    from metrics.windows import Window
    mixed_platform(platform_db, days=3)
    raw = source(settings)
    fast = rolled(raw, settings)
    for window in (Window(AT - timedelta(hours=1), AT), Window(AT - timedelta(days=2, minutes=7), AT)):
        assert signals.payment_outcomes(fast, window, split) == signals.payment_outcomes(raw, window, split)
        assert signals.decline_codes(fast, window, 5, split, subject) == \
            signals.decline_codes(raw, window, 5, split, subject)


def test_the_activity_counts_of_the_data_absence_rules_come_from_the_rollups_and_equal_the_raw_ones(
        platform_db, settings, monkeypatch):
    """Payments created and events received in a window and the same window of the four weeks before:
    every minute, for both rules; from the rollups they are buckets and two small edges per window."""
    from metrics import signals
    from metrics.db import Source
    from metrics.windows import Window
    mixed_platform(platform_db, days=12)
    raw = source(settings)
    fast = rolled(raw, settings)
    windows = [Window(AT - timedelta(hours=1, minutes=7), AT - timedelta(minutes=7)),
               Window(AT - timedelta(minutes=20), AT), Window(AT - timedelta(hours=5), AT)]
    expected = [(signals.payment_activity(raw, w), signals.webhook_activity(raw, w)) for w in windows]
    counted, real = [], Source.aggregate
    monkeypatch.setattr(Source, "aggregate", lambda self, key, pipeline: counted.extend(
        key for stage in pipeline if "$count" in stage) or real(self, key, pipeline))
    assert [(signals.payment_activity(fast, w), signals.webhook_activity(fast, w)) for w in windows] == expected
    assert any(e[0]["created"] for e in expected) and any(e[1]["weekly"] for e in expected)
    assert counted == []


def test_failures_by_a_field_that_is_not_text_is_one_row_named_by_its_type(platform_db, settings):
    from metrics.windows import Window
    platform_db.payments.insert_many([
        {"amount": 100, "currency": "usd", "status": "failed", "createdAt": AT - timedelta(hours=2),
         "specialistId": {"id": 1}, "failureCode": ["x"]},
        {"amount": 100, "currency": "usd", "status": "failed", "createdAt": AT - timedelta(hours=3),
         "specialistId": 7, "failureCode": "card_declined"},
    ])
    raw = source(settings)
    fast = rolled(raw, settings)
    day = Window(AT - timedelta(days=1), AT)
    for field in ("specialistId", "failureCode", "serviceId"):
        assert series.failures_by(fast, day, field) == series.failures_by(raw, day, field)


def test_revenue_deltas_compare_today_with_yesterday_until_the_same_time(platform_db, settings):
    from metrics.windows import CALENDAR
    at = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)
    platform_db.payments.insert_many([
        {"amount": 100, "currency": "usd", "status": "completed", "createdAt": at - timedelta(hours=2)},  # today
        {"amount": 40, "currency": "usd", "status": "completed", "createdAt": at - timedelta(hours=25)},  # yesterday 08:30
        {"amount": 999, "currency": "usd", "status": "completed", "createdAt": at - timedelta(hours=20)},  # yesterday 13:30
    ])
    periods = {name: make(at, settings.tz) for name, make in CALENDAR.items()}
    for src in (source(settings), rolled(source(settings), settings)):
        got = series.revenue_with_previous(src, {"today": periods["today"]}, ("usd",), settings.tz)
        assert got["today"] == {"current": {"usd": 100}, "previous": {"usd": 40}}


def test_a_dashboard_trusts_rollups_another_process_refreshed_moments_ago(platform_db, settings):
    mixed_platform(platform_db, days=2)
    worker = rolled(source(settings), settings)
    dashboard = rolled(source(settings), settings, refresh=False)
    dashboard.rollups.refresh()
    worker.rollups.refresh()
    assert set(dashboard.rollups.refresh(trust_s=60).values()) == {"trusted"}
    assert set(dashboard.rollups.refresh(trust_s=0).values()) == {"0 changes"}


def test_a_day_written_before_it_ended_is_summed_from_its_hours_when_read(platform_db, settings):
    from metrics.windows import Window
    mixed_platform(platform_db, days=3)
    raw = source(settings)
    fast = rolled(raw, settings)
    buckets = fast.rollups.state[BUCKETS]
    day = bk.floor(AT - timedelta(days=2), "1d")
    # As if written while the day was still going on: early version, and missing its last hours.
    buckets.update_one({"s": "payments", "l": "1d", "t": day},
                       {"$set": {"v": int(day.timestamp()) * 10**9, "b": {}}})
    window = Window(day, day + timedelta(days=1))
    assert strip_p95(payments.window_summary(fast, window, ("usd",))) == \
        strip_p95(payments.window_summary(raw, window, ("usd",)))
    assert buckets.find_one({"s": "payments", "l": "1d", "t": day})["b"] != {}


@pytest.mark.parametrize("zone, at", [("Asia/Kolkata", AT), ("America/New_York", datetime(2026, 11, 5, 9, 7, tzinfo=UTC))])
def test_the_weekly_reviews_breakdowns_come_from_the_rollups_and_equal_the_raw_ones(platform_db, make_settings,
                                                                                  monkeypatch, zone, at):
    """Failures per local (weekday, hour) and the worst webhook hours, over a week (and across the end of DST)."""
    from metrics import review
    from metrics.windows import Window
    settings = make_settings(timezone=zone)
    mixed_platform(platform_db, at=at, days=12)
    raw = source(settings)
    fast = rolled(raw, settings)
    midnight = at.astimezone(settings.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    week = Window((midnight - timedelta(days=7)).astimezone(UTC), midnight.astimezone(UTC))
    want_hours = review.failures_by_hour(raw, week, zone)
    want_worst = review.worst_webhook_hours(raw, week, zone, 5)
    assert sum(r["failed"] for r in want_hours) > 10 and len(want_worst) == 5
    # From the rollups the raw week is never aggregated.
    monkeypatch.setattr(review, "failures_by_hour_pipeline", None)
    monkeypatch.setattr(review, "webhook_hours_pipeline", None)
    assert review.failures_by_hour(fast, week, zone) == want_hours
    got_worst = review.worst_webhook_hours(fast, week, zone, 5)
    assert strip_p95(got_worst) == strip_p95(want_worst)
    assert [r["hour"] for r in got_worst] == [r["hour"] for r in want_worst]


def test_a_build_reads_every_series_through_its_time_fields_index(platform_db, settings, monkeypatch):
    """Sparse time fields (refundedAt, activatedAt) must not be read by a collection scan at build time:
    on a year of payments that scan is minutes long, and its getMores outlive the socket timeout."""
    from metrics.indexes import ensure_indexes
    from metrics.rollups import store
    mixed_platform(platform_db, days=2)
    raw = source(settings)
    ensure_indexes(platform_db, raw.schema)
    conditions = []
    real = store.read_valid

    def recording(src, series, condition, *args):
        conditions.append((series, condition))
        return real(src, series, condition, *args)

    completions = []
    real_times = store._payment_times

    def recording_times(src, query):
        completions.append(query)
        return real_times(src, query)

    monkeypatch.setattr(store, "read_valid", recording)
    monkeypatch.setattr(store, "_payment_times", recording_times)
    rolled(raw, settings).rollups.build()
    assert {s.name for s, _ in conditions} == set(store.SERIES) and completions
    queries = [(s.collection, {getattr(raw.schema, s.collection)[s.field]: c}) for s, c in conditions]
    for collection, query in queries + [("payments", q) for q in completions]:
        plan = platform_db.command("explain", {"find": collection, "filter": query},
                                   verbosity="queryPlanner")["queryPlanner"]["winningPlan"]
        assert "IXSCAN" in json.dumps(plan, default=str), (collection, query, plan)


def test_a_build_in_many_small_windows_gives_the_same_figures(platform_db, settings, monkeypatch):
    """The build reads each collection window by window of its time field (so no server operation
    grows with the history); windows of a few documents must still count every document once."""
    from metrics.rollups import store
    mixed_platform(platform_db, days=4)
    monkeypatch.setattr(store, "BUILD_CHUNK_DOCS", 7)
    raw = source(settings)
    want = build_snapshot(raw, settings, AT, system=False)
    fast = rolled(raw, settings, refresh=False)
    fast.rollups.build()
    got = build_snapshot(fast, settings, AT, system=False)
    assert strip_p95(got) == strip_p95(want)
    assert got["data_quality"] == {"payments": {"invalid": 3}, "enrollments": {"invalid": 1},
                                   "webhook_events": {"invalid": 1}}
    assert got["enrollments"]["duplicates"] == want["enrollments"]["duplicates"] > 1
    windows = store.time_chunks(raw, "payments", "createdAt")
    assert len(windows) > 20 and all(a < b for a, b in windows)
    assert all(b == a2 for (_, b), (a2, _) in zip(windows, windows[1:]))


def test_a_build_another_process_holds_is_named_not_skipped_in_silence(platform_db, run, mongo_client, db_names):
    mixed_platform(platform_db, days=1)
    until = datetime.now(UTC) + timedelta(minutes=20)
    mongo_client[db_names[1]][META].insert_one({"_id": "build:enrollments", "holder": "other-host:4242:1",
                                                "until": until})
    built = run("rollups", "build")
    assert built.returncode == 1, built.stdout + built.stderr
    assert "built payments" in built.stdout and "built enrollments" not in built.stdout
    assert "enrollments is being built by another process (other-host:4242:1" in built.stderr
    assert until.strftime("%H:%M") in built.stderr


def test_a_quiet_change_stream_moves_on_so_its_resume_point_stays_in_the_oplog(platform_db):
    """The embedded server writes a no-op to the oplog every 10 s, as mongod does: a collection
    nobody writes keeps a current resume token, however much else the server writes."""
    import time as clock
    platform_db.payments.insert_one({"paymentId": "pi_0"})
    with platform_db.payments.watch(max_await_time_ms=10) as stream:
        assert stream.try_next() is None
        first = stream.resume_token
        deadline = clock.monotonic() + 25
        while stream.resume_token == first and clock.monotonic() < deadline:
            assert stream.try_next() is None
            clock.sleep(0.5)
        assert stream.resume_token != first
        moved = stream.resume_token
    platform_db.payments.insert_one({"paymentId": "pi_1"})
    with platform_db.payments.watch(resume_after=moved, max_await_time_ms=10) as resumed:
        change = resumed.try_next()
        assert change is not None and change["fullDocument"]["paymentId"] == "pi_1"


def test_a_build_claim_left_by_a_process_that_died_on_this_machine_is_taken_over(platform_db, settings,
                                                                                mongo_client, db_names):
    import socket
    import subprocess
    import sys
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mixed_platform(platform_db, days=1)
    meta = mongo_client[db_names[1]][META]
    until = datetime.now(UTC) + timedelta(minutes=20)
    meta.insert_one({"_id": "build:payments", "holder": f"{socket.gethostname()}:{gone.pid}:1", "until": until})
    meta.insert_one({"_id": "build:enrollments", "holder": "elsewhere:1:1", "until": until})
    built = rolled(source(settings), settings, refresh=False).rollups.build()
    assert "payments" in built and "webhook_events" in built and "enrollments" not in built


def test_the_last_payment_is_found_without_sorting_the_whole_history(platform_db, settings, monkeypatch):
    """The data-absence rule asks every minute when the last payment was created: a recent one is
    found by a read bounded in time; one a month old is still found, by wider reads."""
    from metrics import signals
    from metrics.windows import Window
    platform_db.payments.insert_many([
        {"paymentId": "old", "amount": 100, "currency": "usd", "status": "completed", "createdAt": AT - timedelta(days=40)},
        {"paymentId": "new", "amount": 100, "currency": "usd", "status": "completed", "createdAt": AT - timedelta(hours=3)},
    ])
    raw = source(settings)
    pipelines = []
    real = type(raw).aggregate

    def recording(self, key, pipeline):
        pipelines.append((key, pipeline))
        return real(self, key, pipeline)

    monkeypatch.setattr(type(raw), "aggregate", recording)
    window = Window(AT - timedelta(hours=1), AT)
    assert signals.payment_activity(raw, window)["last_created_at"] == AT - timedelta(hours=3)
    latest = [p for k, p in pipelines if k == "payments" and any("$sort" in s for s in p)]
    def lower_bound(pipeline):
        return any("$gte" in (stage.get("$match", {}).get("createdAt") or {}) for stage in pipeline)
    assert latest and all(lower_bound(p) for p in latest)
    assert signals.payment_activity(raw, Window(AT - timedelta(days=39, hours=1), AT - timedelta(days=39)))[
        "last_created_at"] == AT - timedelta(days=40)


def test_figures_read_between_two_refreshes_share_their_bucket_reads_and_partial_edges(platform_db, settings,
                                                                                    monkeypatch):
    """A page asks for a window's summary, its previous window, its series and its splits: each read
    the same buckets and the same partial edges again (41 commands for 21 distinct on the Payments
    page at a year). Between two refreshes they are read once; a refresh forgets them, so a new
    payment in a partial edge shows at the next refresh."""
    from pymongo import monitoring
    from metrics.windows import Window
    mixed_platform(platform_db, days=3)
    fast = rolled(source(settings), settings)
    window = Window(AT - timedelta(hours=5, minutes=7), AT - timedelta(minutes=4))
    from pymongo.collection import Collection
    sent, real = [], Collection.find
    monkeypatch.setattr(Collection, "find", lambda self, *a, **kw: sent.append((self.name, repr(a))) or real(self, *a, **kw))
    first = payments.window_summary(fast, window)
    reads = len(sent)
    assert payments.window_summary(fast, window) == first and payments.refund_count(fast, window) is not None
    assert reads and len(sent) == len(set(sent))
    platform_db.payments.insert_one({"paymentId": "late", "amount": 700, "currency": "usd", "status": "completed",
                                     "createdAt": AT - timedelta(minutes=5)})
    fast.rollups.refresh()
    assert payments.window_summary(fast, window)["succeeded"] == first["succeeded"] + 1


def test_a_verification_step_finds_where_history_starts_without_scanning_every_bucket(platform_db, settings,
                                                                                     monkeypatch):
    """Each step asked for the oldest day bucket of any series, a filter the (s, l, t) index does not
    serve: 13.6 s of a 15.7 s step at a year of history, every 10 minutes. The oldest day is kept;
    a document older than it moves it back, so verification still walks the whole history."""
    from pymongo.collection import Collection
    mixed_platform(platform_db, days=3)
    fast = rolled(source(settings), settings)
    assert fast.rollups.oldest() == bk.floor(AT - timedelta(days=3), "1d")
    filters, real = [], Collection.find
    monkeypatch.setattr(Collection, "find", lambda self, *a, **kw: (
        filters.append(a[0] if a else kw.get("filter")) if self.name == BUCKETS else None) or real(self, *a, **kw))
    fast.rollups.verify_step(AT + timedelta(hours=1))
    assert filters and all("s" in f for f in filters)
    platform_db.payments.insert_one({"paymentId": "backdated", "amount": 100, "currency": "usd",
                                     "status": "completed", "createdAt": AT - timedelta(days=40)})
    fast.rollups.refresh()
    assert fast.rollups.oldest() == bk.floor(AT - timedelta(days=40), "1d")


def _bucket_and_raw_reads(monkeypatch) -> list[tuple[str, dict]]:
    from pymongo.collection import Collection
    sent, real = [], Collection.find
    monkeypatch.setattr(Collection, "find", lambda self, *a, **kw: sent.append(
        (self.name, a[0] if a else kw.get("filter"))) or real(self, *a, **kw))
    return sent


def test_a_view_after_a_refresh_reads_only_the_buckets_written_since_by_any_process(platform_db, settings,
                                                                                   monkeypatch):
    """Each refresh forgot every bucket read, so a page view after it read them all again: about 60
    commands on the Overview at a year (0.33 s), when only the newest hour had changed. What was
    read is now kept until its bucket is written again, by this process or another (the worker):
    a change stream on rollup_buckets names what was written."""
    from metrics.windows import Window
    mixed_platform(platform_db, days=3)
    worker = rolled(source(settings), settings)
    dashboard = rolled(source(settings), settings, refresh=False)
    dashboard.rollups.refresh()
    window = Window(AT - timedelta(days=2, minutes=7), AT - timedelta(minutes=4))
    first = payments.window_summary(dashboard, window)
    sent = _bucket_and_raw_reads(monkeypatch)
    dashboard.rollups.refresh(trust_s=60)
    sent.clear()  # what a refresh reads (rollup_meta) is not the view's
    assert payments.window_summary(dashboard, window) == first
    assert sent == []
    # A late status change in a closed hour, which the worker follows.
    late = platform_db.payments.find_one({"status": "completed", "createdAt": {
        "$gte": window.start + timedelta(hours=2), "$lt": AT - timedelta(days=1)}})
    platform_db.payments.update_one({"_id": late["_id"]}, {"$set": {"status": "failed"}})
    worker.rollups.refresh()
    dashboard.rollups.refresh(trust_s=60)
    sent.clear()
    got = payments.window_summary(dashboard, window)
    assert (got["succeeded"], got["failed"]) == (first["succeeded"] - 1, first["failed"] + 1)
    assert got | {"processing_ms": None} == payments.window_summary(source(settings), window) | {"processing_ms": None}
    reads = [f for name, f in sent if name == BUCKETS]
    assert reads and all(f["t"]["$gte"] <= late["createdAt"].replace(tzinfo=UTC) < f["t"]["$lt"] for f in reads)
    assert [f for name, f in sent if name != BUCKETS] == []  # the window's partial edges did not change


def test_without_a_change_stream_on_the_buckets_every_refresh_forgets_what_was_read(platform_db, settings,
                                                                                   mongo_client, monkeypatch,
                                                                                   caplog):
    from metrics.windows import Window
    mixed_platform(platform_db, days=3)
    worker = rolled(source(settings), settings)
    dashboard = rolled(source(settings), settings, refresh=False)
    window = Window(AT - timedelta(days=2, minutes=7), AT - timedelta(minutes=4))
    dashboard.rollups.refresh()
    # The server stops answering change streams (as a standalone mongod answers them: 40573).
    no_streams = {"configureFailPoint": "failCommand", "mode": "alwaysOn",
                  "data": {"failCommands": ["aggregate", "getMore"], "errorCode": 40573}}

    def refreshed_without_change_streams():
        mongo_client.admin.command(no_streams)
        try:
            dashboard.rollups.refresh(trust_s=60)
        finally:
            mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})

    with caplog.at_level("INFO", logger="paywatch.rollups"):
        refreshed_without_change_streams()
        first = payments.window_summary(dashboard, window)
        late = platform_db.payments.find_one({"status": "completed", "createdAt": {
            "$gte": window.start + timedelta(hours=2), "$lt": AT - timedelta(days=1)}})
        platform_db.payments.update_one({"_id": late["_id"]}, {"$set": {"status": "failed"}})
        worker.rollups.refresh()
        refreshed_without_change_streams()
        sent = _bucket_and_raw_reads(monkeypatch)
        got = payments.window_summary(dashboard, window)
    assert "no change stream on rollup_buckets" in caplog.text
    assert caplog.text.count("no change stream on rollup_buckets") == 1  # said once, not at every refresh
    assert got["failed"] == first["failed"] + 1
    assert len([f for name, f in sent if name == BUCKETS]) > 1  # everything read again


def test_a_read_that_a_forgetting_overtook_is_not_kept(mongo_client, db_names):
    from metrics.rollups.memo import Memo
    memo = Memo(mongo_client[db_names[1]][BUCKETS], limit=10, await_ms=1)
    reads = []

    def read():
        reads.append(1)
        memo.forget(["payments|1h|2026-11-26T11:00"])  # a write landed while this read was under way
        return len(reads)

    assert memo.get("a", read, under="payments|1h|2026-11-26T11:00") == 1
    assert memo.get("a", read, under="payments|1h|2026-11-26T11:00") == 2
    memo.get("b", lambda: "kept", under="payments|1h|2026-11-26T12:00")
    assert memo.get("b", lambda: "read again", under="payments|1h|2026-11-26T12:00") == "kept"
    memo.forget(["payments|1h|2026-11-26T12:00"])
    assert memo.get("b", lambda: "read again", under="payments|1h|2026-11-26T12:00") == "read again"
    for i in range(12):
        memo.get(("c", i), lambda: i, under=f"payments|1h|2026-11-26T{i:02d}:00")
    assert len(memo._entries) == 10  # the oldest went first
    assert len(memo._under) == 10  # and nothing is kept of what went


@pytest.mark.parametrize("split", [None, "currency", "specialist"])
def test_the_amount_spike_of_a_cycle_reads_only_the_fine_buckets_written_since_the_last_one(
        platform_db, settings, monkeypatch, split):
    """The amount-spike rule aggregated five raw hours every minute (the window and the same hour in
    each of the four weeks before): 0.1 s of a 0.27 s cycle at a year, the same hours again each
    time. It now reads the documents of the window's fine buckets, kept until their hour is written
    again, and gives the same figures as the raw aggregation."""
    from metrics import signals
    from metrics.db import Source
    from metrics.windows import Window
    mixed_platform(platform_db, days=30)
    raw = source(settings)
    fast = rolled(raw, settings)
    fast.rollups.refresh()  # past the build's own writes (what was read before a build is read again)
    window = Window(AT - timedelta(hours=1), AT)
    want = signals.amount_spike(raw, window, split=split)
    assert any(s["baseline_weeks"] for s in want.values())
    assert signals.amount_spike(fast, window, split=split) == want
    sent = _bucket_and_raw_reads(monkeypatch)
    aggregated, real = [], Source.aggregate
    monkeypatch.setattr(Source, "aggregate", lambda self, key, pipeline: aggregated.append(key) or real(
        self, key, pipeline))
    fast.rollups.refresh()
    sent.clear()
    assert signals.amount_spike(fast, window, split=split) == want
    assert sent == [] and aggregated == []
