"""The snapshot JSON (spec section 5): every key, worked out by hand on a small platform."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

from bson import ObjectId

from metrics import payments, webhooks
from metrics.db import source
from metrics.snapshot import build_snapshot, to_json
from metrics.system import database_health, embedded_storage_path
from metrics.windows import last

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # Thursday; 07:00 in New York (EST)
MS = timedelta(milliseconds=1)


def t(text: str) -> datetime:
    """``"11-26T10:00:01"`` -> that instant of 2026 in UTC (keeps the dataset readable)."""
    return datetime.fromisoformat(f"2026-{text}").replace(tzinfo=UTC)


# The spec's example for an empty database, plus the lead's extra by_status map.
EMPTY = {
    "at": "2026-11-26T12:00:00Z",
    "timezone": "UTC",
    "payments": {
        "revenue": {"today": {"usd": 0}, "week": {"usd": 0}, "month": {"usd": 0}},
        "24h": {
            "succeeded": 0, "failed": 0, "success_rate": None,
            "revenue": {"usd": 0}, "avg_transaction_value": {"usd": 0},
            "refunds": 0, "refund_rate": None,
            "processing_ms": {"avg": None, "p95": None},
            "by_status": {},
        },
        "stuck": 0,
    },
    "webhooks": {
        "24h": {
            "received": 0, "processed": 0, "failed": 0, "failure_rate": None,
            "processing_ms": {"avg": None, "p95": None},
            "delivery_lag_ms": {"avg": None, "p95": None},
        },
        "last_received_at": None,
        "latest": [],
    },
    "enrollments": {
        "new_today": 0,
        "24h": {"created": 0, "converted": 0, "conversion_rate": None, "refunded": 0,
                "activation_ms": {"avg": None, "p95": None},
                "email_ms": {"avg": None, "p95": None}},
        "pending_payments": 0,
        "duplicates": 0,
    },
    "system": {},
    "data_quality": {"payments": {"invalid": 0}, "enrollments": {"invalid": 0},
                     "webhook_events": {"invalid": 0}},
}


def snapshot_json(settings, at=AT, system=False) -> dict:
    """What ``python -m metrics snapshot --json`` prints, parsed back (NaN would fail here)."""
    return json.loads(json.dumps(to_json(build_snapshot(source(settings), settings, at, system=system)), allow_nan=False))


def test_an_empty_database_gives_the_spec_example_with_nulls_for_every_rate(settings):
    assert snapshot_json(settings) == EMPTY


def test_the_system_block_reports_the_database_without_failing(settings):
    system = snapshot_json(settings, system=True)["system"]
    assert system["embedded_database"] is False  # MONGODB_URI is set
    assert system["connections"]["current"] >= 1
    assert system["storage"]["objects"] >= 0


def test_the_snapshot_instant_defaults_to_now_in_whole_seconds(settings):
    before = datetime.now(UTC).replace(microsecond=0)
    at = datetime.fromisoformat(build_snapshot(source(settings), settings, system=False)["at"].replace("Z", "+00:00"))
    assert before <= at <= datetime.now(UTC)


def seed_platform(db) -> dict:
    """A small platform; the arithmetic for every metric is in test_every_metric_of_the_snapshot_..."""
    ids = {name: ObjectId() for name in ("P1", "P2", "P3", "P11")}
    db.payments.insert_many([
        {"_id": ids["P1"], "paymentId": "pi_1", "amount": 5000, "currency": "usd", "status": "completed",
         "createdAt": t("11-26T10:00:00"), "completedAt": t("11-26T10:00:01")},
        {"_id": ids["P2"], "paymentId": "pi_2", "amount": 3000, "currency": "eur", "status": "completed",
         "createdAt": t("11-26T04:00:00"), "completedAt": t("11-26T04:00:03")},
        {"_id": ids["P3"], "paymentId": "pi_3", "amount": 12000, "currency": "jpy", "status": "refunded",
         "createdAt": t("11-25T13:00:00"), "completedAt": t("11-25T13:00:02"), "refundedAt": t("11-26T09:00:00")},
        {"paymentId": "pi_4", "amount": 2000, "currency": "usd", "status": "failed", "createdAt": t("11-26T11:00:00"),
         "failureCode": "card_declined"},
        {"paymentId": "pi_5", "amount": 7000, "currency": "usd", "status": "completed", "createdAt": t("11-20T15:00:00")},
        {"paymentId": "pi_6", "amount": 4000, "currency": "usd", "status": "refunded", "createdAt": t("11-10T15:00:00"),
         "refundedAt": t("11-25T20:00:00")},
        {"paymentId": "pi_7", "amount": 1500, "currency": "usd", "status": "processing", "createdAt": t("11-26T11:50:00")},
        {"paymentId": "pi_8", "amount": 800, "currency": "usd", "status": "pending", "createdAt": t("11-26T10:30:00")},
        {"paymentId": "pi_9", "amount": 100000, "currency": "usd", "status": "completed", "createdAt": AT},
        {"paymentId": "pi_10", "amount": 1, "currency": "usd", "status": "completed", "createdAt": t("11-27T00:00:00")},
        {"_id": ids["P11"], "paymentId": "pi_11", "amount": 50, "currency": "usd", "status": "refunded",
         "createdAt": t("11-26T08:00:00"), "completedAt": t("11-26T08:00:00.500"), "refundedAt": t("11-26T13:00:00")},
        {"paymentId": "pi_12", "amount": "250", "currency": "usd", "status": "completed", "createdAt": t("11-26T09:00:00")},
        {"paymentId": "pi_13", "amount": 9, "currency": "usd", "status": "completed", "createdAt": t("11-01T04:30:00")},
        {"paymentId": "pi_14", "amount": 90, "currency": "usd", "status": "completed", "createdAt": t("11-01T03:30:00")},
    ])
    db.webhook_events.insert_many([
        {"eventId": "evt_1", "type": "payment_intent.succeeded", "status": "processed", "stripeCreatedAt": t("11-26T10:00:00"),
         "receivedAt": t("11-26T10:00:01"), "processedAt": t("11-26T10:00:01.250")},
        {"eventId": "evt_2", "type": "charge.refunded", "status": "failed", "stripeCreatedAt": t("11-26T10:59:57"),
         "receivedAt": t("11-26T11:00:00"), "processedAt": t("11-26T11:00:00.750"), "error": "timeout"},
        {"eventId": "evt_3", "type": "payment_intent.succeeded", "status": "processed", "stripeCreatedAt": t("11-25T11:59:58"),
         "receivedAt": t("11-25T12:00:00"), "processedAt": t("11-25T12:00:00.500")},
        {"eventId": "evt_4", "type": "payment_intent.payment_failed", "status": "received",
         "stripeCreatedAt": t("11-26T11:58:59.500"), "receivedAt": t("11-26T11:59:00")},
        {"eventId": "evt_5", "type": "payment_intent.succeeded", "status": "processed", "stripeCreatedAt": AT - MS,
         "receivedAt": AT, "processedAt": AT + MS},
        {"eventId": "evt_6", "type": "payment_intent.succeeded", "status": "queued", "receivedAt": t("11-26T11:30:00")},
    ])
    db.enrollments.insert_many([
        {"customerId": "c1", "serviceId": "s1", "status": "active", "paymentStatus": "paid", "paymentId": ids["P1"],
         "createdAt": t("11-26T09:55:00"), "activatedAt": t("11-26T10:00:02.200"),
         "confirmationEmailSentAt": t("11-26T10:00:05.200")},
        {"customerId": "c2", "serviceId": "s2", "status": "active", "paymentStatus": "paid", "paymentId": ids["P2"],
         "createdAt": t("11-26T03:55:00"), "activatedAt": t("11-26T04:00:03.800"),
         "confirmationEmailSentAt": t("11-26T04:00:05.800")},
        {"customerId": "c3", "serviceId": "s3", "status": "refunded", "paymentStatus": "refunded", "paymentId": ids["P3"],
         "createdAt": t("11-25T12:55:00"), "activatedAt": t("11-25T13:00:02.400"), "refundedAt": t("11-26T09:00:00")},
        {"customerId": "c1", "serviceId": "s1", "status": "pending", "paymentStatus": "pending", "createdAt": t("11-26T11:00:00")},
        {"customerId": "c4", "serviceId": "s4", "status": "pending", "paymentStatus": "pending", "createdAt": t("11-20T10:00:00")},
        {"customerId": "c5", "serviceId": "s5", "status": "active", "paymentStatus": "paid", "createdAt": AT},
        {"customerId": "c2", "serviceId": "s2", "status": "active", "paymentStatus": "paid"},  # no createdAt: invalid
    ])
    return ids


def test_every_metric_of_the_snapshot_matches_the_hand_worked_values(platform_db, make_settings):
    seed_platform(platform_db)
    settings = make_settings(timezone="America/New_York", latest_events=3)
    # Windows, in UTC: 24h = [11-25T12:00, 11-26T12:00); New York (EST, UTC-5) today = [11-26T05:00, at),
    # week = [Mon 11-23T05:00, at), month = [11-01T04:00, at) -- on Nov 1 at 00:00 New York was still on EDT.
    assert snapshot_json(settings) == {
        "at": "2026-11-26T12:00:00Z",
        "timezone": "America/New_York",
        "payments": {
            "revenue": {
                # today: pi_1 5000 (10:00Z) + pi_11 50 (08:00Z; refunded later, still captured) = usd 5050;
                #        pi_2 (04:00Z) is 23:00 on the 25th in New York.
                "today": {"usd": 5050},
                # week adds pi_2 eur 3000 and pi_3 jpy 12000 (11-25T13:00Z); pi_5 (11-20) is last week.
                "week": {"eur": 3000, "jpy": 12000, "usd": 5050},
                # month adds pi_5 7000, pi_6 4000 (created 11-10, refunded: captured), pi_13 9 (00:30 EDT Nov 1):
                #        usd 5050 + 7000 + 4000 + 9 = 16059; pi_14 (23:30 EDT Oct 31) is last month.
                "month": {"eur": 3000, "jpy": 12000, "usd": 16059},
            },
            "24h": {
                # in W: pi_1, pi_2, pi_3, pi_11 succeeded (4); pi_4 failed; pi_7 processing; pi_8 pending.
                # pi_9 (at), pi_10 (after at) and pi_12 (amount "250") do not count.
                "succeeded": 4, "failed": 1, "success_rate": 0.8,  # 4 / (4 + 1)
                "revenue": {"eur": 3000, "jpy": 12000, "usd": 5050},
                "avg_transaction_value": {"eur": 3000, "jpy": 12000, "usd": 2525},  # usd 5050 / 2
                # refundedAt in W: pi_3 (11-26T09:00) and pi_6 (11-25T20:00); pi_11's is after at.
                "refunds": 2, "refund_rate": 0.5,  # 2 / 4
                # completedAt - createdAt: 1000, 3000, 2000, 500 -> avg 1625; p95 rank ceil(3.8) = 4 -> 3000
                "processing_ms": {"avg": 1625, "p95": 3000},
                "by_status": {"completed": 2, "failed": 1, "pending": 1, "processing": 1, "refunded": 2},
            },
            "stuck": 1,  # pi_8 pending since 10:30 (older than 11:30); pi_7 since 11:50 is not
        },
        "webhooks": {
            "24h": {
                # evt_1, evt_2, evt_3 (at the start), evt_4; evt_5 is at `at`, evt_6 has an unknown status
                "received": 4, "processed": 2, "failed": 1, "failure_rate": 1 / 3,
                # 250, 750, 500 -> avg 500, p95 rank 3 -> 750
                "processing_ms": {"avg": 500, "p95": 750},
                # lag 1000, 3000, 2000, 500 -> avg 1625, p95 rank 4 -> 3000
                "delivery_lag_ms": {"avg": 1625, "p95": 3000},
            },
            "last_received_at": "2026-11-26T11:59:00Z",
            "latest": [  # newest first, latest_events = 3
                {"eventId": "evt_4", "type": "payment_intent.payment_failed", "status": "received",
                 "stripeCreatedAt": "2026-11-26T11:58:59.500Z", "receivedAt": "2026-11-26T11:59:00Z",
                 "processedAt": None, "error": None, "processing_ms": None},
                {"eventId": "evt_2", "type": "charge.refunded", "status": "failed",
                 "stripeCreatedAt": "2026-11-26T10:59:57Z", "receivedAt": "2026-11-26T11:00:00Z",
                 "processedAt": "2026-11-26T11:00:00.750Z", "error": "timeout", "processing_ms": 750},
                {"eventId": "evt_1", "type": "payment_intent.succeeded", "status": "processed",
                 "stripeCreatedAt": "2026-11-26T10:00:00Z", "receivedAt": "2026-11-26T10:00:01Z",
                 "processedAt": "2026-11-26T10:00:01.250Z", "error": None, "processing_ms": 250},
            ],
        },
        "enrollments": {
            "new_today": 2,  # c1/s1 at 09:55Z and c1/s1 at 11:00Z; c2 (03:55Z) was the 25th in New York
            "24h": {
                # created in W: c1 active, c2 active, c3 refunded, c1 pending -> 4; paid or refunded: 3
                "created": 4, "converted": 3, "conversion_rate": 0.75, "refunded": 1,  # c3 refunded 11-26T09:00
                # activatedAt - payment completedAt: 1200, 800, 400 -> avg 800, p95 rank 3 -> 1200
                "activation_ms": {"avg": 800, "p95": 1200},
                # email - activatedAt: 3000, 2000 (c3 got no email) -> avg 2500, p95 rank 2 -> 3000
                "email_ms": {"avg": 2500, "p95": 3000},
            },
            "pending_payments": 2,  # c1 (11-26) and c4 (11-20)
            "duplicates": 1,  # (c1, s1): active + pending; (c2, s2)'s twin has no createdAt
        },
        "system": {},
        "data_quality": {"payments": {"invalid": 1}, "enrollments": {"invalid": 1},
                         "webhook_events": {"invalid": 1}},
    }


def test_a_snapshot_at_a_past_instant_ignores_what_came_after(platform_db, make_settings):
    seed_platform(platform_db)
    settings = make_settings()
    snap = snapshot_json(settings, at=t("11-26T10:00:00"))
    # At 10:00Z (UTC zone): today = [00:00, 10:00): pi_2 (04:00) eur 3000 and pi_11 (08:00) usd 50;
    # pi_1 is created exactly at 10:00 and does not count yet.
    assert snap["payments"]["revenue"]["today"] == {"eur": 3000, "usd": 50}
    # 24h = [11-25T10:00, 11-26T10:00): pi_2, pi_3, pi_11 succeeded; pi_4 (11:00) not yet failed.
    assert (snap["payments"]["24h"]["succeeded"], snap["payments"]["24h"]["failed"]) == (3, 0)
    # pi_8 (pending since 10:30) was not even created: nothing stuck.
    assert snap["payments"]["stuck"] == 0
    # The latest event before 10:00 is evt_3 (11-25T12:00); evt_1 arrived at 10:00:01.
    assert snap["webhooks"]["last_received_at"] == "2026-11-25T12:00:00Z"
    # Enrollments before 10:00: c1/s1 (09:55), c2 (03:55), c3 (11-25T12:55), c4 (11-20).
    assert snap["enrollments"]["pending_payments"] == 1  # c4 only; c1's pending one comes at 11:00
    assert snap["enrollments"]["duplicates"] == 0


MAPPING = {
    "payments": {"collection": "txns", "amount": "amount_cents", "createdAt": "created_at", "status": "state",
                 "currency": "cur", "completedAt": "paid_at", "refundedAt": "refunded_on"},
    "webhook_events": {"collection": "stripe_log", "receivedAt": "received", "status": "state",
                       "processedAt": "done", "eventId": "id"},
    "enrollments": {"collection": "signups", "createdAt": "created", "status": "state",
                    "paymentStatus": "pay_state", "paymentId": "payment_ref", "activatedAt": "activated"},
}


def test_renamed_collections_and_fields_are_read_through_the_schema_mapping(platform_db, make_settings):
    txn = ObjectId()
    platform_db.txns.insert_many([
        {"_id": txn, "amount_cents": 1200, "cur": "usd", "state": "completed", "created_at": AT - timedelta(hours=1),
         "paid_at": AT - timedelta(hours=1) + timedelta(milliseconds=400)},
        {"amount_cents": 100, "cur": "usd", "state": "failed", "created_at": AT - timedelta(hours=2)},
        {"amount_cents": 300, "cur": "usd", "state": "processing", "created_at": AT - timedelta(hours=3)},
        {"amount_cents": "12", "cur": "usd", "state": "completed", "created_at": AT - timedelta(hours=3)},
        {"amount_cents": 500, "cur": "usd", "state": "refunded", "created_at": AT - timedelta(days=3),
         "refunded_on": AT - timedelta(hours=5)},
    ])
    platform_db.stripe_log.insert_one({"id": "evt_1", "state": "processed", "received": AT - timedelta(minutes=10),
                                       "done": AT - timedelta(minutes=10) + timedelta(milliseconds=100)})
    platform_db.signups.insert_many([
        {"customerId": "c1", "serviceId": "s1", "state": "active", "pay_state": "paid", "payment_ref": txn,
         "created": AT - timedelta(hours=2), "activated": AT - timedelta(hours=1) + timedelta(milliseconds=1000)},
        {"customerId": "c2", "serviceId": "s1", "state": "pending", "pay_state": "pending", "created": AT - timedelta(hours=1)},
    ])
    # Documents under the default names must be ignored once the mapping names others.
    platform_db.payments.insert_one({"amount": 99999, "currency": "usd", "status": "completed", "createdAt": AT - timedelta(hours=1)})
    platform_db.webhook_events.insert_one({"status": "failed", "receivedAt": AT - timedelta(minutes=1)})
    platform_db.enrollments.insert_one({"status": "pending", "paymentStatus": "pending", "createdAt": AT - timedelta(hours=1)})

    snap = snapshot_json(make_settings(schema=MAPPING))  # the paywatch.toml key: [schema.payments] ...
    assert snap["payments"] == {
        # The refunded 500 was created Monday 11-23 12:00Z: this week and month, not today (UTC).
        "revenue": {"today": {"usd": 1200}, "week": {"usd": 1700}, "month": {"usd": 1700}},
        "24h": {"succeeded": 1, "failed": 1, "success_rate": 0.5, "revenue": {"usd": 1200},
                "avg_transaction_value": {"usd": 1200}, "refunds": 1, "refund_rate": 1.0,  # 1 refund / 1 succeeded
                "processing_ms": {"avg": 400, "p95": 400},
                "by_status": {"completed": 1, "failed": 1, "processing": 1}},
        "stuck": 1,  # processing for 3 h
    }
    assert snap["webhooks"]["24h"] == {"received": 1, "processed": 1, "failed": 0, "failure_rate": 0.0,
                                       "processing_ms": {"avg": 100, "p95": 100},
                                       "delivery_lag_ms": {"avg": None, "p95": None}}  # no stripeCreatedAt
    assert snap["webhooks"]["last_received_at"] == "2026-11-26T11:50:00Z"
    assert [e["eventId"] for e in snap["webhooks"]["latest"]] == ["evt_1"]
    assert snap["enrollments"] == {
        "new_today": 2,
        "24h": {"created": 2, "converted": 1, "conversion_rate": 0.5, "refunded": 0,
                "activation_ms": {"avg": 600, "p95": 600},  # activated 1000 ms after 11:00, paid at 11:00.400
                "email_ms": {"avg": None, "p95": None}},
        "pending_payments": 1,
        "duplicates": 0,
    }
    assert snap["data_quality"] == {"payments": {"invalid": 1}, "enrollments": {"invalid": 0},
                                    "webhook_events": {"invalid": 0}}


def test_nested_field_names_in_the_mapping_reach_every_list(platform_db, make_settings):
    platform_db.payments.insert_many([
        {"money": {"minor": 700, "cur": "usd"}, "state": "processing", "meta": {"created": AT - timedelta(hours=2)}},
        {"money": {"minor": 300, "cur": "usd"}, "state": "completed", "meta": {"created": AT - timedelta(hours=1)}},
    ])
    platform_db.webhook_events.insert_one({"evt": {"id": "evt_n"}, "status": "processed",
                                           "at": {"received": AT - timedelta(minutes=3)}})
    settings = make_settings(schema={
        "payments": {"amount": "money.minor", "currency": "money.cur", "status": "state", "createdAt": "meta.created"},
        "webhook_events": {"eventId": "evt.id", "receivedAt": "at.received"},
    })
    src = source(settings)
    stuck = payments.stuck_payments(src, AT, 30)
    assert [(p["amount"], p["currency"], p["createdAt"]) for p in stuck] == [(700, "usd", AT - timedelta(hours=2))]
    assert payments.window_summary(src, last(AT, hours=24), ("usd",))["revenue"] == {"usd": 300}
    latest = webhooks.latest_events(src, AT, 5)
    assert [(e["eventId"], e["receivedAt"]) for e in latest] == [("evt_n", AT - timedelta(minutes=3))]


def test_the_embedded_server_s_storage_is_measured_on_disk_not_by_dbstats(settings, tmp_path):
    store = tmp_path / "db"
    (store / "sub").mkdir(parents=True)
    (store / "a.bin").write_bytes(b"x" * 1000)
    (store / "sub" / "b.bin").write_bytes(b"y" * 234)
    health = database_health(source(settings), True, store)
    # 1000 + 234 bytes of files; the file system's own figures come from the OS.
    assert health["storage"]["storage_bytes"] == 1234
    assert health["storage"]["data_bytes"] is None  # unknown without dbStats, not 0
    assert 0 < health["storage"]["fs_used_bytes"] <= health["storage"]["fs_total_bytes"]
    gone = database_health(source(settings), True, tmp_path / "missing")
    assert gone["storage"] is None and "missing" in gone["storage_error"]
    # SecantusDB (the test server) has no connection limit and says "0 available": unknown, not "full".
    if not os.environ.get("TEST_MONGODB_URI"):
        assert health["connections"]["current"] >= 1 and health["connections"]["available"] is None


def test_a_configured_server_s_storage_comes_from_dbstats(platform_db, settings):
    platform_db.payments.insert_many([{"n": i} for i in range(5)])
    assert embedded_storage_path(settings) is None  # MONGODB_URI is set
    storage = database_health(source(settings), False)["storage"]
    assert storage["objects"] == 5
    assert storage["data_bytes"] > 0
    # SecantusDB's dbStats has no file-system figures: unknown (None), never 0.
    assert storage["fs_total_bytes"] is None or storage["fs_total_bytes"] > 0
