"""The Airflow task entrypoint: templates resolved from the run's conf and upstream XComs."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ECHO = "mlops.steps.library.testing:echo"


def run_task(tmp_path: Path, step: dict[str, Any], upstream: dict[str, Any]) -> tuple[int, str]:
    env = {
        **os.environ,
        "MLOPS_STEP": base64.b64encode(json.dumps(step).encode()).decode(),
        "MLOPS_RUN": json.dumps(
            {"run_id": "r-1", "params": {"n": 3}, "artifact_root": str(tmp_path / "artifacts")}
        ),
        "MLOPS_UPSTREAM": json.dumps(upstream),
        "MLOPS_ATTEMPT": "2",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mlops.backends.airflow_task"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout.strip().splitlines()[-1]


def test_a_task_resolves_its_templates_and_prints_its_result_last(tmp_path: Path) -> None:
    step = {
        "name": "b",
        "type": "python",
        "params": {
            "callable": ECHO,
            "kwargs": {
                "n": "{{ params.n }}",
                "v": "{{ steps.a.outputs.v }}",
                "s": "n={{ params.n }}",
            },
        },
    }
    upstream = {"a": json.dumps({"ok": True, "outputs": {"v": [1, 2]}, "digests": {}})}
    code, last = run_task(tmp_path, step, upstream)
    assert code == 0, last
    assert json.loads(last)["outputs"] == {"n": 3, "v": [1, 2], "s": "n=3"}


def test_a_task_without_its_upstream_result_fails_saying_so(tmp_path: Path) -> None:
    step = {"name": "b", "type": "python", "params": {"callable": ECHO, "kwargs": {}}}
    code, last = run_task(tmp_path, step, {"a": None})
    assert code == 2
    assert json.loads(last) == {
        "ok": False,
        "error": "upstream step 'a' left no result (XCom: None)",
        "error_type": "InvalidInputs",
    }
