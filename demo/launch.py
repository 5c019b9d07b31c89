"""``make run``: start the whole product, on the embedded default when nothing is configured.

With ``MONGODB_URI`` unset it starts the embedded database (SecantusDB, files
under ``.paywatch/``), seeds demo data when it is empty, keeps live demo
traffic flowing and serves a stand-in platform health endpoint.  With
``STRIPE_API_KEY`` unset too, it starts the embedded Stripe: localstripe on
a free loopback port (:mod:`demo.localstripe_server`), a fake ``sk_test_``
key and ``STRIPE_API_BASE`` for the children, a first handful of checkouts,
and the simulated platform (:mod:`demo.stripe_platform`) taking live
payments through it, which the worker's mirror job copies.  Then it starts
the dashboard and the alert worker, prints the URL, and on Ctrl-C stops
exactly the processes it started, by process object.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from demo.localstripe_server import LocalStripe
from metrics.embedded import EmbeddedMongo, EmbeddedServerError, _die_with_parent, port_is_open, stop_process
from metrics.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
# Checkouts made through localstripe before the worker starts, so its first mirror sync
# (seconds after it starts) already has PaymentIntents and mismatches to show.
STRIPE_WARM_UP = 12
# The demo mirrors every minute (production: every 5).
DEMO_SYNC_MINUTES = "1"
# The worker's first mirror sync comes within this many seconds of its start (it waits 5 s).
FIRST_SYNC_WITHIN_S = 30
# Live checkouts per minute through localstripe.
DEMO_STRIPE_RATE = "2"


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    pump: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        # Own session: Ctrl-C reaches only the launcher, which then stops children in order.
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     bufsize=1, start_new_session=True, preexec_fn=_die_with_parent)
        self.pump = threading.Thread(target=self._relay, daemon=True, name=f"relay-{self.name}")
        self.pump.start()
        say(f"started {self.name} (pid {self.proc.pid})")

    def _relay(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            print(f"[{self.name}] {line.rstrip()}", flush=True)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)


def say(text: str) -> None:
    print(f"[paywatch] {text}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PAYWATCH_PORT", "8501")),
                        help="dashboard port (default 8501, env PAYWATCH_PORT)")
    parser.add_argument("--no-worker", action="store_true", help="do not start the alert worker")
    parser.add_argument("--no-traffic", action="store_true",
                        help="do not generate live demo traffic (nor live Stripe payments)")
    parser.add_argument("--no-stripe", action="store_true",
                        help="do not start the embedded Stripe (localstripe) when STRIPE_API_KEY is unset")
    parser.add_argument("--seed-days", type=int, default=None, metavar="N",
                        help="days of demo history to seed into an empty database (default: the demo's 90)")
    parser.add_argument("--seed-per-day", type=float, default=None, metavar="N",
                        help="average payments a day in the seeded history (default: the demo's 300)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"paywatch: {exc}", file=sys.stderr)
        return 2
    if port_is_open(args.port):
        print(f"paywatch: port {args.port} is already in use (another 'make run'?); "
              f"stop it or choose another with PAYWATCH_PORT=8502 make run", file=sys.stderr)
        return 2

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Links in alert messages and reports point at this dashboard unless configured otherwise.
    if settings.dashboard_url == type(settings).model_fields["dashboard_url"].default:
        env["PAYWATCH_DASHBOARD_URL"] = f"http://127.0.0.1:{args.port}"
    children: list[Child] = []
    database: EmbeddedMongo | None = None
    local_stripe: LocalStripe | None = None
    health = None
    py = sys.executable
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        if settings.embedded:
            database = EmbeddedMongo(settings.home)
            say(f"starting the embedded database (files in {settings.home}/) ...")
            database.ensure()
            say(f"embedded database on {database.uri}" + (f" (pid {database.proc.pid})" if database.owned
                                                           else " (already running)"))
            say("seeding demo data when the database is empty ...")
            seed = [py, "-m", "demo", "seed"]
            if args.seed_days is not None:
                seed += ["--days", str(args.seed_days)]
            if args.seed_per_day is not None:
                seed += ["--per-day", f"{args.seed_per_day:g}"]
            seeded = subprocess.run(seed, cwd=ROOT, env=env)
            if seeded.returncode != 0:
                say("demo seeding failed; see the line above")
                return 1
            if not settings.health_url:
                from demo.platform_api import PlatformApi

                health = PlatformApi().start()
                env["PAYWATCH_HEALTH_URL"] = health.url
                say(f"stand-in platform health endpoint on {health.url}")
            embedded_stripe = settings.stripe_api_key is None and not args.no_stripe
            if not args.no_traffic:
                # With the embedded Stripe, live payments go through it (the "stripe" child below) as a
                # platform's do; this one then only injects the incidents and finishes the history's
                # in-flight payments, so reconciliation is not flooded with payments Stripe never saw.
                rate = ["--rate", "0"] if embedded_stripe else []
                children.append(Child("traffic", [py, "-m", "demo", "run", *rate]))
            if embedded_stripe:
                local_stripe = LocalStripe(settings.home)
                base = local_stripe.ensure()
                env.update(STRIPE_API_KEY=local_stripe.api_key, STRIPE_API_BASE=base)
                env.setdefault("PAYWATCH_STRIPE_SYNC_MINUTES", DEMO_SYNC_MINUTES)
                say(f"embedded Stripe (localstripe) on {base}" + (f" (pid {local_stripe.proc.pid})"
                                                                  if local_stripe.proc else " (already running)"))
                warm_up_began = time.monotonic()
                warm = subprocess.run([py, "-m", "demo.stripe_platform", "--warm-up", str(STRIPE_WARM_UP)],
                                      cwd=ROOT, env=env)
                if warm.returncode != 0:
                    say("the first Stripe checkouts failed; see the lines above")
                    return 1
                # The seeded history never went through this Stripe: the mirror's first sync (a few
                # seconds after the worker starts) looks back to about when the warm-up began, so
                # reconciliation covers the payments made through Stripe and not the history.
                look_back_s = time.monotonic() - warm_up_began + FIRST_SYNC_WITHIN_S
                env.setdefault("PAYWATCH_STRIPE_BACKFILL_DAYS", f"{look_back_s / 86400:.6f}")
                if not args.no_traffic:
                    children.append(Child("stripe", [py, "-m", "demo.stripe_platform", "--rate", DEMO_STRIPE_RATE]))
        else:
            say("using the configured MongoDB (MONGODB_URI); no demo data is written")

        auth = _auth_configured()
        address = "0.0.0.0" if auth else "127.0.0.1"
        # Build the rollups (the figures' buckets) before the pages ask for them; later runs only catch up.
        say("bringing the rollups up to date (built once, with progress) ...")
        if subprocess.run([py, "-m", "metrics", "rollups", "refresh"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL).returncode != 0:
            say("the rollups could not be built; see the line above (pages read the raw documents meanwhile)")
        children.append(Child("dashboard", [
            py, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
            "--server.port", str(args.port), "--server.address", address, "--server.headless", "true",
        ]))
        if not args.no_worker:
            children.append(Child("worker", [py, "-m", "alerts", "run"]))

        for child in children:
            child.start(env)
        say(f"dashboard: http://127.0.0.1:{args.port}" + ("" if auth else "  (bound to 127.0.0.1 only: no login configured)"))
        say("alerts without Slack configured are printed here as [worker] lines and shown on the Alerts page")
        say("press Ctrl-C to stop everything this command started")

        while not stopping.wait(0.5):
            for child in children:
                if child.proc is not None and child.proc.poll() is not None:
                    say(f"{child.name} exited with code {child.proc.returncode}; stopping the rest")
                    return 1
        return 0
    except EmbeddedServerError as exc:
        print(f"paywatch: {exc}", file=sys.stderr)
        return 1
    finally:
        say("stopping ...")
        for child in reversed(children):
            child.stop()
        if local_stripe is not None:
            local_stripe.stop()  # only if this command started it
        if health is not None:
            health.stop()
        if database is not None:
            database.stop()
        say("stopped")


def _auth_configured() -> bool:
    import tomllib

    secrets = ROOT / ".streamlit" / "secrets.toml"
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        return "auth" in tomllib.loads(secrets.read_text())
    return False


if __name__ == "__main__":
    sys.exit(main())
