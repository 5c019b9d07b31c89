"""``python -m bench snapshot``: what one snapshot (``build_snapshot``) costs on a volume.

Runs ``build_snapshot`` ``runs`` times at the instant the volume's data ends
(its newest payment), on a server started for the purpose, so the first run
is cold (new server process) and the others warm.  Reports the wall time of
each run, the database round trips (every command the driver sends, from a
pymongo ``CommandListener``), and for every query its ``explain``
(executionStats): documents examined, IXSCAN or COLLSCAN, the index used.
Peak memory is the high-water mark (``VmHWM``) of this process and of the
database server, each reset just before the first run.
"""

from __future__ import annotations

import time

from pymongo import MongoClient

from bench.common import (
    Database,
    Volume,
    command_log,
    explain_all,
    newest_payment,
    reset_peak,
    rss_mib,
    say,
    settings_for,
)
from metrics.snapshot import build_snapshot


def measure(volume: Volume, runs: int = 3) -> dict:
    database = Database(volume)
    database.ensure_seeded()
    uri = database.start()  # started (or restarted after a seed) by ensure_seeded: a fresh server process
    log = command_log()
    settings = settings_for(uri, volume)
    client = MongoClient(uri, tz_aware=True)
    try:
        src = database.source(client, settings)
        counts = {key: src.coll(key).estimated_document_count() for key in ("payments", "webhook_events", "enrollments")}
        at = newest_payment(client, volume, settings)
        server_pid = database.pid
        client_before = rss_mib()
        server_before = rss_mib(server_pid) if server_pid else None
        peaks_reset = reset_peak() and (server_pid is None or reset_peak(server_pid))
        timings, trips, by_command, slowest = [], [], {}, []
        for run in range(runs):
            log.start()
            started = time.perf_counter()
            build_snapshot(src, settings, at)
            timings.append(round(time.perf_counter() - started, 3))
            trips.append(log.stop())
            by_command = log.by_command()
            slowest = log.slowest()
            say(f"{volume.name} snapshot run {run + 1}{' (cold)' if run == 0 else ''}: "
                f"{timings[-1]:.2f} s, {trips[-1]} round trips")
        client_peak = rss_mib(field="VmHWM")
        server_peak = rss_mib(server_pid, "VmHWM") if server_pid else None
        say(f"explaining {sum(1 for _, c in log.commands if next(iter(c)) in ('aggregate', 'find', 'count'))} queries ...")
        queries = explain_all(client, log.commands)
        window_queries = [q for q in queries if q["collection"] in {settings.schema.payments.name,
                                                                   settings.schema.webhook_events.name,
                                                                   settings.schema.enrollments.name}]
        return {
            "volume": {"name": volume.name, "describe": volume.describe(), "documents": counts,
                       "seed_seconds_this_run": database.seed_seconds},
            "at": at.isoformat(),
            "runs": runs,
            "cold_seconds": timings[0],
            "warm_seconds": timings[1:],
            "round_trips": trips[-1],
            "round_trips_by_command": by_command,
            "slowest_commands_last_run": slowest,
            "queries_explained": len(queries),
            "docs_examined_total": sum(q["docs_examined"] for q in queries),
            "platform_queries_without_ixscan": [q for q in window_queries if not q["ixscan"]],
            "queries": queries,
            "memory_mib": {
                "peaks_reset_before_first_run": peaks_reset,
                "bench_process_rss_before": client_before,
                "bench_process_peak": client_peak,
                "server_rss_before": server_before,
                "server_peak": server_peak,
            },
            "command": f"python -m bench snapshot --volume {volume.name} --runs {runs}",
        }
    finally:
        log.recording = False
        client.close()
        database.stop()
