"""The database handles: index-first pipelines and the embedded server's port file."""

from datetime import datetime, timezone

import pytest

from metrics.db import DataSourceUnavailable, index_first, source
from metrics.embedded import EmbeddedMongo, free_port
from metrics.schema import DEFAULT_SCHEMA, Schema

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 2, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("match", "lead"),
    [
        # A bounded window wins over the "is a date" test and the status list.
        ({"createdAt": {"$gte": T0, "$lt": T1}, "status": {"$in": ["failed"]}, "amount": {"$type": "number"}},
         {"createdAt": {"$gte": T0, "$lt": T1}}),
        # Refunds: the refundedAt range is indexed, createdAt's type test is not.
        ({"createdAt": {"$type": "date"}, "refundedAt": {"$gte": T0, "$lt": T1}, "status": {"$in": ["refunded"]}},
         {"refundedAt": {"$gte": T0, "$lt": T1}}),
        # Stuck payments: a rare status list narrows more than "created before".
        ({"createdAt": {"$lt": T0}, "status": {"$in": ["pending", "processing"]}, "amount": {"$type": "number"}},
         {"status": {"$in": ["pending", "processing"]}}),
    ],
)
def test_the_indexed_part_of_a_match_runs_first(match, lead):
    pipeline = index_first([{"$match": match}, {"$count": "n"}], "payments", DEFAULT_SCHEMA)
    assert pipeline[0] == {"$match": lead}
    assert {**pipeline[0]["$match"], **pipeline[1]["$match"]} == match
    assert pipeline[2] == {"$count": "n"}


def test_equality_and_range_share_a_compound_index():
    match = {"createdAt": {"$lt": T0}, "paymentStatus": "pending", "status": {"$in": ["pending", "active"]}}
    pipeline = index_first([{"$match": match}], "enrollments", DEFAULT_SCHEMA)
    assert pipeline[0] == {"$match": {"paymentStatus": "pending", "createdAt": {"$lt": T0}}}


def test_renamed_fields_are_split_by_their_real_names():
    schema = Schema.from_mapping({"payments": {"createdAt": "created_at"}})
    match = {"created_at": {"$gte": T0, "$lt": T1}, "status": {"$in": ["failed"]}}
    assert index_first([{"$match": match}], "payments", schema)[0] == {"$match": {"created_at": {"$gte": T0, "$lt": T1}}}


def test_a_match_with_nothing_indexable_is_left_alone():
    pipeline = [{"$match": {"currency": "usd"}}]
    assert index_first(pipeline, "payments", DEFAULT_SCHEMA) == pipeline


def test_a_second_command_finds_the_running_embedded_server_through_its_port_file(tmp_path):
    first = EmbeddedMongo(tmp_path)
    first.ensure()
    try:
        second = EmbeddedMongo(tmp_path)
        assert second.ensure() == first.uri
        assert not second.owned
        second.stop()  # not its server: nothing happens
        assert EmbeddedMongo(tmp_path).ensure() == first.uri
    finally:
        first.stop()
    assert not (tmp_path / "mongo.json").exists()


def test_an_unreachable_database_is_reported_as_unavailable(make_settings):
    settings = make_settings(mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
                             server_selection_timeout_ms=300)
    with pytest.raises(DataSourceUnavailable):
        source(settings).count("payments", {})
