"""The demo platform taking live payments through localstripe.

With ``STRIPE_API_KEY`` unset, ``make run`` starts localstripe
(:mod:`demo.localstripe_server`) and this simulator: customers check out with
the guide's test cards, through the real ``stripe`` library, and the platform
writes its MongoDB records (payments, enrollments, webhook events, field
names through the schema) as its code would:

* checkout: a Stripe Customer and a PaymentIntent; the payment record
  ``pending`` and the enrollment ``pending/pending``;
* the customer's card is saved to the Customer and the PaymentIntent confirmed:
  ``4242 4242 4242 4242`` succeeds; ``4000 0000 0000 0002`` is declined
  (localstripe declines it when the card is attached, before any charge, so
  the payment record is ``failed`` with ``card_declined`` while Stripe's
  PaymentIntent waits for a card); ``4000 0025 0000 3155`` needs 3-D Secure,
  which the simulated customer passes most of the time (localstripe's
  ``_authenticate`` plays the bank's page);
* Stripe's ``payment_intent.succeeded`` event reaches the webhook handler
  (the simulator reads the Events API where the platform would receive a POST):
  the webhook is logged, the payment ``completed``, the enrollment activated
  and the confirmation email sent;
* a few minutes later some payments are refunded through the API, and the
  payment and enrollment marked refunded, as the guide's runbook does.

Now and then (:class:`Losses`) the platform loses something, so that
reconciliation has real mismatches to find: a webhook never handled, a
payment record never written, an enrollment never activated, a refund never
recorded (or its enrollment left active), a record with the pre-coupon
amount, a 3-D Secure payment marked completed before the customer failed
authentication.

``python -m demo.stripe_platform`` runs it every few seconds against the
localstripe that ``make run`` started (``STRIPE_API_BASE``);
``--warm-up N`` checks out N customers at once, handles their webhooks and
exits (``make run`` does that before the worker's first mirror sync).
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import stripe
from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import PyMongoError

from demo.catalog import (
    Builder, Customers, activation_delay, charge_amount, delivery_lag, email_delay, enrollment_outcome,
    handling_time, pick_currency, pick_service, poisson,
)
from metrics.schema import Schema
from metrics.stripe.metrics import GUIDE_EVENTS

log = logging.getLogger(__name__)

UTC = timezone.utc

# The guide's test cards (section 2, "Run Staging Tests") and how often customers use each.
CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_3DS = "4000002500003155"
CARDS = ((CARD_OK, 88), (CARD_DECLINED, 7), (CARD_3DS, 5))
THREE_DS_PASS_RATE = 0.8

DEFAULT_RATE_PER_MIN = 4.0
REFUND_SHARE = 0.04  # of completed payments, refunded a few minutes later
MAX_CATCH_UP = timedelta(seconds=60)
EVENT_LOOKBACK = timedelta(minutes=10)


@dataclass(frozen=True)
class Losses:
    """How often the simulated platform loses a write (a probability per occasion)."""

    webhook: float = 0.02  # a payment_intent.succeeded webhook is never handled
    payment_record: float = 0.01  # the payment record is never written (the process died after calling Stripe)
    enrollment_activation: float = 0.02  # the payment completes, the enrollment stays pending
    refund_record: float = 0.1  # the refund is made in Stripe, the database is not updated
    refund_enrollment: float = 0.1  # the payment is marked refunded, the enrollment stays active
    amount: float = 0.01  # the record keeps the list price, Stripe charged the coupon price
    premature_completion: float = 0.25  # a 3-D Secure payment is marked completed before authentication fails

    @classmethod
    def none(cls) -> "Losses":
        return cls(**{name: 0.0 for name in cls.__dataclass_fields__})


class StripePlatform:
    """The platform's payment flow against a Stripe-compatible server, one ``tick`` at a time."""

    def __init__(self, db: Database, schema: Schema, *, api_key: str, api_base: str,
                 rate_per_min: float = DEFAULT_RATE_PER_MIN, losses: Losses = Losses(),
                 refund_share: float = REFUND_SHARE, rng: random.Random | None = None):
        self.db, self.schema = db, schema
        self.stripe = stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=2)
        self.rate_per_min = rate_per_min
        self.losses = losses
        self.refund_share = refund_share
        self.rng = rng or random.Random()
        self.customers = Customers(self.rng)
        self.p, self.e, self.w = Builder(schema.payments), Builder(schema.enrollments), Builder(schema.webhook_events)
        self.payments = db[schema.payments.name]
        self.enrollments = db[schema.enrollments.name]
        self.events = db[schema.webhook_events.name]
        self.stats: Counter = Counter()
        self._last: datetime | None = None
        # On start, recent events the platform has not logged are handled (Stripe would retry them).
        self._event_cursor = int((datetime.now(UTC) - EVENT_LOOKBACK).timestamp())
        self._lost_events: set[str] = set()
        self._refunds: list[tuple[datetime, str]] = []  # (due, PaymentIntent id)

    # --- the loop -----------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> dict:
        """Check out the customers who arrived since the last tick, handle webhooks, make due refunds."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        before = Counter(self.stats)
        since = now - timedelta(seconds=5) if self._last is None else max(self._last, now - MAX_CATCH_UP)
        if now > since and self.rate_per_min > 0:
            for _ in range(poisson(self.rng, self.rate_per_min * (now - since).total_seconds() / 60)):
                self.checkout(now)
        self.receive_webhooks(now)
        self.make_due_refunds(now)
        self._last = now
        return dict(self.stats - before)

    def run(self, interval_s: float = 5, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                wrote = self.tick()
            except stripe.APIConnectionError as exc:
                log.warning("Stripe is unreachable: %s", str(exc).splitlines()[0])
                wrote = {}
            except (stripe.StripeError, PyMongoError) as exc:
                # One failed checkout must not end the demo (make run stops everything when a child exits).
                log.warning("stripe demo: tick failed: %s: %s", type(exc).__name__, (str(exc).splitlines() or [""])[0][:200])
                wrote = {}
            if wrote:
                log.info("stripe demo: %s", ", ".join(f"{k} {v}" for k, v in sorted(wrote.items())))
            stop.wait(interval_s)

    def warm_up(self, checkouts: int) -> int:
        """``checkouts`` customers at once and their webhooks (refunds due later are left out)."""
        now = datetime.now(UTC)
        for _ in range(checkouts):
            self.checkout(now)
        self.receive_webhooks(datetime.now(UTC))
        log.info("stripe demo: warm-up: %s", ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())))
        return 0

    def _lose(self, what: str) -> bool:
        lost = self.rng.random() < getattr(self.losses, what)
        if lost:
            self.stats[f"lost_{what}"] += 1
        return lost

    # --- checkout -----------------------------------------------------------------------

    def checkout(self, now: datetime, card: str | None = None) -> str:
        """One customer buys one service; returns the PaymentIntent id."""
        rng = self.rng
        service, currency = pick_service(rng), pick_currency(rng)
        card = card or rng.choices([c for c, _ in CARDS], weights=[w for _, w in CARDS])[0]
        person = self.customers.new()
        amount = charge_amount(rng, service, currency)
        recorded = amount
        if self._lose("amount"):
            amount, recorded = int(service.price(currency) * 0.8), service.price(currency)
        customer = self.stripe.v1.customers.create(params={"email": person["customerEmail"]})
        pi = self.stripe.v1.payment_intents.create(params={
            "amount": amount, "currency": currency, "customer": customer.id,
            "metadata": {"serviceId": service.id, "specialistId": service.specialist_id},
        })
        payment_oid = ObjectId()
        if not self._lose("payment_record"):
            self.payments.insert_one(self.p(
                _id=payment_oid, paymentId=pi.id, amount=recorded, currency=currency, status="pending",
                customerId=customer.id, customerEmail=person["customerEmail"], specialistId=service.specialist_id,
                serviceId=service.id, createdAt=now))
            self.enrollments.insert_one(self.e(
                customerId=customer.id, specialistId=service.specialist_id, serviceId=service.id,
                paymentId=payment_oid, status="pending", paymentStatus="pending", createdAt=now))
        self.stats["checkouts"] += 1
        pm = self.stripe.v1.payment_methods.create(params={
            "type": "card", "card": {"number": card, "exp_month": 12, "exp_year": now.year + 3, "cvc": "123"}})
        try:
            self.stripe.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
        except stripe.CardError as exc:
            self._failed(pi.id, exc.code or "card_declined", exc.user_message or "Your card was declined.")
            return pi.id
        self.stripe.v1.payment_intents.update(pi.id, params={"payment_method": pm.id})
        confirmed = self.stripe.v1.payment_intents.confirm(pi.id)
        self._set_payment(pi.id, status="processing")
        if confirmed.status == "requires_action":
            self._three_d_secure(pi.id, confirmed.client_secret, now)
        self.stats["confirmed"] += 1
        return pi.id

    def _three_d_secure(self, pi_id: str, client_secret: str, now: datetime) -> None:
        passed = self.rng.random() < THREE_DS_PASS_RATE
        premature = not passed and self._lose("premature_completion")
        if premature:  # a bug in the platform: "requires_action" taken for success
            self._set_payment(pi_id, status="completed", completedAt=now)
        # localstripe's stand-in for the bank's 3-D Secure page (the customer's browser in production).
        self.stripe.raw_request("post", f"/v1/payment_intents/{pi_id}/_authenticate",
                                client_secret=client_secret, success="true" if passed else "false")
        self.stats["three_d_secure_passed" if passed else "three_d_secure_failed"] += 1
        if not passed and not premature:
            self._failed(pi_id, "payment_intent_authentication_failure",
                         "The provided PaymentMethod has failed authentication.")

    def _failed(self, pi_id: str, code: str, message: str) -> None:
        self._set_payment(pi_id, status="failed", failureCode=code, failureMessage=message)
        status, payment_status = enrollment_outcome("failed", self.rng)
        self._set_enrollment(pi_id, status=status, paymentStatus=payment_status)
        self.stats["declined"] += 1

    def _set_payment(self, pi_id: str, **fields) -> dict | None:
        return self.payments.find_one_and_update({self.p.name("paymentId"): pi_id}, self.p.set(**fields))

    def _set_enrollment(self, pi_id: str, **fields) -> None:
        payment = self.payments.find_one({self.p.name("paymentId"): pi_id}, {"_id": 1})
        if payment is not None:
            self.enrollments.update_one({self.e.name("paymentId"): payment["_id"]}, self.e.set(**fields))

    # --- webhooks -------------------------------------------------------------------------

    def receive_webhooks(self, now: datetime) -> None:
        """Handle the events Stripe would have POSTed since the last tick (newest last)."""
        events, after = [], None
        while True:
            params = {"created": {"gte": self._event_cursor}, "limit": 100}
            if after:
                params["starting_after"] = after
            page = self.stripe.v1.events.list(params=params)
            events += [e.to_dict() for e in page.data]
            if not page.has_more or not page.data:
                break
            after = page.data[-1].id
        events.sort(key=lambda e: (e["created"], e["id"]))
        w = self.schema.webhook_events
        for event in events:
            self._event_cursor = max(self._event_cursor, event["created"])
            if event["type"] not in GUIDE_EVENTS:
                continue  # the guide's endpoint subscribes to these only
            if event["id"] in self._lost_events or self.events.find_one({w["eventId"]: event["id"]}, {"_id": 1}):
                continue
            if event["type"] == "payment_intent.succeeded" and self._lose("webhook"):
                self._lost_events.add(event["id"])
                continue
            self._handle(event, now)

    def _handle(self, event: dict, now: datetime) -> None:
        rng = self.rng
        created = datetime.fromtimestamp(event["created"], UTC)
        received = min(now, created + delivery_lag(rng))
        done = min(now, received + handling_time(rng))
        obj = (event.get("data") or {}).get("object") or {}
        error = None
        if event["type"] == "payment_intent.succeeded":
            payment = self._set_payment(obj.get("id"), status="completed", completedAt=received, stripeEventId=event["id"])
            if payment is None:
                error = f"Payment {obj.get('id')} not found"
            else:
                self.stats["completed"] += 1
                if not self._lose("enrollment_activation"):
                    activated = received + activation_delay(rng)
                    self.enrollments.update_one({self.e.name("paymentId"): payment["_id"]}, self.e.set(
                        status="active", paymentStatus="paid", activatedAt=activated,
                        confirmationEmailSentAt=activated + email_delay(rng)))
                if rng.random() < self.refund_share:
                    self._refunds.append((now + timedelta(seconds=rng.uniform(60, 600)), obj.get("id")))
        elif event["type"] == "payment_intent.payment_failed":
            err = obj.get("last_payment_error") or {}
            self._failed(obj.get("id"), err.get("code") or "card_declined", err.get("message") or "Your card was declined.")
        self.events.insert_one(self.w(
            eventId=event["id"], type=event["type"], stripeCreatedAt=created, receivedAt=received,
            processedAt=done, status="failed" if error else "processed", error=error))
        self.stats["webhooks"] += 1

    # --- refunds ------------------------------------------------------------------------------

    def make_due_refunds(self, now: datetime) -> None:
        due = [pi for when, pi in self._refunds if when <= now]
        self._refunds = [(when, pi) for when, pi in self._refunds if when > now]
        for pi_id in due:
            self.refund(pi_id, now)

    def refund(self, pi_id: str, now: datetime) -> None:
        """The runbook's "Process Refund Manually": Stripe first, then the payment, then the enrollment."""
        self.stripe.v1.refunds.create(params={"payment_intent": pi_id})
        self.stats["refunds"] += 1
        if self._lose("refund_record"):
            return
        self._set_payment(pi_id, status="refunded", refundedAt=now)
        if not self._lose("refund_enrollment"):
            self._set_enrollment(pi_id, status="refunded", paymentStatus="refunded", refundedAt=now)


def main(argv: list[str] | None = None) -> int:
    """``python -m demo.stripe_platform``: run the simulator against ``STRIPE_API_BASE``."""
    from metrics import db as dbmod
    from metrics.settings import SettingsError, load_settings

    parser = argparse.ArgumentParser(prog="python -m demo.stripe_platform", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_MIN, help="checkouts per minute")
    parser.add_argument("--interval", type=float, default=5, help="seconds between ticks")
    parser.add_argument("--warm-up", type=int, default=0, metavar="N",
                        help="check out N customers now, handle their webhooks, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stripe").setLevel(logging.WARNING)  # one line per request would drown the launcher's output
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"paywatch: {exc}", file=sys.stderr)
        return 2
    if settings.stripe_api_key is None or not settings.stripe_api_base:
        print("paywatch: the Stripe demo needs STRIPE_API_KEY and STRIPE_API_BASE (make run sets them "
              "when it starts localstripe)", file=sys.stderr)
        return 2
    if not settings.embedded:
        print("paywatch: refusing to write demo payments into a configured MongoDB (MONGODB_URI is set)", file=sys.stderr)
        return 2
    db = dbmod.client_for(dbmod.platform_uri(settings), settings)[settings.source_db_name]
    platform = StripePlatform(db, settings.schema, api_key=settings.stripe_api_key.get_secret_value(),
                              api_base=settings.stripe_api_base, rate_per_min=args.rate)
    if args.warm_up > 0:
        return platform.warm_up(args.warm_up)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        platform.run(args.interval, stop)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
