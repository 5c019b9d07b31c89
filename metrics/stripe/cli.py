"""``python -m metrics reconcile [--since ISO] [--at ISO] [--json] [--sync]``.

Reads the Stripe mirror and the platform's database and prints every
mismatch with the runbook's proposed fix.  It changes nothing anywhere:
``--sync`` first refreshes the mirror from Stripe (read-only key), and the
fixes are printed for a person to apply.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone

from metrics import format as fmt
from metrics.db import Source, source
from metrics.settings import Settings
from metrics.snapshot import to_json
from metrics.stripe.reconcile import reconcile
from metrics.stripe.store import mirror_store
from metrics.windows import Window, parse_instant, utc

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
DEFAULT_WINDOW = timedelta(hours=24)  # the runbook's "last 24 hours"


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    """Register ``reconcile`` on ``python -m metrics``'s subparsers."""
    parser = subparsers.add_parser(
        "reconcile", help="compare the Stripe mirror with the platform's payments and enrollments",
        description="List every mismatch between Stripe (the mirror in PAYWATCH_DB) and the platform's "
                    "payments and enrollments, each with the runbook's proposed fix. Read-only: nothing is changed.")
    parser.add_argument("--since", type=_instant, default=None, metavar="ISO-8601",
                        help="check payments created since this instant (default: the last 24 hours)")
    parser.add_argument("--at", type=_instant, default=None, metavar="ISO-8601",
                        help="end of the window and the instant for the grace period (default: now)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--sync", action="store_true",
                        help="refresh the mirror from Stripe first (needs STRIPE_API_KEY)")
    return parser


def run(args: argparse.Namespace, settings: Settings, src: Source | None = None, out=sys.stdout, err=sys.stderr) -> int:
    """Run ``reconcile``; returns the exit code (1 when the result is unknown)."""
    at = utc(args.at) if args.at else datetime.now(timezone.utc).replace(microsecond=0)
    since = utc(args.since) if args.since else at - DEFAULT_WINDOW
    if since >= at:
        print("paywatch: --since must be before --at", file=err)
        return EXIT_USAGE
    # Here, not at the top: importing the Stripe SDK takes a quarter of a second (it loads aiohttp when
    # installed), and every other command of ``python -m metrics`` (snapshot, rollups) goes without it.
    from metrics.stripe import mirror
    from metrics.stripe.client import StripeNotConfigured, StripeOptions

    options = StripeOptions.from_settings(settings)
    if args.sync:
        try:
            report = mirror.sync(settings, options)
        except StripeNotConfigured as exc:
            print(f"paywatch: {exc}", file=err)
            return EXIT_USAGE
        if not report.ok:
            print(f"paywatch: the mirror sync failed: {report.error or report.skipped}", file=err)
    result = reconcile(src or source(settings), mirror_store(settings), Window(since, at), at,
                       grace=timedelta(minutes=options.reconcile_grace_minutes), mask=settings.mask_emails)
    if args.json:
        json.dump(to_json(result), out, indent=2)
        print(file=out)
    else:
        print_table(result, out)
    return EXIT_OK if result["available"] else EXIT_UNAVAILABLE


def print_table(result: dict, out=sys.stdout) -> None:
    if not result["available"]:
        print(f"Reconciliation unknown: {result['reason']}", file=out)
        return
    checked = result["checked"]
    print(f"Reconciliation of payments created {checked['start']} to {checked['end']} "
          f"(mirror covers {result['coverage']['start']} to {result['coverage']['end']})", file=out)
    print(f"  {fmt.count(result['stripe_payment_intents'])} PaymentIntents in Stripe, "
          f"{fmt.count(result['db_payments'])} payments in the database, {fmt.count(result['matched'])} matched", file=out)
    mismatches = result["mismatches"]
    if not mismatches:
        print("  no mismatches", file=out)
        return
    print(f"  {len(mismatches)} mismatch(es), {result['persisting']} older than the "
          f"{result['grace_minutes']:g}-minute grace period:", file=out)
    for m in mismatches:
        amount = fmt.money(m["stripe_amount"], m["currency"]) if m["stripe_amount"] is not None and m["currency"] else "–"
        print(f"\n- {m['title']}{'' if m['persisting'] else ' (within grace period)'}", file=out)
        print(f"  {m['payment_intent']}  {amount}  Stripe: {m['stripe_status'] or '–'}  database: "
              f"{m['db_status'] or '–'}  enrollment: {m['enrollment_status'] or '–'}  since {m['since']}", file=out)
        print(f"  {m['detail']}", file=out)
        print(f"  {m['stripe_url']}", file=out)
        print(f"  Check first: {m['check_first']}", file=out)
        print(f"  Fix: {m['fix']}", file=out)
        for line in m["fix_command"].splitlines():
            print(f"    {line}", file=out)
