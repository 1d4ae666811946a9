"""The pipeline file: its schema (public contract) and the checks a definition must pass.

Every problem is reported with the location of the offending field, e.g.
``steps.1.params.min_rows`` or ``schedule.cron``, so the 422 names the step and the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.fields import FieldInfo

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
STEP_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
PARAM_REF = re.compile(r"^params\.([A-Za-z_][A-Za-z0-9_]*)$")
OUTPUT_REF = re.compile(r"^steps\.([a-z0-9_-]+)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)$")


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: int = Field(default=0, ge=0, le=20, description="Retries after the first attempt.")
    backoff_seconds: float = Field(default=1.0, ge=0, le=3600)
    max_backoff_seconds: float = Field(default=300.0, ge=0, le=86_400)

    def delay(self, failed_attempt: int) -> float:
        """Exponential backoff before the attempt after ``failed_attempt`` (1-based)."""
        return float(
            min(self.backoff_seconds * 2 ** (failed_attempt - 1), self.max_backoff_seconds)
        )


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STEP_NAME_PATTERN)
    type: str
    depends_on: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: float = Field(default=3600, gt=0, le=7 * 86_400)
    cache: bool = False


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a 5-field cron expression: {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone: {value!r}") from exc
        return value


class PipelineSpec(BaseModel):
    """The pipeline file. Extend it; never rename a field."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "breast-cancer-training",
                    "description": "Validate and prepare the data",
                    "params": {"min_rows": 100},
                    "schedule": {"cron": "0 3 * * *", "timezone": "UTC"},
                    "steps": [
                        {
                            "name": "validate",
                            "type": "data_validation",
                            "params": {
                                "dataset": "sklearn://breast_cancer",
                                "min_rows": "{{ params.min_rows }}",
                            },
                        },
                        {
                            "name": "features",
                            "type": "feature_engineering",
                            "depends_on": ["validate"],
                            "params": {"dataset": "{{ steps.validate.outputs.dataset }}"},
                            "retries": {"max": 2, "backoff_seconds": 1},
                            "timeout_seconds": 600,
                            "cache": True,
                        },
                    ],
                }
            ]
        },
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    description: str = Field(default="", max_length=2000)
    backend: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: ScheduleSpec | None = None
    steps: list[StepSpec] = Field(min_length=1, max_length=500)


class SpecProblem(Exception):
    """Problems found in a pipeline definition, each with its field location."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = problems


def templates_in(value: Any) -> list[str]:
    """Every ``{{ expression }}`` inside a parameter value, however deeply nested."""
    if isinstance(value, str):
        return [match.group(1) for match in TEMPLATE.finditer(value)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in templates_in(item)]
    if isinstance(value, list):
        return [t for item in value for t in templates_in(item)]
    return []


def is_whole_template(value: Any) -> bool:
    return isinstance(value, str) and TEMPLATE.fullmatch(value.strip()) is not None


def topological_order(steps: list[StepSpec]) -> list[str]:
    """Step names in an order where every step follows its dependencies (stable by file order).

    Raises ``SpecProblem`` naming a step on a cycle.
    """
    remaining = {step.name: set(step.depends_on) for step in steps}
    order: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            cycle = _find_cycle({n: sorted(d) for n, d in remaining.items()})
            index = next(i for i, s in enumerate(steps) if s.name == cycle[0])
            raise SpecProblem(
                [(("steps", index, "depends_on"), f"dependency cycle: {' -> '.join(cycle)}")]
            )
        for name in ready:
            order.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def _find_cycle(graph: dict[str, list[str]]) -> list[str]:
    start = next(iter(graph))
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = next(dep for dep in graph[node] if dep in graph)
    return [*path[path.index(node) :], node]


def ancestors(steps: list[StepSpec]) -> dict[str, set[str]]:
    direct = {step.name: set(step.depends_on) for step in steps}
    result: dict[str, set[str]] = {}
    for name in topological_order(steps):
        result[name] = set(direct[name]).union(*(result[d] for d in direct[name]))
    return result


def check_field_value(field: FieldInfo, value: Any) -> str | None:
    """Why ``value`` does not fit the field, limits (``ge``, ``le``, ...) included; or None."""
    annotation: Any = (
        Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    )
    try:
        TypeAdapter[Any](annotation).validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    return None


def resolve_templates(
    value: Any, params: dict[str, Any], outputs: dict[str, dict[str, Any]]
) -> Any:
    """Substitute ``{{ params.x }}`` and ``{{ steps.s.outputs.o }}``.

    A value that is one whole template takes the referenced value with its type; a template
    inside a longer string is replaced by the value's text.
    """
    if isinstance(value, dict):
        return {k: resolve_templates(v, params, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_templates(v, params, outputs) for v in value]
    if not isinstance(value, str) or "{{" not in value:
        return value
    if is_whole_template(value):
        return _lookup(TEMPLATE.fullmatch(value.strip()).group(1), params, outputs)  # type: ignore[union-attr]
    return TEMPLATE.sub(lambda m: str(_lookup(m.group(1), params, outputs)), value)


def _lookup(expression: str, params: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> Any:
    if match := PARAM_REF.match(expression):
        return params[match.group(1)]
    if match := OUTPUT_REF.match(expression):
        step, name = match.groups()
        try:
            return outputs[step][name]
        except KeyError as exc:
            raise KeyError(f"step {step!r} produced no output {name!r}") from exc
    raise KeyError(f"unknown template {expression!r}")
