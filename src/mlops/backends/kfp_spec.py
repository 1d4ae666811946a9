"""A run's plan as a KFP v2 ``PipelineSpec`` (the IR Kubeflow Pipelines and Vertex AI run).

Built directly as the dictionary ``kfp.compiler.Compiler`` would emit for the same pipeline
written with ``dsl.container_component`` (the tests load it back with kfp and run it): the DSL
wants one Python function per component signature, and a step's inputs (one per upstream step)
vary. Nothing here imports kfp, so the service can compile without loading the SDK.

- One container component per step: the service's image runs ``python3 -m
  mlops.backends.remote_task`` with the step (base64 JSON, so that neither KFP nor Vertex reads
  its ``{{ params.x }}`` templates), the run's conf from the pipeline parameter ``run``, and one
  ``--upstream-result NAME=RESULT`` per dependency, each wired from the upstream task's output
  parameter ``result`` (a task's result line, which ``remote_task`` writes to the file KFP names).
- Dependencies are ``dependentTasks`` as well as those data edges.
- Retries are the task's ``retryPolicy`` (factor 2, as the service's own backoff); KFP has no
  per-task timeout, so ``remote_task`` enforces the step's ``timeout_seconds`` itself.
- ``--attempt auto``: KFP does not tell a task which attempt it is, so ``remote_task`` numbers
  attempts in the artifact store (and records each one's result there for the service).
- KFP's execution cache is off: whether a step may be skipped is the service's decision.
"""

from __future__ import annotations

import base64
import json
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from mlops.backends.base import PlanStep, RunPlan

SCHEMA_VERSION = "2.1.0"
RUN_PARAMETER = "run"
RESULT = "result"
COMMAND = ["python3", "-m", "mlops.backends.remote_task"]
_INVALID = re.compile(r"[^a-z0-9-]+")


def kfp_name(text: str, *, limit: int = 128) -> str:
    """A KFP resource name: lowercase letters, digits and dashes, starting and ending with an
    alphanumeric (what the compiler makes of a pipeline or task name)."""
    name = _INVALID.sub("-", text.lower()).strip("-")[:limit].strip("-")
    return name or "pipeline"


def pipeline_name(plan: RunPlan) -> str:
    return kfp_name(f"{plan.pipeline}-v{plan.version}")


def task_names(plan: RunPlan) -> dict[str, str]:
    """``{step name: task name}``: step names may hold ``_``, task names may not; two steps
    that would clash get a numbered suffix."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for step in plan.steps:
        base = kfp_name(step.name, limit=60)
        candidate, number = base, 2
        while candidate in taken:
            candidate, number = f"{base}-{number}", number + 1
        names[step.name] = candidate
        taken.add(candidate)
    return names


def pipeline_arguments(plan: RunPlan) -> dict[str, str]:
    """The pipeline parameters of ``plan``'s run (what a KFP run or Vertex job passes)."""
    return {RUN_PARAMETER: json.dumps(plan.conf(), sort_keys=True)}


def _duration(seconds: float) -> str:
    """A protobuf ``Duration`` in JSON as protobuf writes it: ``"3s"``, ``"1.500s"``."""
    whole, nanos = divmod(round(max(seconds, 0.0) * 1e9), 10**9)
    if nanos == 0:
        return f"{whole}s"
    for digits, unit in ((3, 10**6), (6, 10**3), (9, 1)):
        if nanos % unit == 0:
            return f"{whole}.{nanos // unit:0{digits}d}s"
    raise AssertionError("unreachable")  # pragma: no cover


def _input(name: str) -> str:
    return "{{$.inputs.parameters['" + name + "']}}"


def _upstream_input(index: int) -> str:
    return f"upstream_{index}"


def _executor(step: PlanStep, image: str) -> dict[str, Any]:
    encoded = base64.b64encode(json.dumps(step.as_json(), sort_keys=True).encode()).decode()
    args = [
        *("--step", encoded),
        *("--run", _input(RUN_PARAMETER)),
        *("--attempt", "auto"),
        *("--result-file", "{{$.outputs.parameters['" + RESULT + "'].output_file}}"),
    ]
    for index, upstream in enumerate(step.depends_on):
        args += ["--upstream-result", f"{upstream}={_input(_upstream_input(index))}"]
    return {"container": {"image": image, "command": list(COMMAND), "args": args}}


def _component(step: PlanStep, executor_label: str) -> dict[str, Any]:
    inputs = {RUN_PARAMETER: {"parameterType": "STRING"}}
    for index, _ in enumerate(step.depends_on):
        inputs[_upstream_input(index)] = {"parameterType": "STRING"}
    return {
        "executorLabel": executor_label,
        "inputDefinitions": {"parameters": inputs},
        "outputDefinitions": {"parameters": {RESULT: {"parameterType": "STRING"}}},
    }


def _task(step: PlanStep, names: dict[str, str]) -> dict[str, Any]:
    name = names[step.name]
    parameters: dict[str, Any] = {RUN_PARAMETER: {"componentInputParameter": RUN_PARAMETER}}
    for index, upstream in enumerate(step.depends_on):
        parameters[_upstream_input(index)] = {
            "taskOutputParameter": {"outputParameterKey": RESULT, "producerTask": names[upstream]}
        }
    task: dict[str, Any] = {
        "cachingOptions": {},  # enableCache false (a proto3 default is left out, as kfp does)
        "componentRef": {"name": f"comp-{name}"},
        "inputs": {"parameters": parameters},
        "taskInfo": {"name": name},
    }
    if step.depends_on:
        task["dependentTasks"] = sorted({names[upstream] for upstream in step.depends_on})
    if step.retries > 0:
        task["retryPolicy"] = {
            "backoffDuration": _duration(step.backoff_seconds),
            "backoffFactor": 2.0,
            "backoffMaxDuration": _duration(step.max_backoff_seconds),
            "maxRetryCount": step.retries,
        }
    return task


def _sdk_version() -> str:
    try:
        return f"kfp-{version('kfp')}"
    except PackageNotFoundError:  # pragma: no cover - kfp is a dependency
        return "kfp-2.17.3"


def compile_plan(plan: RunPlan, image: str) -> dict[str, Any]:
    """The KFP v2 ``PipelineSpec`` of ``plan``, each step a container of ``image``.

    The spec depends on the pipeline version only; a run's conf is the pipeline parameter
    ``run`` (see ``pipeline_arguments``)."""
    names = task_names(plan)
    known = set(names)
    for step in plan.steps:
        missing = [upstream for upstream in step.depends_on if upstream not in known]
        if missing:
            raise ValueError(f"step {step.name!r} depends on unknown steps: {missing}")
    components: dict[str, Any] = {}
    executors: dict[str, Any] = {}
    tasks: dict[str, Any] = {}
    for step in plan.steps:
        name = names[step.name]
        components[f"comp-{name}"] = _component(step, f"exec-{name}")
        executors[f"exec-{name}"] = _executor(step, image)
        tasks[name] = _task(step, names)
    info: dict[str, Any] = {"name": pipeline_name(plan)}
    if plan.description:
        info["description"] = plan.description
    return {
        "components": components,
        "deploymentSpec": {"executors": executors},
        "pipelineInfo": info,
        "root": {
            "dag": {"tasks": tasks},
            "inputDefinitions": {"parameters": {RUN_PARAMETER: {"parameterType": "STRING"}}},
        },
        "schemaVersion": SCHEMA_VERSION,
        "sdkVersion": _sdk_version(),
    }
