"""A run's plan compiled to a KFP v2 PipelineSpec: structure, wiring, retries; kfp accepts it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from mlops.backends.base import PlanStep, RunPlan
from mlops.backends.kfp_spec import compile_plan, kfp_name, pipeline_arguments, task_names

ECHO = "mlops.steps.library.testing:echo"
IMAGE = "registry.example/mlops:1.2"


def step(name: str, depends_on: list[str] | None = None, retries: int = 0) -> PlanStep:
    return PlanStep(
        name=name,
        type="python",
        params={"callable": ECHO, "kwargs": {"v": "{{ params.n }}"}},
        depends_on=depends_on or [],
        retries=retries,
        backoff_seconds=1.5,
        max_backoff_seconds=30,
        timeout_seconds=120,
    )


def plan(*steps: PlanStep, pipeline: str = "churn-model") -> RunPlan:
    return RunPlan(
        run_id="0b8a6f52-1c1e-4d7e-9a57-3f1f0f0e2a11",
        pipeline=pipeline,
        version=7,
        description="churn-model version 7 (mlops)",
        params={"n": 3},
        steps=list(steps),
        artifact_root="s3://bucket/artifacts",
    )


DIAMOND = plan(
    step("extract"),
    step("clean_data", ["extract"], retries=2),
    step("features", ["extract"]),
    step("train", ["clean_data", "features"]),
)


def test_top_level_structure() -> None:
    spec = compile_plan(DIAMOND, IMAGE)
    assert spec["schemaVersion"] == "2.1.0"
    assert spec["sdkVersion"].startswith("kfp-2.17")
    assert spec["pipelineInfo"] == {
        "name": "churn-model-v7",
        "description": "churn-model version 7 (mlops)",
    }
    assert spec["root"]["inputDefinitions"] == {"parameters": {"run": {"parameterType": "STRING"}}}
    tasks = spec["root"]["dag"]["tasks"]
    assert list(tasks) == ["extract", "clean-data", "features", "train"]
    assert set(spec["components"]) == {f"comp-{name}" for name in tasks}
    assert set(spec["deploymentSpec"]["executors"]) == {f"exec-{name}" for name in tasks}


def test_each_step_is_a_container_running_the_remote_task() -> None:
    spec = compile_plan(DIAMOND, IMAGE)
    container = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python3", "-m", "mlops.backends.remote_task"]
    args = container["args"]
    encoded = args[args.index("--step") + 1]
    assert json.loads(base64.b64decode(encoded)) == {
        **DIAMOND.steps[3].as_json(),
    }
    assert args[args.index("--run") + 1] == "{{$.inputs.parameters['run']}}"
    assert args[args.index("--attempt") + 1] == "auto"
    assert args[args.index("--result-file") + 1] == "{{$.outputs.parameters['result'].output_file}}"
    upstream = [args[i + 1] for i, arg in enumerate(args) if arg == "--upstream-result"]
    assert upstream == [
        "clean_data={{$.inputs.parameters['upstream_0']}}",
        "features={{$.inputs.parameters['upstream_1']}}",
    ]


def test_dependencies_and_data_edges() -> None:
    spec = compile_plan(DIAMOND, IMAGE)
    tasks = spec["root"]["dag"]["tasks"]
    assert "dependentTasks" not in tasks["extract"]
    assert tasks["train"]["dependentTasks"] == ["clean-data", "features"]
    assert tasks["train"]["inputs"]["parameters"] == {
        "run": {"componentInputParameter": "run"},
        "upstream_0": {
            "taskOutputParameter": {"outputParameterKey": "result", "producerTask": "clean-data"}
        },
        "upstream_1": {
            "taskOutputParameter": {"outputParameterKey": "result", "producerTask": "features"}
        },
    }
    component = spec["components"]["comp-train"]
    assert component["executorLabel"] == "exec-train"
    assert set(component["inputDefinitions"]["parameters"]) == {"run", "upstream_0", "upstream_1"}
    assert component["outputDefinitions"] == {"parameters": {"result": {"parameterType": "STRING"}}}
    assert tasks["train"]["cachingOptions"] == {}  # KFP's cache off: caching is the service's


def test_retries_become_the_retry_policy() -> None:
    tasks = compile_plan(DIAMOND, IMAGE)["root"]["dag"]["tasks"]
    assert tasks["clean-data"]["retryPolicy"] == {
        "backoffDuration": "1.500s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "30s",
        "maxRetryCount": 2,
    }
    assert "retryPolicy" not in tasks["features"]


def test_parameters_carry_the_run_conf() -> None:
    arguments = pipeline_arguments(DIAMOND)
    assert json.loads(arguments["run"]) == {
        "run_id": DIAMOND.run_id,
        "params": {"n": 3},
        "artifact_root": "s3://bucket/artifacts",
    }


def test_names_follow_kfp_rules() -> None:
    assert kfp_name("My_Pipeline v2!") == "my-pipeline-v2"
    assert kfp_name("__") == "pipeline"
    clash = plan(step("a_b"), step("a-b"), step("a_b_"))
    assert task_names(clash) == {"a_b": "a-b", "a-b": "a-b-2", "a_b_": "a-b-3"}
    with pytest.raises(ValueError, match="unknown steps"):
        compile_plan(plan(step("x", ["nope"])), IMAGE)


def _kfp_roundtrip(spec: dict[str, Any]) -> dict[str, Any]:
    """kfp itself loads the spec (parsing it into its PipelineSpec proto) and compiles it again:
    in a child process, so that this test module does not import the SDK."""
    script = (
        "import sys, yaml\n"
        "from kfp import compiler, components\n"
        "component = components.load_component_from_text(sys.stdin.read())\n"
        "compiler.Compiler().compile(component, sys.argv[1])\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/pipeline.yaml"
        subprocess.run(
            [sys.executable, "-c", script, path],
            input=yaml.safe_dump(spec),
            text=True,
            check=True,
            timeout=120,
        )
        with open(path) as handle:
            loaded: dict[str, Any] = yaml.safe_load(handle)
    return loaded


def test_kfp_loads_and_recompiles_it_unchanged() -> None:
    spec = compile_plan(DIAMOND, IMAGE)
    assert _kfp_roundtrip(spec) == spec
