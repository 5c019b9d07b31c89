"""``make run`` (``python -m demo.launch``) on a fresh home: the embedded database, demo data,
localstripe with live payments mirrored by the worker, the dashboard; Ctrl-C stops every
process it started.

The seed is the demo's own (``python -m demo seed``), at its smallest volume
(``--seed-days 8 --seed-per-day 40``, every incident still in it), so the test
takes seconds; the default 90-day history (about 27,000 payments) is left to `make run`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from demo.launch import STRIPE_WARM_UP
from metrics.embedded import free_port, pid_alive

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180


class Launched:
    """The launcher process and every line it printed, read by a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; the launcher printed:\n{self.text()[-4000:]}")

    def pids(self) -> dict[str, int]:
        """Every process the launcher said it started: ``name -> pid``."""
        text = self.text()
        found = {m["name"]: int(m["pid"]) for m in re.finditer(r"\[paywatch\] started (?P<name>\S+) \(pid (?P<pid>\d+)\)", text)}
        for name, pattern in (("database", r"embedded database on \S+ \(pid (\d+)\)"),
                              ("localstripe", r"embedded Stripe \(localstripe\) on \S+ \(pid (\d+)\)")):
            match = re.search(pattern, text)
            if match:
                found[name] = int(match[1])
        return found


@pytest.fixture
def launch(tmp_path):
    started: list[Launched] = []
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "STRIPE_API_KEY", "STRIPE_API_BASE")}
    env.update(PAYWATCH_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")

    def start(port: int) -> Launched:
        proc = subprocess.Popen([sys.executable, "-m", "demo.launch", "--port", str(port),
                                 "--seed-days", "8", "--seed-per-day", "40"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)
        started.append(Launched(proc))
        return started[-1]

    start.env = env
    yield start
    for launched in started:  # a failed test must not leave a launcher (and its children) behind
        if launched.proc.poll() is None:
            launched.proc.send_signal(signal.SIGINT)
            try:
                launched.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                launched.proc.kill()
                launched.proc.wait()


def snapshot(env: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "metrics", "snapshot", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_make_run_mirrors_live_stripe_payments_and_ctrl_c_stops_every_child(launch):
    port = free_port()
    launched = launch(port)

    launched.wait_for(rf"\[paywatch\] dashboard: http://127\.0\.0\.1:{port}", START_TIMEOUT_S)
    pids = launched.pids()
    assert {"database", "localstripe", "traffic", "stripe", "dashboard", "worker"} <= set(pids), launched.text()
    assert all(pid_alive(pid) for pid in pids.values())

    # The worker's mirror job runs seconds after it starts, after the launcher's first checkouts.
    deadline = time.monotonic() + 90
    while True:
        stripe = snapshot(launch.env)["stripe"]
        # A snapshot's instant is a whole second: a sync that began within it shows from the next one.
        synced = (stripe.get("available") and stripe["sync"]["last_run_ok"] is True
                  and (stripe["24h"]["payments"] or {}).get("created", 0) >= STRIPE_WARM_UP)
        if synced or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert synced, stripe
    assert stripe["sync"]["calls_last"] > 0
    assert stripe["24h"]["payments"]["succeeded"] >= 1
    # localstripe has no disputes or webhook endpoints: unknown, with the reason, not 0.
    assert stripe["disputes"]["open"] is None and stripe["disputes"]["reason"]

    launched.proc.send_signal(signal.SIGINT)
    assert launched.proc.wait(timeout=90) == 0, launched.text()[-4000:]
    assert "[paywatch] stopped" in launched.text()
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {name: pid for name, pid in pids.items() if pid_alive(pid)} == {}
