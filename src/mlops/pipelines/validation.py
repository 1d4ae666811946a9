"""Checks a pipeline definition against the step library; every problem names its field."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from mlops.pipelines.spec import (
    OUTPUT_REF,
    PARAM_REF,
    PipelineSpec,
    SpecProblem,
    StepSpec,
    ancestors,
    check_field_value,
    is_whole_template,
    templates_in,
)
from mlops.steps.framework import StepType, get_step_type, step_types

Location = tuple[str | int, ...]


def validate_pipeline(
    spec: PipelineSpec, *, backend_problem: Callable[[str], str | None] | None = None
) -> None:
    """Raise ``SpecProblem`` listing every problem of ``spec``, or return if there is none.
    ``backend_problem`` says why a backend cannot be used here (unknown, not configured)."""
    problems: list[tuple[Location, str]] = []
    problem = backend_problem(spec.backend) if backend_problem and spec.backend else None
    if problem:
        problems.append((("backend",), problem))
    names = Counter(step.name for step in spec.steps)
    known = set(names)
    for index, step in enumerate(spec.steps):
        if names[step.name] > 1:
            problems.append((("steps", index, "name"), f"duplicate step name {step.name!r}"))
        for dependency in step.depends_on:
            if dependency not in known:
                problems.append((("steps", index, "depends_on"), f"unknown step {dependency!r}"))
            elif dependency == step.name:
                problems.append((("steps", index, "depends_on"), "a step cannot depend on itself"))
    if problems:
        raise SpecProblem(problems)
    upstream = ancestors(spec.steps)  # raises SpecProblem on a cycle
    for index, step in enumerate(spec.steps):
        problems.extend(_check_step(spec, index, step, upstream[step.name]))
    if problems:
        raise SpecProblem(problems)


def _check_step(
    spec: PipelineSpec, index: int, step: StepSpec, upstream: set[str]
) -> list[tuple[Location, str]]:
    here: Location = ("steps", index)
    try:
        step_type = get_step_type(step.type)
    except KeyError:
        valid = ", ".join(sorted(step_types()))
        return [((*here, "type"), f"unknown step type {step.type!r}; valid: {valid}")]
    problems = _check_templates(spec, step, upstream, here)
    problems.extend(_check_params(spec, step, step_type, here))
    return problems


def _check_templates(
    spec: PipelineSpec, step: StepSpec, upstream: set[str], here: Location
) -> list[tuple[Location, str]]:
    steps_by_name = {s.name: s for s in spec.steps}
    problems: list[tuple[Location, str]] = []
    for key, value in step.params.items():
        where = (*here, "params", key)
        for expression in templates_in(value):
            if match := PARAM_REF.match(expression):
                if match.group(1) not in spec.params:
                    problems.append((where, f"undefined pipeline parameter {match.group(1)!r}"))
            elif match := OUTPUT_REF.match(expression):
                source, output = match.groups()
                if source not in upstream:
                    problems.append((where, f"step {source!r} is not upstream of {step.name!r}"))
                    continue
                source_type = step_types().get(steps_by_name[source].type)
                if (
                    source_type is not None
                    and not source_type.dynamic_outputs
                    and output not in source_type.outputs
                ):
                    problems.append(
                        (
                            where,
                            f"step {source!r} ({source_type.name}) has no output {output!r}; "
                            f"it has: {', '.join(source_type.outputs)}",
                        )
                    )
            else:
                problems.append(
                    (
                        where,
                        f"unknown template {{{{ {expression} }}}}; use params.NAME or "
                        "steps.STEP.outputs.NAME",
                    )
                )
    return problems


def _check_params(
    spec: PipelineSpec, step: StepSpec, step_type: type[StepType], here: Location
) -> list[tuple[Location, str]]:
    model: type[BaseModel] = step_type.Params
    fields = model.model_fields
    problems: list[tuple[Location, str]] = []
    for key, value in step.params.items():
        where = (*here, "params", key)
        if key not in fields:
            problems.append((where, f"unknown parameter for {step_type.name}"))
            continue
        literal = _literal_value(spec, value)
        if literal is _UNKNOWN:
            continue
        message = check_field_value(fields[key], literal)
        if message:
            problems.append((where, message))
    for key, field in fields.items():
        if field.is_required() and key not in step.params:
            problems.append(((*here, "params", key), f"required by {step_type.name}"))
    return problems


_UNKNOWN = object()


def _literal_value(spec: PipelineSpec, value: Any) -> Any:
    """The value as far as it is known before a run: defaults stand in for ``params.x``."""
    if not templates_in(value):
        return value
    if is_whole_template(value):
        expression = templates_in(value)[0]
        if match := PARAM_REF.match(expression):
            return spec.params.get(match.group(1), _UNKNOWN)
    return _UNKNOWN
