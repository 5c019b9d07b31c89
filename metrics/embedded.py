"""The embedded default: a local MongoDB-wire server when none is configured.

SecantusDB is started through its command line (``secantusd-py``) as a child
process on a free loopback port, with its files under ``PAYWATCH_HOME``
(``.paywatch/`` by default, kept across restarts).  We never import it: the
rest of the code reaches it through pymongo, exactly as it reaches Atlas.

A port file (``.paywatch/mongo.json``) lets a second command find the server
that ``make run`` started instead of starting another on the same files; a
lock file makes the find-or-start step safe when two commands race.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

log = logging.getLogger(__name__)

SERVER_COMMAND = "secantusd-py"
START_TIMEOUT_S = 60.0
# The oplog that the rollups' change streams resume from, as mongod keeps it: a no-op entry every
# 10 s so a quiet stream's resume point moves on, a day of history, and room for a rollup build's
# own writes (one document per enrollment and per bucket) without pushing the resume points out.
OPLOG_FLAGS = ("--noop-heartbeat-seconds", "10", "--oplog-retention-seconds", "86400",
               "--oplog-max-entries", "2000000")


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be found or started."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_executable(name: str) -> str:
    """The console script installed next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise EmbeddedServerError(f"{name} is not installed; run 'make run' (it installs requirements.txt)")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to stop the child when its parent dies, so no server is orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop exactly this child: SIGTERM, then SIGKILL if it does not go."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def wait_for_port(port: int, proc: subprocess.Popen | None, log_path: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-600:] if log_path and log_path.exists() else ""
            raise EmbeddedServerError(f"server exited with code {proc.returncode}: {tail.strip()}")
        if port_is_open(port):
            return
        time.sleep(0.1)
    raise EmbeddedServerError(f"server did not open port {port} within {timeout:.0f} s")


@dataclass
class ChildServer:
    """A loopback server run as a child process, found again through a port file.

    ``ensure()`` reuses the server a port file in ``home`` names (another
    command started it) or starts one on a free port; a lock file makes that
    safe when two commands race.  ``stop()`` stops it only if this object
    started it.  Subclasses say what to run (:meth:`command`), what their
    files are called (``stem``) and how the server is addressed.
    """

    home: Path
    memory: bool = False  # nothing kept on disk and no port file (tests)
    proc: subprocess.Popen | None = None
    port: int | None = None

    stem: ClassVar[str]  # <stem>.json (port file), <stem>.lock, <stem>.log
    label: ClassVar[str]  # for messages: "the embedded database"
    error: ClassVar[type[EmbeddedServerError]] = EmbeddedServerError
    start_timeout_s: ClassVar[float] = START_TIMEOUT_S

    @property
    def port_file(self) -> Path:
        return self.home / f"{self.stem}.json"

    @property
    def owned(self) -> bool:
        return self.proc is not None

    @property
    def address(self) -> str:
        raise NotImplementedError

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def child_env(self) -> dict[str, str] | None:
        return None  # the parent's environment

    def ensure(self) -> str:
        """Reuse a running server for these files, or start one; return its address."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / f"{self.stem}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = None if self.memory else self._running()
            if running:
                self.port = running
                log.info("using %s already running on port %s", self.label, running)
            else:
                self._start()
        return self.address

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
        log_path = self.home / (f"{self.stem}-test.log" if self.memory else f"{self.stem}.log")
        last_error: Exception | None = None
        for _ in range(3):  # a free port can be taken between our probe and the bind
            port = free_port()
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(self.command(port), stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, cwd=self.home,
                                        env=self.child_env())
            try:
                wait_for_port(port, proc, log_path, self.start_timeout_s)
            except EmbeddedServerError as exc:
                stop_process(proc)
                last_error = exc
                continue
            self.proc, self.port = proc, port
            if not self.memory:
                self.port_file.write_text(json.dumps({"pid": proc.pid, "port": port, "owner": os.getpid()}))
            atexit.register(self.stop)
            log.info("started %s (pid %s) on 127.0.0.1:%s", self.label, proc.pid, port)
            return
        raise self.error(f"could not start {self.label}: {last_error}")

    def stop(self) -> None:
        """Stop the server if this object started it; leave anyone else's alone."""
        if self.proc is None:
            return
        stop_process(self.proc)
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(self.port_file.read_text()).get("pid") == self.proc.pid:
                self.port_file.unlink()
        self.proc = None


@dataclass
class EmbeddedMongo(ChildServer):
    """Find or start the embedded database (SecantusDB) whose files live in ``home``."""

    stem: ClassVar[str] = "mongo"
    label: ClassVar[str] = "the embedded database"
    test_commands: bool = False  # configureFailPoint, for the fault-injection tests

    @property
    def storage_dir(self) -> Path:
        return self.home / "db"

    @property
    def uri(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("embedded server not started")
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def address(self) -> str:
        return self.uri

    def command(self, port: int) -> list[str]:
        storage = ":memory:" if self.memory else str(self.storage_dir.resolve())
        return [find_executable(SERVER_COMMAND), "--host", "127.0.0.1", "--port", str(port),
                "--storage-path", storage, "--log-level", "WARNING", *OPLOG_FLAGS,
                *(["--enable-test-commands"] if self.test_commands else [])]
