"""``python -m demo``: demo data and live traffic for the embedded default.

    python -m demo                     seed if empty, then live traffic until Ctrl-C
    python -m demo seed [--force]      write 90 days of history
    python -m demo incident KIND       write an incident now

Exit codes: 0 done (Ctrl-C included), 1 database unreachable or failing,
2 bad configuration or arguments, or a refusal to write to a real platform.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta

from pymongo.errors import PyMongoError

from demo import seed as seeding
from demo.traffic import DEFAULT_RATE_PER_MIN, INCIDENTS, IncidentRotation, LiveTraffic, inject
from metrics import db as dbmod
from metrics.settings import SettingsError, load_settings
from metrics.windows import iso

log = logging.getLogger("demo")

INTERVAL_ENV = "PAYWATCH_DEMO_INTERVAL"
INCIDENTS_ENV = "PAYWATCH_DEMO_INCIDENT_EVERY"
COMMANDS = ("run", "seed", "incident")
NOT_PRODUCTION = "--i-know-this-is-not-production"


def _positive(what: str, *, zero_ok: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (value >= 0 if zero_ok else value > 0):
            kind = "zero or a positive number" if zero_ok else "a positive number"
            raise argparse.ArgumentTypeError(f"{what} must be {kind}, got {text!r}")
        return value
    return parse


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _days(text: str) -> int:
    days = _whole(text)
    if days < seeding.MIN_DAYS:
        raise argparse.ArgumentTypeError(f"at least {seeding.MIN_DAYS} days, so that every incident fits")
    return days


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(NOT_PRODUCTION, dest="not_production", action="store_true",
                        help="allow writing demo data to the database in MONGODB_URI (never a real platform!)")
    volume = argparse.ArgumentParser(add_help=False)
    volume.add_argument("--days", metavar="N", type=_days, default=seeding.DEFAULT_DAYS,
                        help=f"days of history to seed (default {seeding.DEFAULT_DAYS}, at least {seeding.MIN_DAYS})")
    volume.add_argument("--per-day", metavar="N", type=_positive("--per-day"), default=seeding.DEFAULT_PER_DAY,
                        help=f"average payments a day (default {seeding.DEFAULT_PER_DAY})")
    volume.add_argument("--random-seed", dest="rng_seed", metavar="N", type=_whole, default=7,
                        help="random seed: the same seed gives the same history (default 7)")

    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Demo data for Paywatch's embedded default: plays the platform by writing payments, "
                    "webhook events and enrollments into the platform database. Without a command: run.",
        epilog="The demo only writes to the embedded database (MONGODB_URI unset) unless "
               f"{NOT_PRODUCTION} is given. Exit codes: 0 ok, 1 database error, 2 configuration error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,seed,incident}")

    run = sub.add_parser("run", parents=[common, volume], help="seed if empty, then live traffic until Ctrl-C (default)",
                         description="Seed the history if the platform database has no payments, then write "
                                     "live payments every --interval seconds until Ctrl-C.")
    run.add_argument("--interval", metavar="SECONDS", type=_positive(f"--interval (or {INTERVAL_ENV})"),
                     default=os.environ.get(INTERVAL_ENV, "5"),
                     help=f"seconds between ticks (default 5, or ${INTERVAL_ENV})")
    run.add_argument("--rate", metavar="N", type=_positive("--rate", zero_ok=True), default=DEFAULT_RATE_PER_MIN,
                     help=f"new payments per minute (default {DEFAULT_RATE_PER_MIN:g}; 0: none, only the "
                          "incidents and the history's payments still in flight)")
    run.add_argument("--incident-every", metavar="MINUTES", type=_positive(f"--incident-every (or {INCIDENTS_ENV})", zero_ok=True),
                     default=os.environ.get(INCIDENTS_ENV, "20"),
                     help="inject the incidents in turn (decline spike, webhook outage, amount spike, refund wave), "
                          f"the first after 3 minutes, then one every MINUTES so alerts fire and resolve live; "
                          f"0 turns this off (default 20, or ${INCIDENTS_ENV})")

    seed = sub.add_parser("seed", parents=[common, volume], help="write the history (90 days with incidents)",
                          description="Write the history into an empty platform database. Incidents are placed "
                                      "at fixed times relative to today (see demo/seed.py); their times are printed.")
    seed.add_argument("--force", action="store_true",
                      help="drop the payments, enrollments and webhook events collections first, then seed")
    seed.add_argument("--no-indexes", dest="indexes", action="store_false",
                      help="do not create the metric indexes after the load (half the seed time on SecantusDB)")

    incident = sub.add_parser("incident", parents=[common], help="write an incident now",
                              description="Write an incident as of now, for alerts to catch: "
                                          "decline-spike (15+ failed payments), webhook-outage (no webhooks for "
                                          "--minutes, some failed), refund-wave (10% of the last 24 h refunded), "
                                          "amount-spike (payments at 15x their price).")
    incident.add_argument("kind", choices=list(INCIDENTS), help="which incident")
    incident.add_argument("--minutes", type=_positive("--minutes"), default=15,
                          help="webhook-outage: how long no webhook arrives (default 15)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    # "python -m demo --rate 2" means "run --rate 2": run is the default command.
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    return build_parser().parse_args(argv)


def _print_progress(done: int, total: int, what: str) -> None:
    """One line that counts up on a terminal; a line per step in a log (nothing to overwrite there)."""
    percent = 100 * done // total if total else 100
    line = f"demo: seeding {done:,}/{total:,} documents ({percent}%) {what}"
    if sys.stderr.isatty():
        print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _seed(args, db, schema) -> dict:
    result = seeding.seed(db, schema, days=args.days, per_day=args.per_day, rng_seed=args.rng_seed,
                          progress=_print_progress, indexes=getattr(args, "indexes", True))
    if sys.stderr.isatty():
        print(file=sys.stderr)  # end the line the progress counted up on
    print(f"demo: seeded {result['payments']:,} payments, {result['webhook_events']:,} webhook events and "
          f"{result['enrollments']:,} enrollments ({args.days} days) in {result['seconds']:.1f} s")
    for name, incident in sorted(result["incidents"].items(), key=lambda item: item[1]["start"]):
        print(f"demo:   {name:<22} {iso(incident['start'])} .. {iso(incident['end'])}")
    return result


def cmd_seed(args, db, schema) -> int:
    if args.force:
        seeding.drop(db, schema)
    elif not seeding.is_empty(db, schema):
        print(f"demo: {db.name} already has payments; nothing seeded (use --force to start again)")
        return 0
    _seed(args, db, schema)
    return 0


def cmd_run(args, db, schema) -> int:
    if seeding.is_empty(db, schema):
        _seed(args, db, schema)
    else:
        print(f"demo: {db.name} already has payments; not seeding", file=sys.stderr)
    stop = threading.Event()

    def stop_after_this_tick(*_):
        # Ctrl-C (and SIGTERM from systemd, Docker or `kill`) ends the loop between two ticks rather
        # than interrupting a database call half-way, which can leave the driver's pool locked and
        # the process hanging at exit; a second Ctrl-C interrupts at once.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, stop_after_this_tick)
    signal.signal(signal.SIGTERM, stop_after_this_tick)
    print(f"demo: live traffic into {db.name}: {args.rate:g} payments/min, a tick every {args.interval:g} s "
          f"(Ctrl-C to stop)", file=sys.stderr, flush=True)
    traffic = LiveTraffic(db, schema, rate_per_min=args.rate)
    rotation = IncidentRotation(timedelta(minutes=args.incident_every)) if args.incident_every else None

    def next_incident(_wrote: dict) -> None:
        kind = rotation.due(datetime.now(UTC)) if rotation else None
        if kind:
            result = inject(db, schema, kind)
            print(f"demo: injected the scheduled incident {kind} ({_summary(result)}); "
                  f"the next in {args.incident_every:g} min", file=sys.stderr, flush=True)

    try:
        traffic.run(interval_s=args.interval, stop_event=stop, on_tick=next_incident)
    except KeyboardInterrupt:
        pass
    print("demo: stopped", file=sys.stderr)
    return 0


def _summary(result: dict) -> str:
    def show(value) -> str:
        if hasattr(value, "isoformat"):
            return iso(value)
        if isinstance(value, (list, tuple)):
            return f"{len(value)} ids"
        return str(value)

    return ", ".join(f"{k} {show(v)}" for k, v in result.items())


def cmd_incident(args, db, schema) -> int:
    result = inject(db, schema, args.kind, minutes=args.minutes)
    print(f"demo: incident {args.kind}: {_summary(result)}")
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="demo: %(message)s", stream=sys.stderr)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    if not settings.embedded and not args.not_production:
        print("demo: refusing to write demo data to the database in MONGODB_URI; the demo writes only to the "
              f"embedded database (unset MONGODB_URI, or pass {NOT_PRODUCTION} for a scratch database)",
              file=sys.stderr)
        return 2
    command = {"run": cmd_run, "seed": cmd_seed, "incident": cmd_incident}[args.command]
    try:
        source = dbmod.source(settings)
        return command(args, source.db, source.schema)
    except dbmod.DataSourceUnavailable as exc:
        print(f"demo: database unavailable: {_one_line(exc)}", file=sys.stderr)
    except PyMongoError as exc:
        print(f"demo: database error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
    except ValueError as exc:  # e.g. --days below the minimum
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
