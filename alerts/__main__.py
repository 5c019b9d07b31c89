"""``python -m alerts``: the alert worker and its tools.

    python -m alerts run                                  start the worker (Ctrl-C stops it)
    python -m alerts rules [--json]                       list the rules in effect
    python -m alerts evaluate --once [--at ISO] [--json]  evaluate every rule once; sends nothing
    python -m alerts silence RULE [--subject S] --for 2h --reason "..." [--by NAME]
    python -m alerts silences [--json]                    active silences
    python -m alerts unsilence ID                         end a silence now
    python -m alerts outbox [--all] [--json]              pending and dead messages
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from datetime import datetime

from pymongo.errors import PyMongoError

from alerts import engine, store
from alerts import outbox as outbox_mod
from alerts.config import load_config, parse_duration
from alerts.outbox import utcnow
from alerts.readings import METRICS, EvalContext
from alerts.rules import find_rule, load_rules
from alerts.state import scope
from metrics.db import DataSourceUnavailable, source, state_db
from metrics.redact import describe, redact
from metrics.settings import SettingsError, load_settings
from metrics.snapshot import to_json
from metrics.windows import iso, parse_instant

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str):
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m alerts",
        description="Paywatch's alert worker: the production guide's alert rules, evaluated every "
                    "PAYWATCH_EVAL_INTERVAL seconds and posted to Slack (or logged, without Slack). "
                    "Rules and worker settings: the [alerts] table of paywatch.toml (docs/alerts.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="start the worker (Ctrl-C or SIGTERM stops it cleanly)",
                   description="Evaluate the rules on a schedule, keep their state, post messages through "
                               "the outbox. Several replicas may run: a lease lets one evaluate and send.")
    rules = sub.add_parser("rules", help="list the rules in effect (defaults plus paywatch.toml)",
                           description="List every rule: id, severity, condition, runbook.")
    rules.add_argument("--json", action="store_true", help="print the rules as JSON")
    ev = sub.add_parser("evaluate", help="evaluate every rule once and print the result; sends nothing",
                        description="Evaluate every rule once: value, threshold, samples and the state it would "
                                    "move to from the stored one. Nothing is written or sent.")
    ev.add_argument("--once", action="store_true", help="evaluate once (the only mode; accepted for clarity)")
    ev.add_argument("--at", type=_instant, default=None, metavar="ISO-8601",
                    help="evaluate at this instant instead of now, e.g. 2026-11-26T12:00:00Z")
    ev.add_argument("--json", action="store_true", help="print JSON")
    si = sub.add_parser("silence", help="mute a rule (or one subject of it) for a while",
                        description="Mute a rule's messages until a time, with a reason. A resolved message is "
                                    "still sent for an alert whose firing message already went out.")
    si.add_argument("rule", metavar="RULE", help="rule id (see: python -m alerts rules)")
    si.add_argument("--subject", default=None, help="only this subject (a currency, a specialist id)")
    si.add_argument("--for", dest="duration", type=_duration, required=True, metavar="DURATION",
                    help="how long, e.g. 30m, 2h, 1d")
    si.add_argument("--reason", required=True, help="why, for whoever wonders later")
    si.add_argument("--by", default=None, help="who set it (default: your user name)")
    sl = sub.add_parser("silences", help="list the active silences")
    sl.add_argument("--json", action="store_true", help="print JSON")
    un = sub.add_parser("unsilence", help="end a silence now")
    un.add_argument("id", metavar="ID", help="the silence id (see: python -m alerts silences)")
    ob = sub.add_parser("outbox", help="list pending and dead messages",
                        description="Messages not delivered yet (pending, sending) and given up (dead).")
    ob.add_argument("--all", action="store_true", help="include sent messages (kept 30 days)")
    ob.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _print_json(value) -> None:
    print(json.dumps(to_json(value), indent=2, ensure_ascii=False))


def cmd_rules(settings, args) -> int:
    config = load_config(settings)
    rules = load_rules(settings, config)
    if args.json:
        _print_json([{**r.model_dump(mode="json", by_alias=True), "condition": r.condition_text()} for r in rules])
        return 0
    for rule in rules:
        flag = "" if rule.enabled else "  (disabled)"
        needs = METRICS[rule.metric].needs
        if needs and not getattr(settings, needs.removeprefix("PAYWATCH_").lower(), None):
            flag += f"  (needs {needs})"
        print(f"{rule.id:<26} {rule.severity:<8} {rule.condition_text()}{flag}")
        print(f"{'':<26} {rule.title}; runbook: {rule.runbook.section or '–'} ({len(rule.runbook.steps)} steps)")
    return 0


def cmd_evaluate(settings, args) -> int:
    config = load_config(settings)
    rules = load_rules(settings, config)
    at = args.at or utcnow()
    try:
        src = source(settings)
        src.command("ping")
        source_error = None
    except DataSourceUnavailable as exc:
        src, source_error = None, str(exc)
    notes = []
    try:
        sdb = state_db(settings)
        stored = store.load_states(sdb)
        silences = store.active_silences(sdb, at)
    except (PyMongoError, DataSourceUnavailable) as exc:
        sdb, stored, silences = None, {}, []
        notes.append(f"Paywatch's database unavailable ({redact(exc, limit=120)}): states shown from inactive")
    ctx = EvalContext(settings, at, src, sdb, source_error)
    evaluations = engine.evaluate(ctx, rules, stored)
    for ev in evaluations:
        ev.silence = store.silenced_by(silences, ev.rule.id, ev.subject)
    if args.json:
        _print_json({"at": at, "source_error": ctx.source_error, "notes": notes,
                     "rules": [ev.summary() for ev in evaluations]})
        return 0
    print(f"Evaluated at {iso(at)} (nothing stored or sent)")
    for note in notes + ([f"data source unavailable: {ctx.source_error}"] if ctx.source_error else []):
        print(f"! {note}")
    print(f"{'rule':<26} {'subject':<14} {'value':>12} {'threshold':>12} {'samples':>8}  state")
    for ev in evaluations:
        s = ev.summary()
        state = s["state"] if s["state"] == s["previous_state"] else f"{s['previous_state']} -> {s['state']}"
        if s["unknown"]:
            state += " (unknown)"
        if s["silenced"]:
            state += " (silenced)"
        if s["flapping"]:
            state += " (flapping)"
        if s["inhibited_by"] and s["state"] == "firing":
            state += f" (held while {s['inhibited_by']} fires)"
        samples = "" if s["samples"] is None else f"{s['samples']:,}"
        note = f"  [{s['note']}]" if s["note"] and not s["unknown"] else ""
        print(f"{s['rule']:<26} {s['subject'] or '–':<14} {s['value_text']:>12} {s['threshold_text']:>12} "
              f"{samples:>8}  {state}{note}")
    return 0


def cmd_silence(settings, args) -> int:
    config = load_config(settings)
    rule = find_rule(load_rules(settings, config), args.rule)
    now = utcnow()
    if args.duration.total_seconds() <= 0:
        raise SettingsError("--for must be longer than 0")
    by = args.by or getpass.getuser()
    sid = store.add_silence(state_db(settings), rule.id, args.subject, now + args.duration, args.reason, by, now)
    print(f"silenced {scope(rule.id, args.subject)} until {iso(now + args.duration)} (id {sid}, by {by}): {args.reason}")
    return 0


def cmd_silences(settings, args) -> int:
    now = utcnow()
    active = store.active_silences(state_db(settings), now)
    if args.json:
        _print_json(active)
        return 0
    if not active:
        print("no active silences")
    for s in active:
        print(f"{s['_id']}  {scope(s['rule_id'], s.get('subject')):<34} until {iso(s['until'])}  by {s['by']}: {s['reason']}")
    return 0


def cmd_unsilence(settings, args) -> int:
    now = utcnow()
    if not store.remove_silence(state_db(settings), args.id, now):
        raise SettingsError(f"no active silence with id {args.id!r} (see: python -m alerts silences)")
    print(f"silence {args.id} ended")
    return 0


def cmd_outbox(settings, args) -> int:
    statuses = (outbox_mod.PENDING, outbox_mod.SENDING, outbox_mod.DEAD) + ((outbox_mod.SENT,) if args.all else ())
    messages = outbox_mod.list_messages(state_db(settings), statuses)
    if args.json:
        _print_json(messages)
        return 0
    if not messages:
        print("outbox: nothing pending or dead")
    for m in messages:
        extra = f"  next try {iso(m['next_attempt_at'])}" if m["status"] == outbox_mod.PENDING and m["attempts"] else ""
        error = f"  last error: {m['last_error']}" if m.get("last_error") else ""
        print(f"{m['status']:<8} {m['channel']:<8} {iso(m['created_at'])}  attempts {m['attempts']}  "
              f"{m['message'].get('headline', '')[:90]}{extra}{error}")
    return 0


def cmd_run(settings, args) -> int:
    from alerts.worker import Worker

    Worker(settings).run()
    return 0


COMMANDS = {"run": cmd_run, "rules": cmd_rules, "evaluate": cmd_evaluate, "silence": cmd_silence,
            "silences": cmd_silences, "unsilence": cmd_unsilence, "outbox": cmd_outbox}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.command == "run" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # APScheduler logs every job run at INFO (several a minute); its warnings (missed runs) still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        settings = load_settings()
        return COMMANDS[args.command](settings, args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataSourceUnavailable as exc:
        print(f"error: database unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except PyMongoError as exc:
        print(f"error: Paywatch's database unavailable: {describe(exc, limit=200)}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
