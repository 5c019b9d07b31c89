"""What localstripe lacks, in a small HTTP server in front of it.

:class:`StripeExtras` listens on a free loopback port and forwards every
request to a real localstripe, except:

* ``GET /v1/disputes`` and ``GET /v1/webhook_endpoints``: served from its own
  lists (:meth:`add_dispute`, :meth:`add_endpoint`), with Stripe's ``created``
  filters, ``limit`` and ``starting_after``, newest first;
* ``GET /v1/events``: localstripe's events plus the ones added here (dispute
  events), newest first, each with ``pending_webhooks`` (0 unless set with
  :meth:`set_pending`), which localstripe does not report;
* faults: :meth:`fail_next` answers the next N matching requests with a
  status (429, 500, ...) instead of forwarding them.

It records every request it receives (:attr:`requests`), so a test can assert
on what the client sent: how many calls, which ``created`` filter, whether a
retry happened.  The Search API is not served: Paywatch does not use it
(Stripe documents it as eventually consistent, unfit for syncing).
"""

from __future__ import annotations

import json
import math
import random
import string
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from metrics.embedded import free_port


def _random_id(prefix: str) -> str:
    return prefix + "".join(random.choices(string.ascii_letters + string.digits, k=14))


@dataclass
class Fault:
    path_prefix: str
    status: int
    remaining: int
    headers: dict = field(default_factory=dict)
    skip: int = 0  # matching requests let through before the fault starts


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    status: int
    authorization: str | None


def _created_ok(created: int, query: dict) -> bool:
    for op, test in (("gt", int.__gt__), ("gte", int.__ge__), ("lt", int.__lt__), ("lte", int.__le__)):
        value = query.get(f"created[{op}]")
        if value is not None and not test(created, int(value)):
            return False
    return True


def _page(items: list[dict], query: dict, url: str) -> dict:
    """Stripe's list envelope over ``items`` (already newest first) with limit and starting_after."""
    items = [i for i in items if _created_ok(i["created"], query)]
    after = query.get("starting_after")
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(query.get("limit", 10))
    return {"object": "list", "url": url, "data": items[:limit], "has_more": len(items) > limit}


class StripeExtras:
    """A fake Stripe front: localstripe behind, disputes, endpoints and faults in front."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.disputes: list[dict] = []
        self.endpoints: list[dict] = []
        self.extra_events: list[dict] = []
        self.pending: dict[str, int] = {}
        self.faults: list[Fault] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StripeExtras":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget everything served here and clear localstripe's data."""
        with self._lock:
            self.disputes.clear()
            self.endpoints.clear()
            self.extra_events.clear()
            self.pending.clear()
            self.faults.clear()
            self.requests.clear()
        requests.delete(f"{self.upstream}/_config/data", timeout=10).raise_for_status()

    # --- What a test sets up ---------------------------------------------------------

    def fail_next(self, path_prefix: str, status: int, times: int = 1, headers: dict | None = None,
                  after: int = 0) -> None:
        """Answer ``times`` requests under ``path_prefix`` with ``status``, after letting ``after`` through."""
        with self._lock:
            self.faults.append(Fault(path_prefix, status, times, dict(headers or {}), after))

    def add_dispute(self, charge: dict, *, amount: int | None = None, status: str = "needs_response",
                    reason: str = "fraudulent", created: int | None = None) -> dict:
        """A dispute on ``charge`` (a localstripe charge, as a dict) and its ``charge.dispute.created`` event."""
        created = created or int(time.time())
        dispute = {
            "id": _random_id("dp_"), "object": "dispute", "amount": amount or charge["amount"],
            "currency": charge["currency"], "status": status, "reason": reason, "charge": charge["id"],
            "payment_intent": charge.get("payment_intent"), "created": created, "livemode": False,
            "evidence_details": {"due_by": created + 7 * 86400}, "is_charge_refundable": False,
        }
        with self._lock:
            self.disputes.insert(0, dispute)
        self.add_event("charge.dispute.created", dispute, created=created)
        return dispute

    def update_dispute(self, dispute_id: str, *, status: str, event_type: str = "charge.dispute.closed") -> dict:
        with self._lock:
            dispute = next(d for d in self.disputes if d["id"] == dispute_id)
            dispute["status"] = status
            snapshot = dict(dispute)
        self.add_event(event_type, snapshot)
        return snapshot

    def add_event(self, event_type: str, obj: dict, *, created: int | None = None, pending: int = 0) -> dict:
        event = {"id": _random_id("evt_"), "object": "event", "type": event_type, "created": created or int(time.time()),
                 "data": {"object": dict(obj)}, "livemode": False, "pending_webhooks": pending,
                 "api_version": "2026-10-28.endive", "request": {"id": None}}
        with self._lock:
            self.extra_events.insert(0, event)
        return event

    def add_endpoint(self, url: str, events: list[str], status: str = "enabled") -> dict:
        endpoint = {"id": _random_id("we_"), "object": "webhook_endpoint", "url": url, "enabled_events": events,
                    "status": status, "created": int(time.time()), "livemode": False, "api_version": None,
                    "description": None}
        with self._lock:
            self.endpoints.insert(0, endpoint)
        return endpoint

    def set_pending(self, event_id: str, count: int) -> None:
        with self._lock:
            self.pending[event_id] = count

    def calls(self, path_prefix: str = "/v1/") -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    # --- Serving ---------------------------------------------------------------------

    def _fault_for(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.remaining > 0 and path.startswith(fault.path_prefix):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.remaining -= 1
                    return fault
        return None

    def _events(self, query: dict, headers: dict) -> dict:
        upstream: list[dict] = []
        params = {k: v for k, v in query.items() if k.startswith("created[")}
        after = None
        while True:  # every upstream page in the window; the volumes in tests are small
            page = requests.get(f"{self.upstream}/v1/events", params={**params, "limit": 100, **({"starting_after": after} if after else {})},
                                headers=headers, timeout=30).json()
            upstream += page["data"]
            if not page.get("has_more") or not page["data"]:
                break
            after = page["data"][-1]["id"]
        with self._lock:
            events = upstream + [dict(e) for e in self.extra_events]
            for event in events:
                event["pending_webhooks"] = self.pending.get(event["id"], event.get("pending_webhooks", 0))
        events.sort(key=lambda e: (e["created"], e["id"]), reverse=True)
        return _page(events, query, "/v1/events")

    def _handler(self):
        extras = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = extras._fault_for(parts.path)
                if fault is not None:
                    status, payload, headers = fault.status, {"error": {"type": "api_error", "message": f"injected {fault.status}"}}, fault.headers
                elif self.command == "GET" and parts.path == "/v1/disputes":
                    with extras._lock:
                        status, payload, headers = 200, _page([dict(d) for d in extras.disputes], query, "/v1/disputes"), {}
                elif self.command == "GET" and parts.path == "/v1/webhook_endpoints":
                    with extras._lock:
                        status, payload, headers = 200, _page([dict(e) for e in extras.endpoints], query, "/v1/webhook_endpoints"), {}
                elif self.command == "GET" and parts.path == "/v1/events":
                    status, payload, headers = 200, extras._events(query, {"Authorization": self.headers.get("Authorization", "")}), {}
                else:
                    forwarded = requests.request(self.command, extras.upstream + self.path, data=body, timeout=30,
                                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    status, raw, headers = forwarded.status_code, forwarded.content, {}
                    payload = None
                with extras._lock:
                    extras.requests.append(Seen(self.command, parts.path, query, status, self.headers.get("Authorization")))
                data = raw if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", _random_id("req_"))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        return Handler


# --- Test helpers and fixtures (imported by the tests/test_stripe*.py modules) ---------

class Shop:
    """Takes payments in localstripe through the real stripe library, as a platform would."""

    CARD_OK = "4242424242424242"
    CARD_3DS = "4000002500003155"

    def __init__(self, base_url: str, api_key: str):
        import stripe

        self.client = stripe.StripeClient(api_key, base_addresses={"api": base_url}, max_network_retries=0)

    def pay(self, amount: int = 4900, currency: str = "usd", card: str = CARD_OK) -> dict:
        """A confirmed PaymentIntent (succeeded, or requires_action for the 3-D Secure card)."""
        pm = self.client.v1.payment_methods.create(params={
            "type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
        pi = self.client.v1.payment_intents.create(params={
            "amount": amount, "currency": currency, "payment_method": pm.id, "confirm": True})
        return pi.to_dict()

    def authenticate(self, pi: dict, success: bool) -> dict:
        """The customer passes (or fails) 3-D Secure (localstripe's stand-in for the bank's page)."""
        self.client.raw_request("post", f"/v1/payment_intents/{pi['id']}/_authenticate",
                                client_secret=pi["client_secret"], success="true" if success else "false")
        return self.retrieve(pi["id"])

    def retrieve(self, pi_id: str) -> dict:
        return self.client.v1.payment_intents.retrieve(pi_id).to_dict()

    def refund(self, pi_id: str, amount: int | None = None) -> dict:
        params = {"payment_intent": pi_id, **({"amount": amount} if amount else {})}
        return self.client.v1.refunds.create(params=params).to_dict()

    def charge(self, pi: dict) -> dict:
        charge = pi["latest_charge"]
        return charge if isinstance(charge, dict) else self.client.v1.charges.retrieve(charge).to_dict()


def next_second() -> None:
    """Wait until the clock enters a new second, so objects made next have a later ``created``."""
    now = time.time()
    time.sleep(math.ceil(now) - now + 0.01)


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory):
    """A real localstripe for the session (started through the demo's launcher, memory only)."""
    from demo.localstripe_server import LocalStripe

    server = LocalStripe(tmp_path_factory.mktemp("localstripe"), memory=True)
    server.ensure()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stripe_front(localstripe):
    extras = StripeExtras(localstripe.base_url).start()
    yield extras
    extras.stop()


@pytest.fixture
def stripe_fake(stripe_front):
    """The front with localstripe behind it, both emptied for this test."""
    stripe_front.reset()
    return stripe_front


@pytest.fixture
def shop(localstripe, stripe_fake):
    return Shop(localstripe.base_url, localstripe.api_key)


@pytest.fixture
def stripe_settings(make_settings, stripe_fake, localstripe):
    """Settings whose Stripe is the front (localstripe behind it)."""
    return make_settings(STRIPE_API_KEY=localstripe.api_key, STRIPE_API_BASE=stripe_fake.url)
