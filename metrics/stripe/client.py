"""The one place that talks to Stripe: stripe-python's ``StripeClient``.

* The key is a restricted, read-only key (``STRIPE_API_KEY``, a ``SecretStr``
  in the settings); it is handed to stripe-python and nowhere else: never
  logged, never put in an error message (:func:`redact` scrubs anything that
  looks like a key from the messages we keep).
* ``STRIPE_API_BASE`` points it at another server (localstripe in the demo).
* Timeouts and ``max_network_retries`` are explicit.  stripe-python's retry
  loop is the only place that retries: it already retries connection errors,
  409 and 5xx with exponential backoff and jitter; :class:`InstrumentedHTTPClient`
  adds 429, which Stripe asks clients to retry with backoff
  (https://docs.stripe.com/rate-limits#handling-limiting-gracefully).  A
  ``Retry-After`` header is obeyed: the retry waits at least that long, and
  a wait longer than ``max_retry_after_s`` ends the call as a transient
  failure (the next sync tries again) instead of holding the sync.
* Every HTTP attempt, retries included, is timed and recorded in a
  :class:`CallLog`; the mirror stores them, which gives "our client's Stripe
  API latency and error rate" and the call count per sync.
* Requests are paced to ``max_requests_per_second`` so one sync can never come
  near Stripe's limits (25 requests/s in test mode, 100/s live).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlsplit

import stripe
from pydantic import SecretStr

from metrics.settings import Settings

STRIPE_API = "https://api.stripe.com"

# Objects the mirror lists, by their stripe-python service name on ``client.v1``.
RESOURCES = ("payment_intents", "charges", "refunds", "disputes", "events", "webhook_endpoints")

# Secret and restricted keys, live or test, and webhook secrets: never kept in a message.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk|whsec)_(?:live_|test_)?[A-Za-z0-9_]{4,}")
# Stripe ids in a URL path (``/v1/payment_intents/pi_123``) become ``{id}``.
_ID_SEGMENT = re.compile(r"^[a-z]{2,6}_[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class StripeOptions:
    """How the client and the mirror behave; defaults suit a live account."""

    backfill_days: float = 30  # the first sync copies this much history
    sync_minutes: float = 5  # the worker's mirror job interval
    max_requests_per_second: float = 10  # well below Stripe's 25/s (test) and 100/s (live)
    connect_timeout_s: float = 5
    read_timeout_s: float = 30
    max_network_retries: int = 3
    reconcile_grace_minutes: float = 30  # a mismatch younger than this may still resolve itself
    page_size: int = 100  # Stripe's maximum ``limit``
    max_retry_after_s: float = 30  # a longer Retry-After ends the call; the next sync tries again

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "StripeOptions":
        """Options from the settings' ``stripe_*`` fields where present, else the defaults."""
        # The settings object is typed and checked at start-up; these fields are
        # read with a default so this module also works before they are added there.
        names = {
            "backfill_days": "stripe_backfill_days",
            "sync_minutes": "stripe_sync_minutes",
            "max_requests_per_second": "stripe_max_requests_per_second",
            "connect_timeout_s": "stripe_connect_timeout_s",
            "read_timeout_s": "stripe_read_timeout_s",
            "max_network_retries": "stripe_max_network_retries",
            "reconcile_grace_minutes": "reconcile_grace_minutes",
        }
        values = {ours: getattr(settings, theirs) for ours, theirs in names.items()
                  if getattr(settings, theirs, None) is not None}
        values.update(overrides)
        return cls(**values)


class StripeNotConfigured(RuntimeError):
    """No ``STRIPE_API_KEY``: the mirror cannot sync (the demo starts localstripe instead)."""


class StripeCallError(RuntimeError):
    """A Stripe call that failed after the retries, worded without any key.

    ``permanent`` says whether trying again later can help: a missing
    permission or an endpoint the server does not have (localstripe has no
    disputes) will not fix itself; a timeout, a 429 or a 5xx may.
    """

    def __init__(self, message: str, *, kind: str, status: int | None, permanent: bool):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.permanent = permanent


def redact(text: str, key: str | None = None) -> str:
    """``text`` with the key, and anything shaped like a Stripe key, masked."""
    if key:
        text = text.replace(key, "[redacted]")
    return _KEY_PATTERN.sub(lambda m: m.group(0)[:8] + "…[redacted]", text)


def path_template(url: str) -> str:
    """``https://api.stripe.com/v1/charges/ch_1?x=1`` -> ``/v1/charges/{id}`` (no query, no ids)."""
    parts = urlsplit(url).path.split("/")
    return "/".join("{id}" if _ID_SEGMENT.match(p) else p for p in parts) or "/"


def call_kind(status: int | None) -> str:
    """What one HTTP attempt's outcome counts as."""
    if status is None:
        return "network_error"
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "client_error"




@dataclass
class CallRecord:
    at: datetime
    method: str
    path: str
    status: int | None
    ms: float
    kind: str

    def to_doc(self) -> dict:
        return {"at": self.at, "method": self.method, "path": self.path, "status": self.status,
                "ms": round(self.ms, 1), "kind": self.kind}


@dataclass
class CallLog:
    """Every HTTP attempt one client made (retries included), in order."""

    records: list[CallRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)

    def drain(self) -> list[CallRecord]:
        """The records so far, removed from the log (the mirror stores them)."""
        with self._lock:
            out, self.records = self.records, []
        return out

    def __len__(self) -> int:
        return len(self.records)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """``Retry-After`` in seconds when the answer carries one as a number (Stripe sends seconds)."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


class InstrumentedHTTPClient(stripe.RequestsClient):
    """stripe-python's requests client, timed, paced, retrying 429 too, and obeying Retry-After."""

    def __init__(self, *, calls: CallLog, max_requests_per_second: float, timeout: tuple[float, float],
                 max_retry_after_s: float = 30):
        super().__init__(timeout=timeout)
        self.calls = calls
        self.max_retry_after_s = max_retry_after_s
        self._retry = threading.local()  # the wait the last answer asked for, per thread
        self._interval = 1.0 / max_requests_per_second if max_requests_per_second > 0 else 0.0
        self._next_slot = 0.0
        self._pace_lock = threading.Lock()

    def _pace(self) -> None:
        if not self._interval:
            return
        with self._pace_lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + self._interval
        if wait > 0:
            time.sleep(wait)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None, post_data=None):
        self._pace()
        at = datetime.now(timezone.utc)
        started = time.perf_counter()
        status: int | None = None
        try:
            content, status, rheaders = super().request(method, url, headers, post_data)
            return content, status, rheaders
        finally:
            ms = (time.perf_counter() - started) * 1000
            self.calls.add(CallRecord(at, method.upper(), path_template(url), status, ms, call_kind(status)))

    def _should_retry(self, response, api_connection_error, num_retries, max_network_retries):
        self._retry.after = None
        if response is not None:
            wait = retry_after_seconds(response[2])
            if wait is not None and wait > self.max_retry_after_s:
                return False  # longer than a sync should hold: transient, the next sync tries again
            self._retry.after = wait
        # stripe-python retries 429 only when Stripe says so for lock timeouts; Stripe's
        # rate-limit guidance is to back off and retry every 429, so we do, in the same loop.
        if response is not None and response[1] == 429:
            headers = response[2] or {}
            if str(headers.get("stripe-should-retry", "")).lower() == "false":
                return False
            return num_retries < (max_network_retries or 0)
        return super()._should_retry(response, api_connection_error, num_retries, max_network_retries)

    def _sleep_time_seconds(self, num_retries: int) -> float:
        # stripe-python's backoff (0.5 s, doubling, with jitter), but never sooner than Stripe asked.
        return max(super()._sleep_time_seconds(num_retries), getattr(self._retry, "after", None) or 0.0)


@dataclass(frozen=True)
class Page:
    data: list[dict]
    has_more: bool


class StripeAPI:
    """A read-only Stripe client for the mirror: list pages, record every call."""

    def __init__(self, api_key: SecretStr | str, *, api_base: str | None = None,
                 options: StripeOptions | None = None, calls: CallLog | None = None):
        self.options = options or StripeOptions()
        self.calls = calls if calls is not None else CallLog()
        self._key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self.api_base = (api_base or STRIPE_API).rstrip("/")
        self._http = InstrumentedHTTPClient(
            calls=self.calls,
            max_requests_per_second=self.options.max_requests_per_second,
            timeout=(self.options.connect_timeout_s, self.options.read_timeout_s),
            max_retry_after_s=self.options.max_retry_after_s,
        )
        self._client = stripe.StripeClient(
            self._key,
            base_addresses={"api": self.api_base},
            max_network_retries=self.options.max_network_retries,
            http_client=self._http,
        )

    def __repr__(self) -> str:  # never the key
        return f"StripeAPI(api_base={self.api_base!r})"

    @property
    def livemode_key(self) -> bool:
        return self._key.startswith(("sk_live_", "rk_live_"))

    def list_page(self, resource: str, params: dict) -> Page:
        """One page of a list endpoint, as plain dicts."""
        if resource not in RESOURCES:
            raise ValueError(f"unknown Stripe resource {resource!r}")
        service = getattr(self._client.v1, resource)
        try:
            result = service.list(params={"limit": self.options.page_size, **params})
        except stripe.StripeError as exc:
            raise self._describe(exc, resource) from None
        return Page(data=[item.to_dict() for item in result.data], has_more=bool(result.has_more))

    def _describe(self, exc: stripe.StripeError, resource: str) -> StripeCallError:
        status = exc.http_status
        message = redact(getattr(exc, "user_message", None) or str(exc) or type(exc).__name__, self._key)
        message = message.splitlines()[0][:300]
        if isinstance(exc, stripe.APIConnectionError):
            return StripeCallError(f"cannot reach Stripe at {self.api_base}: {message}",
                                   kind="network_error", status=None, permanent=False)
        if isinstance(exc, stripe.AuthenticationError) or status == 401:
            return StripeCallError("Stripe refused the API key (401): check STRIPE_API_KEY",
                                   kind="client_error", status=status, permanent=True)
        if isinstance(exc, stripe.PermissionError) or status == 403:
            return StripeCallError(f"the restricted key may not read {resource} (403): grant it read access "
                                   f"(docs/stripe.md)", kind="client_error", status=status, permanent=True)
        if status == 404:
            return StripeCallError(f"{self.api_base} has no {resource} endpoint (404)",
                                   kind="client_error", status=status, permanent=True)
        if isinstance(exc, stripe.RateLimitError) or status == 429:
            # Stripe's 429 body says ``type: invalid_request_error, code: rate_limit``; it is still
            # "slow down", never a permanent refusal.
            wait = retry_after_seconds(exc.headers)
            asked = f"; Stripe asked to retry after {wait:g} s" if wait is not None else ""
            return StripeCallError(f"Stripe rate-limited {resource} (429){asked}", kind="rate_limited",
                                   status=status, permanent=False)
        kind = call_kind(status)
        return StripeCallError(f"Stripe answered {status} for {resource}: {message}", kind=kind,
                               status=status, permanent=kind == "client_error")


def stripe_api(settings: Settings, options: StripeOptions | None = None, calls: CallLog | None = None) -> StripeAPI:
    """The configured client; :class:`StripeNotConfigured` without ``STRIPE_API_KEY``."""
    if settings.stripe_api_key is None:
        raise StripeNotConfigured("STRIPE_API_KEY is not set: the Stripe mirror cannot sync "
                                  "(make run starts localstripe when it is unset)")
    return StripeAPI(settings.stripe_api_key, api_base=settings.stripe_api_base,
                     options=options or StripeOptions.from_settings(settings), calls=calls)
