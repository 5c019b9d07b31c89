"""``python -m reports``: the weekly and monthly review as files.

    python -m reports weekly  [--week 2026-W47] [--format html|xlsx|csv|all] [--out PATH]
    python -m reports monthly [--month 2026-10] [--format ...] [--out PATH]

Progress goes to stderr, the paths written to stdout; problems are one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from pymongo.errors import PyMongoError

from metrics.db import DataSourceUnavailable, state_db
from metrics.rollups import live_source
from metrics.settings import SettingsError, load_settings
from metrics.targets import TargetsError
from reports.model import Report, build_report
from reports.periods import (PeriodError, last_complete_month, last_complete_week, parse_month, parse_week,
                             require_complete)
from reports.render import FORMATS, render

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
DEFAULT_OUT = Path("out")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Paywatch's weekly and monthly review (the guide's section 9) as files to send around: "
                    "HTML (self-contained, printable), XLSX (one sheet per table) and a zip of CSVs. "
                    "Periods are in PAYWATCH_TIMEZONE; every figure is compared with the period before.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    weekly = sub.add_parser("weekly", help="one ISO week (default: the last complete week)",
                            description="Build the weekly review for one ISO week, Monday 00:00 to Monday 00:00 local time.")
    weekly.add_argument("--week", metavar="YYYY-Www", help="the ISO week, e.g. 2026-W47 (default: the last complete week)")
    monthly = sub.add_parser("monthly", help="one calendar month (default: the last complete month)",
                             description="Build the monthly review's numbers for one calendar month.")
    monthly.add_argument("--month", metavar="YYYY-MM", help="the month, e.g. 2026-10 (default: the last complete month)")
    for command in (weekly, monthly):
        command.add_argument("--format", choices=(*FORMATS, "all"), default="all",
                             help="which file to write (default: all three)")
        command.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="PATH",
                             help=f"a directory (default: {DEFAULT_OUT}/), or with one --format a file name")
    return parser


def _progress(text: str) -> None:
    print(f"reports: {text}", file=sys.stderr, flush=True)


def _targets(fmt: str, out: Path, stem: str) -> dict[str, Path]:
    """Where each file goes: ``--out`` is a directory, or the file itself for a single format."""
    formats = FORMATS if fmt == "all" else (fmt,)
    if fmt != "all" and out.suffix:
        return {fmt: out}
    return {f: out / f"{stem}.{FORMATS[f].extension}" for f in formats}


def build(args, settings) -> Report:
    now = datetime.now(timezone.utc)
    tz = settings.tz
    if args.command == "weekly":
        period = parse_week(args.week, tz) if args.week else last_complete_week(now, tz)
    else:
        period = parse_month(args.month, tz) if args.month else last_complete_month(now, tz)
    require_complete(period, now)
    _progress(f"building the {period.kind} report for {period.title} ({period.timezone})")
    src = live_source(settings)  # the figures come from the rollups, built first when missing
    return build_report(src, settings, period, state=_state_or_none(settings), progress=lambda w: _progress(f"reading {w}"))


def _state_or_none(settings):
    """Paywatch's own database (probes, alert history); the report says "not available" without it."""
    try:
        return state_db(settings)
    except DataSourceUnavailable:
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        report = build(args, settings)
        for fmt, path in _targets(args.format, args.out, report.file_stem).items():
            _progress(f"rendering {fmt}")
            data = render(report, fmt)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            _progress(f"wrote {path} ({len(data) / 1024:,.0f} KiB)")
            print(path)
    except (SettingsError, TargetsError, PeriodError) as exc:
        print(f"paywatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DataSourceUnavailable, PyMongoError) as exc:
        print(f"paywatch: data source unavailable: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as exc:
        print(f"paywatch: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
