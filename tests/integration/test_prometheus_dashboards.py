"""Debian's Prometheus scrapes a live service that has served, rolled back, logged, been told
the truth and found drift; every query of the provisioned Grafana dashboards must return at
least one series, and the alerting rules must load and evaluate."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import BOOTSTRAP_KEY, free_port
from tests.integration.test_drift_api import shifted
from tests.integration.test_ops_files import ROOT, require_tool
from tests.model_registry import data, register, rows
from tests.processes import service_env, start_service, stop_service

pytestmark = pytest.mark.slow
KEY = {"X-API-Key": BOOTSTRAP_KEY}
MODEL = "bc-rf"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULES = sorted((ROOT / "prometheus").glob("*.yml"))


def test_promtool_accepts_the_alerting_rules() -> None:
    promtool = require_tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert RULES and "SUCCESS" in checked.stdout


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) of every panel target, the template variables at All."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$deployment", ".*")
                found.append((path.name, panel["title"], expr))
        for variable in dashboard["templating"]["list"]:
            metric, label = variable["definition"].removeprefix("label_values(")[:-1].split(", ")
            found.append(
                (path.name, f"variable {variable['name']}", f"count by ({label}) ({metric})")
            )
    return found


def make_activity(url: str) -> None:
    """Serve, roll out and back, log, report truth, profile a reference and find drift."""
    with httpx.Client(base_url=url, headers=KEY, timeout=60) as client:

        def state(name: str = "bc") -> dict[str, Any]:
            return dict(client.get(f"/api/v1/deployments/{name}").json())

        def wait_for(check: Any) -> None:
            deadline = time.monotonic() + 60
            while not check(state()):
                assert time.monotonic() < deadline, state()
                time.sleep(0.1)

        created = client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "version": "1"}, "strategy": "direct"},
        )
        assert created.status_code == 202, created.text
        wait_for(lambda d: d["state"] == "ready")
        rolled = client.patch(
            "/api/v1/deployments/bc",
            json={"model": {"name": MODEL, "version": "2"}, "strategy": "blue_green"},
        )
        assert rolled.status_code == 202, rolled.text
        wait_for(
            lambda d: (
                d["state"] == "ready"
                and any(v["weight"] == 100 and v["name"] == "v2" for v in d["variants"])
            )
        )
        back = client.post("/api/v1/deployments/bc/rollback", json={"reason": "dashboard test"})
        assert back.status_code in (200, 202), back.text

        features, labels = data()
        answered = []
        for start in range(0, 60, 3):
            batch = [
                {k: float(v) for k, v in r.items()}
                for r in features.iloc[start : start + 3].to_dict("records")
            ]
            reply = client.post("/api/v1/deployments/bc/predict", json={"instances": batch})
            assert reply.status_code == 200, reply.text
            answered.append(
                (reply.json()["request_id"], [int(v) for v in labels.iloc[start : start + 3]])
            )
        for _ in range(3):
            reply = client.post(
                "/api/v1/deployments/bc/predict", json={"instances": shifted(rows(100))}
            )
            assert reply.status_code == 200, reply.text
        deadline = time.monotonic() + 30
        while (
            client.get("/api/v1/monitoring/predictions", params={"deployment": "bc"}).json()[
                "total"
            ]
            < 23
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        truth = client.post(
            "/api/v1/monitoring/ground-truth",
            json={"items": [{"request_id": r, "labels": y} for r, y in answered]},
        )
        assert truth.status_code == 200 and truth.json()["matched"] == 20, truth.text
        reference = client.put(
            "/api/v1/monitoring/drift/bc/reference",
            json={
                "source": {"dataset": {"uri": "sklearn://breast_cancer", "label_column": "target"}}
            },
        )
        assert reference.status_code == 201, reference.text
        report = client.post("/api/v1/monitoring/drift/bc/reports", json={})
        assert report.status_code == 201 and report.json()["drifted_count"] > 0, report.text
        rule = client.post(
            "/api/v1/monitoring/alerts/rules",
            json={
                "name": "bc-drift",
                "deployment": "bc",
                "figure": "drift.share",
                "condition": ">",
                "threshold": 0,
                "window_minutes": 60,
                "for_minutes": 0,
                "severity": "warning",
                "channels": [],
            },
        )
        assert rule.status_code == 201, rule.text


@pytest.fixture
def live_service(tmp_path: Path) -> Iterator[str]:
    data_dir = tmp_path / "data"
    uri = f"sqlite:///{(data_dir / 'mlflow' / 'mlflow.db').resolve().as_posix()}"
    (data_dir / "mlflow").mkdir(parents=True)
    register(uri, MODEL)
    register(uri, MODEL)
    port = free_port()
    env = service_env(
        data_dir, MLOPS_QUALITY_REFRESH_SECONDS="1", MLOPS_ALERT_EVALUATION_SECONDS="1"
    )
    process = start_service(env, port, tmp_path / "service.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_service(process)


@pytest.fixture
def prometheus(tmp_path: Path, live_service: str) -> Iterator[str]:
    binary = require_tool("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULES],
        "scrape_configs": [{"job_name": "mlops", "static_configs": [{"targets": [live_service]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    listen = f"127.0.0.1:{free_port()}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={listen}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://{listen}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def query(prometheus: str, expr: str) -> list[Any]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def test_every_dashboard_query_returns_series(live_service: str, prometheus: str) -> None:
    make_activity(f"http://{live_service}")
    queries = dashboard_queries()
    assert len(queries) >= 15
    deadline = time.monotonic() + 60
    while True:  # rates need two scrapes after the activity, quality a refresh
        empty = [
            (board, title, expr) for board, title, expr in queries if not query(prometheus, expr)
        ]
        if not empty:
            break
        assert time.monotonic() < deadline, f"queries with no series: {empty}"
        time.sleep(1)
    # rollback counters exist at 0 before any rollback of their reason (else increase() misses
    # a deployment's first one)
    (untouched,) = query(prometheus, 'mlops_deployment_rollbacks_total{reason="analysis"}')
    assert untouched["value"][1] == "0"
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = [rule for group in rules for rule in group["rules"]]
    assert len(loaded) >= 7 and all(rule["health"] == "ok" for rule in loaded), loaded
    deadline = time.monotonic() + 30
    while "MLOpsFeatureDrift" not in (
        firing := {a["metric"]["alertname"] for a in query(prometheus, "ALERTS")}
    ):
        assert time.monotonic() < deadline, firing
        time.sleep(1)
    assert "MLOpsDatasetDrift" not in firing  # two features of thirty: no dataset drift
