"""The deployment files, checked offline: hadolint, kubernetes-validate --strict, the compose spec's schema,
and what the issue asks of each (probes, replicas, security context, secrets, health paths)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alerts import health
from paywatch import cli

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
MANIFESTS = sorted(K8S.glob("*.yaml")) + [K8S / "secret.yaml.example"]


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert found, f"{name} is not installed (requirements.txt pins it)"
    return str(found)


def resources() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str, name: str) -> dict:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


# -- the Dockerfile ----------------------------------------------------------------------

def test_hadolint_finds_nothing_in_the_dockerfile():
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_does_flag_a_dockerfile_that_breaks_its_rules(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install streamlit\n")
    result = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3013" in result.stdout


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = dockerfile()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    stages = re.findall(r"^FROM \$\{BASE\}(?: AS (\w+))?$", text, re.M)
    assert stages == ["wheels", ""]
    (user,) = re.findall(r"^USER (\S+)$", text, re.M)
    assert user == "${PAYWATCH_UID}" and re.search(r"^ARG PAYWATCH_UID=10001$", text, re.M)
    assert re.search(r'^HEALTHCHECK .* CMD \["paywatch", "healthcheck"\]$', text, re.M)
    assert re.search(r'^ENTRYPOINT \["paywatch"\]$', text, re.M) and re.search(r'^CMD \["dashboard"\]$', text, re.M)
    # The runtime stage installs from the first stage's wheelhouse only.
    assert "--mount=type=bind,from=wheels,source=/wheels" in text and "--no-index" in text


def test_the_image_installs_the_version_pyproject_builds():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.findall(r"paywatch==([\w.]+)", dockerfile()) == [version]
    for manifest in ("dashboard.yaml", "worker.yaml"):
        assert f"paywatch:{version}" in (K8S / manifest).read_text()


def test_no_secret_reaches_an_image_layer():
    text = dockerfile()
    for secret in ("MONGODB_URI", "DATABASE_URL", "STRIPE_API_KEY", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "secrets.toml"):
        assert secret not in text.split("# Secrets")[1].split("\n", 1)[1], secret
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*" and ".streamlit/secrets.toml" in ignore and "!.streamlit/config.toml" in ignore
    assert not any(line.startswith("!") and ("secrets" in line or ".paywatch" in line or "paywatch.toml" == line[1:])
                   for line in ignore)


def test_the_dockerfile_copies_every_package_the_wheel_holds():
    text = dockerfile()
    include = re.findall(r'"(\w+)\*"', (ROOT / "pyproject.toml").read_text().split("include = [")[1].split("]")[0])
    for package in include:
        assert f"COPY {package}/ {package}/" in text, package
        assert f"!{package}/" in (ROOT / ".dockerignore").read_text(), package


# -- Kubernetes --------------------------------------------------------------------------

def test_kubernetes_validate_strict_accepts_every_manifest():
    result = subprocess.run([tool("kubernetes-validate"), "--strict", *map(str, MANIFESTS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(resources())


def test_kubernetes_validate_strict_rejects_an_unknown_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    worker = of_kind("Deployment", "paywatch-worker")
    worker["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    bad.write_text(yaml.safe_dump(worker))
    result = subprocess.run([tool("kubernetes-validate"), "--strict", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "livenessProbes" in result.stdout + result.stderr


def containers() -> list[tuple[dict, dict]]:
    return [(d, c) for d in resources() if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]


def test_every_container_is_non_root_read_only_without_privilege_escalation_and_has_resources():
    assert len(containers()) == 2
    for deployment, container in containers():
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        sc = container["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts and "/etc/paywatch" in mounts  # writable scratch; paywatch.toml
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PAYWATCH_CONFIG"] == "/etc/paywatch/paywatch.toml"
        assert container["envFrom"] == [{"secretRef": {"name": "paywatch"}}]


def test_the_dashboard_probes_streamlit_health_and_has_a_service():
    deployment = of_kind("Deployment", "paywatch-dashboard")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["dashboard"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/_stcore/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": cli.DEFAULT_DASHBOARD_PORT}]
    service = of_kind("Service", "paywatch-dashboard")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/app/.streamlit/secrets.toml"]["subPath"] == "secrets.toml"  # the [auth] login


def test_the_worker_runs_two_replicas_with_liveness_on_healthz_and_readiness_on_readyz():
    deployment = of_kind("Deployment", "paywatch-worker")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["worker"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 9464}]
    assert "ENV PATH" in dockerfile() and "PAYWATCH_WORKER_PORT=9464" in dockerfile()
    # A readiness check pings two databases, each allowed the driver's 5 s server selection.
    assert container["readinessProbe"]["timeoutSeconds"] > 10
    assert "lease" in (K8S / "worker.yaml").read_text().split("apiVersion")[0]  # says why two replicas are safe


def test_the_secret_template_names_the_three_secrets_and_the_configmap_is_a_valid_paywatch_toml(tmp_path, monkeypatch):
    secret = of_kind("Secret", "paywatch")
    assert {"MONGODB_URI", "STRIPE_API_KEY", "SLACK_BOT_TOKEN"} <= set(secret["stringData"])
    # The platform's reads go to a secondary through the setting; in the URI it would move Paywatch's state reads too.
    assert "readPreference" not in secret["stringData"]["MONGODB_URI"]
    for _, container in containers():
        assert {"name": "PAYWATCH_READ_PREFERENCE", "value": "secondaryPreferred"} in container["env"]
    config = tmp_path / "paywatch.toml"
    config.write_text(of_kind("ConfigMap", "paywatch-config")["data"]["paywatch.toml"])
    monkeypatch.setenv("PAYWATCH_CONFIG", str(config))
    from metrics.settings import load_settings
    from reports.job import load_config as reports_config

    settings = load_settings()
    assert reports_config(settings).weekday == "mon"


# -- compose -----------------------------------------------------------------------------

def test_check_jsonschema_accepts_the_compose_file():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             str(ROOT / "deploy" / "compose.yaml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_jsonschema_rejects_a_compose_file_with_a_typo(tmp_path):
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    compose["services"]["worker"]["enviroment"] = compose["services"]["worker"].pop("environment")
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(compose))
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_compose_runs_mongodb_as_a_replica_set_initialised_before_paywatch_starts():
    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    assert "--replSet" in services["mongo"]["command"]
    assert "rs.initiate" in " ".join(services["mongo-init"]["command"])
    for name, role in (("dashboard", ["dashboard"]), ("worker", ["worker"])):
        assert services[name]["command"] == role
        assert services[name]["depends_on"] == {"mongo-init": {"condition": "service_completed_successfully"}}
        assert services[name]["read_only"] is True
    assert services["demo"]["profiles"] == ["demo"]
    # Secrets are passed through by name from the shell, never written in the file.
    assert {"STRIPE_API_KEY", "SLACK_BOT_TOKEN"} <= set(services["worker"]["environment"])


# -- Railway -----------------------------------------------------------------------------

def test_railway_has_a_dashboard_and_a_worker_service_with_start_commands_and_health_paths():
    dashboard = json.loads((ROOT / "railway.json").read_text())["deploy"]
    worker = json.loads((ROOT / "deploy" / "railway.worker.json").read_text())["deploy"]
    assert dashboard["startCommand"] == "paywatch dashboard" and dashboard["healthcheckPath"] == "/_stcore/health"
    assert worker["startCommand"] == "paywatch worker" and worker["healthcheckPath"] == "/healthz"
    for start in (dashboard["startCommand"], worker["startCommand"]):
        assert start.split()[1] in cli.COMMANDS


def test_the_guide_database_url_is_accepted_as_is(monkeypatch):
    from metrics.settings import load_settings

    monkeypatch.setenv("DATABASE_URL", "mongodb://paywatch-ro:secret@db.example.com:27017/specialistly")
    settings = load_settings()
    assert settings.source_db_name == "specialistly" and not settings.embedded


# -- docs --------------------------------------------------------------------------------

def deploy_doc() -> str:
    return (ROOT / "docs" / "deploy.md").read_text()


def test_docs_deploy_lists_every_metric_the_worker_serves():
    names = [g.name for g in health.GAUGES] + [name for name, _, _ in health.OWN]
    missing = [name for name in names if f"`{name}`" not in deploy_doc()]
    assert not missing


@pytest.mark.parametrize("needed", ["make image-test", "PAYWATCH_READ_PREFERENCE=secondaryPreferred", "readPreference", "changeStream",
                                    "chat:write", "files:write", "kubectl apply", "railway", "PAYWATCH_WORKER_PORT",
                                    "DATABASE_URL", "rotat", "two workers", "PAYWATCH_DB"])
def test_docs_deploy_covers(needed):
    assert needed.lower() in deploy_doc().lower()


def test_docs_deploy_stripe_permissions_are_the_resources_the_mirror_reads():
    from metrics.stripe import store

    text = deploy_doc()
    for resource in store.COLLECTIONS:
        assert f"`{resource}`" in text, resource


# The bot token scope each Slack Web API call of the code needs (a public channel); None: no scope.
SCOPE_OF_CALL = {"chat_postMessage": "chat:write", "chat_update": "chat:write",
                 "conversations_history": "channels:history", "conversations_replies": "channels:history",
                 "files_upload_v2": "files:write", "auth_test": None}


def test_the_slack_app_manifest_asks_exactly_the_scopes_the_code_uses():
    blocks = re.findall(r"```yaml\n(.*?)```", deploy_doc(), re.S)
    (manifest,) = [yaml.safe_load(b) for b in blocks if "oauth_config" in b]
    assert manifest["display_information"]["name"] == "Paywatch"
    code = "".join(p.read_text() for folder in ("notify", "alerts", "reports") for p in (ROOT / folder).rglob("*.py"))
    calls = set(re.findall(r"client\.(\w+)\(", code))
    assert calls <= set(SCOPE_OF_CALL), f"a Slack call without its scope here and in docs/deploy.md: {calls - set(SCOPE_OF_CALL)}"
    needed = {SCOPE_OF_CALL[c] for c in calls} - {None}
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed
