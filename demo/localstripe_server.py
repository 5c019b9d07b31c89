"""The embedded Stripe: localstripe as a child process on a free loopback port.

With ``STRIPE_API_KEY`` unset, ``make run`` starts localstripe (PyPI, a
stateful fake Stripe server) the way :mod:`metrics.embedded` starts the
database: a child process on 127.0.0.1, a port file
(``.paywatch/localstripe.json``) so a second command finds it instead of
starting another, and stopped when its parent goes.

The child runs localstripe's own aiohttp app with three adjustments, each
because stock localstripe would get in the way of the demo, not to change how
it answers:

* it listens on 127.0.0.1 only (stock localstripe binds every interface);
* its store is kept in ``.paywatch/localstripe.pickle`` and written at most
  every two seconds (stock localstripe pickles the whole store to the shared
  ``/tmp/localstripe.pickle`` on every write, which grows quadratically and
  lets two instances overwrite each other's data);
* the PaymentIntent, Charge and Refund lists accept ``created`` filters
  (``gt``/``gte``/``lt``/``lte``) as Stripe's do, so the mirror's incremental
  sync works here as it does against Stripe (stock localstripe rejects the
  filter on PaymentIntents and Refunds, and takes only ``gt`` on Charges).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import logging
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from metrics.embedded import (
    EmbeddedServerError,
    _die_with_parent,
    free_port,
    pid_alive,
    port_is_open,
    stop_process,
    wait_for_port,
)

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
SAVE_EVERY_S = 2.0
# Any ``sk_test_`` key opens localstripe; this one says where it comes from.
DEMO_API_KEY = "sk_test_paywatch_localstripe"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class LocalStripeError(EmbeddedServerError):
    """localstripe could not be found or started."""


@dataclass
class LocalStripe:
    """Find or start the localstripe whose store lives in ``home``."""

    home: Path
    memory: bool = False  # nothing kept on disk (tests)
    proc: subprocess.Popen | None = None
    port: int | None = None

    @property
    def port_file(self) -> Path:
        return self.home / "localstripe.json"

    @property
    def store_file(self) -> Path:
        return self.home / "localstripe.pickle"

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LocalStripeError("localstripe not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        return DEMO_API_KEY

    def ensure(self) -> str:
        """Reuse a running localstripe for this home, or start one; return its base URL."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "localstripe.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = None if self.memory else self._running()
            if running:
                self.port = running
                log.info("using the localstripe already running on port %s", running)
            else:
                self._start()
        return self.base_url

    def _running(self) -> int | None:
        try:
            info = json.loads(self.port_file.read_text())
            pid, port = int(info["pid"]), int(info["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if pid_alive(pid) and port_is_open(port):
            return port
        return None

    def _start(self) -> None:
        log_path = self.home / ("localstripe-test.log" if self.memory else "localstripe.log")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        last_error: Exception | None = None
        for _ in range(3):  # a free port can be taken between our probe and the bind
            port = free_port()
            cmd = [sys.executable, "-m", "demo.localstripe_server", "--port", str(port)]
            if not self.memory:
                cmd += ["--store", str(self.store_file.resolve())]
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent, cwd=self.home, env=env)
            try:
                wait_for_port(port, proc, log_path, START_TIMEOUT_S)
            except EmbeddedServerError as exc:
                stop_process(proc)
                last_error = exc
                continue
            self.proc, self.port = proc, port
            if not self.memory:
                self.port_file.write_text(json.dumps({"pid": proc.pid, "port": port, "owner": os.getpid()}))
            atexit.register(self.stop)
            log.info("started localstripe (pid %s) on 127.0.0.1:%s", proc.pid, port)
            return
        raise LocalStripeError(f"could not start localstripe: {last_error}")

    def stop(self) -> None:
        """Stop localstripe if this object started it; leave anyone else's alone."""
        if self.proc is None:
            return
        stop_process(self.proc)
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(self.port_file.read_text()).get("pid") == self.proc.pid:
                self.port_file.unlink()
        self.proc = None


# --- The child process ----------------------------------------------------------

_CREATED_OPS = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}


def _created_test(created):
    """A predicate on ``obj.created`` for Stripe's ``created`` list parameter."""
    from localstripe.errors import UserError

    try:
        if isinstance(created, dict):
            bounds = [(_CREATED_OPS[op], int(value)) for op, value in created.items()]
        else:
            bounds = [(int.__eq__, int(created))]
    except (KeyError, TypeError, ValueError):
        raise UserError(400, "Invalid created filter") from None
    return lambda obj: all(op(int(obj.created), value) for op, value in bounds)


def _accept_created_filter(cls) -> None:
    original = cls._api_list_all.__func__

    def list_all(klass, url, created=None, **kwargs):
        li = original(klass, url, **kwargs)
        if created is not None:
            keep = _created_test(created)
            li._list = [obj for obj in li._list if keep(obj)]
        return li

    cls._api_list_all = classmethod(list_all)


def _persist_to(store_file: Path | None):
    """Keep the store in ``store_file`` (or nowhere), written at most every SAVE_EVERY_S."""
    from localstripe import resources

    dirty = {"value": False}

    def mark_dirty(self):
        dirty["value"] = True

    def save() -> None:
        if store_file is None or not dirty["value"]:
            return
        dirty["value"] = False
        tmp = store_file.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(dict(resources.store), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, store_file)

    def load(self) -> None:
        if store_file is None or not store_file.exists():
            return
        with open(store_file, "rb") as fh:
            self.clear()
            dict.update(self, pickle.load(fh))

    resources.Store.dump_to_disk = mark_dirty
    resources.Store.try_load_from_disk = load
    return save


def serve(port: int, store_file: Path | None) -> None:
    """Run localstripe's app on 127.0.0.1:``port`` (in the child process)."""
    import asyncio

    from aiohttp import web
    from localstripe import resources, server

    save = _persist_to(store_file)
    for cls in (resources.PaymentIntent, resources.Charge, resources.Refund):
        _accept_created_filter(cls)
    resources.store.try_load_from_disk()

    async def saver(app):
        async def loop():
            while True:
                await asyncio.sleep(SAVE_EVERY_S)
                save()

        task = asyncio.ensure_future(loop())
        yield
        task.cancel()
        save()

    server.app.cleanup_ctx.append(saver)
    # A short grace on SIGTERM: clients keep connections alive, and aiohttp would wait a minute for them.
    web.run_app(server.app, host="127.0.0.1", port=port, access_log=None, print=None, shutdown_timeout=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.localstripe_server",
                                     description="Run localstripe on loopback for the Paywatch demo.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, default=None, help="keep the store in this file (default: memory only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    serve(args.port, args.store)


if __name__ == "__main__":
    main()
