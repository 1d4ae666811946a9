"""Checks of the deployment files: Dockerfile, docker-compose, init.sql, Prometheus, k8s.

The external tools (docker-compose, promtool, psql and a reachable Postgres) are
optional on a developer machine: without them the test is skipped. With CI=true
a missing tool fails the test instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"
PG_HOST = os.environ.get("MLOPS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("MLOPS_TEST_PG_PORT", "5432")
PG_SUPERUSER = os.environ.get("MLOPS_TEST_PG_USER", "postgres")

COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "test-superuser-password-0123456789",
    "MLOPS_DB_PASSWORD": "test-db-password-0123456789",
    "MLOPS_JWT_SECRET": "test-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    "MLOPS_BOOTSTRAP_ADMIN_KEY": "test-bootstrap-admin-key-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password-0123456789",
}
COMPOSE_SERVICES = {"api", "postgres", "redis", "mlflow", "prometheus", "grafana"}


# --------------------------------------------------------------------------- helpers


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where every tool must be installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"`{name}` is not installed")
    assert path is not None
    return path


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_manifests() -> list[Path]:
    return sorted(
        p for p in K8S_DIR.iterdir() if p.suffix in {".yaml", ".yml"} and p.stem != "kustomization"
    )


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in k8s_manifests():
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def k8s_doc(kind: str) -> dict[str, Any]:
    found = [d for d in k8s_documents() if d["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind} in k8s/, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- docker-compose


def compose_config(tmp_path: Path, secrets: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = require_tool("docker-compose")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS}
    env.update(secrets)
    # An empty env file: a developer's own .env must not influence the result.
    env_file = tmp_path / "empty.env"
    env_file.write_text("", encoding="utf-8")
    return run(
        [binary, "--env-file", str(env_file), "-f", "docker-compose.yml", "config"],
        env=env,
    )


@pytest.fixture
def compose(tmp_path: Path) -> dict[str, Any]:
    result = compose_config(tmp_path, COMPOSE_SECRETS)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def test_compose_config_is_valid_and_has_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= COMPOSE_SERVICES
    for name in COMPOSE_SERVICES - {"api"}:
        assert "image" in services[name], name
    for name in ("api", "postgres", "redis", "mlflow"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_compose_api_service(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["build"]["context"] == str(ROOT)
    health = " ".join(api["healthcheck"]["test"])
    assert "/health" in health
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    env = api["environment"]
    assert env["MLOPS_ENV"] == "production"
    assert env["MLOPS_JWT_SECRET"] == COMPOSE_SECRETS["MLOPS_JWT_SECRET"]
    assert env["MLOPS_DATABASE_URL"] == (
        f"postgresql+asyncpg://mlops:{COMPOSE_SECRETS['MLOPS_DB_PASSWORD']}@postgres:5432/mlops"
    )
    assert env["MLOPS_REDIS_URL"].startswith("redis://redis:6379/")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert any(p["target"] == 8000 for p in api["ports"])


def test_compose_backing_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(
        "/docker-entrypoint-initdb.d/" in v and Path(v.split(":")[0]).name == "init.sql"
        for v in map(str, postgres["volumes"])
    ), postgres["volumes"]
    assert postgres["environment"]["MLOPS_DB_PASSWORD"] == COMPOSE_SECRETS["MLOPS_DB_PASSWORD"]

    assert services["redis"]["image"].startswith("redis:7")

    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--workers=1" in command
    hosts = re.search(r"--allowed-hosts=(\S+)", command)
    assert hosts is not None
    assert {"mlflow", "mlflow:5000", "localhost:5000"} <= set(hosts.group(1).split(","))
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert any(str(v).endswith(":/mlflow/artifacts:rw") for v in mlflow["volumes"])

    prometheus = services["prometheus"]
    assert any("prometheus.yml:/etc/prometheus/prometheus.yml" in v for v in prometheus["volumes"])

    grafana = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert Path(mounts["/etc/grafana/provisioning"]) == ROOT / "grafana" / "provisioning"
    assert Path(mounts["/var/lib/grafana/dashboards"]) == ROOT / "grafana" / "dashboards"


@pytest.mark.parametrize("missing", ["MLOPS_JWT_SECRET", "MLOPS_DB_PASSWORD", "POSTGRES_PASSWORD"])
def test_compose_refuses_to_run_without_secrets(tmp_path: Path, missing: str) -> None:
    secrets = {k: v for k, v in COMPOSE_SECRETS.items() if k != missing}
    result = compose_config(tmp_path, secrets)
    assert result.returncode != 0
    assert missing in result.stderr


def test_env_example_documents_every_required_variable() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    compose_text = "\n".join(
        line
        for line in (ROOT / "docker-compose.yml").read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    )
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", compose_text))
    assert required == set(COMPOSE_SECRETS)
    for name in required:
        assert re.search(rf"^{name}=CHANGE_ME$", text, re.MULTILINE), name


# --------------------------------------------------------------------------- Kubernetes


def test_k8s_manifests_pass_strict_validation() -> None:
    validator = Path(sys.executable).parent / "kubernetes-validate"
    if not validator.exists():
        unavailable(f"{validator} is not installed")
    manifests = k8s_manifests()
    assert manifests
    result = run([str(validator), "--strict", *map(str, manifests)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_resources_share_namespace_and_labels() -> None:
    kinds = set()
    for doc in k8s_documents():
        kinds.add(doc["kind"])
        metadata = doc["metadata"]
        assert metadata["labels"]["app.kubernetes.io/name"] == "mlops", metadata["name"]
        if doc["kind"] == "Namespace":
            assert metadata["name"] == "mlops"
        else:
            assert metadata["namespace"] == "mlops", metadata["name"]
    expected = {"Namespace", "ConfigMap", "Secret", "Deployment", "Service"}
    assert kinds >= expected | {"HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_k8s_kustomization_lists_the_manifests() -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    assert kustomization["namespace"] == "mlops"
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S_DIR / name).is_file(), name
    expected = {p.name for p in k8s_manifests()} - {"secret.example.yaml"}
    assert listed == expected


def test_k8s_deployment_probes_resources_and_security() -> None:
    deployment = k8s_doc("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"][0]["containerPort"] == 8000

    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"

    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound

    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"

    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in ("/tmp", "/var/lib/mlops"):
        assert "emptyDir" in volumes[mounts[path]], path

    configmap = k8s_doc("ConfigMap")
    assert configmap["data"]["MLOPS_DATA_DIR"] == "/var/lib/mlops"
    assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]

    secret = k8s_doc("Secret")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for key in (
        "MLOPS_JWT_SECRET",
        "MLOPS_DATABASE_URL",
        "MLOPS_REDIS_URL",
        "MLOPS_BOOTSTRAP_ADMIN_KEY",
    ):
        assert refs[key] == {"name": secret["metadata"]["name"], "key": key}
        assert key in secret["stringData"]
        assert key not in configmap["data"]


def test_k8s_selectors_match_the_pods() -> None:
    deployment = k8s_doc("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        k8s_doc("Service")["spec"]["selector"],
        k8s_doc("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    target = k8s_doc("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    service_port = k8s_doc("Service")["spec"]["ports"][0]
    assert service_port["targetPort"] in ("http", 8000)


# --------------------------------------------------------------------------- Prometheus & Grafana


def test_promtool_accepts_prometheus_config() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", "prometheus.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_api() -> None:
    config = load_yaml(ROOT / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_jobs = [
        job
        for job in jobs.values()
        if any("api:8000" in sc["targets"] for sc in job.get("static_configs", []))
    ]
    assert len(api_jobs) == 1
    assert api_jobs[0].get("metrics_path", "/metrics") == "/metrics"
    assert "prometheus" in jobs


def test_grafana_provisioning() -> None:
    datasources = load_yaml(ROOT / "grafana/provisioning/datasources/prometheus.yml")
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = load_yaml(ROOT / "grafana/provisioning/dashboards/dashboards.yml")
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (ROOT / "grafana/dashboards").is_dir()


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2
    assert any("--from=" in rest for keyword, rest in instructions if keyword == "COPY")

    final_stage = instructions[
        max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :
    ]
    users = [rest for keyword, rest in final_stage if keyword == "USER"]
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    if user.startswith("${"):  # resolved through an ARG default
        arg = user.strip("${}")
        defaults = dict(
            rest.split("=", 1) for keyword, rest in final_stage if keyword == "ARG" and "=" in rest
        )
        assert defaults[arg] not in {"root", "0"}

    healthchecks = [rest for keyword, rest in final_stage if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/health" in healthchecks[0]
    assert ("EXPOSE", "8000") in final_stage
    cmd = [rest for keyword, rest in final_stage if keyword == "CMD"]
    assert cmd and re.search(r'"mlops",\s*"serve"', cmd[-1])


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "data", "mlruns", ".env"} <= ignored
    for needed in ("src", "migrations", "pyproject.toml", "requirements.txt", "README.md"):
        assert needed not in ignored


# --------------------------------------------------------------------------- init.sql


def psql_base() -> list[str]:
    psql = require_tool("psql")
    return [psql, "-X", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_SUPERUSER]


def psql_query(sql: str) -> str:
    result = run([*psql_base(), "-d", "postgres", "-Atc", sql], env=pg_env())
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def pg_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_DB_PASSWORD"}
    env.update(extra)
    return env


@pytest.fixture
def postgres_without_mlops() -> Iterator[None]:
    base = psql_base()
    probe = run([*base, "-d", "postgres", "-Atc", "SELECT 1"], env=pg_env())
    if probe.returncode != 0:
        unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: {probe.stderr.strip()}")
    existing = psql_query(
        "SELECT 'database ' || datname FROM pg_database WHERE datname IN ('mlops', 'mlflow') "
        "UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE rolname = 'mlops'"
    )
    if existing:
        # Not ours to drop: leave the server as it is.
        pytest.skip(f"the local Postgres already has {', '.join(existing.splitlines())}")
    try:
        yield
    finally:
        for statement in (
            "DROP DATABASE IF EXISTS mlops WITH (FORCE)",
            "DROP DATABASE IF EXISTS mlflow WITH (FORCE)",
            "DROP ROLE IF EXISTS mlops",
        ):
            run([*base, "-d", "postgres", "-c", statement], env=pg_env())


def apply_init_sql(**env: str) -> subprocess.CompletedProcess[str]:
    return run(
        [*psql_base(), "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-f", "init.sql"],
        env=pg_env(**env),
    )


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_without_mlops")
def test_init_sql_creates_role_and_databases_idempotently() -> None:
    password = f"pw-{uuid.uuid4().hex}"
    for attempt in (1, 2):
        result = apply_init_sql(MLOPS_DB_PASSWORD=password)
        assert result.returncode == 0, f"run {attempt}: {result.stderr}"

    role = psql_query(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolpassword IS NOT NULL "
        "FROM pg_authid WHERE rolname = 'mlops'"
    )
    assert role == "t|f|f|f|t"
    owners = psql_query(
        "SELECT datname || '=' || pg_get_userbyid(datdba) FROM pg_database "
        "WHERE datname IN ('mlops', 'mlflow') ORDER BY datname"
    )
    assert owners.splitlines() == ["mlflow=mlops", "mlops=mlops"]
    assert password not in result.stdout + result.stderr


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_without_mlops")
def test_init_sql_refuses_to_run_without_a_password() -> None:
    result = apply_init_sql()
    assert result.returncode != 0
    assert "no usable password" in result.stderr
    assert psql_query("SELECT count(*) FROM pg_roles WHERE rolname = 'mlops'") == "0"
    assert psql_query("SELECT count(*) FROM pg_database WHERE datname = 'mlops'") == "0"
