"""The step framework: step types, their registry, and the one way a step is executed.

A step type is a class with a Pydantic ``Params`` model (``extra="forbid"``), the names of the
outputs its ``run`` returns and a description. Types register themselves by name with
``@register_step_type``; importing ``mlops.steps`` registers the whole library. Every runner
(the ``python -m mlops.steps`` entrypoint, the local worker, a Kubernetes Job, an Airflow task)
ends up in ``execute_step``, so a step behaves the same wherever it runs.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from mlops.steps.artifacts import ArtifactStore

# Bump whenever the semantics of any step change: it is part of every step cache key, so a
# cached output computed by an older library is never reused by a newer one.
STEP_LIBRARY_VERSION = "1"


class StepError(Exception):
    """A step's own failure (bad data, failed checks, bad input), with a readable message."""


class UnknownStepType(KeyError):
    """No step type of that name; the message lists the valid names."""

    def __init__(self, name: str, valid: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.valid = valid

    def __str__(self) -> str:
        return f"unknown step type {self.name!r}; valid types: {', '.join(self.valid) or 'none'}"


@dataclass
class StepContext:
    """Where a step attempt runs: its identity, the artifact store and a scratch directory."""

    run_id: str
    step_name: str
    attempt: int
    artifacts: ArtifactStore
    work_dir: Path

    def output_uri(self, name: str) -> str:
        """The artifact URI for an output of this step called ``name`` (e.g. ``report.json``)."""
        return self.artifacts.uri_for(self.run_id, self.step_name, name)


class StepType(ABC):
    """One kind of step. Subclass it, set the class variables and register it."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    outputs: ClassVar[tuple[str, ...]]
    description: ClassVar[str]
    # True when the outputs are only known at run time (``python``): ``outputs`` is then empty
    # and execute_step does not check the returned names.
    dynamic_outputs: ClassVar[bool] = False

    @abstractmethod
    def run(self, context: StepContext, params: Any) -> dict[str, Any]:
        """Do the work; return JSON-serialisable outputs (artifact URIs as strings)."""


_REGISTRY: dict[str, type[StepType]] = {}

S = TypeVar("S", bound=type[StepType])


def register_step_type(cls: S) -> S:
    """Class decorator: add a step type to the registry under ``cls.name``."""
    for attribute in ("name", "Params", "outputs", "description"):
        if not hasattr(cls, attribute):
            raise TypeError(f"step type {cls.__qualname__} lacks the class variable {attribute!r}")
    if cls.Params.model_config.get("extra") != "forbid":
        raise TypeError(f"step type {cls.name!r}: Params must set extra='forbid'")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise TypeError(f"step type {cls.name!r} is already registered by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def step_types() -> dict[str, type[StepType]]:
    """Every registered step type by name (a copy)."""
    return dict(sorted(_REGISTRY.items()))


def get_step_type(name: str) -> type[StepType]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownStepType(name, sorted(_REGISTRY)) from None


def describe_step_types() -> list[dict[str, Any]]:
    """A JSON description of every step type (for the API and documentation)."""
    return [
        {
            "name": cls.name,
            "description": cls.description,
            "outputs": list(cls.outputs),
            "dynamic_outputs": cls.dynamic_outputs,
            "params_schema": cls.Params.model_json_schema(),
        }
        for cls in step_types().values()
    ]


def validate_params(type_name: str, params: dict[str, Any]) -> BaseModel:
    """The validated ``Params`` of a step type; raises UnknownStepType or ValidationError."""
    return get_step_type(type_name).Params.model_validate(params)


def format_validation_error(exc: ValidationError, type_name: str | None = None) -> str:
    """One line naming every invalid field, e.g. ``min_rows: Input should be ...``."""
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "params"
        problems.append(f"{location}: {error['msg']}")
    where = f" for step type {type_name!r}" if type_name else ""
    return f"invalid params{where}: " + "; ".join(problems)


def execute_step(type_name: str, params: dict[str, Any], context: StepContext) -> dict[str, Any]:
    """Validate ``params``, run the step and check its outputs.

    Raises UnknownStepType, pydantic.ValidationError (invalid params), StepError (the step's
    own failure or outputs that break the contract) or whatever else the step raised.
    """
    step_type = get_step_type(type_name)
    validated = step_type.Params.model_validate(params)
    context.work_dir.mkdir(parents=True, exist_ok=True)
    outputs = step_type().run(context, validated)
    if not isinstance(outputs, dict):
        raise StepError(
            f"step type {type_name!r} returned {type(outputs).__name__}, not a dict of outputs"
        )
    if not step_type.dynamic_outputs and set(outputs) != set(step_type.outputs):
        raise StepError(
            f"step type {type_name!r} returned outputs {sorted(outputs)} "
            f"but declares {sorted(step_type.outputs)}"
        )
    bad_keys = [key for key in outputs if not isinstance(key, str)]
    if bad_keys:
        raise StepError(f"step type {type_name!r} returned non-string output names: {bad_keys}")
    try:
        json.dumps(outputs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepError(
            f"step type {type_name!r} returned outputs that are not JSON: {exc}"
        ) from exc
    return outputs


def artifact_digests(outputs: dict[str, Any], artifacts: ArtifactStore) -> dict[str, str]:
    """SHA-256 of every top-level output value that is an artifact URI of ``artifacts``.

    Keyed by output name. Downstream steps put these in their cache keys, so a cache hit means
    the same bytes, not merely the same URI.
    """
    digests: dict[str, str] = {}
    for name, value in outputs.items():
        if not artifacts.owns(value):
            continue
        try:
            digests[name] = artifacts.digest(value)
        except FileNotFoundError:
            raise StepError(
                f"output {name!r} names an artifact that does not exist: {value}"
            ) from None
    return digests
