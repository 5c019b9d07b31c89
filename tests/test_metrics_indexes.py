"""The indexes the metric queries need, and proof from ``explain`` that the window queries use them.

SecantusDB reports ``explain`` with ``executionStats`` as MongoDB does (FETCH over
IXSCAN, ``totalDocsExamined``).  Its planner only picks an index for a ``$match``
whose every condition the index covers, which is why each pipeline puts the
indexed condition alone in its first stage; MongoDB merges the stages.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from metrics import enrollments, payments, webhooks
from metrics.indexes import INDEXES, ensure_indexes, missing_indexes
from metrics.quality import valid_stages
from metrics.schema import DEFAULT_SCHEMA as SCHEMA
from metrics.schema import Schema
from metrics.windows import last, month, today, week

UTC = timezone.utc
AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = last(AT, hours=24)
H = timedelta(hours=1)


def test_an_empty_platform_misses_every_index_and_ensure_creates_them_once(platform_db):
    assert missing_indexes(platform_db, SCHEMA) == list(INDEXES)
    created = ensure_indexes(platform_db, SCHEMA)
    assert len(created) == len(INDEXES) == 10
    assert "paywatch_status_1_customerId_1_serviceId_1" in created
    assert missing_indexes(platform_db, SCHEMA) == []
    assert ensure_indexes(platform_db, SCHEMA) == []


def test_an_existing_index_on_the_same_keys_counts_whatever_its_name_or_direction(platform_db):
    platform_db.payments.create_index([("createdAt", 1)], name="by_created")          # same keys
    platform_db.webhook_events.create_index([("receivedAt", -1)])                     # reversed: serves too
    platform_db.enrollments.create_index([("paymentStatus", 1), ("createdAt", -1)])   # mixed: does not
    platform_db.enrollments.create_index([("createdAt", 1), ("status", 1)])           # other keys: does not
    missing = {(s.collection, s.keys) for s in missing_indexes(platform_db, SCHEMA)}
    assert ("payments", (("createdAt", 1),)) not in missing
    assert ("webhook_events", (("receivedAt", 1),)) not in missing
    assert ("enrollments", (("paymentStatus", 1), ("createdAt", 1))) in missing
    assert ("enrollments", (("createdAt", 1),)) in missing
    assert len(missing) == 8


def test_indexes_follow_the_schema_mapping(platform_db):
    schema = Schema.from_mapping({"payments": {"collection": "txns", "createdAt": "created_at"}})
    created = ensure_indexes(platform_db, schema)
    assert "paywatch_created_at_1" in created
    assert "paywatch_status_1_created_at_1" in created
    assert "paywatch_created_at_1" in platform_db.txns.index_information()
    assert "payments" not in platform_db.list_collection_names()


def plan_of(db, collection: str, pipeline: list[dict]) -> tuple[set[str], set[str], int]:
    """(stage names, index names, documents examined) of the first query stage of an aggregation."""
    explain = db.command("explain", {"aggregate": collection, "pipeline": pipeline, "cursor": {}},
                         verbosity="executionStats")
    cursor = explain["stages"][0]["$cursor"] if "stages" in explain else explain
    stages, names = set(), set()

    def walk(node):
        if isinstance(node, dict):
            if "stage" in node:
                stages.add(node["stage"])
            if "indexName" in node:
                names.add(node["indexName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(cursor["queryPlanner"]["winningPlan"])
    return stages, names, cursor["executionStats"]["totalDocsExamined"]


@pytest.fixture
def indexed_platform(platform_db):
    """60 hours of history, one document an hour in each collection, with the indexes in place."""
    hours = range(1, 61)  # created at-1h .. at-60h: 24 of them in [at-24h, at)
    platform_db.payments.insert_many([
        {"amount": 100, "currency": "usd",
         "status": "processing" if h % 10 == 0 else "pending" if h in (5, 35) else "completed",
         "createdAt": AT - h * H, "refundedAt": AT - h * H + 30 * timedelta(minutes=1)} for h in hours])
    platform_db.webhook_events.insert_many([{"status": "processed", "receivedAt": AT - h * H} for h in hours])
    platform_db.enrollments.insert_many([
        {"customerId": f"c{h}", "serviceId": "s1", "status": "pending" if h % 10 == 0 else "cancelled",
         "paymentStatus": "pending" if h % 10 == 0 else "failed",
         "createdAt": AT - h * H, "activatedAt": AT - h * H, "refundedAt": AT - h * H} for h in hours])
    ensure_indexes(platform_db, SCHEMA)
    return platform_db


# (collection, pipeline, the index it must use, documents the index range covers -- by hand)
WINDOW_QUERIES = {
    # createdAt in [at-24h, at): hours 1..24 -> 24
    "payments 24h": ("payments", payments.window_summary_pipeline(DAY, SCHEMA), "paywatch_createdAt_1", 24),
    # the month (UTC) starts 11-01T00:00: 60 h back is 11-23T12:00, so all 60
    "revenue periods": ("payments", payments.revenue_periods_pipeline(
        {"today": today(AT, ZoneInfo("UTC")), "week": week(AT, ZoneInfo("UTC")), "month": month(AT, ZoneInfo("UTC"))},
        SCHEMA), "paywatch_createdAt_1", 60),
    # refundedAt = createdAt + 30 min in [at-24h, at): hours 1..24 -> 24
    "refunds": ("payments", valid_stages("payments", SCHEMA, {"refundedAt": DAY.range()}), "paywatch_refundedAt_1", 24),
    # pending: hours 5 and 35 -> 2; processing: hours 10, 20, ..., 60 -> 6 (all older than 30 min)
    "stuck pending": ("payments", payments.stuck_pipeline("pending", AT, 30, SCHEMA), "paywatch_status_1_createdAt_1", 2),
    "stuck processing": ("payments", payments.stuck_pipeline("processing", AT, 30, SCHEMA),
                         "paywatch_status_1_createdAt_1", 6),
    "webhooks 24h": ("webhook_events", webhooks.window_summary_pipeline(DAY, SCHEMA), "paywatch_receivedAt_1", 24),
    "latest events": ("webhook_events", webhooks.latest_pipeline({"$gte": AT - 24 * H, "$lt": AT}, 10, SCHEMA),
                      "paywatch_receivedAt_1", 24),
    "conversion": ("enrollments", enrollments.conversion_pipeline(DAY, SCHEMA), "paywatch_createdAt_1", 24),
    "activation": ("enrollments", enrollments.latency_pipeline(DAY, SCHEMA), "paywatch_activatedAt_1", 24),
    "refunded enrollments": ("enrollments", valid_stages("enrollments", SCHEMA, {"refundedAt": DAY.range()}),
                             "paywatch_refundedAt_1", 24),
    # paymentStatus pending: hours 10..60 step 10 -> 6
    "pending payments": ("enrollments", valid_stages("enrollments", SCHEMA, {"paymentStatus": "pending",
                                                                            "createdAt": {"$lt": AT}}),
                         "paywatch_paymentStatus_1_createdAt_1", 6),
    # status active or pending: the 6 pending ones
    "duplicates": ("enrollments", enrollments.duplicates_pipeline(AT, SCHEMA),
                   "paywatch_status_1_customerId_1_serviceId_1", 6),
}


@pytest.mark.parametrize("collection, pipeline, index, examined", WINDOW_QUERIES.values(), ids=WINDOW_QUERIES.keys())
def test_window_queries_scan_their_index_not_the_collection(indexed_platform, collection, pipeline, index, examined):
    stages, names, docs_examined = plan_of(indexed_platform, collection, pipeline)
    assert "IXSCAN" in stages and "COLLSCAN" not in stages
    assert names == {index}
    assert docs_examined == examined  # only the window's documents, of 60 in the collection


def test_the_stuck_count_joins_its_pending_and_processing_branches(indexed_platform, src):
    # pending: hours 5 and 35; processing: hours 10, 20, ..., 60 -> 2 + 6 = 8, all older than 30 min
    assert payments.stuck_count(src, AT, 30) == 8
    # with a 30-hour threshold: pending 35; processing 30, 40, 50, 60 (30 h is not "earlier than") -> 1 + 3 = 4
    assert payments.stuck_count(src, AT, 30 * 60) == 4
