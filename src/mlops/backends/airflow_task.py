"""``python -m mlops.backends.airflow_task``: one step of a pipeline, as an Airflow task runs it.

A thin adapter over ``mlops.backends.remote_task`` (shared with Kubeflow and Vertex AI). The DAG
in ``airflow_dags/ml_training_dag.py`` passes, in the environment:

- ``MLOPS_STEP``: the step (name, type, templated params), base64-encoded JSON;
- ``MLOPS_RUN``: the DAG run's ``conf``: ``run_id``, ``params`` (the run's, resolved by the
  service) and ``artifact_root``;
- ``MLOPS_UPSTREAM``: ``{step: its result line}`` of the steps it depends on, from XCom;
- ``MLOPS_ATTEMPT``: Airflow's try number.

The step runs in this process, with no timeout of ours: Airflow enforces the task's
``execution_timeout`` itself. Its JSON result line is printed last: Airflow keeps a task's last
line of output as its XCom.
"""

from __future__ import annotations

import base64
import json
import os
import sys

from mlops.backends.remote_task import emit, run_task
from mlops.steps.cli import EXIT_USAGE


def main() -> int:
    try:
        step = json.loads(base64.b64decode(os.environ["MLOPS_STEP"]))
        run = json.loads(os.environ.get("MLOPS_RUN") or "{}") or {}
        upstream = json.loads(os.environ.get("MLOPS_UPSTREAM") or "{}") or {}
        attempt = int(os.environ.get("MLOPS_ATTEMPT") or "1")
    except (KeyError, ValueError, TypeError) as exc:
        print(f"error: the task's inputs are not usable: {exc}", file=sys.stderr)
        emit({"ok": False, "error": str(exc), "error_type": "InvalidInputs"}, None)
        return EXIT_USAGE
    return run_task(step, run, upstream, attempt)


if __name__ == "__main__":
    raise SystemExit(main())
