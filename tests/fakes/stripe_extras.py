"""A fake Stripe that answers as Stripe does: localstripe behind, what it lacks in front.

:class:`StripeExtras` listens on a free loopback port and forwards every
request to a real localstripe, except the list endpoints the mirror reads
(``GET /v1/payment_intents``, ``charges``, ``refunds``, ``disputes``,
``events``, ``webhook_endpoints``), which it answers itself the way Stripe
does:

* localstripe's objects merged with the ones a test adds (:meth:`add`, in
  the shapes of ``tests/fakes/stripe_objects.py``; an added object replaces
  localstripe's with the same id), newest first, with Stripe's
  ``created[gt|gte|lt|lte]``, ``limit`` (1 to 100, default 10) and
  ``starting_after``; the Events list also takes ``type`` and
  ``delivery_success`` (``false``: events still pending or that failed
  delivery, that is ``pending_webhooks > 0``);
* a parameter the endpoint does not take is a 400 ``parameter_unknown``, a
  ``limit`` out of range a 400, a key other than the one it was given a 401,
  each with Stripe's error body;
* every event has ``pending_webhooks`` (0 unless set with :meth:`set_pending`),
  which localstripe does not report;
* faults: :meth:`fail_next` answers the next N matching requests with a
  status and Stripe's error body for it (a 429 is
  ``{"error": {"type": "invalid_request_error", "code": "rate_limit", ...}}``),
  with any headers (``Retry-After``).

It records every request it receives (:attr:`requests`, with the monotonic
time it arrived), so a test can assert on what the client sent: how many
calls, which filter, how long it waited before a retry.  The Search API is
not served: Paywatch does not use it (Stripe documents it as eventually
consistent, unfit for syncing).
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from fakes import stripe_objects as so
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
    at: float = 0.0  # time.monotonic() when it arrived


# The list endpoints served here, and the parameters each takes besides paging
# (https://docs.stripe.com/api, "List all ..." of each object).
LISTS = {
    "/v1/payment_intents": ("payment_intents", {"customer", "created"}),
    "/v1/charges": ("charges", {"customer", "payment_intent", "transfer_group", "created"}),
    "/v1/refunds": ("refunds", {"charge", "payment_intent", "created"}),
    "/v1/disputes": ("disputes", {"charge", "payment_intent", "created"}),
    "/v1/events": ("events", {"type", "types[]", "delivery_success", "created"}),
    "/v1/webhook_endpoints": ("webhook_endpoints", set()),
}
FROM_UPSTREAM = ("payment_intents", "charges", "refunds", "events")
PAGING = {"limit", "starting_after", "ending_before", "expand[]"}
CREATED_OPS = ("gt", "gte", "lt", "lte")


def error_body(status: int, *, message: str | None = None, code: str | None = None, param: str | None = None) -> dict:
    """Stripe's error object for ``status`` (https://docs.stripe.com/api/errors)."""
    if status == 429:
        err = {"code": "rate_limit", "doc_url": "https://stripe.com/docs/error-codes/rate-limit",
               "message": "Request rate limit exceeded. You can learn more about rate limits here "
                          "https://stripe.com/docs/rate-limits.", "type": "invalid_request_error"}
    elif status >= 500:
        err = {"message": message or "An unknown error occurred", "type": "api_error"}
    elif status == 401:
        err = {"message": message or "Invalid API Key provided: sk_test_****", "type": "invalid_request_error"}
    elif status == 403:
        err = {"message": message or "The provided key does not have the required permissions for this endpoint.",
               "type": "invalid_request_error"}
    elif status == 404:
        err = {"message": message or "Unrecognized request URL.", "type": "invalid_request_error"}
    else:
        err = {"message": message or "Invalid request.", "type": "invalid_request_error"}
    if code:
        err["code"] = code
        err["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        err["param"] = param
    return {"error": err}


def _normalise(query: dict) -> dict:
    """``expand[0]`` and ``types[1]`` as the names they stand for."""
    return {re.sub(r"\[\d+\]$", "[]", k): v for k, v in query.items()}


def _check_params(path: str, query: dict) -> tuple[int, dict] | None:
    """Stripe's 400 for a parameter the list does not take or a bad ``limit``; ``None`` when fine."""
    _, allowed = LISTS[path]
    for name in _normalise(query):
        base = name.split("[", 1)[0] if name.startswith("created[") else name
        ok = name in PAGING or name in allowed or (
            base == "created" and "created" in allowed and name[len("created["):-1] in CREATED_OPS)
        if not ok:
            return 400, error_body(400, message=f"Received unknown parameter: {name}", code="parameter_unknown",
                                   param=name)
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            return 400, error_body(400, message="This value must be greater than or equal to 1 and less than or "
                                                "equal to 100.", code="parameter_invalid_integer", param="limit")
    return None


def _created_ok(created: int, query: dict) -> bool:
    for op, test in (("gt", int.__gt__), ("gte", int.__ge__), ("lt", int.__lt__), ("lte", int.__le__)):
        value = query.get(f"created[{op}]")
        if value is not None and not test(created, int(value)):
            return False
    if query.get("created") is not None and created != int(query["created"]):
        return False
    return True


def _matches(resource: str, item: dict, query: dict) -> bool:
    if "created" in item and not _created_ok(item["created"], query):
        return False
    for key in ("customer", "payment_intent", "charge", "type"):
        if query.get(key) is not None and item.get(key) != query[key]:
            return False
    if resource == "events" and query.get("delivery_success") is not None:
        undelivered = (item.get("pending_webhooks") or 0) > 0
        if undelivered != (query["delivery_success"] == "false"):
            return False
    return True


def _page(items: list[dict], query: dict, url: str) -> dict:
    """Stripe's list envelope over ``items`` (already filtered, newest first) with limit and starting_after."""
    after = query.get("starting_after")
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(query.get("limit", 10))
    return {"object": "list", "url": url, "data": items[:limit], "has_more": len(items) > limit}


class StripeExtras:
    """A fake Stripe front: localstripe behind; added objects, real list semantics and faults in front."""

    def __init__(self, upstream: str, api_key: str | None = None):
        self.upstream = upstream.rstrip("/")
        self.api_key = api_key
        self.port = free_port()
        self.objects: dict[str, list[dict]] = {name: [] for name, _ in LISTS.values()}
        self.pending: dict[str, int] = {}
        self.faults: list[Fault] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # The lists tests used to reach directly.
    @property
    def disputes(self) -> list[dict]:
        return self.objects["disputes"]

    @property
    def endpoints(self) -> list[dict]:
        return self.objects["webhook_endpoints"]

    @property
    def extra_events(self) -> list[dict]:
        return self.objects["events"]

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
            for items in self.objects.values():
                items.clear()
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

    def add(self, resource: str, obj: dict) -> dict:
        """Serve ``obj`` in the ``resource`` list (``"refunds"``...), in place of localstripe's with its id."""
        with self._lock:
            items = self.objects[resource]
            items[:] = [i for i in items if i["id"] != obj["id"]]
            items.insert(0, obj)
        return obj

    def add_dispute(self, charge: dict, *, amount: int | None = None, status: str = "needs_response",
                    reason: str = "fraudulent", created: int | None = None) -> dict:
        """A dispute on ``charge`` (a localstripe charge, as a dict) and its ``charge.dispute.created`` event."""
        created = created or int(time.time())
        dispute = so.dispute(charge, status=status, reason=reason, created=created)
        if amount:
            dispute["amount"] = amount
        self.add("disputes", dispute)
        self.add_event("charge.dispute.created", dispute, created=created)
        return dispute

    def update_dispute(self, dispute_id: str, *, status: str, event_type: str = "charge.dispute.closed") -> dict:
        with self._lock:
            dispute = next(d for d in self.disputes if d["id"] == dispute_id)
            dispute["status"] = status
            snapshot = dict(dispute)
        self.add_event(event_type, snapshot)
        return snapshot

    def add_event(self, event_type: str, obj: dict, *, created: int | None = None, pending: int = 0,
                  api_version: str = so.API_VERSION) -> dict:
        return self.add("events", so.event(event_type, obj, created=created, pending_webhooks=pending,
                                           api_version=api_version))

    def add_endpoint(self, url: str, events: list[str], status: str = "enabled") -> dict:
        return self.add("webhook_endpoints", so.webhook_endpoint(url, events, status=status))

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

    def _upstream(self, path: str, query: dict, auth: str) -> list[dict]:
        """Every object of localstripe's list in the ``created`` range; the volumes in tests are small."""
        params = {k: v for k, v in query.items() if k.startswith("created[")}
        out: list[dict] = []
        after = None
        while True:
            page = requests.get(f"{self.upstream}{path}", params={**params, "limit": 100,
                                                                 **({"starting_after": after} if after else {})},
                                headers={"Authorization": auth}, timeout=30).json()
            out += page["data"]
            if not page.get("has_more") or not page["data"]:
                return out
            after = page["data"][-1]["id"]

    def _list(self, path: str, query: dict, auth: str) -> dict:
        resource, _ = LISTS[path]
        upstream = self._upstream(path, query, auth) if resource in FROM_UPSTREAM else []
        with self._lock:
            added = [dict(i) for i in self.objects[resource]]
            pending = dict(self.pending)
        ids = {i["id"] for i in added}
        items = [i for i in upstream if i["id"] not in ids] + added
        if resource == "events":
            for event in items:
                event["pending_webhooks"] = pending.get(event["id"], event.get("pending_webhooks") or 0)
        items = [i for i in items if _matches(resource, i, query)]
        items.sort(key=lambda i: (i.get("created", 0), i["id"]), reverse=True)
        return _page(items, query, path)

    def _handler(self):
        extras = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                arrived = time.monotonic()
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization", "")
                fault = extras._fault_for(parts.path)
                payload, raw, headers = None, b"", {}
                if extras.api_key and parts.path.startswith("/v1/") and auth != f"Bearer {extras.api_key}":
                    shown = auth.removeprefix("Bearer ")[-4:]
                    status, payload = 401, error_body(401, message=f"Invalid API Key provided: sk_test_****{shown}")
                elif fault is not None:
                    status, payload, headers = fault.status, error_body(fault.status), fault.headers
                elif self.command == "GET" and parts.path in LISTS:
                    refused = _check_params(parts.path, query)
                    if refused:
                        status, payload = refused
                    else:
                        status, payload = 200, extras._list(parts.path, query, auth)
                else:
                    forwarded = requests.request(self.command, extras.upstream + self.path, data=body, timeout=30,
                                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    status, raw = forwarded.status_code, forwarded.content
                with extras._lock:
                    extras.requests.append(Seen(self.command, parts.path, query, status, auth or None, arrived))
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
    extras = StripeExtras(localstripe.base_url, api_key=localstripe.api_key).start()
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
