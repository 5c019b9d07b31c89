"""A fake Slack on a free loopback port: incoming webhooks and the Web API methods Paywatch calls.

The real ``slack-sdk`` clients are pointed at it (``WebhookClient(url=...)``,
``WebClient(base_url=...)``), so a test asserts on exactly what Slack would
have received.  The Web API part keeps channels and their messages and
answers as Slack documents it (https://docs.slack.dev/reference/methods):

- ``auth.test``: the team's URL (permalinks are built from it);
- ``chat.postMessage``: ``ok``, ``channel`` (the id, also when a ``#name``
  was given), ``ts`` and the ``message``; ``thread_ts`` makes a reply;
  ``metadata`` is kept with the message;
- ``chat.update``: edits a message in place; ``message_not_found`` for an
  unknown ``ts``;
- ``conversations.history`` / ``conversations.replies``: newest first, the
  ``metadata`` only with ``include_all_metadata``; ``oldest``, ``limit`` and
  a ``cursor``;
- errors: ``invalid_auth`` for another token, ``channel_not_found`` for an
  unknown channel, ``ratelimited`` as HTTP 429 with ``Retry-After``.

It can be told to answer the next requests with a 429 and a ``Retry-After``,
a 5xx, a 404 (a deleted webhook) or any body, and to hold a request before
answering (to kill a sender mid-send, or to make its client time out after
Slack has already posted the message).  Anything else, a GET outside
``/api/``, is a heartbeat ping.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from metrics.embedded import free_port

WEBHOOK_PATH = "/services/T000/B000/XXXXXXXX"
TOKEN = "xoxb-test-token"
# The channels the fake workspace has: id -> name.
CHANNELS = {"C0PAYMENTS": "payments-alerts", "C0REPORTS": "payments-reports", "C0OPS": "ops"}


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
        blocks = (self.body or {}).get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else blocks


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: str | None = None  # answer this instead of what the method would answer
    hold_s: float = 0.0  # wait this long before answering (the request is processed first)


@dataclass
class Message:
    """One message in a channel of the fake workspace, as ``conversations.history`` shows it."""

    ts: str
    channel: str
    text: str
    blocks: list
    metadata: dict | None = None
    thread_ts: str | None = None
    edits: int = 0

    @property
    def header(self) -> str:
        return next((b["text"]["text"] for b in self.blocks if b.get("type") == "header"), "")

    def as_api(self, with_metadata: bool) -> dict:
        out = {"type": "message", "ts": self.ts, "text": self.text, "blocks": self.blocks}
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.edits:
            out["edited"] = {"user": "U0PAYWATCH", "ts": self.ts}
        if with_metadata and self.metadata:
            out["metadata"] = self.metadata
        return out


class FakeSlack:
    def __init__(self, token: str = TOKEN):
        self.token = token
        self.requests: list[Received] = []
        self.pings: list[str] = []
        self.script: list[Reply] = []
        self.messages: list[Message] = []  # every message posted through the Web API, in order
        self.arrived = threading.Condition()
        self.port = free_port()
        self._ts = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                fake._handle(self, raw)

            def do_GET(self):  # noqa: N802 - a Web API read, or a heartbeat ping (dead-man's switch)
                if self.path.startswith("/api/"):
                    fake._handle(self, b"")
                    return
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

    @property
    def team_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/team/"

    # -- scripting -----------------------------------------------------------------------

    def answer_next(self, *replies: Reply) -> None:
        """The next requests get these replies, in order; then what the method answers."""
        with self.arrived:
            self.script.extend(replies)

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        url = urlsplit(handler.path)
        body = _parse(raw, handler.headers.get("Content-Type", ""))
        if handler.command == "GET":
            body = dict(parse_qsl(url.query))
        with self.arrived:
            reply = self.script.pop(0) if self.script else Reply()
            api = url.path.startswith("/api/")
            status, payload = reply.status, reply.body
            if api and payload is None:
                if status == 200:
                    payload = json.dumps(self._api(url.path.removeprefix("/api/"), body, handler.headers))
                elif status == 429:
                    payload = json.dumps({"ok": False, "error": "ratelimited"})
                else:
                    payload = json.dumps({"ok": False, "error": "fatal_error"})
            elif payload is None:
                payload = "ok" if status == 200 else {
                    400: "invalid_payload", 403: "invalid_token", 404: "no_service", 410: "channel_is_archived",
                    429: "rate_limited"}.get(status, "server_error")
            self.requests.append(Received(handler.path, dict(handler.headers.items()), body, raw, time.monotonic(),
                                          status))
            self.arrived.notify_all()
        if reply.hold_s:
            time.sleep(reply.hold_s)
        data = payload.encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=utf-8" if api else "text/html")
            handler.send_header("Content-Length", str(len(data)))
            if status == 429 and not any(k.lower() == "retry-after" for k in reply.headers):
                handler.send_header("Retry-After", "1")
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client went away (a killed worker, or one whose timeout passed)

    # -- the Web API ----------------------------------------------------------------------

    def _api(self, method: str, args: dict | None, headers) -> dict:
        """What Slack answers with HTTP 200 (called with ``self.arrived`` held)."""
        args = args or {}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return {"ok": True, "url": self.team_url, "team": "Paywatch test", "user": "paywatch",
                    "team_id": "T000", "user_id": "U0PAYWATCH"}
        if method in ("files.getUploadURLExternal", "files.completeUploadExternal"):
            return {"ok": True}
        # Only chat.postMessage takes a #name; the others want the id (https://docs.slack.dev/reference/methods).
        channel = self._channel(args.get("channel")) if method == "chat.postMessage" else \
            args.get("channel") if args.get("channel") in CHANNELS else None
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if method == "chat.postMessage":
            parent = args.get("thread_ts")
            if parent and not any(m.ts == parent and m.channel == channel for m in self.messages):
                return {"ok": False, "error": "thread_not_found"}
            metadata = args.get("metadata")
            message = Message(ts=self._next_ts(), channel=channel, text=args.get("text", ""),
                              blocks=_blocks(args.get("blocks")),
                              metadata=json.loads(metadata) if isinstance(metadata, str) else metadata,
                              thread_ts=parent)
            self.messages.append(message)
            return {"ok": True, "channel": channel, "ts": message.ts, "message": message.as_api(False)}
        if method == "chat.update":
            message = next((m for m in self.messages if m.channel == channel and m.ts == args.get("ts")), None)
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            message.text = args.get("text", message.text)
            message.blocks = _blocks(args.get("blocks")) or message.blocks
            message.edits += 1
            return {"ok": True, "channel": channel, "ts": message.ts, "text": message.text,
                    "message": message.as_api(False)}
        if method in ("conversations.history", "conversations.replies"):
            with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
            oldest = float(args.get("oldest") or 0)
            if method == "conversations.history":
                found = [m for m in self.messages if m.channel == channel and not m.thread_ts]
            else:
                parent = args.get("ts")
                found = [m for m in self.messages if m.channel == channel and parent in (m.ts, m.thread_ts)]
            found = [m for m in found if float(m.ts) > oldest]
            found.sort(key=lambda m: float(m.ts), reverse=method == "conversations.history")
            start = int(args.get("cursor") or 0)
            limit = int(args.get("limit") or 100)
            page = found[start:start + limit]
            more = start + limit < len(found)
            return {"ok": True, "messages": [m.as_api(with_metadata) for m in page], "has_more": more,
                    "response_metadata": {"next_cursor": str(start + limit) if more else ""}}
        return {"ok": False, "error": "unknown_method"}

    def _channel(self, value: str | None) -> str | None:
        if value in CHANNELS:
            return value
        by_name = {f"#{name}": cid for cid, name in CHANNELS.items()}
        return by_name.get(value or "")

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    # -- reading -------------------------------------------------------------------------

    def delivered(self) -> list[Received]:
        """Requests answered 200: the messages Slack would show."""
        with self.arrived:
            return [r for r in self.requests if r.status == 200]

    def posts(self, path: str = "/api/chat.postMessage") -> list[Received]:
        """Requests to one method (or the webhook), whatever was answered."""
        with self.arrived:
            return [r for r in self.requests if urlsplit(r.path).path == path]

    def channel_messages(self, channel: str, *, replies: bool = False) -> list[Message]:
        """The channel's top-level messages (or, with ``replies``, its thread replies), oldest first."""
        with self.arrived:
            return [m for m in self.messages if m.channel == channel and bool(m.thread_ts) == replies]

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


def _parse(raw: bytes, content_type: str) -> dict | None:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    if "application/x-www-form-urlencoded" in content_type:
        return dict(parse_qsl(text))
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _blocks(value) -> list:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return []
    return value or []
