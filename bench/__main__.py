"""``make bench``: the reference volume, and what one snapshot costs on it.

Seeds (once; kept under ``.paywatch/bench/``) one year at 1,000 payments a
day with 3 webhook events per payment and one enrollment per payment, creates
the indexes of ``metrics/indexes.py``, then measures one snapshot: wall time,
database round trips, documents examined (from ``explain``, per query, with
whether it used an index) and peak memory.  Figures go to stdout and, with
``--write``, to ``bench-results/latest.json``; ``docs/performance.md`` quotes
them with the machine they were taken on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

from pymongo import MongoClient, monitoring

from metrics import db as dbmod
from metrics.embedded import EmbeddedMongo
from metrics.indexes import ensure_indexes
from metrics.settings import load_settings
from metrics.snapshot import build_snapshot

ROOT = Path(__file__).resolve().parent.parent


class CommandLog(monitoring.CommandListener):
    """Every command the driver sends: round trips, and the queries to explain."""

    def __init__(self):
        self.commands: list[tuple[str, dict]] = []
        self.recording = False

    def started(self, event):
        if self.recording and event.command_name in ("aggregate", "find", "count"):
            cmd = {k: v for k, v in event.command.items() if not k.startswith("$") and k not in ("lsid", "cursor")}
            self.commands.append((event.database_name, cmd))
        elif self.recording:
            self.commands.append((event.database_name, {event.command_name: 1}))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def _plan_stages(plan) -> set[str]:
    """Every stage name in an explain plan tree."""
    found: set[str] = set()
    if isinstance(plan, dict):
        if "stage" in plan:
            found.add(str(plan["stage"]))
        for value in plan.values():
            found |= _plan_stages(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= _plan_stages(value)
    return found


def _docs_examined(explained) -> int:
    total = 0
    if isinstance(explained, dict):
        for key, value in explained.items():
            if key == "totalDocsExamined" and isinstance(value, int):
                total += value
            else:
                total += _docs_examined(value)
    elif isinstance(explained, list):
        total += sum(_docs_examined(v) for v in explained)
    return total


def explain_all(client: MongoClient, commands: list[tuple[str, dict]]) -> list[dict]:
    rows = []
    for database, cmd in commands:
        name = next(iter(cmd))
        if name not in ("aggregate", "find", "count"):
            continue
        cmd = {k: v for k, v in cmd.items() if k not in ("maxTimeMS", "allowDiskUse")}
        if name == "aggregate":
            cmd["cursor"] = {}
        explained = client[database].command("explain", cmd, verbosity="executionStats")
        stages = _plan_stages(explained)
        first = cmd.get("pipeline", [{}])[0] if name == "aggregate" else cmd.get("filter", {})
        rows.append({
            "collection": cmd[name],
            "command": name,
            "first_stage": json.dumps(first, default=str)[:160],
            "docs_examined": _docs_examined(explained),
            "ixscan": "IXSCAN" in stages,
            "collscan": "COLLSCAN" in stages,
        })
    return rows


def seed_reference(client: MongoClient, settings, days: int, per_day: int, events: int) -> None:
    from demo.seed import seed

    db = client[settings.source_db_name]
    if db[settings.schema.payments.name].estimated_document_count() > 0:
        print("reference volume already seeded (delete .paywatch/bench to reseed)", file=sys.stderr)
        return
    started = time.monotonic()

    def progress(done, total, what):
        print(f"\r  seeding {what}: {done:,}/{total:,}", end="", file=sys.stderr, flush=True)

    seed(db, settings.schema, days=days, per_day=per_day, progress=progress, indexes=False)
    if events > 1:
        add_webhook_events(db, settings.schema, events - 1, progress)
    print(f"\nseeded in {time.monotonic() - started:.0f} s", file=sys.stderr)


def add_webhook_events(db, schema, per_payment: int, progress) -> None:
    """Top the demo's one event per payment up to the reference's three: the
    ``payment_intent.created`` and ``charge.succeeded`` a real integration also receives."""
    p, w = schema.payments, schema.webhook_events
    kinds = ["payment_intent.created", "charge.succeeded", "charge.updated", "payment_method.attached"][:per_payment]
    total = db[p.name].estimated_document_count() * per_payment
    batch, done = [], 0
    cursor = db[p.name].find({p["createdAt"]: {"$type": "date"}}, {p["createdAt"]: 1, p["paymentId"]: 1})
    for n, doc in enumerate(cursor):
        created = doc[p["createdAt"]]
        for i, kind in enumerate(kinds):
            received = created + timedelta(milliseconds=150 + 97 * ((n + i) % 7))
            batch.append({w["eventId"]: f"evt_bench_{n}_{i}", w["type"]: kind,
                          w["stripeCreatedAt"]: created, w["receivedAt"]: received,
                          w["processedAt"]: received + timedelta(milliseconds=120 + 53 * ((n * 3 + i) % 11)),
                          w["status"]: "processed"})
        if len(batch) >= 5000:
            db[w.name].insert_many(batch, ordered=False)
            done += len(batch)
            batch = []
            progress(done, total, "extra webhook events")
    if batch:
        db[w.name].insert_many(batch, ordered=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=1000)
    parser.add_argument("--events-per-payment", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="snapshots to time (the first is cold)")
    parser.add_argument("--write", action="store_true", help="write bench-results/latest.json")
    parser.add_argument("--seed-only", action="store_true", help="seed the reference volume and stop")
    args = parser.parse_args(argv)

    home = ROOT / ".paywatch" / "bench"
    server = EmbeddedMongo(home)
    print("starting the benchmark database ...", file=sys.stderr)
    uri = server.ensure()
    log = CommandLog()
    settings = load_settings(mongodb_uri=uri, source_db="bench", state_db="bench_state", home=home,
                             query_timeout_ms=600_000)
    client = MongoClient(uri, tz_aware=True, event_listeners=[log])
    try:
        seed_reference(client, settings, args.days, args.per_day, args.events_per_payment)
        print("creating indexes ...", file=sys.stderr)
        ensure_indexes(client[settings.source_db_name], settings.schema)
        if args.seed_only:
            return 0
        src = dbmod.Source(db=client[settings.source_db_name], schema=settings.schema, max_time_ms=600_000)
        counts = {key: src.coll(key).estimated_document_count() for key in ("payments", "webhook_events", "enrollments")}
        at = max(d["createdAt"] for d in src.coll("payments").find({}, {"createdAt": 1}).sort("createdAt", -1).limit(1))

        timings = []
        for run in range(args.runs):
            log.commands.clear()
            log.recording = True
            started = time.perf_counter()
            build_snapshot(src, settings, at)
            timings.append(time.perf_counter() - started)
            log.recording = False
            print(f"snapshot run {run + 1}: {timings[-1]:.2f} s, {len(log.commands)} round trips", file=sys.stderr)
        queries = explain_all(client, log.commands)
        server_peak = _server_peak_kib(server)
        result = {
            "volume": counts,
            "at": at.isoformat(),
            "snapshot_seconds": [round(t, 3) for t in timings],
            "round_trips": len(log.commands),
            "docs_examined": sum(q["docs_examined"] for q in queries),
            "queries": queries,
            "client_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "server_peak_rss_mib": round(server_peak / 1024, 1) if server_peak else None,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "database": "SecantusDB " + client.server_info().get("version", "?") + " (embedded)"},
        }
        print(json.dumps(result, indent=2, default=str))
        if args.write:
            out = ROOT / "bench-results"
            out.mkdir(exist_ok=True)
            (out / "latest.json").write_text(json.dumps(result, indent=2, default=str))
    finally:
        client.close()
        server.stop()
    return 0


def _server_peak_kib(server: EmbeddedMongo) -> int | None:
    if server.proc is None:
        return None
    try:
        for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.exit(main())
