"""``airflow_dags/ml_training_dag.py`` on a real Airflow 3.3.2: a plan becomes a DAG whose tasks
run the step entrypoint, pass outputs through XCom, and keep their retries and timeouts.

Driven through the official ``apache-airflow-client`` (REST API v2, JWT from ``/auth/token``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow_client import client as af

from tests.airflow_server import AirflowServer

pytestmark = pytest.mark.slow
TESTING = "mlops.steps.library.testing"


def python_step(
    name: str, function: str, depends_on: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "python",
        "params": {"callable": f"{TESTING}:{function}", "kwargs": extra.pop("kwargs", {})},
        "depends_on": depends_on or [],
        **extra,
    }


def write_plan(airflow: AirflowServer, steps: list[dict[str, Any]]) -> str:
    dag_id = f"mlops_test_{uuid.uuid4().hex[:8]}"
    plan = {"dag_id": dag_id, "description": "a test plan", "steps": steps}
    specs: Path = airflow.specs_dir  # type: ignore[attr-defined]
    partial = specs / f".{dag_id}.json.tmp"
    partial.write_text(json.dumps(plan))
    os.replace(partial, specs / f"{dag_id}.json")  # never half a file
    return dag_id


def api(airflow: AirflowServer) -> af.ApiClient:
    return af.ApiClient(af.Configuration(host=airflow.url, access_token=airflow.token()))


def run_dag(
    airflow: AirflowServer, dag_id: str, conf: dict[str, Any], timeout: float = 90
) -> tuple[str, str]:
    client = api(airflow)
    deadline = time.monotonic() + 45
    while True:  # the dag-processor picks the new file up within a few seconds
        try:
            af.DAGApi(client).get_dag(dag_id)
            break
        except af.ApiException as exc:
            assert exc.status == 404 and time.monotonic() < deadline, airflow.logs_tail()
            time.sleep(0.5)
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    af.DagRunApi(client).trigger_dag_run(
        dag_id, af.TriggerDAGRunPostBody(dag_run_id=run_id, conf=conf)
    )
    deadline = time.monotonic() + timeout
    while (state := str(af.DagRunApi(client).get_dag_run(dag_id, run_id).state.value)) not in {
        "success",
        "failed",
    }:
        assert time.monotonic() < deadline, airflow.logs_tail()
        time.sleep(0.3)
    return run_id, state


def task_instances(airflow: AirflowServer, dag_id: str, run_id: str) -> dict[str, Any]:
    found = af.TaskInstanceApi(api(airflow)).get_task_instances(dag_id, run_id).task_instances
    return {ti.task_id: ti for ti in found}


def result_of(airflow: AirflowServer, dag_id: str, run_id: str, task: str) -> dict[str, Any]:
    entry = af.XComApi(api(airflow)).get_xcom_entry(
        dag_id=dag_id, task_id=task, dag_run_id=run_id, xcom_key="return_value"
    )
    value = entry.actual_instance.value
    return dict(json.loads(value) if isinstance(value, str) else value)


def conf(tmp_path: Path, **params: Any) -> dict[str, Any]:
    return {
        "run_id": str(uuid.uuid4()),
        "params": params,
        "artifact_root": str(tmp_path / "artifacts"),
    }


def test_a_plan_runs_as_a_dag_passing_params_and_outputs(
    airflow: AirflowServer, tmp_path: Path
) -> None:
    dag_id = write_plan(
        airflow,
        [
            python_step("a", "echo", kwargs={"greeting": "{{ params.greeting }}", "n": 2}),
            python_step("b", "echo", ["a"], kwargs={"n": "{{ steps.a.outputs.n }}"}),
            python_step("c", "echo", ["a"], kwargs={"text": "{{ steps.a.outputs.greeting }}!"}),
            python_step(
                "d",
                "echo",
                ["b", "c"],
                kwargs={"both": ["{{ steps.b.outputs.n }}", "{{ steps.c.outputs.text }}"]},
            ),
        ],
    )
    run_id, state = run_dag(airflow, dag_id, conf(tmp_path, greeting="hallo"))
    assert state == "success", airflow.logs_tail()
    assert result_of(airflow, dag_id, run_id, "d")["outputs"] == {"both": [2, "hallo!"]}
    tis = task_instances(airflow, dag_id, run_id)
    assert tis["a"].end_date <= tis["b"].start_date and tis["a"].end_date <= tis["c"].start_date
    assert max(tis["b"].end_date, tis["c"].end_date) <= tis["d"].start_date


def test_retries_and_timeouts_are_airflows(airflow: AirflowServer, tmp_path: Path) -> None:
    dag_id = write_plan(
        airflow,
        [
            python_step(
                "flaky", "fail_until", kwargs={"attempt": 2}, retries=2, retry_delay_seconds=0.2
            ),
            python_step("slow", "sleep", ["flaky"], kwargs={"seconds": 60}, timeout_seconds=2),
        ],
    )
    run_id, state = run_dag(airflow, dag_id, conf(tmp_path))
    assert state == "failed", airflow.logs_tail()
    tis = task_instances(airflow, dag_id, run_id)
    assert (str(tis["flaky"].state.value), tis["flaky"].try_number) == ("success", 2)
    assert str(tis["slow"].state.value) == "failed"
    assert tis["slow"].duration < 30
    log = af.TaskInstanceApi(api(airflow)).get_log(dag_id, run_id, "flaky", 1, full_content=True)
    events = " ".join(str(getattr(m, "event", m)) for m in (log.content.actual_instance or []))
    assert "attempt 1 fails on purpose" in events, events
