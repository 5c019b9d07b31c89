"""``streamlit run dashboard/app.py`` (or another app) as a child process on a free loopback port.

For the browser test and the dashboard benchmark: start the dashboard over a
given database, wait until it answers, stop exactly that process.  No
Streamlit import here (it runs in the child).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from metrics.embedded import free_port, stop_process

# In a browser on the dashboard: true once every chart of the page has drawn (``charts.show`` draws
# each with ECharts, on a canvas of its own).
EVERY_CHART_DRAWN = ("[...document.querySelectorAll('[data-testid=\"stEChartsChart\"]')]"
                     ".every(chart => chart.querySelector('canvas'))")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
START_TIMEOUT_S = 60


class DashboardProcess:
    """The dashboard with ``env`` added to this process's environment (less the names in ``drop``)."""

    def __init__(self, env: dict[str, str], log_path: Path, extra_args: tuple[str, ...] = (),
                 drop: tuple[str, ...] = (), app: Path = APP):
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        inherited = {k: v for k, v in os.environ.items() if k not in drop}
        self.env = {**inherited, **env, "PYTHONUNBUFFERED": "1"}
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "DashboardProcess":
        cmd = [sys.executable, "-m", "streamlit", "run", str(self.app), "--server.port", str(self.port),
               "--server.address", "127.0.0.1", "--server.headless", "true", *self.extra_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}: {self.log()}")
            try:
                if requests.get(f"{self.url}/_stcore/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"streamlit did not answer within {START_TIMEOUT_S} s: {self.log()}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
