"""``python -m bench.soak URL``: a running dashboard (``make run``) with a browser on every page in turn.

Headless Chromium opens the ten pages of ``dashboard/app.py`` one after the
other, each at its live address in a new tab, for ``--minutes`` (15), and
times each view from navigation until it has drawn everything (no script
run in progress, every chart drawn, nothing changed for 1.5 s; the time is
up to the last change, as ``python -m bench rollups`` times pages).  It
counts the views that showed trouble ("Data source unavailable", "The
database is slow", ``ExecutionTimeout``, a traceback or a Streamlit
exception), and at the end reads the logs given with ``--log`` (``make
run``'s output, saved with ``tee``) for skipped worker jobs and tracebacks.
docs/performance.md section 7 is such a run, with the incident injector on::

    PAYWATCH_DEMO_INCIDENT_EVERY=4 make run 2>&1 | tee run.log    # in a fresh clone
    python -m bench.soak http://127.0.0.1:8501 --minutes 15 --log run.log

The summary goes to stdout as JSON; progress (one line a minute) to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.common import say
from bench.rollups_bench import _drawn_seconds

# What a worker log must not hold: APScheduler's words for a job that could not run on time, and
# an exception's trace.
LOG_TROUBLE = ("skipped", "maximum number of running instances", "Traceback")


def soak(url: str, minutes: float) -> dict:
    """Every page in turn until ``minutes`` have passed; each view's seconds and trouble, by page."""
    from playwright.sync_api import sync_playwright

    from bench.dashboard import ARGS, VIEWPORT, chromium_path
    from dashboard.app import PAGES

    base = url.rstrip("/")
    views: dict[str, list[float]] = {name: [] for name, _, _ in PAGES}
    trouble: list[dict] = []
    began = time.monotonic()
    said = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            while time.monotonic() - began < minutes * 60:
                for name, _, _ in PAGES:
                    page = context.new_page()
                    try:
                        seconds, words = _drawn_seconds(page, f"{base}/{'' if name == PAGES[0][0] else name}")
                    finally:
                        page.close()
                    views[name].append(seconds)
                    if words:
                        trouble.append({"page": name, "at_s": round(time.monotonic() - began), "trouble": words})
                        say(f"soak: {name}: {words}")
                    if time.monotonic() - began >= minutes * 60:
                        break
                if (elapsed := int((time.monotonic() - began) // 60)) > said:
                    said = elapsed
                    say(f"soak: {elapsed} min, {sum(map(len, views.values()))} views, {len(trouble)} with trouble")
        finally:
            browser.close()
    return {
        "minutes": minutes,
        "views": sum(map(len, views.values())),
        "views_with_trouble": trouble,
        "seconds_by_page": {name: {"views": len(t), "median": round(statistics.median(t), 2), "max": max(t)}
                            for name, t in views.items() if t},
    }


def log_trouble(paths: list[Path]) -> dict[str, list[str]]:
    """The lines of each log that name a skipped job or a traceback."""
    found = {}
    for path in paths:
        lines = path.read_text(errors="replace").splitlines()
        found[str(path)] = [line for line in lines if any(word in line for word in LOG_TROUBLE)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="A running dashboard (make run) with headless Chromium on every page in turn: each view "
                    "timed and checked for trouble, then the logs read for skipped jobs and tracebacks.",
        epilog="Exit status 1 when a view or a log showed trouble. docs/performance.md section 7 describes a run.")
    parser.add_argument("url", help="the running dashboard, e.g. http://127.0.0.1:8501")
    parser.add_argument("--minutes", type=float, default=15, help="how long to keep opening pages (15)")
    parser.add_argument("--log", type=Path, action="append", default=[], metavar="FILE",
                        help="a log to search for skipped jobs and tracebacks at the end (repeatable)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.log if not p.is_file()]
    if missing:
        parser.error(f"no such log: {', '.join(missing)}")
    result = soak(args.url, args.minutes)
    result["log_trouble"] = log_trouble(args.log)
    print(json.dumps(result, indent=2))
    return 0 if not result["views_with_trouble"] and not any(result["log_trouble"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
