"""``python -m mlops.backends.airflow_task``: one step of a pipeline, as an Airflow task runs it.

The DAG in ``airflow_dags/ml_training_dag.py`` passes, in the environment:

- ``MLOPS_STEP``: the step (name, type, templated params), base64-encoded JSON;
- ``MLOPS_RUN``: the DAG run's ``conf``: ``run_id``, ``params`` (the run's, resolved by the
  service) and ``artifact_root``;
- ``MLOPS_UPSTREAM``: ``{step: its result line}`` of the steps it depends on, from XCom;
- ``MLOPS_ATTEMPT``: Airflow's try number.

The step's templates are resolved against the run's parameters and the upstream outputs, then
the step runs as ``python -m mlops.steps run`` runs it (the same code, in this process), and its
JSON result line is printed last: Airflow keeps a task's last line of output as its XCom.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

from mlops.pipelines.spec import resolve_templates
from mlops.steps.cli import EXIT_USAGE
from mlops.steps.cli import main as steps_main


def _upstream_outputs(raw: str) -> dict[str, dict[str, Any]]:
    outputs: dict[str, dict[str, Any]] = {}
    for name, result in (json.loads(raw or "{}") or {}).items():
        message = json.loads(result) if isinstance(result, str) else result
        if not isinstance(message, dict) or not message.get("ok"):
            raise ValueError(f"upstream step {name!r} left no result (XCom: {result!r})")
        outputs[name] = message.get("outputs") or {}
    return outputs


def main() -> int:
    try:
        step = json.loads(base64.b64decode(os.environ["MLOPS_STEP"]))
        run = json.loads(os.environ.get("MLOPS_RUN") or "{}")
        outputs = _upstream_outputs(os.environ.get("MLOPS_UPSTREAM", "{}"))
        params = resolve_templates(step.get("params", {}), run.get("params", {}), outputs)
    except (KeyError, ValueError, TypeError) as exc:
        print(f"error: the task's inputs are not usable: {exc}", file=sys.stderr)
        print(json.dumps({"ok": False, "error": str(exc), "error_type": "InvalidInputs"}))
        return EXIT_USAGE
    return steps_main(
        [
            "run",
            *("--type", step["type"]),
            *("--params", json.dumps(params)),
            *("--run-id", str(run.get("run_id", "airflow"))),
            *("--step", step["name"]),
            *("--artifact-root", str(run.get("artifact_root") or "artifacts")),
            *("--attempt", os.environ.get("MLOPS_ATTEMPT") or "1"),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
