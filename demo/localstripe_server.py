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
import logging
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metrics.embedded import ChildServer, EmbeddedServerError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
SAVE_EVERY_S = 2.0
# Any ``sk_test_`` key opens localstripe; this one says where it comes from.
DEMO_API_KEY = "sk_test_paywatch_localstripe"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class LocalStripeError(EmbeddedServerError):
    """localstripe could not be found or started."""


@dataclass
class LocalStripe(ChildServer):
    """Find or start the localstripe whose store lives in ``home``."""

    stem: ClassVar[str] = "localstripe"
    label: ClassVar[str] = "localstripe"
    error: ClassVar[type[EmbeddedServerError]] = LocalStripeError
    start_timeout_s: ClassVar[float] = START_TIMEOUT_S

    @property
    def store_file(self) -> Path:
        return self.home / "localstripe.pickle"

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LocalStripeError("localstripe not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return self.base_url

    @property
    def api_key(self) -> str:
        return DEMO_API_KEY

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "demo.localstripe_server", "--port", str(port)]
        if not self.memory:
            cmd += ["--store", str(self.store_file.resolve())]
        return cmd

    def child_env(self) -> dict[str, str]:
        # The child runs from home/, so it finds this project through PYTHONPATH.
        return {**os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}


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
