"""The benchmark's own plumbing on tiny volumes: arguments, round-trip counting, explain, results.

No figure here is a speed: the bench measures, ``docs/performance.md`` quotes it, nothing asserts it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pymongo import ASCENDING, MongoClient

from bench import common, snapshot
from bench.__main__ import build_parser, volumes
from bench.stripe_bench import _busiest_second


def test_no_mode_means_the_snapshot_on_the_reference_volume_as_make_bench_runs_it():
    args = build_parser().parse_args([])
    assert args.mode == "snapshot"
    [volume] = volumes(args, args.mode)
    assert (volume.name, volume.days, volume.per_day, volume.events_per_payment) == ("reference", 365, 1000, 3)
    assert volume.home == common.ROOT / ".paywatch" / "bench"


def test_all_measures_both_volumes_and_a_smaller_reference_gets_its_own_directory():
    args = build_parser().parse_args(["all", "--days", "30", "--per-day", "50"])
    reference, demo = volumes(args, args.mode)
    assert reference.home.name == "bench-30x50x3"
    assert (demo.name, demo.days, demo.per_day, demo.events_per_payment) == ("demo", 90, 300, 1)


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--interval", "-5"], ["nonsense"],
                                  ["alerts", "--no-latency", "--latency-only"], ["all", "--home", "/tmp/x"]])
def test_bad_arguments_stop_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        args = build_parser().parse_args(argv)
        volumes(args, args.mode)
    assert stopped.value.code != 0


def test_the_command_log_counts_every_command_and_keeps_the_queries_to_explain(mongo_uri, db_names):
    log = common.CommandLog()
    client = MongoClient(mongo_uri, tz_aware=True, event_listeners=[log])
    try:
        coll = client[db_names[0]]["payments"]
        coll.insert_many([{"n": i, "createdAt": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(hours=i)}
                          for i in range(50)])
        coll.create_index([("createdAt", ASCENDING)])
        coll.find_one({})  # not recorded: the log is not recording yet
        log.start()
        start = datetime(2026, 1, 2, tzinfo=timezone.utc)
        list(coll.aggregate([{"$match": {"createdAt": {"$gte": start, "$lt": start + timedelta(hours=5)}}},
                             {"$count": "n"}]))
        list(coll.find({"n": {"$gt": 45}}))
        client[db_names[0]].command("ping")
        assert log.stop() == 3
        assert log.by_command() == {"aggregate": 1, "find": 1, "ping": 1}
        assert all(ms is not None and ms >= 0 for ms in log.durations_ms)  # each command's own duration
        assert sorted(r["command"] for r in log.slowest()) == ["aggregate", "find", "ping"]

        rows = common.explain_all(client, log.commands)
    finally:
        client.close()
    assert [(r["collection"], r["command"]) for r in rows] == [("payments", "aggregate"), ("payments", "find")]
    window, unindexed = rows
    assert window["ixscan"] and not window["collscan"]
    assert window["docs_examined"] == 5  # the five hours in the window, read through the index
    assert unindexed["collscan"] and not unindexed["ixscan"]
    assert unindexed["docs_examined"] == 50


def test_plan_helpers_find_stages_indexes_and_examined_documents_at_any_depth():
    plan = {"stages": [{"$cursor": {"queryPlanner": {"winningPlan": {"stage": "FETCH", "inputStage": {
        "stage": "IXSCAN", "indexName": "createdAt_1"}}}, "executionStats": {"totalDocsExamined": 7}}},
        {"$lookup": {}, "totalDocsExamined": 3}]}
    assert common._plan_stages(plan) == {"FETCH", "IXSCAN"}
    assert common._index_names(plan) == {"createdAt_1"}
    assert common._docs_examined(plan) == 10


def test_the_busiest_second_counts_calls_started_within_one_second():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    times = [t, t + timedelta(seconds=0.1), t + timedelta(seconds=0.9), t + timedelta(seconds=1.0),
             t + timedelta(seconds=5)]
    assert _busiest_second(times) == 3
    assert _busiest_second([]) == 0


def test_results_are_written_per_mode_and_together(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "bench-results")
    results = {"machine": {"cpus": 2}, "snapshot": {"reference": {"round_trips": 42}}, "machine_after": {}}
    written = common.write_results(results)
    assert sorted(p.name for p in written) == ["latest.json", "snapshot.json"]
    assert json.loads((tmp_path / "bench-results" / "snapshot.json").read_text()) == {
        "machine": {"cpus": 2}, "snapshot": {"reference": {"round_trips": 42}}}
    assert json.loads((tmp_path / "bench-results" / "latest.json").read_text()) == results


def test_a_snapshot_on_a_tiny_volume_is_seeded_measured_and_explained(tmp_path):
    volume = common.Volume("reference", tmp_path / "volume", "bench", days=8, per_day=20, events_per_payment=2)

    result = snapshot.measure(volume, runs=2)

    docs = result["volume"]["documents"]
    assert docs["payments"] > 0 and docs["enrollments"] > 0
    assert docs["webhook_events"] > docs["payments"]  # topped up to two events per payment
    assert result["runs"] == 2 and len(result["warm_seconds"]) == 1
    assert result["round_trips"] >= result["queries_explained"] > 0
    assert sum(result["round_trips_by_command"].values()) == result["round_trips"]
    assert result["docs_examined_total"] == sum(q["docs_examined"] for q in result["queries"])
    assert all(q["ixscan"] or q["collscan"] or q["docs_examined"] == 0 for q in result["queries"])
    assert result["memory_mib"]["server_peak"] is None or result["memory_mib"]["server_peak"] > 0
    # The server it started for the measurement is gone; the seeded files stay for the next run.
    assert not (volume.home / "mongo.json").exists()
    assert (volume.home / "db").exists()


def test_the_rollups_and_load_modes_are_offered_with_their_options():
    args = build_parser().parse_args(["load", "--dashboards", "1", "--dashboards", "10", "--days", "30"])
    assert (args.mode, args.dashboards, args.days) == ("load", [1, 10], 30)
    args = build_parser().parse_args(["rollups", "--no-raw", "--rebuild"])
    assert (args.mode, args.no_raw, args.rebuild) == ("rollups", True, True)


def test_snapshots_are_compared_exactly_except_their_p95s_which_are_set_side_by_side():
    from bench.rollups_bench import compare_snapshots

    raw = {"at": "x", "payments": {"24h": {"count": 5, "processing_ms": {"p95": 100, "max": 9}}}, "list": [1, 2]}
    same = {"at": "x", "payments": {"24h": {"count": 5, "processing_ms": {"p95": 98, "max": 9}}}, "list": [1, 2]}
    result = compare_snapshots(same, raw)
    assert result["equal_except_p95"] and result["differ"] == []
    assert result["p95"] == [{"path": "payments.24h.processing_ms.p95", "rollups": 98, "raw": 100,
                              "relative_gap": 0.02}]
    off = {"at": "x", "payments": {"24h": {"count": 6, "processing_ms": {"p95": 100}}}, "list": [1, 3]}
    differ = compare_snapshots(off, raw)["differ"]
    assert [d["path"] for d in differ] == ["list[1]", "payments.24h.count", "payments.24h.processing_ms.max"]


def test_the_traffic_log_counts_commands_and_returned_documents_per_collection(mongo_uri, db_names):
    from bench.rollups_bench import TrafficLog

    log = TrafficLog()
    client = MongoClient(mongo_uri, tz_aware=True, event_listeners=[log])
    try:
        db = client[db_names[0]]
        db["payments"].insert_many([{"n": i} for i in range(30)])
        db["other"].insert_one({"n": 1})
        with log.counting():
            list(db["payments"].find({"n": {"$lt": 25}}, batch_size=10))  # find + 2 getMore
            list(db["payments"].aggregate([{"$match": {"n": {"$gte": 28}}}]))
            db["other"].find_one({})
        db["payments"].find_one({})  # after counting: not counted
    finally:
        client.close()
    rows = {(r["collection"], r["command"]): (r["commands"], r["documents_returned"]) for r in log.table()}
    assert all(r["server_s"] >= 0 for r in log.table())  # the driver's timing of each command, summed
    assert rows == {("payments", "find"): (1, 10), ("payments", "getMore"): (2, 15),
                    ("payments", "aggregate"): (1, 2), ("other", "find"): (1, 1)}
    assert log.totals(db_names[0]) == {"commands": 5, "documents_returned": 28}
    assert log.table(per=5)[0]["commands"] == round(rows[("other", "find")][0] / 5, 2)


def test_the_soak_reads_its_logs_for_skipped_jobs_and_tracebacks_and_refuses_a_missing_one(tmp_path, capsys):
    from bench import soak

    log = tmp_path / "run.log"
    log.write_text("worker: cycle done\n"
                   "Run time of job \"cycle\" was missed by 0:00:04 ... skipped: maximum number of running instances\n"
                   "Traceback (most recent call last):\nfine again\n")
    assert soak.log_trouble([log]) == {str(log): [
        "Run time of job \"cycle\" was missed by 0:00:04 ... skipped: maximum number of running instances",
        "Traceback (most recent call last):"]}
    with pytest.raises(SystemExit) as stopped:
        soak.main(["http://127.0.0.1:9", "--log", str(tmp_path / "absent.log")])
    assert stopped.value.code == 2 and "no such log" in capsys.readouterr().err
