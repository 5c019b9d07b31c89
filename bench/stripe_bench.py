"""``python -m bench stripe``: Stripe API calls per mirror sync, against localstripe.

Starts localstripe (the demo's launcher, in memory) and a throw-away
SecantusDB for ``PAYWATCH_DB``; takes ``payments`` card payments through
localstripe with the real stripe library (2 % of them refunded), then runs
the mirror (:class:`metrics.stripe.mirror.Mirror`, default options: pages of
100, at most 10 requests a second) three times:

1. **backfill**: the first sync, which copies everything of the last 30 days;
2. **quiet**: again at once, nothing new;
3. **incremental**: after ``new`` more payments.

For each: API calls (every HTTP attempt, retries included, from the
mirror's own ``SyncReport``), calls per resource, wall time, and the busiest
second (most calls started within one second).  localstripe has no disputes
and no webhook endpoints: those listings answer 404, which the mirror
records as "unavailable" after one call each, as many calls as an empty
listing costs on Stripe.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

from bench.common import ROOT, say

REFUND_SHARE = 0.02
CARD_OK = "4242424242424242"
STRIPE_LIMITS = {"test": 25, "live": 100}  # requests per second (https://docs.stripe.com/rate-limits)


def _pay(client, count: int, refund_every: int) -> int:
    """``count`` confirmed card payments; every ``refund_every``-th refunded. Returns the API calls made."""
    calls = 0
    for n in range(count):
        pm = client.v1.payment_methods.create(params={
            "type": "card", "card": {"number": CARD_OK, "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
        pi = client.v1.payment_intents.create(params={
            "amount": 4900 + n % 7 * 500, "currency": "usd", "payment_method": pm.id, "confirm": True})
        calls += 2
        if refund_every and n % refund_every == 0:
            client.v1.refunds.create(params={"payment_intent": pi.id})
            calls += 1
    return calls


def _busiest_second(times: list[datetime]) -> int:
    """Most calls started within any one second."""
    stamps = sorted(t.timestamp() for t in times)
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def _summary(report, db) -> dict:
    from metrics.stripe import store

    calls = list(db[store.API_CALLS].find({"at": {"$gte": report.started_at}}, {"at": 1, "resource": 1}))
    seconds = (report.finished_at - report.started_at).total_seconds()
    return {
        "ok": report.ok,
        "calls": report.calls,
        "seconds": round(seconds, 2),
        "calls_per_second_average": round(report.calls / seconds, 2) if seconds else None,
        "busiest_second_calls": _busiest_second([c["at"] for c in calls]),
        "by_resource": {name: {"calls": r.calls, "pages": r.pages, "fetched": r.fetched, "status": r.status}
                        for name, r in report.resources.items()},
    }


def measure(payments: int = 1000, new: int = 100, sync_minutes: float = 5, per_day: int = 1000) -> dict:
    import stripe
    from pymongo import MongoClient

    from demo.localstripe_server import LocalStripe
    from metrics.embedded import EmbeddedMongo
    from metrics.stripe.client import CallLog, StripeAPI, StripeOptions
    from metrics.stripe.mirror import Mirror

    home = ROOT / ".paywatch" / "bench-stripe"
    localstripe = LocalStripe(home, memory=True)
    database = EmbeddedMongo(home, memory=True)
    try:
        base = localstripe.ensure()
        uri = database.ensure()
        client = stripe.StripeClient(localstripe.api_key, base_addresses={"api": base}, max_network_retries=0)
        refund_every = round(1 / REFUND_SHARE)
        say(f"taking {payments:,} payments through localstripe ...")
        started = time.monotonic()
        setup_calls = _pay(client, payments, refund_every)
        setup_s = time.monotonic() - started
        options = StripeOptions()  # what the worker uses: pages of 100, paced to 10 requests/s
        db = MongoClient(uri, tz_aware=True)["paywatch_bench"]

        def sync() -> dict:
            api = StripeAPI(localstripe.api_key, api_base=base, options=options, calls=CallLog())
            return _summary(Mirror(api, db, options).run(), db)

        say("backfill sync ...")
        backfill = sync()
        time.sleep(1.1)  # a new second: Stripe's ``created`` has whole seconds
        say("quiet sync ...")
        quiet = sync()
        time.sleep(1.1)
        say(f"taking {new} more payments, then an incremental sync ...")
        _pay(client, new, refund_every)
        incremental = sync()
        events_per_payment = backfill["by_resource"].get("events", {}).get("fetched", 0) / payments if payments else None
        syncs_per_day = 24 * 60 / sync_minutes
        per_sync = per_day / syncs_per_day
        event_pages = math.ceil(per_sync * (events_per_payment or 1) / options.page_size)
        return {
            "server": f"localstripe {_localstripe_version()} on loopback, memory only",
            "options": {"page_size": options.page_size, "max_requests_per_second": options.max_requests_per_second,
                        "backfill_days": options.backfill_days, "sync_minutes": sync_minutes},
            "setup": {"payments": payments, "refunded": len(range(0, payments, refund_every)),
                      "api_calls": setup_calls, "seconds": round(setup_s, 1)},
            "events_per_payment_in_localstripe": round(events_per_payment, 2) if events_per_payment else None,
            "backfill": backfill,
            "quiet": quiet,
            f"incremental_after_{new}_payments": incremental,
            "stripe_rate_limits_per_second": STRIPE_LIMITS,
            "daily_estimate": {
                "assumption": f"{per_day:,} payments/day, a sync every {sync_minutes:g} min: "
                              f"{per_sync:.1f} new payments per sync ({per_sync * (events_per_payment or 1):.0f} "
                              f"events), {event_pages} page per resource, so each sync costs what the "
                              f"quiet one did" if event_pages <= 1 else "more than one page of events per sync: "
                              "see the incremental figure",
                "syncs_per_day": round(syncs_per_day),
                "calls_per_day": round(syncs_per_day * quiet["calls"]),
                "calls_per_second_average": round(syncs_per_day * quiet["calls"] / 86400, 3),
            },
            "command": f"python -m bench stripe --payments {payments} --new {new}",
        }
    finally:
        database.stop()
        localstripe.stop()


def _localstripe_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("localstripe")
    except metadata.PackageNotFoundError:
        return "?"

