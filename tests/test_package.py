"""The paywatch package: pyproject.toml against the lock, the wheel's contents, and the ``paywatch`` command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement

from paywatch import cli

ROOT = Path(__file__).resolve().parents[1]
# Every top-level package of the repository except the tests and the benchmarks.
PACKAGES = tuple(sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench")))
AT = "2026-11-26T12:00:00Z"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked() -> dict[str, str]:
    """requirements.txt's pins above the "# Tests" line: {normalised name: version}."""
    runtime = (ROOT / "requirements.txt").read_text().split("# Tests")[0]
    pins = {}
    for line in runtime.splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[req.name.lower().replace("_", "-")] = spec.version
    return pins


def test_every_dependency_is_a_runtime_pin_of_the_lock_and_the_pin_satisfies_it():
    deps = {Requirement(d).name.lower().replace("_", "-"): Requirement(d) for d in pyproject()["project"]["dependencies"]}
    pins = locked()
    assert set(deps) == set(pins), f"only in pyproject: {set(deps) - set(pins)}; only in requirements.txt: {set(pins) - set(deps)}"
    wrong = {name: f"{pins[name]} not in {req.specifier}" for name, req in deps.items() if pins[name] not in req.specifier}
    assert not wrong


def test_the_package_includes_every_top_level_package_of_the_repository():
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(name.rstrip("*") for name in include) == list(PACKAGES)


def test_the_console_script_is_the_cli_main():
    assert pyproject()["project"]["scripts"] == {"paywatch": "paywatch.cli:main"}


def test_the_help_lists_every_subcommand_the_issue_names():
    result = subprocess.run([sys.executable, "-m", "paywatch", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in ("run", "dashboard", "worker", "snapshot", "reconcile", "report", "rollups", "healthcheck"):
        assert f"    {name}" in result.stdout, name


def test_an_unknown_subcommand_is_one_usage_error():
    result = subprocess.run([sys.executable, "-m", "paywatch", "snapshots"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'snapshots'" in result.stderr and "Traceback" not in result.stderr


def test_paywatch_snapshot_is_python_m_metrics_snapshot(run, mongo_uri, db_names, tmp_path, platform_db):
    from fakes.platform import payment
    from datetime import datetime, timezone

    platform_db.payments.insert_many([payment(datetime(2026, 11, 26, 11, tzinfo=timezone.utc), "completed")])
    env = {**os.environ, "MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
           "PAYWATCH_HOME": str(tmp_path / "home")}
    ours = subprocess.run([sys.executable, "-m", "paywatch", "snapshot", "--json", "--at", AT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    theirs = run("snapshot", "--json", "--at", AT)
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    assert json.loads(ours.stdout)["payments"]["24h"]["succeeded"] == 1


def test_the_dashboard_command_repeats_the_streamlit_config_it_relies_on():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    for option, value in cli.DASHBOARD_OPTIONS.items():
        section, key = option.split(".")
        assert str(config[section][key]).lower() == value, option


def test_the_dashboard_port_comes_from_the_flag_then_paywatch_port_then_port(monkeypatch):
    monkeypatch.delenv("PAYWATCH_PORT", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    assert "--server.port=8501" in cli.dashboard_command([])[0]
    monkeypatch.setenv("PORT", "7000")  # Railway's
    assert "--server.port=7000" in cli.dashboard_command([])[0]
    monkeypatch.setenv("PAYWATCH_PORT", "7100")
    assert "--server.port=7100" in cli.dashboard_command([])[0]
    cmd, _ = cli.dashboard_command(["--port", "7200", "--address", "0.0.0.0", "--server.baseUrlPath=pw"])
    assert "--server.port=7200" in cmd and "--server.address=0.0.0.0" in cmd and cmd[-1] == "--server.baseUrlPath=pw"
    assert Path(cmd[4]).is_file() and cmd[4].endswith("dashboard/app.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(url, timeout=5)
            if response.status_code == 200:
                return response
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def test_paywatch_dashboard_serves_streamlit_health_and_the_healthcheck_passes(mongo_uri, db_names, tmp_path):
    port = free_port()
    env = {**os.environ, "MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
           "PAYWATCH_HOME": str(tmp_path / "home"), "PAYWATCH_PORT": str(port),
           "PYTHONPATH": str(ROOT)}  # started from another folder: the clone is found through the path only
    env.pop("PAYWATCH_WORKER_PORT", None)
    log = tmp_path / "dashboard.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "paywatch", "dashboard"], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        assert wait_for(f"http://127.0.0.1:{port}/_stcore/health", proc, log).text == "ok"
        check = subprocess.run([sys.executable, "-m", "paywatch", "healthcheck"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and check.stdout.startswith("dashboard: 200"), check.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    down = subprocess.run([sys.executable, "-m", "paywatch", "healthcheck"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and down.stdout.startswith("unhealthy: neither the worker")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip install .`` installs, built from a copy of the sources (the build writes into its tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--disable-pip-version-check", "--quiet", "--wheel-dir", str(out), str(src)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("paywatch-*.whl")
    return built


def test_the_wheel_holds_every_module_the_templates_and_the_dashboard_pages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sources - names == set()
    assert "reports/templates/report.html.j2" in names and "dashboard/app.py" in names
    assert not any(n.startswith(("tests/", "bench/", "deploy/")) for n in names)


def test_the_installed_command_works_outside_the_repository(wheel, tmp_path, run, mongo_uri, db_names):
    """A new venv with the wheel installed (its dependencies seen through a .pth): ``paywatch`` from any folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "streamlit").is_dir())
    (site_packages / "dependencies.pth").write_text(deps + "\n")
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                                "--disable-pip-version-check", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "MONGODB_URI": mongo_uri, "PAYWATCH_SOURCE_DB": db_names[0], "PAYWATCH_DB": db_names[1],
           "PAYWATCH_HOME": str(tmp_path / "home")}
    env.pop("PYTHONPATH", None)
    snap = subprocess.run([str(venv / "bin" / "paywatch"), "snapshot", "--json", "--at", AT], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert snap.returncode == 0, snap.stderr
    assert json.loads(snap.stdout) == json.loads(run("snapshot", "--json", "--at", AT).stdout)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import metrics, reports.render_html as r; "
                            "print(metrics.__file__); print(r.TEMPLATES.is_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    module_file, templates = where.stdout.split()
    assert Path(module_file).is_relative_to(site_packages) and templates == "True"


@pytest.mark.parametrize("name", sorted(cli.DELEGATES))
def test_each_delegating_subcommand_is_its_module_command(name):
    delegate = cli.DELEGATES[name]
    module = delegate.target.split(":")[0].removesuffix(".__main__")
    ours = subprocess.run([sys.executable, "-m", "paywatch", name, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    theirs = subprocess.run([sys.executable, "-m", module, *delegate.prefix, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout and ours.stdout.startswith("usage: ")
