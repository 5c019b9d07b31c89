"""What the simulated platform sells, to whom, and how it writes its documents.

Shared by the history (``demo.seed``) and the live traffic (``demo.traffic``)
so that both write documents of exactly the same shape.  Every document is
built with *our* field names (the data contract, ``docs/metrics.md``)
and renamed through the :class:`~metrics.schema.Schema` on the way out, so
the demo also works for a platform configured with other names.

Randomness always comes from a ``random.Random`` passed in: the same seed
gives the same data.
"""

from __future__ import annotations

import base64
import itertools
import math
import random
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bson import ObjectId

from metrics.schema import CollectionSchema

UTC = timezone.utc

# A collection of the platform database that only the demo uses: switches one
# demo process sets (``python -m demo incident ...``) and another honours.
CONTROL_COLLECTION = "demo_control"
WEBHOOK_OUTAGE_ID = "webhook-outage"


# --- The catalogue ------------------------------------------------------------

@dataclass(frozen=True)
class Specialist:
    id: str
    name: str


@dataclass(frozen=True)
class Service:
    id: str
    specialist_id: str
    title: str
    usd: int  # list price in cents
    popularity: float  # relative weight when a customer picks a service

    def price(self, currency: str) -> int:
        """List price in minor units; EUR and GBP are priced as "x9.00" like most shops do."""
        if currency == "usd":
            return self.usd
        rate = {"eur": 0.93, "gbp": 0.80}[currency]
        return max(900, int(round(self.usd * rate / 1000.0)) * 1000 - 100)


SPECIALISTS = (
    Specialist("spec-ana-lima", "Ana Lima"),
    Specialist("spec-ben-okafor", "Ben Okafor"),
    Specialist("spec-chloe-martin", "Chloé Martin"),
    Specialist("spec-david-cohen", "David Cohen"),
    Specialist("spec-elena-rossi", "Elena Rossi"),
    Specialist("spec-farid-haddad", "Farid Haddad"),
    Specialist("spec-grace-kim", "Grace Kim"),
    Specialist("spec-hugo-silva", "Hugo Silva"),
    Specialist("spec-ines-novak", "Ines Novak"),
    Specialist("spec-jonas-berg", "Jonas Berg"),
    Specialist("spec-keiko-tanaka", "Keiko Tanaka"),
    Specialist("spec-liam-walsh", "Liam Walsh"),
)

# (specialist index, service slug, title, USD price in cents, popularity)
_SERVICES = (
    (0, "yoga-foundations", "Yoga Foundations (6 weeks)", 4900, 9),
    (0, "yoga-1on1", "Private Yoga Session", 7900, 3),
    (0, "breathwork-intro", "Breathwork Intro", 1900, 8),
    (1, "startup-finance", "Startup Finance Bootcamp", 19900, 3),
    (1, "pitch-review", "Pitch Deck Review", 14900, 2),
    (2, "french-a1", "French A1 Group Course", 9900, 7),
    (2, "french-conversation", "French Conversation Hour", 2900, 9),
    (3, "python-basics", "Python for Beginners", 12900, 8),
    (3, "data-analysis", "Data Analysis with pandas", 17900, 5),
    (3, "code-mentoring", "1:1 Code Mentoring", 9900, 3),
    (4, "watercolor", "Watercolour Weekend", 5900, 5),
    (4, "sketching", "Urban Sketching", 3900, 4),
    (5, "leadership", "Mindful Leadership Programme", 24900, 2),
    (5, "exec-coaching", "Executive Coaching Session", 22900, 1),
    (6, "nutrition-plan", "Personal Nutrition Plan", 8900, 6),
    (6, "meal-prep", "Meal Prep Masterclass", 3400, 7),
    (7, "guitar-beginner", "Guitar for Beginners", 6900, 6),
    (7, "songwriting", "Songwriting Workshop", 11900, 3),
    (8, "career-coaching", "Career Coaching Session", 12500, 4),
    (8, "cv-review", "CV and LinkedIn Review", 4500, 7),
    (9, "strength-12w", "12-Week Strength Programme", 15900, 4),
    (9, "pt-session", "Personal Training Session", 6500, 6),
    (9, "mobility", "Mobility Class Pack", 2500, 8),
    (10, "japanese-n5", "Japanese N5 Course", 13900, 4),
    (10, "calligraphy", "Shodo Calligraphy", 4200, 3),
    (10, "tea-ceremony", "Tea Ceremony Evening", 3500, 2),
    (11, "photo-basics", "Photography Basics", 7500, 6),
    (11, "lightroom", "Lightroom Editing", 5500, 5),
    (11, "portrait-lab", "Portrait Lighting Lab", 16900, 2),
    (11, "photo-walk", "City Photo Walk", 2200, 6),
)

SERVICES = tuple(
    Service(f"svc-{slug}", SPECIALISTS[spec].id, title, usd, pop)
    for spec, slug, title, usd, pop in _SERVICES
)
# The amount spikes use the dearer half of the catalogue, so 10x is far above any usual amount.
SPIKE_SERVICES = tuple(s for s in SERVICES if s.usd >= 7900)

# Cumulative weights: random.choices would otherwise add them up on every call.
_SERVICE_WEIGHTS = list(itertools.accumulate(s.popularity for s in SERVICES))

CURRENCIES = ("usd", "eur", "gbp")
_CURRENCY_WEIGHTS = list(itertools.accumulate((75, 15, 10)))

# Real Stripe decline codes and the messages Stripe shows for them
# (https://docs.stripe.com/declines/codes); weights roughly as seen in practice.
DECLINES = (
    ("card_declined", "Your card was declined.", 30),
    ("insufficient_funds", "Your card has insufficient funds.", 25),
    ("do_not_honor", "Your card was declined.", 12),
    ("expired_card", "Your card has expired.", 10),
    ("incorrect_cvc", "Your card's security code is incorrect.", 10),
    ("processing_error", "An error occurred while processing your card. Try again in a little bit.", 6),
    ("fraudulent", "Your card was declined.", 4),
    ("lost_card", "Your card was declined.", 3),
)
_DECLINE_WEIGHTS = list(itertools.accumulate(w for _, _, w in DECLINES))

# What a webhook handler's log says when handling fails.
WEBHOOK_ERRORS = (
    "MongoServerSelectionError: connection timed out after 10000 ms",
    "E11000 duplicate key error collection: specialistly.payments index: stripeEventId_1 dup key",
    "TypeError: Cannot read properties of undefined (reading 'metadata')",
    "Enrollment service returned 503 Service Unavailable",
    "Timed out after 30000 ms waiting for the enrollment update",
)

FIRST_NAMES = (
    "olivia", "liam", "emma", "noah", "amelia", "oliver", "sophia", "elijah", "mia", "lucas",
    "isabella", "mateo", "ava", "leo", "charlotte", "ethan", "harper", "james", "luna", "henry",
    "aria", "jack", "nora", "samuel", "zoe", "daniel", "maya", "omar", "lea", "felix",
    "sofia", "jonas", "clara", "arjun", "priya", "chen", "mei", "kenji", "yuki", "fatima",
    "ahmed", "lara", "marco", "giulia", "pablo", "lucia", "tom", "anna", "nina", "paul",
)
LAST_NAMES = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "martinez", "lopez",
    "wilson", "anderson", "taylor", "thomas", "moore", "jackson", "martin", "lee", "thompson", "white",
    "harris", "clark", "lewis", "walker", "young", "allen", "king", "wright", "scott", "green",
    "mueller", "schmidt", "dubois", "moreau", "rossi", "bianchi", "nowak", "kowalski", "sato", "suzuki",
    "patel", "sharma", "khan", "ali", "nguyen", "tran", "kim", "park", "silva", "santos",
)
# Reserved example domains (RFC 2606): fake addresses that can never reach anyone.
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

_BASE64_TO_ALNUM = bytes.maketrans(b"+/", b"xQ")


# --- Random choices -----------------------------------------------------------

def stripe_id(rng: random.Random, prefix: str, length: int = 24) -> str:
    """``pi_3Pq…``-style identifier; 62**24 values make a clash practically impossible.

    Base64 of random bytes with ``+``/``/`` mapped to letters: three times
    faster than drawing characters one by one, which matters for 80k ids.
    """
    raw = base64.b64encode(rng.randbytes(length * 3 // 4 + 3))[:length]
    return prefix + raw.translate(_BASE64_TO_ALNUM).decode("ascii")


def object_id(rng: random.Random, when: datetime) -> ObjectId:
    """An ObjectId stamped with ``when`` (as the driver would have made it then), repeatable by seed."""
    return ObjectId(struct.pack(">I", int(when.timestamp())) + rng.randbytes(8))


def pick_service(rng: random.Random) -> Service:
    return rng.choices(SERVICES, cum_weights=_SERVICE_WEIGHTS)[0]


def pick_currency(rng: random.Random) -> str:
    return rng.choices(CURRENCIES, cum_weights=_CURRENCY_WEIGHTS)[0]


def pick_decline(rng: random.Random) -> tuple[str, str]:
    code, message, _ = rng.choices(DECLINES, cum_weights=_DECLINE_WEIGHTS)[0]
    return code, message


def charge_amount(rng: random.Random, service: Service, currency: str) -> int:
    """The list price, now and then with a 10-25 % coupon (so not every amount is round)."""
    price = service.price(currency)
    if rng.random() < 0.12:
        price = int(price * (1 - rng.choice((0.10, 0.15, 0.20, 0.25))))
    return price


def ms(rng: random.Random, low: float, high: float) -> timedelta:
    """A uniform delay between ``low`` and ``high`` milliseconds."""
    return timedelta(milliseconds=rng.uniform(low, high))


def confirm_delay(rng: random.Random) -> timedelta:
    """PaymentIntent created -> succeeded or declined: 0.5-3 s."""
    return ms(rng, 500, 3000)


def delivery_lag(rng: random.Random) -> timedelta:
    """Stripe's ``event.created`` -> our endpoint received it: 50-800 ms."""
    return ms(rng, 50, 800)


def handling_time(rng: random.Random) -> timedelta:
    """Webhook received -> handled: 100-3000 ms, most of them fast (p95 about 2.6 s)."""
    return timedelta(milliseconds=100 + 2900 * rng.random() ** 2.5)


def activation_delay(rng: random.Random) -> timedelta:
    """Payment completed -> enrollment active: 200-1500 ms (the guide's target is < 2 s)."""
    return ms(rng, 200, 1500)


def email_delay(rng: random.Random) -> timedelta:
    """Enrollment active -> confirmation email sent: 0.5-4 s (target < 5 s)."""
    return ms(rng, 500, 4000)


class Customers:
    """Fake customers with unique ids and realistic unique e-mail addresses."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._emails: dict[str, int] = {}

    def new(self) -> dict:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        domain = self.rng.choice(EMAIL_DOMAINS)
        local = f"{first}.{last}"
        n = self._emails.get(local + domain, 0) + 1
        self._emails[local + domain] = n
        email = f"{local}{n if n > 1 else ''}@{domain}"
        return {"customerId": stripe_id(self.rng, "cus_", 14), "customerEmail": email}


# --- Documents ----------------------------------------------------------------

class Builder:
    """Turns our field names into the platform's for one collection.

    ``None`` values are left out: a field the platform has not written yet
    (``completedAt`` of a failed payment) is absent, not null.  A mapped name
    with dots (``charge.amount``) becomes a nested document, as MongoDB would
    store it after ``$set``.
    """

    def __init__(self, coll: CollectionSchema):
        self.coll = coll
        self._names: dict[str, tuple[str, ...]] = {}

    def name(self, ours: str) -> str:
        return self.coll[ours]

    def __call__(self, _id=None, **fields) -> dict:
        doc: dict = {} if _id is None else {"_id": _id}
        for ours, value in fields.items():
            if value is None:
                continue
            path = self._names.get(ours)
            if path is None:
                path = self._names[ours] = tuple(self.coll[ours].split("."))
            target = doc
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
        return doc

    def get(self, doc: dict, ours: str):
        """The value of one of our fields in a stored document (``None`` when absent)."""
        value = doc
        for part in self.coll[ours].split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def set(self, **fields) -> dict:
        """A ``$set`` update for our field names (dotted paths need no nesting there)."""
        return {"$set": {self.coll[ours]: value for ours, value in fields.items()}}


def enrollment_outcome(payment_status: str, rng: random.Random) -> tuple[str, str]:
    """The enrollment's (status, paymentStatus) that goes with a payment status.

    A declined customer's enrollment either waits for a retry (pending) or is
    closed (cancelled); both record the payment as failed.
    """
    if payment_status == "completed":
        return "active", "paid"
    if payment_status == "refunded":
        return "refunded", "refunded"
    if payment_status == "failed":
        return ("pending" if rng.random() < 0.4 else "cancelled"), "failed"
    if payment_status == "canceled":
        return "cancelled", "failed"
    return "pending", "pending"


# --- A ledger of finished payments --------------------------------------------

PRIMARY_EVENT = {
    "completed": "payment_intent.succeeded",
    "refunded": "payment_intent.succeeded",
    "failed": "payment_intent.payment_failed",
    "canceled": "payment_intent.canceled",
    "pending": "payment_intent.created",
    "processing": "payment_intent.processing",
}


class Ledger:
    """Payments with their enrollment and webhook events, as the platform had written them by ``now``.

    Records are kept with our field names (``documents`` renames them), so a
    caller can still adjust one before it is written (the seed's malformed
    documents).  Anything dated at or after ``now`` has not happened yet and
    is left out: an event Stripe has not delivered, a handler still running.

    Subclasses change two things: when a webhook is delivered
    (:meth:`deliver`, the seed's outage) and whether a customer may come back
    (``returning``).
    """

    returning = 0.0  # chance that a payment comes from an earlier customer

    def __init__(self, rng: random.Random, now: datetime):
        self.rng, self.now = rng, now
        self.customers = Customers(rng)
        self.payments: list[dict] = []
        self.enrollments: list[dict] = []
        self.events: list[dict] = []
        self.enrollment_of: dict[ObjectId, dict] = {}
        self._pool: list[dict] = []
        # (customerId, serviceId) pairs already enrolled: the data has no
        # accidental duplicate enrollments, so the one planted is the only one.
        self._pairs: set[tuple[str, str]] = set()

    def customer_for(self, service: Service) -> dict:
        """A customer not yet enrolled in ``service``: returning now and then, else new."""
        if self._pool and self.rng.random() < self.returning:
            for _ in range(5):
                customer = self.rng.choice(self._pool)
                if (customer["customerId"], service.id) not in self._pairs:
                    break
            else:
                customer = None
        else:
            customer = None
        if customer is None:
            customer = self.customers.new()
            self._pool.append(customer)
        self._pairs.add((customer["customerId"], service.id))
        return customer

    def deliver(self, due: datetime) -> tuple[datetime, bool]:
        """When a webhook due at ``due`` really arrives, and whether it arrives late (retried)."""
        return due, False

    def event(self, type_: str, stripe_created: datetime, *, fail_rate: float = 0.003,
              event_id: str | None = None) -> str:
        """Record one webhook delivery (if it has arrived by ``now``); return its event id."""
        rng = self.rng
        event_id = event_id or stripe_id(rng, "evt_")
        received, late = self.deliver(stripe_created + delivery_lag(rng))
        if received >= self.now:
            return event_id  # still in Stripe's queue
        # A retried delivery meets a handler busy with the backlog: slower, and fails more often.
        processed = received + (ms(rng, 500, 6000) if late else handling_time(rng))
        failed = rng.random() < (0.12 if late else fail_rate)
        status, error = ("failed", rng.choice(WEBHOOK_ERRORS)) if failed else ("processed", None)
        if processed >= self.now:
            status, processed, error = "received", None, None
        self.events.append({
            "_id": object_id(rng, received), "eventId": event_id, "type": type_,
            "stripeCreatedAt": stripe_created, "receivedAt": received, "processedAt": processed,
            "status": status, "error": error,
        })
        return event_id

    def payment(self, created: datetime, status: str, *, service: Service | None = None,
                currency: str | None = None, amount: int | None = None, customer: dict | None = None,
                refund_at: datetime | None = None, dispute_at: datetime | None = None) -> dict:
        """One payment in its final (or current) ``status``, its enrollment and its webhook events.

        ``status`` is pending, processing, completed, failed or canceled;
        ``refund_at`` turns a completed payment into a refunded one.
        """
        rng = self.rng
        service = service or pick_service(rng)
        currency = currency or pick_currency(rng)
        amount = charge_amount(rng, service, currency) if amount is None else amount
        customer = customer or self.customer_for(service)
        done = created + confirm_delay(rng)
        record = {
            "_id": object_id(rng, created), "paymentId": stripe_id(rng, "pi_3"),
            "amount": amount, "currency": currency, "status": status,
            **customer, "specialistId": service.specialist_id, "serviceId": service.id,
            "createdAt": created,
        }
        if status == "completed":
            record["completedAt"] = done
            event_at = done + ms(rng, 0, 40)
        elif status == "failed":
            record["failureCode"], record["failureMessage"] = pick_decline(rng)
            event_at = done
        elif status == "canceled":  # abandoned checkout, cancelled by the platform's timeout
            event_at = created + timedelta(minutes=rng.uniform(15, 60))
        else:  # pending / processing: in flight
            event_at = created + ms(rng, 20, 800)
        record["stripeEventId"] = self.event(PRIMARY_EVENT[status], event_at)
        self.payments.append(record)
        self.enrollments.append(self._enrollment(record, done))
        if refund_at is not None and status == "completed":
            self.refund(record, refund_at)
        if dispute_at is not None:
            self.event("charge.dispute.created", dispute_at)
        return record

    def refund(self, payment: dict, when: datetime) -> None:
        """Refund a completed payment at ``when``: the payment, its enrollment, a ``charge.refunded`` event."""
        payment["status"], payment["refundedAt"] = "refunded", when
        enrollment = self.enrollment_of[payment["_id"]]
        enrollment["status"] = enrollment["paymentStatus"] = "refunded"
        enrollment["refundedAt"] = when + ms(self.rng, 200, 2000)
        self.event("charge.refunded", when)

    def _enrollment(self, payment: dict, done: datetime) -> dict:
        rng = self.rng
        status, payment_status = enrollment_outcome(payment["status"], rng)
        # The checkout creates the enrollment right after the PaymentIntent.
        created = payment["createdAt"] + ms(rng, 5, 80)
        record = {
            "_id": object_id(rng, created), "customerId": payment["customerId"],
            "specialistId": payment["specialistId"], "serviceId": payment["serviceId"],
            "paymentId": payment["_id"], "status": status, "paymentStatus": payment_status,
            "createdAt": created,
        }
        if payment_status == "paid":
            record["activatedAt"] = done + activation_delay(rng)
            record["confirmationEmailSentAt"] = record["activatedAt"] + email_delay(rng)
        self.enrollment_of[payment["_id"]] = record
        return record

    def documents(self, schema) -> dict[str, list[dict]]:
        """The records as the platform stores them (field names through ``schema``)."""
        out = {}
        for key, records in (("payments", self.payments), ("enrollments", self.enrollments),
                             ("webhook_events", self.events)):
            build = Builder(getattr(schema, key))
            out[key] = [build(**r) for r in records]
        return out


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method; normal approximation for large means)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
