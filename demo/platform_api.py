"""A stand-in for the platform's API health endpoint, for the embedded default.

The System Health page and the latency / error-rate / memory rules probe the
platform's health URL (``PAYWATCH_HEALTH_URL``).  With nothing configured,
``make run`` starts this small server on loopback so those figures are live:
it answers ``GET /api/health`` with a realistic latency, now and then an
error, and a memory figure, like an Express app's health route would.
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH_PATH = "/api/health"


class _Handler(BaseHTTPRequestHandler):
    server: "PlatformApi"

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] != HEALTH_PATH:
            self.send_error(404)
            return
        api = self.server
        time.sleep(api.rng.lognormvariate(-2.6, 0.6))  # ~75 ms median, a long tail like a real API
        if api.rng.random() < api.error_rate:
            body, status = {"status": "error", "error": "upstream timeout"}, 503
        else:
            body, status = {"status": "ok", "memory_pct": round(api.rng.uniform(45, 70), 1)}, 200
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # keep make run's console for alerts
        pass


class PlatformApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, error_rate: float = 0.002, seed: int | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.error_rate = error_rate
        self.rng = random.Random(seed)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{HEALTH_PATH}"

    def start(self) -> "PlatformApi":
        self._thread = threading.Thread(target=self.serve_forever, name="platform-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
