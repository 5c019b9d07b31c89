"""``python -m metrics``: the metrics tree from the command line.

    python -m metrics snapshot [--at ISO-8601] [--json] [--raw]
    python -m metrics rollups build|status|verify [--since ISO-8601] [--json]
    python -m metrics indexes [--create]
    python -m metrics reconcile [--since ISO-8601] [--at ISO-8601] [--json] [--sync]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone

from pymongo.errors import PyMongoError

from metrics import format as fmt
from metrics import rollups
from metrics.db import DataSourceUnavailable, source
from metrics.indexes import INDEXES, ensure_indexes, missing_indexes
from metrics.quality import COLLECTIONS
from metrics.settings import SettingsError, load_settings
from metrics.snapshot import build_snapshot, to_json
from metrics.stripe import cli as reconcile_cli
from metrics.windows import parse_instant

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m metrics",
        description="Paywatch metrics, computed from the platform's MongoDB and the Stripe mirror "
                    "(PAYWATCH_DB). With MONGODB_URI unset, the embedded database (the one 'make run' "
                    "started, or a new one under .paywatch/) is used.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    snap = sub.add_parser("snapshot", help="print every metric at one instant",
                          description="Print the metrics tree: a readable table, or the spec's JSON with --json.")
    snap.add_argument("--at", type=_instant, default=None, metavar="ISO-8601",
                      help="evaluate at this instant instead of now, e.g. 2026-11-26T12:00:00Z")
    snap.add_argument("--json", action="store_true", help="print the snapshot JSON (docs/metrics.md)")
    snap.add_argument("--raw", action="store_true",
                      help="compute every figure from the raw documents, not the rollups (the verification path; "
                           "its cost grows with the history)")
    roll = sub.add_parser("rollups", help="build, inspect or verify the rollups the figures are read from",
                          description="The rollups are per-15-minute buckets of every figure, kept in PAYWATCH_DB "
                                      "(docs/metrics.md, 'Rollups'). 'build' builds them from scratch with progress "
                                      "on stderr; 'refresh' builds what is missing and catches up with the changes "
                                      "since the last refresh; 'status' says how fresh each collection's are; 'verify' compares "
                                      "closed buckets with the raw documents and repairs any that differ.")
    roll.add_argument("action", choices=("build", "refresh", "status", "verify"))
    roll.add_argument("--since", type=_instant, default=None, metavar="ISO-8601",
                      help="verify: from this instant (default: the oldest bucket, i.e. the whole history)")
    roll.add_argument("--no-repair", action="store_true", help="verify: report differences without repairing them")
    roll.add_argument("--json", action="store_true", help="print the result as JSON")
    idx = sub.add_parser("indexes", help="list the indexes the metrics need; --create makes the missing ones",
                         description="List the indexes Paywatch's queries need and which are missing.")
    idx.add_argument("--create", action="store_true",
                     help="create the missing indexes (needs a user allowed to create indexes)")
    reconcile_cli.add_subcommand(sub)
    return parser


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def print_table(snap: dict, out=sys.stdout) -> None:
    pay, web, enr = snap["payments"], snap["webhooks"], snap["enrollments"]
    p24, w24, e24 = pay["24h"], web["24h"], enr["24h"]
    rows = [
        ("Payments", None),
        ("Revenue today", fmt.money_map(pay["revenue"]["today"])),
        ("Revenue this week", fmt.money_map(pay["revenue"]["week"])),
        ("Revenue this month", fmt.money_map(pay["revenue"]["month"])),
        ("Success rate (24h, target > 98%)", fmt.rate(p24["success_rate"])),
        ("Succeeded / failed (24h)", f"{fmt.count(p24['succeeded'])} / {fmt.count(p24['failed'])}"),
        ("Average transaction value (24h)", fmt.money_map(p24["avg_transaction_value"])),
        ("Refunds (24h) / refund rate (target < 2%)", f"{fmt.count(p24['refunds'])} / {fmt.rate(p24['refund_rate'])}"),
        ("Processing time avg / p95 (24h)", f"{fmt.duration(p24['processing_ms']['avg'])} / {fmt.duration(p24['processing_ms']['p95'])}"),
        ("Stuck payments", fmt.count(pay["stuck"])),
        ("Webhooks", None),
        ("Events received (24h)", fmt.count(w24["received"])),
        ("Processed / failed (24h)", f"{fmt.count(w24['processed'])} / {fmt.count(w24['failed'])}"),
        ("Failure rate (24h)", fmt.rate(w24["failure_rate"], 2)),
        ("Processing time avg / p95", f"{fmt.duration(w24['processing_ms']['avg'])} / {fmt.duration(w24['processing_ms']['p95'])}"),
        ("Delivery lag avg / p95", f"{fmt.duration(w24['delivery_lag_ms']['avg'])} / {fmt.duration(w24['delivery_lag_ms']['p95'])}"),
        ("Last event received", web["last_received_at"] or "never"),
        ("Enrollments", None),
        ("New today", fmt.count(enr["new_today"])),
        ("Created / converted (24h)", f"{fmt.count(e24['created'])} / {fmt.count(e24['converted'])}"),
        ("Conversion rate (24h)", fmt.rate(e24["conversion_rate"])),
        ("Refunded (24h)", fmt.count(e24["refunded"])),
        ("Pending payments", fmt.count(enr["pending_payments"])),
        ("Activation avg / p95 (target < 2 s)", f"{fmt.duration(e24['activation_ms']['avg'])} / {fmt.duration(e24['activation_ms']['p95'])}"),
        ("Email avg / p95 (target < 5 s)", f"{fmt.duration(e24['email_ms']['avg'])} / {fmt.duration(e24['email_ms']['p95'])}"),
        ("Duplicate enrollments (target 0)", fmt.count(enr["duplicates"])),
        ("Data quality", None),
        *[(f"Invalid {k} documents", fmt.count(v["invalid"])) for k, v in snap["data_quality"].items()],
    ]
    system = snap.get("system") or {}
    if system:
        conns = system.get("connections") or {}
        storage = system.get("storage") or {}
        rows += [("System health", None),
                 ("Database connections", fmt.count(conns.get("current"))),
                 ("Database storage", fmt.size(storage.get("storage_bytes")))]
    rows += _stripe_rows(snap.get("stripe") or {})
    width = max(len(label) for label, _ in rows)
    print(f"Paywatch snapshot at {snap['at']} ({snap['timezone']})", file=out)
    for label, value in rows:
        if value is None:
            print(f"\n{label}", file=out)
        else:
            print(f"  {label:<{width}}  {value}", file=out)


def _stripe_rows(stripe: dict) -> list[tuple[str, str | None]]:
    """The Stripe side, from the mirror; unknown figures print as "–", never as 0."""
    if not stripe:
        return []
    if not stripe.get("available"):
        return [("Stripe (mirror)", None), ("Not available", stripe.get("reason") or "–")]
    sync, day = stripe["sync"], stripe["24h"]
    pis = day["payments"] or {}
    return [
        ("Stripe (mirror)", None),
        ("Last good sync", sync["last_ok_at"] or "never"),
        ("Success rate, Stripe's view (24h)", fmt.rate(pis.get("success_rate"))),
        ("Succeeded / failed PaymentIntents (24h)", f"{fmt.count(pis.get('succeeded'))} / {fmt.count(pis.get('failed'))}"),
        ("Disputes created (24h) / open", f"{fmt.count((day['disputes'] or {}).get('created'))} / "
                                          f"{fmt.count(stripe['disputes'].get('open'))}"),
        ("Webhook delivery backlog", fmt.count(stripe["webhooks"]["backlog"])),
        ("Webhook endpoint problems", fmt.count(len(stripe["endpoints"]["problems"]))
            if stripe["endpoints"].get("problems") is not None else "–"),
        ("Stripe API error rate (24h)", fmt.rate(day["api"]["error_rate"], 2)),
    ]


def _rollups(args, settings, src) -> int:
    attached = rollups.attach(src, settings, refresh=False, progress=True)
    store = attached.rollups
    if args.action == "build":
        built = store.build()
        result = {"built": built, "busy": {k: store.claim(k) for k in COLLECTIONS if k not in built}}
    elif args.action == "refresh":
        result = {"refreshed": store.refresh()}
    elif args.action == "verify":
        store.refresh()
        end = datetime.now(timezone.utc)
        start = args.since or store.oldest() or end
        report = store.verify(start, end, repair=not args.no_repair)
        result = {"verified": {"from": start, "to": end},
                  "series": {name: {"checked": r["checked"], "differ": len(r["differ"]),
                                    "first_differing": r["differ"][:5]} for name, r in report.items()}}
    else:
        result = store.status()
    busy = result.get("busy") or {}
    for key, claim in busy.items():
        holder, until = (claim or {}).get("holder", "?"), (claim or {}).get("until")
        lapses = f", its claim lapses at {until:%Y-%m-%d %H:%M:%S} UTC" if until else ""
        print(f"rollups build: {key} is being built by another process ({holder}{lapses}); "
              f"run this again when it is done", file=sys.stderr)
    if args.json:
        json.dump(to_json(result), sys.stdout, indent=2)
        print()
        return 1 if busy else 0
    if args.action == "build":
        for key, n in result["built"].items():
            print(f"built {key}: {fmt.count(n)} documents")
        return 1 if busy else 0
    elif args.action == "refresh":
        for key, what in result["refreshed"].items():
            print(f"{key}: {what}")
    elif args.action == "verify":
        for name, r in result["series"].items():
            state = "ok" if not r["differ"] else f"{r['differ']} differed" + ("" if args.no_repair else ", repaired")
            print(f"  {name:<20} {fmt.count(r['checked'])} buckets checked: {state}")
        differ = sum(r["differ"] for r in result["series"].values())
        return 3 if differ and args.no_repair else 0
    else:
        print("Rollups (docs/metrics.md, 'Rollups')")
        for key, st in result.items():
            if key == "verification":
                print(f"  last verification: {st['verified_at'] or 'never'}")
                continue
            if not st["built_at"]:
                print(f"  {key:<15} not built (built on first use, or: python -m metrics rollups build)")
                continue
            mode = "change stream" if st["mode"] == "change_stream" else "trailing window (no change streams)"
            print(f"  {key:<15} {fmt.count(st['buckets'])} buckets, kept fresh by {mode}, "
                  f"last refreshed {st['lag_s']} s ago")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        src = source(settings)
        if args.command == "snapshot":
            if not args.raw:
                src = rollups.attach(src, settings, progress=True)
            snap = build_snapshot(src, settings, args.at)
            if args.json:
                json.dump(to_json(snap), sys.stdout, indent=2)
                print()
            else:
                print_table(snap)
        elif args.command == "indexes":
            missing = missing_indexes(src.db, src.schema)
            if args.create:
                created = ensure_indexes(src.db, src.schema)
                print(f"created {len(created)} index(es)" + (": " + ", ".join(created) if created else ""))
            else:
                for spec in INDEXES:
                    state = "MISSING" if spec in missing else "ok     "
                    keys = ", ".join(f"{k}: {d}" for k, d in spec.real_keys(src.schema))
                    print(f"{state} {getattr(src.schema, spec.collection).name} {{{keys}}}  # {spec.why}")
                if missing:
                    print(f"\n{len(missing)} missing; create them with: python -m metrics indexes --create")
        elif args.command == "rollups":
            return _rollups(args, settings, src)
        elif args.command == "reconcile":
            return reconcile_cli.run(args, settings, src)
    except SettingsError as exc:
        print(f"paywatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DataSourceUnavailable, PyMongoError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"paywatch: data source unavailable: {first_line}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``... --json | head``): not an error of ours, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
