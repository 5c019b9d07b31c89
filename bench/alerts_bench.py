"""``python -m bench alerts``: one evaluation cycle at a volume, and detection latency end to end.

**Cycle** (``cycle``): the alert worker's :meth:`~alerts.worker.Worker.cycle`
(every enabled default rule evaluated, states persisted, messages queued and
handed to the console channel) at the instant the volume's data ends, on a
freshly started server (the first cycle is cold), with a fresh state
database.  Wall time and round trips (every command either of the worker's
clients sends) per cycle; then each rule evaluated alone, to show where the
time goes.

**Latency** (``latency``): the product as it runs, on loopback:

1. a throw-away SecantusDB (in memory) with the demo's 90 days of history,
   seeded up to now;
2. a fake Slack receiver (``tests/fakes/slack.py``) as ``SLACK_WEBHOOK_URL``;
3. ``python -m alerts run`` as a child process with
   ``PAYWATCH_EVAL_INTERVAL`` set;
4. once its first cycle has run and its start-up messages (the seeded stuck
   payments) are delivered, the demo's ``decline-spike`` incident is written
   (the function behind ``python -m demo incident decline-spike``), and the
   clock runs until the fake Slack receives each rule's firing message:
   ``failed_payments`` (no ``for``) and ``payment_success_rate`` (``for: 5m``).

The latency is, by construction, the wait for the next scheduled evaluation
(0 to one interval), plus the rule's ``for`` rounded up to whole intervals,
plus one cycle and one Slack post.  The figure measures the sum on this
machine; the parts are reported too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

from pymongo import MongoClient

from bench.common import (
    ROOT,
    Database,
    Volume,
    command_log,
    newest_payment,
    say,
    settings_for,
)

# The two rules the decline-spike incident trips, by id, and the title their messages start with.
WATCHED = ("failed_payments", "payment_success_rate")
NOT_INHERITED = ("MONGODB_URI", "DATABASE_URL", "PAYWATCH_SOURCE_DB", "PAYWATCH_DB", "PAYWATCH_STATE_URI",
                 "PAYWATCH_CONFIG", "PAYWATCH_HEALTH_URL", "PAYWATCH_HEARTBEAT_URL", "SLACK_WEBHOOK_URL",
                 "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "STRIPE_API_KEY", "STRIPE_API_BASE", "PAYWATCH_EVAL_INTERVAL")


def cycle(volume: Volume, runs: int = 3) -> dict:
    """Worker cycles at the end of ``volume``'s data: wall time and round trips, then each rule alone."""
    from alerts import engine, store
    from alerts.readings import EvalContext
    from alerts.worker import Worker

    logging.getLogger("alerts").setLevel(logging.ERROR)  # the console channel would print every alert
    database = Database(volume)
    database.ensure_seeded()
    uri = database.start()  # started (or restarted after a seed) by ensure_seeded: a fresh server process
    log = command_log()
    state_name = f"{volume.database}_alerts_bench"
    settings = settings_for(uri, volume, state_db=state_name)
    client = MongoClient(uri, tz_aware=True)
    try:
        client.drop_database(state_name)
        at = newest_payment(client, volume, settings)
        worker = Worker(settings, use_lease=False)
        cycles = []
        for run in range(runs):
            log.start()
            started = time.perf_counter()
            report = worker.cycle(at)
            seconds = round(time.perf_counter() - started, 3)
            trips = log.stop()
            cycles.append({"seconds": seconds, "round_trips": trips, "by_command": log.by_command(),
                           "slowest_commands": log.slowest(5),
                           "firing": report.get("firing"), "unknown": report.get("unknown"),
                           "queued": len(report.get("queued") or [])})
            say(f"{volume.name} alert cycle {run + 1}{' (cold)' if run == 0 else ''}: {seconds:.2f} s, "
                f"{trips} round trips, {report.get('firing')} firing, {report.get('unknown')} unknown")
        # Each rule alone (with its own memo, so figures two rules share are counted for both).
        per_rule = []
        src = database.source(client, settings)
        stored = store.load_states(worker.state)
        for rule in worker.rules:
            if not rule.enabled:
                continue
            ctx = EvalContext(settings, at, src, worker.state, None)
            log.start()
            started = time.perf_counter()
            evaluations = engine.evaluate(ctx, [rule], stored)
            seconds = round(time.perf_counter() - started, 3)
            per_rule.append({"rule": rule.id, "seconds": seconds, "round_trips": log.stop(),
                             "states": sorted({ev.new.state for ev in evaluations}),
                             "unknown": any(ev.unknown for ev in evaluations)})
        per_rule.sort(key=lambda r: -r["seconds"])
        return {
            "volume": {"name": volume.name, "describe": volume.describe()},
            "at": at.isoformat(),
            "rules_enabled": sum(r.enabled for r in worker.rules),
            "cold_seconds": cycles[0]["seconds"],
            "warm_seconds": [c["seconds"] for c in cycles[1:]],
            "round_trips": cycles[0]["round_trips"],
            "cycles": cycles,
            "per_rule_alone": per_rule,
            "note": "cycle(at) with a fixed instant skips the live-only health probe and connection sample",
            "command": f"python -m bench alerts --volume {volume.name} --runs {runs}",
        }
    finally:
        log.recording = False
        client.close()
        database.stop()


def _wait(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def latency(interval: float, timeout: float | None = None) -> dict:
    """Seconds from the decline-spike incident written to each watched rule's post at a fake Slack."""
    from alerts import store
    from alerts.outbox import OUTBOX
    from alerts.rules import default_rules
    from demo.seed import seed
    from demo.traffic import inject
    from metrics.embedded import EmbeddedMongo, stop_process
    from tests.fakes.slack import FakeSlack

    home = ROOT / ".paywatch" / "bench-alerts"
    server = EmbeddedMongo(home, memory=True)
    uri = server.ensure()
    volume = Volume("demo-live", home, "demo", 90, 300, 1)
    state_name = "paywatch_bench"
    settings = settings_for(uri, volume, state_db=state_name)
    titles = {r.id: r.title for r in default_rules(settings) if r.id in WATCHED}
    fors = {r.id: r.for_.total_seconds() for r in default_rules(settings) if r.id in WATCHED}
    slack = FakeSlack().start()
    client = MongoClient(uri, tz_aware=True)
    worker: subprocess.Popen | None = None
    log_path = home / f"worker-{interval:g}s.log"
    try:
        say(f"latency at PAYWATCH_EVAL_INTERVAL={interval:g} s: seeding the demo history ...")
        seed(client[volume.database], settings.schema)
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env.update({"MONGODB_URI": uri, "PAYWATCH_SOURCE_DB": volume.database, "PAYWATCH_DB": state_name,
                    "SLACK_WEBHOOK_URL": slack.webhook_url, "PAYWATCH_EVAL_INTERVAL": f"{interval:g}",
                    "PAYWATCH_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        with open(log_path, "wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "alerts", "run"], cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        state = client[state_name]
        started = time.monotonic()
        if not _wait(lambda: state[store.HEARTBEATS].find_one({"_id": "worker"}) is not None, 120):
            raise RuntimeError(f"the worker wrote no heartbeat in 120 s: {log_path.read_text()[-1500:]}")
        first_cycle_s = round(time.monotonic() - started, 1)

        def settled() -> bool:  # start-up messages delivered, nothing more arriving for 3 s
            busy = state[OUTBOX].count_documents({"status": {"$in": ["pending", "sending"]}})
            quiet = not slack.requests or time.monotonic() - slack.requests[-1].at > 3
            return busy == 0 and quiet
        _wait(settled, 120, 0.5)
        before = len(slack.requests)
        startup_posts = [r.text.splitlines()[0][:120] for r in slack.requests]

        injected = inject(client[volume.database], settings.schema, "decline-spike")
        t0 = time.monotonic()
        wall0 = datetime.now(timezone.utc)
        say(f"incident written at {wall0.isoformat(timespec='seconds')}: {injected.get('failed_payments')} failed "
            f"payments; waiting for {', '.join(WATCHED)} at the fake Slack ...")
        limit = timeout or (max(fors.values()) + 3 * interval + 120)
        arrived: dict[str, float] = {}

        def posted() -> bool:
            for r in slack.requests[before:]:
                headline = r.text.splitlines()[0] if r.text else ""  # "<mark> [SEVERITY] <title>: <value> ..."
                for rule_id, title in titles.items():
                    if rule_id not in arrived and r.status == 200 and f"] {title}:" in headline:
                        arrived[rule_id] = round(r.at - t0, 1)
            return len(arrived) == len(titles)
        _wait(posted, limit, 0.2)
        heartbeat = state[store.HEARTBEATS].find_one({"_id": "worker"}) or {}
        return {
            "interval_s": interval,
            "volume": "demo history (90 days × ~300 payments/day) seeded up to now, no live traffic",
            "incident": {"kind": "decline-spike", **{k: v for k, v in injected.items() if isinstance(v, (int, float, str))}},
            "latency_s": {rule_id: arrived.get(rule_id) for rule_id in titles},
            "rule_for_s": fors,
            "not_arrived_within_s": None if len(arrived) == len(titles) else limit,
            "worker_first_cycle_after_start_s": first_cycle_s,
            "worker_last_cycle_ms": heartbeat.get("cycle_ms"),
            "startup_posts": startup_posts,
            "command": f"python -m bench alerts --latency-only --interval {interval:g}",
        }
    finally:
        if worker is not None:
            stop_process(worker, timeout=20)
        slack.stop()
        client.close()
        server.stop()
