"""The worker's health server (alerts/health.py): /healthz, /readyz and /metrics, over the real database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client.parser import text_string_to_metric_families

from alerts import health
from alerts.worker import Worker
from fakes.fixtures import make_rule
from fakes.platform import payment
from metrics.settings import SettingsError

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[str, list]:
    """``/metrics`` parsed by prometheus-client's own parser: {metric name: [(labels, value)]}."""
    response = requests.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = [(s.labels, s.value) for s in family.samples]
    return families


def value(families: dict, name: str, **labels) -> float | None:
    matches = [v for found, v in families[name] if all(found.get(k) == want for k, want in labels.items())]
    assert len(matches) <= 1, matches
    return matches[0] if matches else None


@pytest.fixture
def served(make_settings):
    """``served(worker_settings..., scheduler=...)``: a Health server on a free port for a worker; closed after."""
    servers = []

    def start(scheduler=None, alerts: dict | None = None, **overrides):
        worker = Worker(make_settings(worker_port=free_port(), alerts=alerts or {}, **overrides),
                        rules=[make_rule()], channels={}, use_lease=False)
        server = health.serve(worker, scheduler)
        servers.append(server)
        return worker, server

    yield start
    for server in servers:
        server.close()


def cycling_scheduler(worker: Worker, seconds: float = 0.2) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.add_job(worker.cycle, "interval", seconds=seconds, id=health.CYCLE_JOB,
                      next_run_time=datetime.now(timezone.utc))
    return scheduler


def wait_for_status(url: str, status: int, timeout: float = 15.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(url, timeout=10)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def wait_for_cycle(url: str, timeout: float = 15.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(url, timeout=10)
        if response.status_code == 200 and response.json()["last_cycle_age_s"] is not None:
            return response
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)


def test_healthz_is_503_until_the_scheduler_runs_and_200_after_a_cycle(make_settings, served):
    worker = Worker(make_settings(), rules=[make_rule()], channels={}, use_lease=False)
    scheduler = cycling_scheduler(worker)
    _, server = served(scheduler=scheduler)
    stopped = requests.get(f"{server.url}/healthz", timeout=10)
    assert stopped.status_code == 503 and stopped.json() == {"status": "unhealthy",
                                                             "reason": "the scheduler is not running"}
    scheduler.start()
    try:
        body = wait_for_cycle(f"{server.url}/healthz").json()
        assert body["status"] == "ok" and body["last_cycle_age_s"] < body["late_after_s"] and body["leader"] is True
    finally:
        scheduler.shutdown()
    after = requests.get(f"{server.url}/healthz", timeout=10)
    assert after.status_code == 503 and after.json()["reason"] == "the scheduler is not running"


def test_healthz_is_503_with_the_reason_when_cycles_stop(make_settings, served):
    worker = Worker(make_settings(), rules=[make_rule()], channels={}, use_lease=False)
    scheduler = cycling_scheduler(worker)
    _, server = served(scheduler=scheduler, alerts={"heartbeat_late": "1s"})
    scheduler.start()
    try:
        wait_for_cycle(f"{server.url}/healthz")
        scheduler.pause_job(health.CYCLE_JOB)  # a cycle that hangs looks the same from outside
        late = wait_for_status(f"{server.url}/healthz", 503, timeout=10)
        assert late.status_code == 503
        body = late.json()
        assert body["status"] == "unhealthy" and body["late_after_s"] == 1.0
        assert body["reason"].startswith("no evaluation cycle finished for ") and "the limit is 1 s" in body["reason"]
    finally:
        scheduler.shutdown()


def test_healthz_says_starting_until_the_first_cycle_finishes_however_long_it_takes(make_settings, served):
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.add_job(lambda: None, "interval", hours=1, id=health.CYCLE_JOB)  # its first run is an hour away
    _, server = served(scheduler=scheduler, alerts={"heartbeat_late": "1s"})
    scheduler.start()
    try:
        time.sleep(1.5)  # past the lateness limit: a first cycle building the rollups is not a hung one
        response = requests.get(f"{server.url}/healthz", timeout=10)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "starting" and body["last_cycle_age_s"] is None and body["started_s_ago"] > 1
    finally:
        scheduler.shutdown()


def test_readyz_answers_200_when_both_databases_answer(served):
    _, server = served()
    response = requests.get(f"{server.url}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "databases": {"platform": "ok", "paywatch": "ok"}}


def test_readyz_is_503_naming_the_database_when_it_is_unreachable(served):
    dead = free_port()
    _, server = served(mongodb_uri=f"mongodb://127.0.0.1:{dead}/platform", server_selection_timeout_ms=300)
    response = requests.get(f"{server.url}/readyz", timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["databases"]["platform"] != "ok" and body["databases"]["paywatch"] != "ok"
    assert str(dead) in body["databases"]["paywatch"] or "127.0.0.1" in body["databases"]["paywatch"]


def test_metrics_serve_the_snapshot_figures_with_currency_status_and_rule_labels(served, platform_db, run):
    now = datetime.now(timezone.utc)
    platform_db.payments.insert_many(
        [payment(now - timedelta(minutes=5), "completed", amount=2500) for _ in range(3)]
        + [payment(now - timedelta(minutes=5), "completed", amount=900, currency="eur")]
        + [payment(now - timedelta(seconds=20), "failed") for _ in range(4)])  # inside the rule's 60 s window
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    worker, server = served(scheduler=scheduler, currencies="usd,eur")
    worker.cycle()  # stores the rule's state (4 failed > 2: firing) and the heartbeat
    families = scrape(server.url)

    snap = json.loads(run("snapshot", "--json", PAYWATCH_CURRENCIES="usd,eur").stdout)
    assert value(families, "paywatch_payments_24h", status="completed") == snap["payments"]["24h"]["by_status"]["completed"] == 4
    assert value(families, "paywatch_payments_24h", status="failed") == 4
    assert value(families, "paywatch_payments_revenue_minor_units", period="24h", currency="usd") == 7500
    assert value(families, "paywatch_payments_revenue_minor_units", period="24h", currency="eur") == 900
    assert value(families, "paywatch_payments_revenue_minor_units", period="month", currency="usd") == \
        snap["payments"]["revenue"]["month"]["usd"]
    assert value(families, "paywatch_payments_success_ratio_24h") == pytest.approx(snap["payments"]["24h"]["success_rate"])
    assert value(families, "paywatch_alert_firing", rule="too_many_failures", subject="", severity="warning") == 1.0
    assert value(families, "paywatch_alert_value", rule="too_many_failures", subject="") == 4.0
    assert value(families, "paywatch_worker_cycle_duration_seconds") > 0
    assert value(families, "paywatch_worker_last_cycle_timestamp_seconds") == pytest.approx(time.time(), abs=60)
    assert value(families, "paywatch_outbox_depth") == 0.0
    assert 0 <= value(families, "paywatch_rollup_lag_seconds", collection="payments") < 60  # the cycle refreshed them
    assert value(families, "paywatch_database_up", database="platform") == 1.0
    assert value(families, "paywatch_worker_scheduler_running") == 0.0  # never started here


def test_unknown_figures_have_no_sample_rather_than_zero(served):
    _, server = served()
    families = scrape(server.url)
    # No payment at all: the success rate is unknown, and so is the webhook failure rate.
    assert families["paywatch_payments_success_ratio_24h"] == []
    assert families["paywatch_webhook_failure_ratio_24h"] == []
    assert families["paywatch_stripe_payment_intents_24h"] == []  # the mirror has never synced
    assert value(families, "paywatch_stripe_mirror_available") == 0.0
    assert value(families, "paywatch_payments_stuck") == 0.0  # a count is known: zero


def test_the_snapshot_is_computed_once_for_scrapes_close_together():
    calls = []
    cache = health.SnapshotCache(lambda: calls.append(1) or {"n": len(calls)}, ttl=60)
    assert cache.get() == {"n": 1} and cache.get() == {"n": 1}
    assert len(calls) == 1


def test_a_port_already_taken_stops_the_worker_with_one_line(make_settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = Worker(make_settings(worker_port=port), rules=[make_rule()], channels={}, use_lease=False)
        with pytest.raises(SettingsError, match=rf"PAYWATCH_WORKER_PORT: cannot listen on 127.0.0.1:{port}"):
            health.serve(worker, None)


def test_without_a_port_there_is_no_server(make_settings):
    worker = Worker(make_settings(), rules=[make_rule()], channels={}, use_lease=False)
    server = health.serve(worker, None)
    assert server.url is None
    server.close()


def test_the_worker_process_serves_healthz_readyz_and_metrics_and_stops_cleanly(mongo_uri, db_names, tmp_path, platform_db):
    """``paywatch worker`` as a real process: the scheduler's cycles make /healthz answer 200."""
    platform_db.payments.insert_many([payment(NOW - timedelta(minutes=3), "completed") for _ in range(2)])
    port = free_port()
    env = {**os.environ, "MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
           "PAYWATCH_HOME": str(tmp_path / "home"), "PAYWATCH_WORKER_PORT": str(port), "PAYWATCH_EVAL_INTERVAL": "1"}
    log = (tmp_path / "worker.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "paywatch", "worker"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(f"{url}/healthz", timeout=5)
                # 200 "starting" comes first; the healthcheck below needs a finished cycle ("ok").
                if response.status_code == 200 and response.json()["status"] == "ok":
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        families = scrape(url)
        assert value(families, "paywatch_payments_24h", status="completed") == 2.0
        assert value(families, "paywatch_worker_scheduler_running") == 1.0
        assert value(families, "paywatch_worker_leader") == 1.0
        (holder,) = families["paywatch_lease_holder"]
        assert holder[0]["holder"].startswith(socket.gethostname())
        # The image's HEALTHCHECK in the worker's container: the worker's /healthz, not the dashboard's.
        check = subprocess.run([sys.executable, "-m", "paywatch", "healthcheck"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and check.stdout.startswith('worker: 200 {"status": "ok"'), check.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert "health server on http://127.0.0.1:" in (tmp_path / "worker.log").read_text()


def test_metrics_still_answer_when_the_databases_do_not_and_say_so(served):
    dead = free_port()
    _, server = served(mongodb_uri=f"mongodb://127.0.0.1:{dead}/platform", server_selection_timeout_ms=300)
    families = scrape(server.url)
    assert value(families, "paywatch_database_up", database="platform") == 0.0
    assert value(families, "paywatch_database_up", database="paywatch") == 0.0
    assert families["paywatch_payments_24h"] == [] and families["paywatch_outbox_depth"] == []
    assert value(families, "paywatch_worker_scheduler_running") == 0.0
