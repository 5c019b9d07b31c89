"""``make image-test``: build the container image and run both of its roles against a real database.

1. Podman, Buildah, runc and debootstrap (Debian's packages; installed when
   missing and running as root).  runc is the runtime (crun fails on some
   hosts' cgroups), and a ``containers.conf`` given with ``CONTAINERS_CONF``
   sets the ulimits the image's processes need.
2. The base image: ``PAYWATCH_IMAGE_BASE`` when set (e.g. ``python:3.11-slim``
   on a machine that reaches a registry); otherwise one made here with
   ``debootstrap --variant=minbase`` (Debian bookworm with its Python 3.11)
   and ``podman import``, kept for the next run.
3. A wheelhouse downloaded on the host (``pip download``), so the build runs
   with ``--network=none``.
4. SecantusDB (a MongoDB-wire server) on the host's loopback, seeded with
   demo data; the dashboard and the worker from the image, read-only root
   filesystem, all capabilities dropped, on the host network, bound to
   127.0.0.1.
5. Waits for the dashboard's ``/_stcore/health`` and the worker's
   ``/healthz`` (after a cycle), checks ``/readyz`` and the image's
   HEALTHCHECK in both containers, scrapes ``/metrics`` and checks its
   figures against ``paywatch snapshot --json`` run from the same image.
6. Removes the containers and stops the database it started, pass or fail.
   The images stay, for the next run (``podman rmi localhost/paywatch:image-test``).

Run it as ``make image-test`` (which puts the repository on ``PYTHONPATH``
for the database and the demo seed).  Exit 0 when every check passed, 1 otherwise (the failing check and the
containers' logs are printed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("PAYWATCH_IMAGE_WORK", "/var/tmp/paywatch-image"))
LOCAL_BASE = "localhost/debian-python3:bookworm"
IMAGE = "localhost/paywatch:image-test"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
TOOLS = {"podman": "podman", "buildah": "buildah", "runc": "runc", "debootstrap": "debootstrap"}
CONTAINERS_CONF = """\
# Written by deploy/image_test.py (make image-test).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
WAIT_S = 180
# The figures /metrics and the snapshot must agree on (metric, labels, path in the snapshot JSON).
COMPARED = [
    ("paywatch_payments_revenue_minor_units", {"period": "month", "currency": "usd"}, ("payments", "revenue", "month", "usd")),
    ("paywatch_payments_24h", {"status": "completed"}, ("payments", "24h", "by_status", "completed")),
    ("paywatch_enrollments_pending_payments", {}, ("enrollments", "pending_payments")),
]


class CheckFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"image-test: {text}", flush=True)


def sh(*cmd: str, check: bool = True, capture: bool = False, stdin=None, nice: bool = False, **kw) -> subprocess.CompletedProcess:
    argv = (["nice", "-n", "10"] if nice else []) + list(cmd)
    result = subprocess.run(argv, check=False, text=True, stdin=stdin,
                            capture_output=capture, **kw)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()[-5:] if capture else []
        raise CheckFailed(f"{' '.join(cmd[:3])} ... exited with {result.returncode}" + ("".join(f"\n  {l}" for l in detail)))
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- 1, 2, 3: tools, base image, wheelhouse, build ----------------------------------------

def ensure_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise CheckFailed(f"missing {', '.join(missing)}: sudo apt-get install {' '.join(missing)}")
    say(f"installing Debian's {', '.join(missing)}")
    sh("apt-get", "update", "-qq")
    sh("apt-get", "install", "-y", "-qq", *missing, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    return sh("podman", *args, **kw)


def ensure_base() -> str:
    base = os.environ.get("PAYWATCH_IMAGE_BASE")
    if base:
        return base
    if podman("image", "exists", LOCAL_BASE, check=False).returncode == 0:
        say(f"base image {LOCAL_BASE} (made earlier)")
        return LOCAL_BASE
    rootfs = WORK / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    say(f"making {LOCAL_BASE} with debootstrap (a few minutes, once)")
    sh("debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
       str(rootfs), DEBIAN_MIRROR, nice=True, capture=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    podman("import", "-", LOCAL_BASE, stdin=tar.stdout, capture=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return LOCAL_BASE


def build(base: str) -> None:
    wheelhouse = ROOT / "wheelhouse"
    say("downloading the wheelhouse on the host (pip download)")
    # The package's dependencies at the lock's versions, and the build backend (pyproject's build-system).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    sh(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(wheelhouse),
       "--constraint", str(ROOT / "requirements.txt"), *wanted, capture=True)
    say(f"building {IMAGE} from {base} with no network")
    started = time.monotonic()
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False, capture=True).stdout.strip()
    # --layers=false: Debian 12's Buildah (1.28) reuses a cached COPY layer after the copied files changed,
    # so nothing is cached (and no intermediate image is left behind).
    # --format docker: the OCI image format has no HEALTHCHECK.
    podman("build", "--layers=false", "--format", "docker", "--network=none", "--build-arg", f"BASE={base}",
           "--build-arg", "PIP_NO_INDEX=1", "--tag", IMAGE, str(ROOT), nice=True, capture=True)
    say(f"built in {time.monotonic() - started:.0f} s")
    if previous and previous != podman("image", "inspect", "--format", "{{.Id}}", IMAGE, capture=True).stdout.strip():
        podman("rmi", previous, check=False, capture=True)  # the last run's image, now untagged
    user = podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE, capture=True).stdout.strip()
    if user in ("", "0", "root"):
        raise CheckFailed(f"the image runs as root (User={user!r})")


# -- 4, 5: run and check ------------------------------------------------------------------

def start_database(home: Path):
    from metrics.embedded import EmbeddedMongo

    server = EmbeddedMongo(home, memory=True)
    server.ensure()
    return server


def seed(uri: str, home: Path) -> None:
    say("seeding 8 days of demo data")
    env = {**os.environ, "MONGODB_URI": uri, "PAYWATCH_HOME": str(home)}
    sh(sys.executable, "-m", "demo", "seed", "--days", "8", "--per-day", "60", "--i-know-this-is-not-production",
       cwd=ROOT, env=env, capture=True)


def run_container(name: str, env: dict[str, str], *args: str) -> str:
    flags = ["--detach", "--name", name, "--network", "host", "--read-only", "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges"]
    for key, value in env.items():
        flags += ["--env", f"{key}={value}"]
    return podman("run", *flags, IMAGE, *args, capture=True).stdout.strip()


def wait_http(url: str, container: str, ok=lambda r: r.status_code == 200) -> requests.Response:
    deadline = time.monotonic() + WAIT_S
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=10)
            if ok(response):
                return response
            last = f"{response.status_code} {response.text[:200]}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        state = podman("inspect", "--format", "{{.State.Status}}", container, capture=True, check=False).stdout.strip()
        if state not in ("running", "created"):
            raise CheckFailed(f"{url}: the container is {state or 'gone'}")
        time.sleep(1)
    raise CheckFailed(f"{url} did not answer as expected within {WAIT_S} s (last: {last})")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"{url}/metrics", timeout=60).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def dig(data, path):
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def compare_with_snapshot(worker_url: str, env: dict[str, str]) -> None:
    for attempt in range(1, 4):
        samples = scrape(worker_url)
        snapshot = podman("run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
                          *sum((["--env", f"{k}={v}"] for k, v in env.items()), []),
                          IMAGE, "snapshot", "--json", capture=True).stdout
        snap = json.loads(snapshot)
        problems = []
        for metric, labels, path in COMPARED:
            scraped = samples.get((metric, tuple(sorted(labels.items()))))
            expected = dig(snap, path)
            if scraped is None or expected is None or scraped != float(expected):
                problems.append(f"{metric}{labels} = {scraped} on /metrics, {'.'.join(path)} = {expected} in the snapshot")
            else:
                say(f"{metric}{labels} = {scraped:g} on /metrics and in paywatch snapshot --json")
        if not problems:
            return
        if attempt == 3:
            raise CheckFailed("; ".join(problems))
        say(f"figures moved between the scrape and the snapshot ({problems[0]}); again after the cache expires")
        time.sleep(16)


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    conf = WORK / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    containers: list[str] = []
    database = None
    home = Path(tempfile.mkdtemp(prefix="paywatch-image-test-"))
    try:
        ensure_tools()
        build(ensure_base())
        database = start_database(home)
        uri = database.uri.replace("/?", "/specialistly?", 1)  # the platform database named in the path
        say(f"SecantusDB on {database.uri} (pid {database.proc.pid})")
        seed(uri, home)
        dashboard_port, worker_port = free_port(), free_port()
        env = {"MONGODB_URI": uri, "PAYWATCH_PORT": str(dashboard_port), "PAYWATCH_ADDRESS": "127.0.0.1",
               "PAYWATCH_WORKER_PORT": str(worker_port), "PAYWATCH_WORKER_ADDRESS": "127.0.0.1",
               "PAYWATCH_EVAL_INTERVAL": "5"}
        tag = f"paywatch-image-test-{os.getpid()}"
        containers.append(run_container(f"{tag}-dashboard", env, "dashboard"))
        containers.append(run_container(f"{tag}-worker", env, "worker"))
        dashboard_url, worker_url = f"http://127.0.0.1:{dashboard_port}", f"http://127.0.0.1:{worker_port}"
        wait_http(f"{dashboard_url}/_stcore/health", containers[0])
        say(f"dashboard: {dashboard_url}/_stcore/health answers 200")
        body = wait_http(f"{worker_url}/healthz", containers[1],
                         ok=lambda r: r.status_code == 200 and r.json().get("last_cycle_age_s") is not None).json()
        say(f"worker: /healthz answers 200 after a cycle ({body})")
        ready = requests.get(f"{worker_url}/readyz", timeout=30)
        if ready.status_code != 200:
            raise CheckFailed(f"/readyz: {ready.status_code} {ready.text}")
        say(f"worker: /readyz answers 200 ({ready.json()['databases']})")
        for container, role in zip(containers, ("dashboard", "worker")):
            check = podman("healthcheck", "run", container, check=False, capture=True)
            if check.returncode != 0:
                raise CheckFailed(f"the image's HEALTHCHECK fails in the {role} container: {check.stdout}{check.stderr}")
            uid = podman("exec", container, "id", "-u", capture=True).stdout.strip()
            if uid == "0":
                raise CheckFailed(f"the {role} container runs as root")
            say(f"{role}: HEALTHCHECK passes; runs as uid {uid} on a read-only root filesystem")
        compare_with_snapshot(worker_url, env)
        say("passed")
        return 0
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        for container in containers:
            logs = podman("logs", "--tail", "40", container, check=False, capture=True)
            print(f"--- last lines of {container[:12]}:\n{logs.stdout}{logs.stderr}", flush=True)
        return 1
    finally:
        for container in containers:
            podman("rm", "--force", "--time", "10", container, check=False, capture=True)
        if containers:
            say(f"removed {len(containers)} containers")
        if database is not None:
            database.stop()
            say("stopped SecantusDB")
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
