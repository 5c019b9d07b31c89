"""``paywatch``: every role of Paywatch behind one command.

    paywatch run [...]        everything at once, as ``make run`` (the embedded default when nothing is configured)
    paywatch dashboard [...]  the Streamlit dashboard (health: /_stcore/health)
    paywatch worker           the alert worker (health and metrics on PAYWATCH_WORKER_PORT)
    paywatch snapshot [...]   every metric at one instant      (python -m metrics snapshot)
    paywatch reconcile [...]  Stripe vs the platform           (python -m metrics reconcile)
    paywatch report [...]     the weekly or monthly review     (python -m reports)
    paywatch rollups [...]    the rollup collections           (python -m metrics rollups)
    paywatch healthcheck      the container image's HEALTHCHECK

Each subcommand hands its arguments to the module command named beside it,
so ``paywatch snapshot --json`` and ``python -m metrics snapshot --json`` are
the same program; ``paywatch snapshot --help`` shows that command's help.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import site
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DASHBOARD_PORT = 8501
# Streamlit options the dashboard needs wherever it runs, also when no .streamlit/config.toml is in the
# working directory (an installed package); they repeat that file's values, and a test keeps them equal.
DASHBOARD_OPTIONS = {
    "server.headless": "true",
    "server.fileWatcherType": "none",
    "server.enableXsrfProtection": "true",
    "browser.gatherUsageStats": "false",
    "client.showErrorDetails": "none",
    "client.toolbarMode": "viewer",
}
HEALTHCHECK_TIMEOUT_S = 5


@dataclass(frozen=True)
class Delegate:
    """A subcommand that is another module's command-line ``main(argv)``, with a first argument put in front."""

    help: str
    target: str  # "module:function"
    prefix: tuple[str, ...] = ()

    def __call__(self, argv: list[str]) -> int:
        module_name, _, attr = self.target.partition(":")
        main = getattr(importlib.import_module(module_name), attr)
        return main([*self.prefix, *argv]) or 0


DELEGATES: dict[str, Delegate] = {
    "worker": Delegate("the alert worker: rules, outbox, Stripe mirror, weekly report (python -m alerts run)",
                       "alerts.__main__:main", ("run",)),
    "snapshot": Delegate("every metric at one instant, as a table or --json (python -m metrics snapshot)",
                         "metrics.__main__:main", ("snapshot",)),
    "reconcile": Delegate("Stripe vs the platform's payments: each mismatch with its fix (python -m metrics reconcile)",
                          "metrics.__main__:main", ("reconcile",)),
    "report": Delegate("the weekly or monthly review as HTML, XLSX and CSV (python -m reports)",
                       "reports.__main__:main"),
    "rollups": Delegate("the rollup collections the metrics read (python -m metrics rollups)",
                        "metrics.__main__:main", ("rollups",)),
}


def _package_root(package: str) -> Path:
    """The folder that holds ``package`` (site-packages when installed, the clone otherwise)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"paywatch: the {package} package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def _child_env(root: Path) -> dict[str, str]:
    """The environment for a child Python that must import this copy of Paywatch.

    Installed, it already does; run from a clone, the clone goes first on ``PYTHONPATH`` (never a
    site-packages folder, which would then come before the standard library)."""
    env = dict(os.environ)
    site_dirs = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in site_dirs:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return env


def dashboard_port() -> int:
    """PAYWATCH_PORT, else the hosting platform's PORT (Railway sets it), else 8501."""
    text = os.environ.get("PAYWATCH_PORT") or os.environ.get("PORT") or str(DEFAULT_DASHBOARD_PORT)
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"paywatch: PAYWATCH_PORT / PORT must be a port number, got {text!r}") from None


def dashboard_command(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line (and environment) for ``paywatch dashboard ARGS``."""
    parser = argparse.ArgumentParser(
        prog="paywatch dashboard",
        description="Serve the Streamlit dashboard. Without login configured ([auth] in "
                    ".streamlit/secrets.toml, docs/dashboard.md) it shows data only when served on 127.0.0.1. "
                    "Streamlit answers its health check on /_stcore/health. Other options "
                    "(--server.baseUrlPath ...) go to streamlit run.")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port (default: env PAYWATCH_PORT, else env PORT, else {DEFAULT_DASHBOARD_PORT})")
    parser.add_argument("--address", default=os.environ.get("PAYWATCH_ADDRESS", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1, env PAYWATCH_ADDRESS; "
                             "0.0.0.0 in a container)")
    args, streamlit_args = parser.parse_known_args(argv)
    port = args.port if args.port is not None else dashboard_port()
    root = _package_root("dashboard")
    options = [f"--{name}={value}" for name, value in DASHBOARD_OPTIONS.items()]
    cmd = [sys.executable, "-m", "streamlit", "run", str(root / "dashboard" / "app.py"),
           f"--server.port={port}", f"--server.address={args.address}", *options, *streamlit_args]
    return cmd, _child_env(root)


def cmd_dashboard(argv: list[str]) -> int:
    cmd, env = dashboard_command(argv)
    sys.stdout.flush()
    # Streamlit takes this process's place, so a container's stop signal reaches it directly.
    os.execve(cmd[0], cmd, env)
    return 0  # pragma: no cover - execve does not return


def cmd_run(argv: list[str]) -> int:
    """``make run`` from anywhere: the launcher's children see this folder's state, config and secrets."""
    from demo import launch

    cwd = Path.cwd()
    for name, default in (("PAYWATCH_HOME", ".paywatch"), ("PAYWATCH_CONFIG", "paywatch.toml"),
                          ("PAYWATCH_SECRETS_FILE", ".streamlit/secrets.toml")):
        path = Path(os.environ.get(name, default))
        if not path.is_absolute() and (name == "PAYWATCH_HOME" or (cwd / path).is_file()):
            os.environ[name] = str(cwd / path)
    child_env = _child_env(_package_root("demo"))
    if "PYTHONPATH" in child_env:
        os.environ["PYTHONPATH"] = child_env["PYTHONPATH"]
    return launch.main(argv)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HEALTHCHECK_TIMEOUT_S) as response:  # noqa: S310 - loopback only
            return response.status, response.read(2000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode("utf-8", "replace")


def cmd_healthcheck(argv: list[str]) -> int:
    """One image, two roles: the worker's /healthz when its health server listens, else the dashboard's."""
    parser = argparse.ArgumentParser(
        prog="paywatch healthcheck",
        description="Exit 0 when this container's process is healthy: the worker's /healthz on "
                    "PAYWATCH_WORKER_PORT when something listens there, otherwise the dashboard's "
                    "/_stcore/health on PAYWATCH_PORT, else PORT, else 8501.")
    parser.parse_args(argv)
    host = "127.0.0.1"
    worker_port = os.environ.get("PAYWATCH_WORKER_PORT")
    if worker_port:
        worker_host = os.environ.get("PAYWATCH_WORKER_ADDRESS", host)
        try:
            status, body = _get(f"http://{host if worker_host in ('0.0.0.0', '::') else worker_host}:{worker_port}/healthz")
        except OSError:
            pass  # nothing listens: this container runs the dashboard
        else:
            print(f"worker: {status} {body.strip()}")
            return 0 if status == 200 else 1
    port = dashboard_port()
    try:
        status, body = _get(f"http://{host}:{port}/_stcore/health")
    except OSError as exc:
        print(f"unhealthy: neither the worker (PAYWATCH_WORKER_PORT={worker_port or 'unset'}) nor the dashboard "
              f"(port {port}) answers: {exc}")
        return 1
    print(f"dashboard: {status} {body.strip()}")
    return 0 if status == 200 else 1


COMMANDS = {"run": cmd_run, "dashboard": cmd_dashboard, "healthcheck": cmd_healthcheck, **DELEGATES}
HELP = {
    "run": "everything at once, as 'make run': the embedded default when nothing is configured",
    "dashboard": "the Streamlit dashboard (health check: /_stcore/health)",
    "healthcheck": "the container image's HEALTHCHECK: the worker's /healthz, else the dashboard's health",
    **{name: d.help for name, d in DELEGATES.items()},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paywatch",
        description="Paywatch: payment monitoring and alerting for a platform on Stripe and MongoDB. "
                    "Settings come from the environment, .streamlit/secrets.toml and paywatch.toml "
                    "(docs/configuration.md); deployment: docs/deploy.md.",
        epilog="'paywatch COMMAND --help' shows a command's own options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=HELP[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv)  # prints the help or the usage error, and exits
        return 2
    return COMMANDS[argv[0]](argv[1:])
