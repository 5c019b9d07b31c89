"""The demo plays the platform: its history, live traffic, incidents and CLI.

Against a real SecantusDB server started for this module (self-contained:
no shared fixture needed).  Volumes are small (10 days x 50 a day) so the
file runs in seconds; the full 90 x 300 seed is measured by hand
(``timeout 120 python -m demo seed``), not here.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pymongo import MongoClient

from demo.catalog import CONTROL_COLLECTION, WEBHOOK_OUTAGE_ID, Ledger
from demo.seed import MIN_DAYS, build_history, seed, seed_if_empty
from demo.traffic import INCIDENTS, IncidentRotation, LiveTraffic, inject
from metrics.db import Source
from metrics.embedded import EmbeddedMongo
from metrics.quality import data_quality
from metrics.schema import DEFAULT_SCHEMA, Schema

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)  # a Thursday; fixed so runs compare
DAYS, PER_DAY = 10, 50
ROOT = Path(__file__).resolve().parents[1]
S = DEFAULT_SCHEMA


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    server = EmbeddedMongo(tmp_path_factory.mktemp("db"), memory=True)
    uri = server.ensure()
    yield uri
    server.stop()


@pytest.fixture(scope="module")
def client(mongo):
    client = MongoClient(mongo, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def db(client):
    """An empty database of its own for one test."""
    name = f"demo_{uuid.uuid4().hex[:10]}"
    yield client[name]
    client.drop_database(name)


@pytest.fixture(scope="module")
def seeded(client):
    """One seeded history shared by the read-only tests: (database, seed result)."""
    name = f"demo_seeded_{uuid.uuid4().hex[:6]}"
    result = seed(client[name], S, days=DAYS, per_day=PER_DAY, now=NOW)
    yield client[name], result
    client.drop_database(name)


def _between(incident: dict) -> dict:
    return {"$gte": incident["start"], "$lt": incident["end"]}


# --- The history ------------------------------------------------------------------

def test_the_same_seed_gives_the_same_history_and_another_seed_does_not():
    first = build_history(S, days=DAYS, per_day=PER_DAY, now=NOW, rng_seed=3)
    again = build_history(S, days=DAYS, per_day=PER_DAY, now=NOW, rng_seed=3)
    other = build_history(S, days=DAYS, per_day=PER_DAY, now=NOW, rng_seed=4)
    assert first.documents == again.documents
    assert first.incidents == again.incidents
    assert [p["paymentId"] for p in first.documents["payments"]] != [p["paymentId"] for p in other.documents["payments"]]


def test_seeding_twice_with_one_seed_writes_the_same_counts(seeded, db):
    _, result = seeded
    again = seed(db, S, days=DAYS, per_day=PER_DAY, now=NOW)
    for key in ("payments", "webhook_events", "enrollments"):
        assert again[key] == result[key] == db[key].count_documents({})


def test_seed_writes_about_per_day_payments_a_day(seeded):
    database, result = seeded
    # The incidents add about 35 payments on top of the ordinary traffic.
    assert 0.8 * DAYS * PER_DAY <= result["payments"] <= 1.2 * DAYS * PER_DAY + 40
    assert database.payments.count_documents({}) == result["payments"]
    assert result["enrollments"] == result["payments"] + 1  # one each, plus the planted duplicate
    assert result["webhook_events"] >= result["payments"] - 10
    statuses = {s: database.payments.count_documents({"status": s})
                for s in ("completed", "failed", "canceled", "refunded", "pending", "processing")}
    assert statuses["completed"] > 0.85 * result["payments"]
    assert statuses["failed"] > 10 and statuses["refunded"] > 0 and statuses["canceled"] > 0
    assert set(database.payments.distinct("currency")) == {"usd", "eur", "gbp"}


def test_busy_evenings_and_quiet_nights(seeded):
    database, _ = seeded
    hours = {row["_id"]: row["n"] for row in database.payments.aggregate([
        {"$match": {"createdAt": {"$type": "date"}}},
        {"$group": {"_id": {"$hour": "$createdAt"}, "n": {"$sum": 1}}}])}
    night = sum(hours.get(h, 0) for h in (2, 3, 4))
    evening = sum(hours.get(h, 0) for h in (18, 19, 20))
    assert evening > 5 * night


def test_failed_payments_carry_a_real_stripe_decline_code(seeded):
    database, _ = seeded
    codes = set(database.payments.distinct("failureCode", {"status": "failed"}))
    assert codes <= {"card_declined", "insufficient_funds", "expired_card", "incorrect_cvc",
                     "processing_error", "do_not_honor", "fraudulent", "lost_card"}
    assert database.payments.count_documents({"status": "failed", "failureMessage": {"$exists": False}}) == 0


def test_ids_are_unique_and_shaped_like_stripe_ids(seeded):
    database, result = seeded
    payment_ids = database.payments.distinct("paymentId")
    assert len(payment_ids) == result["payments"] and all(p.startswith("pi_") for p in payment_ids)
    assert len(database.payments.distinct("stripeEventId")) == result["payments"]
    event_ids = database.webhook_events.distinct("eventId")
    assert len(event_ids) == result["webhook_events"] and all(e.startswith("evt_") for e in event_ids)


def test_every_enrollment_references_an_existing_payment(seeded):
    database, _ = seeded
    payment_ids = set(database.payments.distinct("_id"))
    assert set(database.enrollments.distinct("paymentId")) <= payment_ids


def test_enrollments_agree_with_their_payments(seeded):
    database, _ = seeded
    expected = {"completed": {("active", "paid")}, "refunded": {("refunded", "refunded")},
                "failed": {("pending", "failed"), ("cancelled", "failed")}, "canceled": {("cancelled", "failed")},
                "pending": {("pending", "pending")}, "processing": {("pending", "pending")}}
    status_of = {p["_id"]: p["status"] for p in database.payments.find({}, {"status": 1})}
    for enrollment in database.enrollments.find({}, {"paymentId": 1, "status": 1, "paymentStatus": 1}):
        payment_status = status_of[enrollment["paymentId"]]
        if payment_status in expected:
            assert (enrollment["status"], enrollment["paymentStatus"]) in expected[payment_status]


def test_durations_are_realistic_and_nothing_is_dated_after_now(seeded):
    database, _ = seeded
    for p in database.payments.find({"completedAt": {"$exists": True}, "createdAt": {"$type": "date"}}):
        assert 0.49 <= (p["completedAt"] - p["createdAt"]).total_seconds() <= 3.01
    completed_at = {p["_id"]: p["completedAt"] for p in database.payments.find({"completedAt": {"$exists": True}})}
    for e in database.enrollments.find({"activatedAt": {"$exists": True}}):
        assert 0.19 <= (e["activatedAt"] - completed_at[e["paymentId"]]).total_seconds() <= 1.51 + 6  # +6: the retried copy
        assert 0.49 <= (e["confirmationEmailSentAt"] - e["activatedAt"]).total_seconds() <= 4.01
    for w in database.webhook_events.find({"receivedAt": {"$type": "date"}, "processedAt": {"$exists": True}}):
        assert (w["processedAt"] - w["receivedAt"]).total_seconds() < 10
        assert w["receivedAt"] > w["stripeCreatedAt"]
    for key, fields in (("payments", ("createdAt", "completedAt", "refundedAt")),
                        ("enrollments", ("createdAt", "activatedAt", "confirmationEmailSentAt", "refundedAt")),
                        ("webhook_events", ("stripeCreatedAt", "receivedAt", "processedAt"))):
        for field in fields:
            assert database[key].count_documents({field: {"$gte": NOW}}) == 0, (key, field)


# --- The incidents, where the result says they are ----------------------------------

def test_decline_spike_hour_has_more_than_ten_failures_and_thirty_percent(seeded):
    database, result = seeded
    spike = result["incidents"]["decline_spike"]
    created = {"createdAt": _between(spike)}
    failed = database.payments.count_documents({**created, "status": "failed"})
    succeeded = database.payments.count_documents({**created, "status": {"$in": ["completed", "refunded"]}})
    assert failed > 10
    assert failed / (failed + succeeded) > 0.30
    assert failed == spike["failed"]


def test_no_webhook_arrives_during_the_outage_then_late_deliveries_burst_in(seeded):
    database, result = seeded
    outage = result["incidents"]["webhook_outage"]
    assert outage["end"] - outage["start"] == timedelta(minutes=70)
    assert database.webhook_events.count_documents({"receivedAt": _between(outage)}) == 0
    burst = list(database.webhook_events.find(
        {"receivedAt": {"$gte": outage["end"], "$lt": outage["end"] + timedelta(minutes=10)},
         "stripeCreatedAt": {"$lt": outage["start"] + timedelta(minutes=60)}}))
    assert len(burst) >= 1  # a quiet afternoon at 50 a day; the full-size history has dozens
    assert max(e["receivedAt"] - e["stripeCreatedAt"] for e in burst) > timedelta(minutes=10)
    # Some of the late deliveries fail (12 % each); the result says how many in this history.
    assert outage["late_failed"] == sum(e["status"] == "failed" for e in database.webhook_events.find(
        {"receivedAt": {"$gte": outage["end"], "$lt": outage["end"] + timedelta(minutes=10)},
         "stripeCreatedAt": {"$lt": outage["end"]}}))


def test_a_full_size_history_has_failed_late_deliveries():
    history = build_history(S, days=MIN_DAYS, per_day=300, now=NOW)  # in memory only
    assert history.incidents["webhook_outage"]["late_failed"] >= 1
    assert history.incidents["webhook_outage"]["late_deliveries"] >= 10


def test_refund_wave_day_refunds_about_ten_percent(seeded):
    database, result = seeded
    wave = result["incidents"]["refund_wave"]
    refunds = database.payments.count_documents({"refundedAt": _between(wave)})
    succeeded = database.payments.count_documents(
        {"createdAt": _between(wave), "status": {"$in": ["completed", "refunded"]}})
    assert 0.07 <= refunds / succeeded <= 0.14
    assert database.enrollments.count_documents({"refundedAt": _between(wave), "paymentStatus": "refunded"}) == refunds
    assert database.webhook_events.count_documents(
        {"type": "charge.refunded", "stripeCreatedAt": _between(wave)}) == refunds


def test_amount_spike_hour_has_payments_at_ten_times_the_usual_amount(seeded):
    database, result = seeded
    spike = result["incidents"]["amount_spike"]
    usual = sorted(p["amount"] for p in database.payments.find(
        {"currency": "usd", "status": "completed", "amount": {"$type": "number"}}))
    median = usual[len(usual) // 2]
    big = database.payments.count_documents(
        {"createdAt": _between(spike), "amount": {"$gte": 8 * median}, "status": "completed"})
    assert big >= 5
    assert database.payments.count_documents({"paymentId": {"$in": spike["paymentIds"]}}) == 6


def test_three_payments_are_stuck_in_processing(seeded):
    database, result = seeded
    stuck = database.payments.find({"status": {"$in": ["pending", "processing"]},
                                    "createdAt": {"$lt": NOW - timedelta(minutes=30)}})
    ages = sorted((NOW - p["createdAt"]) / timedelta(minutes=1) for p in stuck)
    assert len(ages) == 3 and 40 <= ages[0] and ages[-1] <= 90
    assert sorted(result["incidents"]["stuck_payments"]["paymentIds"]) == sorted(
        database.payments.distinct("paymentId", {"status": "processing",
                                                 "createdAt": {"$lt": NOW - timedelta(minutes=30)}}))
    # ...while a few recent checkouts are simply in flight.
    assert database.payments.count_documents({"status": {"$in": ["pending", "processing"]},
                                              "createdAt": {"$gte": NOW - timedelta(minutes=5)}}) >= 2


def test_exactly_one_customer_is_enrolled_twice_in_a_service(seeded):
    database, result = seeded
    pairs = list(database.enrollments.aggregate([
        {"$match": {"status": {"$in": ["active", "pending"]}, "createdAt": {"$type": "date"}}},
        {"$group": {"_id": {"c": "$customerId", "s": "$serviceId"}, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}}]))
    duplicate = result["incidents"]["duplicate_enrollment"]
    assert [p["_id"] for p in pairs] == [{"c": duplicate["customerId"], "s": duplicate["serviceId"]}]
    both = list(database.enrollments.find({"_id": {"$in": duplicate["enrollmentIds"]}}))
    assert [e["status"] for e in both] == ["active", "active"]


def test_malformed_documents_are_there_and_counted_invalid_by_the_metrics(seeded):
    database, result = seeded
    assert database.payments.count_documents({"amount": "250"}) == 1
    assert database.payments.count_documents({"createdAt": {"$exists": False}}) == 1
    assert database.payments.count_documents({"status": "weird"}) == 1
    assert database.webhook_events.count_documents({"receivedAt": {"$type": "string"}}) == 1
    assert database.enrollments.count_documents({"createdAt": {"$exists": False}}) == 1
    quality = data_quality(Source(db=database, schema=S, max_time_ms=10000))
    assert quality == {"payments": {"invalid": 3}, "enrollments": {"invalid": 1}, "webhook_events": {"invalid": 1}}
    assert len(result["incidents"]["malformed"]["payments"]) == 3


def test_seed_creates_the_metric_indexes_after_the_load(seeded):
    database, result = seeded
    assert result["indexes"]
    assert any(name.startswith("paywatch_") for name in database.payments.index_information())


# --- Seeding rules -------------------------------------------------------------------

def test_seed_if_empty_does_not_seed_twice(db):
    first = seed_if_empty(db, S, days=MIN_DAYS, per_day=20, now=NOW)
    assert first is not None
    assert seed_if_empty(db, S, days=MIN_DAYS, per_day=20, now=NOW) is None
    assert db.payments.count_documents({}) == first["payments"]


def test_seed_reports_progress_up_to_the_total(db):
    calls = []
    result = seed(db, S, days=MIN_DAYS, per_day=20, now=NOW, progress=lambda *a: calls.append(a))
    total = result["payments"] + result["webhook_events"] + result["enrollments"]
    assert calls[0] == (0, total, "generated")
    assert calls[-1] == (total, total, "indexes")
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_seed_writes_the_names_a_renamed_schema_asks_for(db):
    schema = Schema.from_mapping({"payments": {"collection": "transactions", "amount": "amount_cents"},
                                  "enrollments": {"paymentId": "payment_ref"}})
    result = seed(db, schema, days=MIN_DAYS, per_day=20, now=NOW)
    assert "payments" not in db.list_collection_names()
    assert db.transactions.count_documents({"amount_cents": {"$type": "number"}}) == result["payments"] - 1
    assert db.enrollments.count_documents({"payment_ref": {"$exists": True}}) == result["enrollments"]


def test_a_history_too_short_for_the_incidents_is_refused():
    with pytest.raises(ValueError, match="at least"):
        build_history(S, days=MIN_DAYS - 1, now=NOW)


# --- Live traffic ----------------------------------------------------------------------

def test_a_tick_adds_payments_enrollments_and_webhooks(db):
    traffic = LiveTraffic(db, S, rate_per_min=120, rng_seed=1)
    wrote = traffic.tick(NOW)
    assert wrote["payments"] >= 1
    assert db.payments.count_documents({}) == wrote["payments"]
    assert db.enrollments.count_documents({}) == wrote["payments"]


def test_a_live_payment_moves_from_pending_to_completed_across_ticks(db):
    traffic = LiveTraffic(db, S, rate_per_min=600, rng_seed=2, failure_rate=0)
    traffic.tick(NOW)
    assert db.payments.count_documents({"status": {"$in": ["pending", "processing"]}}) >= 1
    traffic.rate_per_min = 0  # no new arrivals: let the started ones finish
    for seconds in (5, 10, 15, 20):
        traffic.tick(NOW + timedelta(seconds=seconds))
    assert traffic.in_flight == 0
    count = db.payments.count_documents({})
    assert db.payments.count_documents({"status": "completed"}) == count
    assert db.enrollments.count_documents({"status": "active", "paymentStatus": "paid",
                                           "confirmationEmailSentAt": {"$type": "date"}}) == count
    assert db.webhook_events.count_documents({"status": {"$in": ["processed", "failed"]}}) == count
    for p in db.payments.find():
        assert timedelta(milliseconds=499) <= p["completedAt"] - p["createdAt"] <= timedelta(seconds=3.01)


def test_live_traffic_finishes_what_the_seed_left_in_flight_but_not_the_stuck_payments(db):
    seed(db, S, days=MIN_DAYS, per_day=20, now=NOW)
    traffic = LiveTraffic(db, S, rate_per_min=0, rng_seed=3)
    for seconds in (5, 15, 25):
        traffic.tick(NOW + timedelta(seconds=seconds))
    in_flight = {"status": {"$in": ["pending", "processing"]}}
    assert db.payments.count_documents(in_flight) == 3
    assert db.payments.count_documents({**in_flight, "createdAt": {"$lt": NOW - timedelta(minutes=30)}}) == 3
    # Finished late, but recorded when they would have finished: no minute-long processing times.
    recent = {"createdAt": {"$gte": NOW - timedelta(minutes=3)}, "completedAt": {"$exists": True}}
    for p in db.payments.find(recent):
        assert p["completedAt"] - p["createdAt"] <= timedelta(seconds=3.01)


def test_live_webhooks_wait_for_the_outage_to_end_then_arrive_late(db):
    result = inject(db, S, "webhook-outage", NOW, minutes=2)
    until = result["until"]
    traffic = LiveTraffic(db, S, rate_per_min=30, rng_seed=4)
    for seconds in range(5, 120, 5):
        traffic.tick(NOW + timedelta(seconds=seconds))
    assert db.webhook_events.count_documents({"receivedAt": {"$gte": NOW, "$lt": until}}) == 0
    traffic.rate_per_min = 0
    for seconds in range(120, 300, 5):
        traffic.tick(NOW + timedelta(seconds=seconds))
    late = list(db.webhook_events.find({"receivedAt": {"$gte": until}}))
    assert len(late) >= 5
    assert max(e["receivedAt"] - e["stripeCreatedAt"] for e in late) > timedelta(seconds=60)


# --- Incidents on demand ---------------------------------------------------------------

def test_decline_spike_writes_fifteen_failed_payments_in_the_last_minutes(db):
    result = inject(db, S, "decline-spike", NOW)
    recent = {"createdAt": {"$gte": NOW - timedelta(minutes=10), "$lt": NOW}}
    assert db.payments.count_documents({**recent, "status": "failed"}) == result["failed_payments"] >= 15
    assert db.webhook_events.count_documents({"type": "payment_intent.payment_failed"}) >= 15
    assert db.enrollments.count_documents({"paymentStatus": "failed"}) == result["failed_payments"]


def test_decline_spike_outweighs_a_busy_hour(db):
    busy = Ledger(random.Random(5), NOW)
    for minute in range(1, 60):
        for _ in range(3):
            busy.payment(NOW - timedelta(minutes=minute), "completed")
    for key, docs in busy.documents(S).items():
        db[key].insert_many(docs)
    inject(db, S, "decline-spike", NOW)
    hour = {"createdAt": {"$gte": NOW - timedelta(hours=1), "$lt": NOW}}
    failed = db.payments.count_documents({**hour, "status": "failed"})
    succeeded = db.payments.count_documents({**hour, "status": "completed"})
    assert failed / (failed + succeeded) >= 0.35


def test_webhook_outage_sets_the_switch_and_writes_failed_events(db):
    result = inject(db, S, "webhook-outage", NOW, minutes=20)
    switch = db[CONTROL_COLLECTION].find_one({"_id": WEBHOOK_OUTAGE_ID})
    assert switch["until"] - switch["since"] == timedelta(minutes=20) and switch["since"] == NOW.replace(microsecond=0)
    assert db.webhook_events.count_documents({"status": "failed", "error": {"$type": "string"},
                                              "receivedAt": {"$lt": NOW}}) == result["failed_webhook_events"] >= 3


def test_refund_wave_refunds_a_tenth_of_the_last_day_now(db):
    seed(db, S, days=MIN_DAYS, per_day=100, now=NOW - timedelta(minutes=10))
    day = {"createdAt": {"$gte": NOW - timedelta(hours=24), "$lt": NOW}}
    completed = db.payments.count_documents({**day, "status": "completed"})
    result = inject(db, S, "refund-wave", NOW)
    refunded_now = {"refundedAt": {"$gte": NOW - timedelta(minutes=6), "$lt": NOW + timedelta(seconds=5)}}
    assert result["refunded_payments"] == db.payments.count_documents({**refunded_now, "status": "refunded"})
    assert abs(result["refunded_payments"] - 0.10 * completed) <= 1
    assert db.enrollments.count_documents({**refunded_now, "status": "refunded"}) == result["refunded_payments"]


def test_amount_spike_writes_payments_at_fifteen_times_the_price(db):
    result = inject(db, S, "amount-spike", NOW)
    spiked = list(db.payments.find({"paymentId": {"$in": result["paymentIds"]}}))
    assert len(spiked) == 6
    assert all(p["amount"] >= 15 * 1900 and p["status"] == "completed" for p in spiked)
    assert all(NOW - timedelta(minutes=10) <= p["createdAt"] < NOW for p in spiked)


def test_an_unknown_incident_is_refused(db):
    with pytest.raises(ValueError, match="unknown incident"):
        inject(db, S, "meteor-strike", NOW)


# --- The command line ------------------------------------------------------------------

def _cli(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    config = tmp_path / "paywatch.toml"
    config.write_text("")
    clean = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "DATABASE_URL", "PAYWATCH_SOURCE_DB")}
    clean.update(PAYWATCH_CONFIG=str(config), PAYWATCH_SECRETS_FILE=str(tmp_path / "none.toml"),
                 PAYWATCH_HOME=str(tmp_path / "home"), **env)
    return subprocess.run([sys.executable, "-m", "demo", *args], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=120)


def test_cli_refuses_to_write_to_a_configured_database_without_the_flag(mongo, db, tmp_path):
    run = _cli(["seed"], tmp_path, MONGODB_URI=mongo, PAYWATCH_SOURCE_DB=db.name)
    assert run.returncode == 2
    assert "refusing" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert db.payments.count_documents({}) == 0


def test_cli_seeds_a_scratch_database_when_told_it_is_not_production(mongo, db, tmp_path):
    args = ["seed", "--days", "8", "--per-day", "20", "--i-know-this-is-not-production"]
    run = _cli(args, tmp_path, MONGODB_URI=mongo, PAYWATCH_SOURCE_DB=db.name)
    assert run.returncode == 0, run.stderr
    assert "decline_spike" in run.stdout and "100%" in run.stderr
    count = db.payments.count_documents({})
    assert count > 100
    again = _cli(args, tmp_path, MONGODB_URI=mongo, PAYWATCH_SOURCE_DB=db.name)
    assert again.returncode == 0 and "nothing seeded" in again.stdout
    assert db.payments.count_documents({}) == count


def test_cli_writes_an_incident(mongo, db, tmp_path):
    run = _cli(["incident", "amount-spike", "--i-know-this-is-not-production"], tmp_path,
               MONGODB_URI=mongo, PAYWATCH_SOURCE_DB=db.name)
    assert run.returncode == 0, run.stderr
    assert db.payments.count_documents({}) == 6


def test_cli_says_in_one_line_when_the_database_is_unreachable(tmp_path):
    run = _cli(["incident", "decline-spike", "--i-know-this-is-not-production"], tmp_path,
               MONGODB_URI="mongodb://127.0.0.1:9/x", PAYWATCH_SERVER_SELECTION_TIMEOUT_MS="300")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_cli_stops_at_a_bad_setting_with_one_line(tmp_path):
    run = _cli(["seed"], tmp_path, PAYWATCH_TIMEZONE="Mars/Olympus")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_cli_run_seeds_then_writes_live_traffic_until_ctrl_c(mongo, db, tmp_path):
    config = tmp_path / "paywatch.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "DATABASE_URL")}
    env.update(PAYWATCH_CONFIG=str(config), PAYWATCH_SECRETS_FILE=str(tmp_path / "none.toml"),
               PAYWATCH_HOME=str(tmp_path / "home"), MONGODB_URI=mongo, PAYWATCH_SOURCE_DB=db.name,
               PAYWATCH_DEMO_INTERVAL="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--rate", "600", "--days", "8", "--per-day", "20",
                             "--i-know-this-is-not-production"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        seeded = None
        while time.monotonic() < deadline:
            count = db.payments.count_documents({})
            seeded = seeded or (count or None)
            if seeded and count > seeded + 5:
                break
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert db.payments.count_documents({}) > seeded + 5
    assert "Traceback" not in err and "stopped" in err


def test_cli_help_names_every_command_and_incident(tmp_path):
    run = _cli(["--help"], tmp_path)
    assert run.returncode == 0 and all(c in run.stdout for c in ("run", "seed", "incident"))
    run = _cli(["incident", "--help"], tmp_path)
    assert all(k in run.stdout for k in ("decline-spike", "webhook-outage", "refund-wave", "amount-spike"))


def test_seed_can_leave_the_indexes_to_the_operator(db):
    result = seed(db, S, days=MIN_DAYS, per_day=20, now=NOW, indexes=False)
    assert result["indexes"] == []
    assert list(db.payments.index_information()) == ["_id_"]


def test_the_rotation_injects_each_incident_in_turn_first_after_three_minutes():
    start = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    rotation = IncidentRotation(timedelta(minutes=20), start=start)
    assert rotation.due(start) is None
    assert rotation.due(start + timedelta(minutes=2, seconds=59)) is None
    at = start + timedelta(minutes=3)
    kinds = []
    for _ in range(5):
        kinds.append(rotation.due(at))
        assert rotation.due(at + timedelta(minutes=19)) is None  # once per period, never twice
        at += timedelta(minutes=20)
    assert kinds == ["decline-spike", "webhook-outage", "amount-spike", "refund-wave", "decline-spike"]
    assert set(kinds) <= set(INCIDENTS)


def test_the_rotation_refuses_a_period_that_is_not_positive():
    with pytest.raises(ValueError):
        IncidentRotation(timedelta(0))
