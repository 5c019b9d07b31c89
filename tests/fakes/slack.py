"""A fake Slack on a free loopback port: incoming webhooks and ``chat.postMessage``.

The real ``slack-sdk`` clients are pointed at it (``WebhookClient(url=...)``,
``WebClient(base_url=...)``), so a test asserts on exactly what Slack would
have received.  It can be told to answer the next requests with a 429 and a
``Retry-After``, a 5xx, or a 404 (a deleted webhook), and to hold a request
before answering (to kill a sender mid-send).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from metrics.embedded import free_port

WEBHOOK_PATH = "/services/T000/B000/XXXXXXXX"


@dataclass
class Received:
    path: str
    headers: dict
    body: dict | None
    raw: bytes
    at: float
    status: int  # what the fake answered

    @property
    def text(self) -> str:
        return (self.body or {}).get("text", "")

    @property
    def blocks(self) -> list:
        return (self.body or {}).get("blocks") or []


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: str | None = None
    hold_s: float = 0.0  # wait this long before answering


class FakeSlack:
    def __init__(self):
        self.requests: list[Received] = []
        self.pings: list[str] = []
        self.script: list[Reply] = []
        self.arrived = threading.Condition()
        self.port = free_port()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                fake._handle(self, raw)

            def do_GET(self):  # noqa: N802 - a heartbeat ping (dead-man's switch) is a GET
                with fake.arrived:
                    fake.pings.append(self.path)
                    fake.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-slack", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> "FakeSlack":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    @property
    def ping_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/paywatch-worker"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- scripting -----------------------------------------------------------------------

    def answer_next(self, *replies: Reply) -> None:
        """The next requests get these replies, in order; then 200 again."""
        with self.arrived:
            self.script.extend(replies)

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            body = None
        with self.arrived:
            reply = self.script.pop(0) if self.script else Reply()
            self.requests.append(Received(handler.path, dict(handler.headers.items()), body, raw, time.monotonic(),
                                          reply.status))
            self.arrived.notify_all()
        if reply.hold_s:
            time.sleep(reply.hold_s)
        api = handler.path.startswith("/api/")
        if reply.body is not None:
            payload = reply.body
        elif api:
            ok = reply.status == 200
            payload = json.dumps({"ok": ok, "ts": f"{time.time():.6f}"} if ok else {"ok": False, "error": "fake_error"})
        else:
            payload = "ok" if reply.status == 200 else {404: "no_service", 410: "channel_is_archived",
                                                        429: "rate_limited"}.get(reply.status, "server_error")
        data = payload.encode("utf-8")
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json" if api else "text/plain")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client went away (a killed worker)

    # -- reading -------------------------------------------------------------------------

    def delivered(self) -> list[Received]:
        """Requests answered 200: the messages Slack would show."""
        with self.arrived:
            return [r for r in self.requests if r.status == 200]

    def wait_for(self, count: int, timeout: float = 20.0, delivered_only: bool = True) -> list[Received]:
        """Block until ``count`` requests (delivered ones by default) arrived; fail the test otherwise."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                got = [r for r in self.requests if r.status == 200] if delivered_only else list(self.requests)
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake Slack got {len(got)} of {count} expected requests in {timeout:.0f} s")
                self.arrived.wait(left)
