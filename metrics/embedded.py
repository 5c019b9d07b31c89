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

log = logging.getLogger(__name__)

SERVER_COMMAND = "secantusd-py"
START_TIMEOUT_S = 60.0


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
class EmbeddedMongo:
    """Find or start the embedded server whose files live in ``home``."""

    home: Path
    memory: bool = False  # a throw-away store (tests)
    proc: subprocess.Popen | None = None
    port: int | None = None

    @property
    def storage_dir(self) -> Path:
        return self.home / "db"

    @property
    def port_file(self) -> Path:
        return self.home / "mongo.json"

    @property
    def uri(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("embedded server not started")
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def owned(self) -> bool:
        return self.proc is not None

    def ensure(self) -> str:
        """Reuse a running server for these files, or start one; return its URI."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "mongo.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = None if self.memory else self._running()
            if running:
                self.port = running
                log.info("using the embedded database already running on port %s", running)
            else:
                self._start()
        return self.uri

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
        storage = ":memory:" if self.memory else str(self.storage_dir.resolve())
        log_path = self.home / ("mongo-test.log" if self.memory else "mongo.log")
        last_error: Exception | None = None
        for _ in range(3):  # a free port can be taken between our probe and the bind
            port = free_port()
            cmd = [find_executable(SERVER_COMMAND), "--host", "127.0.0.1", "--port", str(port),
                   "--storage-path", storage, "--log-level", "WARNING"]
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent, cwd=self.home)
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
            log.info("started the embedded database (pid %s) on 127.0.0.1:%s", proc.pid, port)
            return
        raise EmbeddedServerError(f"could not start the embedded database: {last_error}")

    def stop(self) -> None:
        """Stop the server if this object started it; leave anyone else's alone."""
        if self.proc is None:
            return
        stop_process(self.proc)
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(self.port_file.read_text()).get("pid") == self.proc.pid:
                self.port_file.unlink()
        self.proc = None
