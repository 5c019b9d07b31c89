"""``python -m bench``: what Paywatch costs at the reference volume (``make bench``: modes rollups and load).

Seeds (once; kept under ``.paywatch/bench/``) one year at 1,000 payments a
day with 3 webhook events per payment and one enrollment per payment, creates
the indexes of ``metrics/indexes.py``, then measures, depending on the mode:

  snapshot   one snapshot on the raw path (the default): wall time
             cold and warm, database round trips, documents examined per
             query and whether it used an index (``explain``), peak memory
  dashboard  the Overview in headless Chromium: first visit, cold and warm
             cache, and the dashboard's memory with 10 open sessions
  alerts     one evaluation cycle of every default rule (wall time, round
             trips), and detection latency end to end: an injected decline
             spike until its post reaches a fake Slack, per eval interval
  stripe     Stripe API calls per mirror sync against localstripe:
             backfill, quiet, incremental
  rollups    with rollups built and fresh, against a running server: the
             initial build, build_snapshot, snapshot --json wall and --raw
             against it (do both JSONs agree), database time per dashboard
             page, one alert cycle, the weekly report
  load       queries and documents returned per minute on the platform's
             database in steady state: the worker plus 1 or 10 dashboards
  all        snapshot, dashboard, alerts and stripe; snapshot and dashboard
             on both volumes
  seed       seed the volume(s) and stop (also: --seed-only)

Figures go to stdout as JSON (progress to stderr) and, with ``--write``, to
``bench-results/<mode>.json`` and ``bench-results/latest.json`` (git-ignored);
``docs/performance.md`` quotes them with the machine they were taken on.
Nothing here asserts a speed: the figures are for reading, not for passing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bench import common

MODES = ("snapshot", "dashboard", "alerts", "stripe", "rollups", "load", "all", "seed")
DEFAULT_INTERVALS = (60.0, 5.0)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.replace("``", "").split("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=doc[0] + "\n\n" + doc[1] + "\n\n" + doc[2],
        epilog="Examples: make bench (= python -m bench rollups, then load); python -m bench all --write; "
               "python -m bench snapshot --volume demo; python -m bench alerts --latency-only --interval 5. "
               "Delete .paywatch/bench to seed the reference volume again.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=MODES, default="snapshot", metavar="MODE",
                        help=f"one of {', '.join(MODES)} (default: snapshot)")
    parser.add_argument("--volume", choices=("reference", "demo", "both"), default=None,
                        help="data to measure on: the reference volume, the 90-day demo data, or both "
                             "(default: reference; 'all' uses both for snapshot and dashboard)")
    parser.add_argument("--days", type=_positive_int, default=365, help="reference volume: days of history (365)")
    parser.add_argument("--per-day", type=_positive_int, default=1000, help="reference volume: payments a day (1000)")
    parser.add_argument("--events-per-payment", type=_positive_int, default=3,
                        help="reference volume: webhook events per payment (3)")
    parser.add_argument("--home", type=Path, default=None, metavar="DIR",
                        help="keep the volume's database in DIR instead of .paywatch/bench (or bench-demo)")
    parser.add_argument("--runs", type=_positive_int, default=3,
                        help="snapshots / alert cycles to time; the first is cold (default 3)")
    parser.add_argument("--interval", type=_positive_float, action="append", metavar="SECONDS",
                        help="alerts: PAYWATCH_EVAL_INTERVAL for the latency run; repeat for several "
                             f"(default: {' and '.join(f'{i:g}' for i in DEFAULT_INTERVALS)})")
    latency = parser.add_mutually_exclusive_group()
    latency.add_argument("--no-latency", action="store_true", help="alerts: only the evaluation cycle")
    latency.add_argument("--latency-only", action="store_true", help="alerts: only the detection latency")
    parser.add_argument("--payments", type=_positive_int, default=1000,
                        help="stripe: payments in localstripe before the backfill sync (default 1000)")
    parser.add_argument("--new", type=_positive_int, default=100,
                        help="stripe: payments added before the incremental sync (default 100)")
    parser.add_argument("--no-raw", action="store_true", help="rollups: skip snapshot --raw (minutes at the reference volume)")
    parser.add_argument("--rebuild", action="store_true", help="rollups: build the rollups again even when built")
    parser.add_argument("--dashboards", type=_positive_int, action="append", metavar="N",
                        help="load: open dashboards sharing one Streamlit process; repeat for several (default: 1 and 10)")
    parser.add_argument("--write", action="store_true",
                        help="also write bench-results/<mode>.json and bench-results/latest.json")
    parser.add_argument("--seed-only", action="store_true", help="seed the volume(s) and stop (same as: seed)")
    return parser


def volumes(args, mode: str) -> list[common.Volume]:
    reference = common.reference_volume(args.days, args.per_day, args.events_per_payment)
    choice = args.volume or ("both" if mode == "all" else "reference")
    chosen = {"reference": [reference], "demo": [common.demo_volume()], "both": [reference, common.demo_volume()]}[choice]
    if args.home is not None:
        if len(chosen) > 1:
            raise SystemExit("python -m bench: --home takes one volume (--volume reference or demo)")
        chosen = [dataclasses.replace(chosen[0], home=args.home.resolve())]
    return chosen


def run_snapshot(args, results: dict, mode: str) -> None:
    from bench import snapshot

    results["snapshot"] = {v.name: snapshot.measure(v, args.runs) for v in volumes(args, mode)}


def run_dashboard(args, results: dict, mode: str) -> None:
    from bench import dashboard

    results["dashboard"] = {v.name: dashboard.measure(v) for v in volumes(args, mode)}


def run_alerts(args, results: dict, mode: str) -> None:
    from bench import alerts_bench

    result: dict = {}
    if not args.latency_only:
        result["cycle"] = {v.name: alerts_bench.cycle(v, args.runs) for v in volumes(args, "alerts")}
    if not args.no_latency:
        result["latency"] = [alerts_bench.latency(i) for i in (args.interval or DEFAULT_INTERVALS)]
    results["alerts"] = result


def run_stripe(args, results: dict, mode: str) -> None:
    from bench import stripe_bench

    results["stripe"] = stripe_bench.measure(args.payments, args.new)


def run_seed(args, results: dict, mode: str) -> None:
    results["seed"] = {v.name: common.seed_volume(v) for v in volumes(args, mode)}


def run_rollups(args, results: dict, mode: str) -> None:
    from bench import rollups_bench

    results["rollups"] = {v.name: rollups_bench.measure(v, args.runs, raw=not args.no_raw, rebuild=args.rebuild)
                          for v in volumes(args, mode)}


def run_load(args, results: dict, mode: str) -> None:
    from bench import rollups_bench

    results["load"] = {v.name: rollups_bench.steady_load(v, tuple(args.dashboards or (1, 10)))
                       for v in volumes(args, mode)}


RUNNERS = {"snapshot": run_snapshot, "dashboard": run_dashboard, "alerts": run_alerts, "stripe": run_stripe}
EXTRA = {"rollups": run_rollups, "load": run_load}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = "seed" if args.seed_only else args.mode
    if mode in ("rollups", "load"):
        from bench.rollups_bench import traffic_log
        traffic_log()  # before any client exists, so it sees every one
    results: dict = {"machine": common.machine()}
    if mode == "seed":
        run_seed(args, results, mode)
    else:
        for name in (RUNNERS if mode == "all" else (mode,)):
            {**RUNNERS, **EXTRA}[name](args, results, mode)
    results["machine_after"] = {"load_average": common.machine()["load_average"]}
    print(json.dumps(results, indent=2, default=str))
    if args.write:
        for path in common.write_results(results):
            common.say(f"wrote {path.relative_to(common.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
