"""The Airflow test server itself: a real Airflow 3.3.2 parses a DAG, runs it with a conf through
the official client, serves the task log, and leaves no process behind when stopped."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tests.airflow_server import AirflowServer

pytestmark = pytest.mark.slow

DAG_ID = "probe_chain"
DAG = '''
"""probe_chain: a >> b; b reads the run's conf from an env var filled by Jinja."""
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="probe_chain",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
):
    a = BashOperator(task_id="a", bash_command="echo A")
    b = BashOperator(
        task_id="b",
        bash_command='echo "B conf=$CONF extra=$MLOPS_PROBE"',
        env={"CONF": "{{ dag_run.conf | tojson }}"},
        append_env=True,  # keep the server's environment (MLOPS_PROBE from extra_env)
    )
    a >> b
'''


def state(value: object) -> str:
    return str(getattr(value, "value", value))


def test_airflow_server_runs_a_dag_and_stops_clean(tmp_path: Path) -> None:
    from airflow_client.client import ApiClient, Configuration
    from airflow_client.client.api.dag_api import DAGApi
    from airflow_client.client.api.dag_run_api import DagRunApi
    from airflow_client.client.api.task_instance_api import TaskInstanceApi
    from airflow_client.client.exceptions import NotFoundException
    from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe_chain.py").write_text(DAG)
    server = AirflowServer(tmp_path / "home", dags, extra_env={"MLOPS_PROBE": "from-extra-env"})
    with server:
        assert server.pgid is not None
        pgid = server.pgid
        # host WITHOUT /api/v2: the client's paths carry it
        client = ApiClient(Configuration(host=server.url, access_token=server.token()))
        dag_api, runs, tasks = DAGApi(client), DagRunApi(client), TaskInstanceApi(client)

        deadline = time.monotonic() + 30
        while True:
            try:
                dag = dag_api.get_dag(DAG_ID)
                break
            except NotFoundException:
                assert time.monotonic() < deadline, f"{DAG_ID} not listed:\n{server.logs_tail()}"
                time.sleep(0.3)
        assert dag.is_paused is False

        run_id = f"probe_{uuid.uuid4().hex[:8]}"
        body = TriggerDAGRunPostBody(dag_run_id=run_id, conf={"x": 1}, logical_date=None)
        assert runs.trigger_dag_run(DAG_ID, body).dag_run_id == run_id
        deadline = time.monotonic() + 60
        while state((run := runs.get_dag_run(DAG_ID, run_id)).state) not in {"success", "failed"}:
            assert time.monotonic() < deadline, f"{run_id} still {state(run.state)}"
            time.sleep(0.2)
        assert state(run.state) == "success", server.logs_tail()
        assert run.conf == {"x": 1}

        log = tasks.get_log(DAG_ID, run_id, "b", try_number=1, full_content=True)
        lines = [str(getattr(item, "event", item)) for item in log.content.actual_instance or []]
        text = "\n".join(lines)
        assert 'B conf={"x": 1} extra=from-extra-env' in text, text

    assert server.processes() == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    server.stop()  # idempotent
