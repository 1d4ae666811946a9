"""Every pipeline the service hands to Airflow becomes a DAG here: one task per step.

The service's Airflow backend writes one plan per pipeline version into ``MLOPS_AIRFLOW_SPECS``
(JSON, written to a temporary name and renamed, so a half-written file is never read). A plan
names the DAG and lists the steps with their type, parameters (still templated), dependencies,
retries and timeout. Each task runs the step through the step library's entrypoint with the
service's interpreter (``MLOPS_STEP_PYTHON``, which has the ``mlops`` package; Airflow's own
environment does not need it): ``python -m mlops.backends.airflow_task``. The run's parameters
come from the DAG run's ``conf``; a step's outputs reach the steps after it through XCom (the
task's last line of output is its result).

This file imports only Airflow and the standard library.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

log = logging.getLogger(__name__)

SPECS = Path(os.environ.get("MLOPS_AIRFLOW_SPECS", Path(__file__).with_name("specs")))
STEP_PYTHON = os.environ.get("MLOPS_STEP_PYTHON", "python")
TAG = "mlops"


def _upstream_outputs(depends_on: list[str]) -> str:
    """A Jinja expression rendering the upstream tasks' results as one JSON object."""
    pulls = ", ".join(
        f"{json.dumps(name)}: ti.xcom_pull(task_ids={json.dumps(name)})" for name in depends_on
    )
    return "{{ {" + pulls + "} | tojson }}"


def _task(step: dict[str, Any]) -> BashOperator:
    # The step's own templates ({{ params.x }}, {{ steps.s.outputs.o }}) are the service's, not
    # Airflow's: base64 keeps Jinja from reading them.
    encoded = base64.b64encode(json.dumps(step).encode()).decode()
    timeout = step.get("timeout_seconds")
    return BashOperator(
        task_id=step["name"],
        bash_command='exec "$MLOPS_STEP_PYTHON" -m mlops.backends.airflow_task',
        env={
            "MLOPS_STEP_PYTHON": STEP_PYTHON,
            "MLOPS_STEP": encoded,
            "MLOPS_RUN": "{{ dag_run.conf | tojson }}",
            "MLOPS_UPSTREAM": _upstream_outputs(step.get("depends_on", [])),
            "MLOPS_ATTEMPT": "{{ ti.try_number }}",
        },
        append_env=True,
        retries=int(step.get("retries", 0)),
        retry_delay=timedelta(seconds=float(step.get("retry_delay_seconds", 1.0))),
        retry_exponential_backoff=bool(step.get("retry_exponential_backoff", True)),
        max_retry_delay=timedelta(seconds=float(step.get("max_retry_delay_seconds", 300.0))),
        execution_timeout=timedelta(seconds=float(timeout)) if timeout else None,
        do_xcom_push=True,
    )


def build(plan: dict[str, Any]) -> DAG:
    with DAG(
        dag_id=plan["dag_id"],
        description=plan.get("description") or None,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=False,
        max_active_runs=int(plan.get("max_active_runs", 16)),
        tags=[TAG],
    ) as dag:
        tasks = {step["name"]: _task(step) for step in plan["steps"]}
        for step in plan["steps"]:
            for upstream in step.get("depends_on", []):
                tasks[upstream] >> tasks[step["name"]]
    return dag


for _path in sorted(SPECS.glob("*.json")) if SPECS.is_dir() else []:
    try:
        _dag = build(json.loads(_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as _exc:
        log.error("skipping %s: %s", _path, _exc)
        continue
    globals()[_dag.dag_id] = _dag
