"""What every benchmark mode shares: the volumes, their databases, the machine, the records.

Two volumes, each in its own embedded SecantusDB under ``.paywatch/``
(git-ignored, kept between runs so the long seed happens once):

* ``reference`` (``.paywatch/bench``, database ``bench``): the volume of
  ``make bench``, one year at 1,000 payments a day, 3 webhook events per
  payment, 1 enrollment per payment;
* ``demo`` (``.paywatch/bench-demo``, database ``demo``): the 90 days at
  about 300 payments a day that ``make run`` seeds.

A volume is seeded in a child process (``python -m bench seed``), so the
memory the seed needs does not count in the figures of the process that
measures.  After a seed the server is restarted, so the first measurement
meets a freshly started database (the operating system's file cache stays
warm: "cold" means a new server process, not a cold disk).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

from pymongo import MongoClient, monitoring

from metrics import db as dbmod
from metrics.embedded import EmbeddedMongo
from metrics.indexes import ensure_indexes
from metrics.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
QUERY_TIMEOUT_MS = 600_000  # the reference volume is large; a benchmark waits rather than fails


@dataclass(frozen=True)
class Volume:
    """A data volume to measure on, and where its database lives."""

    name: str
    home: Path
    database: str
    days: int
    per_day: int
    events_per_payment: int  # webhook events per payment (the demo writes 1; the reference tops up)

    def describe(self) -> str:
        return (f"{self.days} days × {self.per_day:,} payments/day, {self.events_per_payment} webhook "
                f"event(s) and 1 enrollment per payment")


def reference_volume(days: int = 365, per_day: int = 1000, events_per_payment: int = 3) -> Volume:
    suffix = "" if (days, per_day, events_per_payment) == (365, 1000, 3) else f"-{days}x{per_day}x{events_per_payment}"
    return Volume("reference", ROOT / ".paywatch" / f"bench{suffix}", "bench", days, per_day, events_per_payment)


def demo_volume() -> Volume:
    from demo.seed import DEFAULT_DAYS, DEFAULT_PER_DAY

    return Volume("demo", ROOT / ".paywatch" / "bench-demo", "demo", DEFAULT_DAYS, DEFAULT_PER_DAY, 1)


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# --- The machine -------------------------------------------------------------------------

def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine(client: MongoClient | None = None) -> dict:
    """Where a figure was taken: CPUs, memory, CPU model, versions, and how busy the machine was."""
    info = {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "secantusdb": _version("secantusdb"),
        "pymongo": _version("pymongo"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if client is not None:
        info["database"] = "SecantusDB " + str(client.server_info().get("version", "?")) + " (embedded, wire protocol)"
    return info


# --- Memory --------------------------------------------------------------------------------

def rss_mib(pid: int | str = "self", field: str = "VmRSS") -> float | None:
    """A process's resident memory (``VmRSS``) or its peak since the last reset (``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def reset_peak(pid: int | str = "self") -> bool:
    """Start a new peak-memory measurement (Linux: writing 5 to ``clear_refs`` resets ``VmHWM``)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- Round trips -----------------------------------------------------------------------------

class CommandLog(monitoring.CommandListener):
    """Every command the driver sends while recording: the round trips, and the queries to explain.

    Registered globally (``monitoring.register``), it also sees the clients that
    the code under test opens for itself (the alert worker's).
    """

    QUERIES = ("aggregate", "find", "count", "distinct")

    def __init__(self):
        self.commands: list[tuple[str, dict]] = []
        self.durations_ms: list[float | None] = []  # per command, as the driver timed it
        self._index: dict[int, int] = {}
        self.recording = False

    def started(self, event):
        if not self.recording:
            return
        if event.command_name in self.QUERIES:
            cmd = {k: v for k, v in event.command.items() if not k.startswith("$") and k not in ("lsid", "cursor")}
            self.commands.append((event.database_name, cmd))
        else:
            self.commands.append((event.database_name, {event.command_name: 1}))
        self.durations_ms.append(None)
        self._index[event.request_id] = len(self.commands) - 1

    def succeeded(self, event):
        self._finished(event)

    def failed(self, event):
        self._finished(event)

    def _finished(self, event) -> None:
        index = self._index.pop(event.request_id, None)
        if index is not None and index < len(self.durations_ms):
            self.durations_ms[index] = round(event.duration_micros / 1000, 1)

    def slowest(self, count: int = 8) -> list[dict]:
        """The commands that took longest (the driver's timing: round trip and server work)."""
        rows = []
        for (database, cmd), ms in zip(self.commands, self.durations_ms):
            name = next(iter(cmd))
            first = cmd.get("pipeline", [{}])[0] if name == "aggregate" else cmd.get("filter", {})
            rows.append({"command": name, "collection": cmd[name] if name in self.QUERIES else None,
                         "first_stage": json.dumps(first, default=str)[:120], "ms": ms})
        return sorted(rows, key=lambda r: -(r["ms"] or 0))[:count]

    def start(self) -> None:
        self.commands.clear()
        self.durations_ms.clear()
        self._index.clear()
        self.recording = True

    def stop(self) -> int:
        self.recording = False
        return len(self.commands)

    def by_command(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, cmd in self.commands:
            name = next(iter(cmd))
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))


_LOG: CommandLog | None = None


def command_log() -> CommandLog:
    """The one listener of this process, registered before any client is made (it sees them all)."""
    global _LOG
    if _LOG is None:
        _LOG = CommandLog()
        monitoring.register(_LOG)
    return _LOG


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


def _sum_examined(node) -> int:
    total = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "totalDocsExamined" and isinstance(value, int):
                total += value
            else:
                total += _sum_examined(value)
    elif isinstance(node, list):
        total += sum(_sum_examined(v) for v in node)
    return total


def _docs_examined(explained) -> int:
    """Documents the query read: an aggregate's per-stage figures (its ``$cursor`` and any ``$lookup``),
    else the top-level ``executionStats``.  SecantusDB repeats the ``$cursor`` figure at the top level
    of an aggregate's explain, so adding both would count every document twice."""
    if isinstance(explained, dict) and isinstance(explained.get("stages"), list):
        return _sum_examined(explained["stages"])
    if isinstance(explained, dict) and isinstance(explained.get("executionStats"), dict):
        return _sum_examined(explained["executionStats"])
    return _sum_examined(explained)


def _explain_ms(explained) -> int | None:
    """The server's own time for the query (``executionTimeMillis``), as it ran under ``explain``."""
    stats = explained.get("executionStats") if isinstance(explained, dict) else None
    if isinstance(stats, dict) and isinstance(stats.get("executionTimeMillis"), (int, float)):
        return int(stats["executionTimeMillis"])
    return None


def _index_names(plan) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if plan.get("stage") == "IXSCAN" and plan.get("indexName"):
            found.add(str(plan["indexName"]))
        for value in plan.values():
            found |= _index_names(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= _index_names(value)
    return found


def explain_all(client: MongoClient, commands: list[tuple[str, dict]]) -> list[dict]:
    """``explain`` (executionStats) of every recorded query: documents examined, and IXSCAN or COLLSCAN."""
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
        first = cmd.get("pipeline", [{}])[0] if name == "aggregate" else cmd.get("filter", cmd.get("query", {}))
        rows.append({
            "collection": cmd[name],
            "command": name,
            "first_stage": json.dumps(first, default=str)[:200],
            "docs_examined": _docs_examined(explained),
            "explain_ms": _explain_ms(explained),
            "ixscan": "IXSCAN" in stages,
            "collscan": "COLLSCAN" in stages,
            "indexes": sorted(_index_names(explained)),
        })
    return rows


# --- The databases ------------------------------------------------------------------------

def settings_for(uri: str, volume: Volume, state_db: str | None = None, **extra) -> Settings:
    return load_settings(mongodb_uri=uri, source_db=volume.database, state_db=state_db or f"{volume.database}_state",
                         home=volume.home, query_timeout_ms=QUERY_TIMEOUT_MS, **extra)


def payment_count(client: MongoClient, volume: Volume, settings: Settings) -> int:
    return client[volume.database][settings.schema.payments.name].estimated_document_count()


class Database:
    """The embedded server of one volume: found running or started, seeded when empty, stopped at the end."""

    def __init__(self, volume: Volume):
        self.volume = volume
        self.server = EmbeddedMongo(volume.home)
        self.uri: str | None = None
        self.seed_seconds: float | None = None

    def start(self) -> str:
        """This volume's server: the one already running on its files, or a new one (idempotent)."""
        if self.server.owned and self.uri:
            return self.uri
        self.uri = self.server.ensure()
        return self.uri

    def restart(self) -> str:
        """A fresh server process on the same files (only one this object started)."""
        if self.server.owned:
            self.server.stop()
            self.server = EmbeddedMongo(self.volume.home)
        return self.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def pid(self) -> int | None:
        if self.server.proc is not None:
            return self.server.proc.pid
        try:
            return int(json.loads(self.server.port_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def ensure_seeded(self) -> None:
        """Seed in a child process when the volume is empty; then restart so measurements start cold."""
        uri = self.start()
        settings = settings_for(uri, self.volume)
        with MongoClient(uri) as client:
            seeded = payment_count(client, self.volume, settings) > 0
        if seeded:
            return
        say(f"seeding the {self.volume.name} volume ({self.volume.describe()}) into {self.volume.home} ...")
        started = time.monotonic()
        v = self.volume
        subprocess.run([sys.executable, "-m", "bench", "seed", "--volume", v.name, "--home", str(v.home),
                        "--days", str(v.days), "--per-day", str(v.per_day),
                        "--events-per-payment", str(v.events_per_payment)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        self.seed_seconds = round(time.monotonic() - started, 1)
        self.restart()

    def source(self, client: MongoClient, settings: Settings) -> dbmod.Source:
        return dbmod.Source(db=client[settings.source_db_name], schema=settings.schema, max_time_ms=QUERY_TIMEOUT_MS)


def newest_payment(client: MongoClient, volume: Volume, settings: Settings) -> datetime:
    """The instant the volume's data ends: its newest payment (the reference volume ends when it was seeded)."""
    p = settings.schema.payments
    doc = client[volume.database][p.name].find_one({p["createdAt"]: {"$type": "date"}}, {p["createdAt"]: 1},
                                                   sort=[(p["createdAt"], -1)])
    created = doc[p["createdAt"]]
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


# --- Seeding ----------------------------------------------------------------------------------

def seed_volume(volume: Volume) -> dict:
    """Write the volume into its (empty) database, then create the metric indexes. Runs in ``bench seed``."""
    from demo.seed import seed

    server = EmbeddedMongo(volume.home)
    uri = server.ensure()
    settings = settings_for(uri, volume)
    client = MongoClient(uri, tz_aware=True)
    try:
        db = client[volume.database]
        if payment_count(client, volume, settings) > 0:
            say(f"the {volume.name} volume is already seeded (delete {volume.home} to seed it again)")
            return {"seeded": False}
        started = time.monotonic()

        def progress(done, total, what):
            print(f"\r  seeding {what}: {done:,}/{total:,}", end="", file=sys.stderr, flush=True)

        seed(db, settings.schema, days=volume.days, per_day=volume.per_day, progress=progress, indexes=False)
        if volume.events_per_payment > 1:
            add_webhook_events(db, settings.schema, volume.events_per_payment - 1, progress)
        loaded = time.monotonic() - started
        print(file=sys.stderr)
        say(f"loaded in {loaded:.0f} s; creating indexes ...")
        ensure_indexes(db, settings.schema)
        total = time.monotonic() - started
        counts = {key: db[getattr(settings.schema, key).name].estimated_document_count()
                  for key in ("payments", "webhook_events", "enrollments")}
        say(f"seeded {counts} in {total:.0f} s (load {loaded:.0f} s, indexes {total - loaded:.0f} s)")
        return {"seeded": True, "seconds": round(total, 1), "load_seconds": round(loaded, 1), "counts": counts}
    finally:
        client.close()
        server.stop()


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


# --- Results ----------------------------------------------------------------------------------

def write_results(results: dict) -> list[Path]:
    """``bench-results/<mode>.json`` per mode run, and ``latest.json`` with everything of this run."""
    RESULTS.mkdir(exist_ok=True)
    written = []
    for mode, result in results.items():
        if mode.startswith("machine"):
            continue
        path = RESULTS / f"{mode}.json"
        path.write_text(json.dumps({"machine": results.get("machine"), mode: result}, indent=2, default=str))
        written.append(path)
    latest = RESULTS / "latest.json"
    latest.write_text(json.dumps(results, indent=2, default=str))
    written.append(latest)
    return written
