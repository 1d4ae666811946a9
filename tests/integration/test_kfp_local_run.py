"""The compiled PipelineSpec really runs on kfp's own local runner, ``SubprocessRunner``.

What runs: the spec exactly as ``compile_plan`` emits it (the one submitted to Kubeflow or
Vertex AI), loaded by ``kfp.components.load_component_from_text`` and executed by
``kfp.local`` with ``SubprocessRunner(use_venv=False)``: kfp's local DAG orchestrator orders the
tasks, resolves the placeholders (pipeline parameter, upstream output parameters, output
files), replaces ``python3`` by this interpreter, honours ``retryPolicy`` with its backoff, and
reads each task's output parameter ``result`` from its file to feed the tasks after it.

One thing is changed: ``SubprocessTaskHandler`` refuses, before running anything, every task
whose command does not contain ``kfp.dsl.executor_main`` ("only supports running Lightweight
Python Components"), i.e. every container component; it runs the others the same way. The
second test shows the refusal; the others lift that one check (monkeypatched for the test) and
leave everything else to kfp. DockerRunner, which runs container components, needs a Docker
engine, which this machine does not have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.backends.base import PlanStep, RunPlan
from mlops.backends.kfp_spec import compile_plan, pipeline_arguments

pytestmark = pytest.mark.slow
TESTING = "mlops.steps.library.testing"


def step(
    name: str, function: str, depends_on: list[str], retries: int = 0, **kwargs: Any
) -> PlanStep:
    return PlanStep(
        name=name,
        type="python",
        params={"callable": f"{TESTING}:{function}", "kwargs": kwargs},
        depends_on=depends_on,
        retries=retries,
        backoff_seconds=0.1,
        max_backoff_seconds=1,
        timeout_seconds=120,
    )


def make_plan(tmp_path: Path, *steps: PlanStep) -> RunPlan:
    return RunPlan(
        run_id="run-1",
        pipeline="local-demo",
        version=1,
        description="",
        params={"n": 5},
        steps=list(steps),
        artifact_root=str(tmp_path / "artifacts"),
    )


@pytest.fixture
def local_kfp(tmp_path: Path) -> Any:
    import kfp.local

    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp-root"),
        raise_on_error=True,
    )
    return kfp


@pytest.fixture
def container_components_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp.local import subprocess_task_handler

    monkeypatch.setattr(
        subprocess_task_handler.SubprocessTaskHandler,
        "validate_not_container_component",
        lambda self, full_command: None,
    )


def load(plan: RunPlan) -> Any:
    from kfp import components

    return components.load_component_from_text(yaml.safe_dump(compile_plan(plan, "python:3.11")))


def attempts(plan: RunPlan, step_name: str) -> list[dict[str, Any]]:
    folder = Path(plan.artifact_root) / plan.run_id / step_name / ".mlops"
    return [
        json.loads((folder / f"attempt-{n}.json").read_text())
        for n in range(1, len(list(folder.glob("attempt-*.json"))) + 1)
    ]


def test_subprocess_runner_refuses_container_components(local_kfp: Any, tmp_path: Path) -> None:
    plan = make_plan(tmp_path, step("a", "echo", []))
    with pytest.raises(RuntimeError, match="only supports running Lightweight Python"):
        load(plan)(**pipeline_arguments(plan))


@pytest.mark.usefixtures("container_components_allowed")
def test_a_chain_with_outputs_and_a_retry_runs(local_kfp: Any, tmp_path: Path) -> None:
    plan = make_plan(
        tmp_path,
        step("first", "echo", [], v="{{ params.n }}"),
        step("flaky_one", "fail_until", ["first"], retries=2, attempt=2),
        step(
            "last",
            "echo",
            ["first", "flaky_one"],
            v="{{ steps.first.outputs.v }}",
            tries="{{ steps.flaky_one.outputs.attempt }}",
        ),
    )
    load(plan)(**pipeline_arguments(plan))
    first, flaky, last = (attempts(plan, name) for name in ("first", "flaky_one", "last"))
    assert [a["ok"] for a in first] == [True]
    assert [a["ok"] for a in flaky] == [False, True]
    assert "attempt 1 fails on purpose" in flaky[0]["error"]
    assert [a["ok"] for a in last] == [True]
    assert last[0]["outputs"] == {"v": 5, "tries": 2}


@pytest.mark.usefixtures("container_components_allowed")
def test_a_failure_stops_the_run_and_skips_what_follows(local_kfp: Any, tmp_path: Path) -> None:
    plan = make_plan(
        tmp_path,
        step("broken", "fail", [], message="bad data"),
        step("after", "echo", ["broken"], v="{{ steps.broken.outputs.x }}"),
    )
    with pytest.raises(RuntimeError, match="Inner task failed"):
        load(plan)(**pipeline_arguments(plan))
    assert [(a["ok"], a["error"]) for a in attempts(plan, "broken")] == [(False, "bad data")]
    assert attempts(plan, "after") == []
