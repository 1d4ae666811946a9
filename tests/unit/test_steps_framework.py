"""The step framework: registry, execute_step's contract, digests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from mlops.steps import framework
from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import (
    STEP_LIBRARY_VERSION,
    StepContext,
    StepError,
    StepType,
    UnknownStepType,
    artifact_digests,
    describe_step_types,
    execute_step,
    format_validation_error,
    get_step_type,
    register_step_type,
    step_types,
    validate_params,
)


@pytest.fixture
def context(tmp_path: Path) -> StepContext:
    return StepContext("run-1", "step-a", 1, ArtifactStore(str(tmp_path / "art")), tmp_path / "w")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = None


@pytest.fixture
def temporary_types() -> Iterator[list[str]]:
    """Register step types for one test only."""
    added: list[str] = []
    yield added
    for name in added:
        framework._REGISTRY.pop(name, None)


def _make_type(name: str, outputs: tuple[str, ...], result: Any) -> type[StepType]:
    class Custom(StepType):
        Params: ClassVar[type[BaseModel]] = _Params
        description: ClassVar[str] = "test"

        def run(self, context: StepContext, params: Any) -> Any:
            return result

    Custom.name = name
    Custom.outputs = outputs
    return Custom


def test_library_types_are_registered_on_import() -> None:
    assert {"data_validation", "feature_engineering", "python"} <= set(step_types())
    assert get_step_type("python").dynamic_outputs is True
    assert get_step_type("data_validation").outputs == ("dataset", "report", "rows")
    assert STEP_LIBRARY_VERSION


def test_every_type_forbids_unknown_params_and_describes_itself() -> None:
    for cls in step_types().values():
        assert cls.Params.model_config.get("extra") == "forbid"
        assert cls.description
        assert all(output.isidentifier() for output in cls.outputs)
    described = describe_step_types()
    json.dumps(described)
    assert {d["name"] for d in described} == set(step_types())


def test_unknown_type_lists_the_valid_names() -> None:
    with pytest.raises(UnknownStepType) as caught:
        get_step_type("no_such_type")
    message = str(caught.value)
    assert "no_such_type" in message
    assert "data_validation" in message and "feature_engineering" in message
    assert isinstance(caught.value, KeyError)


def test_invalid_params_raise_validation_error_naming_the_field(context: StepContext) -> None:
    with pytest.raises(ValidationError) as caught:
        execute_step("data_validation", {"dataset": "x.csv", "min_rows": "many"}, context)
    assert "min_rows" in format_validation_error(caught.value, "data_validation")
    with pytest.raises(ValidationError):
        validate_params("python", {"callable": "os:getcwd", "surprise": 1})


def test_execute_step_checks_the_declared_outputs(
    context: StepContext, temporary_types: list[str]
) -> None:
    register_step_type(_make_type("t_wrong_outputs", ("a", "b"), {"a": 1}))
    register_step_type(_make_type("t_not_json", ("a",), {"a": object()}))
    register_step_type(_make_type("t_not_dict", ("a",), ["a"]))
    register_step_type(_make_type("t_good", ("a",), {"a": [1, "x"]}))
    temporary_types.extend(["t_wrong_outputs", "t_not_json", "t_not_dict", "t_good"])
    with pytest.raises(StepError, match="declares"):
        execute_step("t_wrong_outputs", {}, context)
    with pytest.raises(StepError, match="not JSON"):
        execute_step("t_not_json", {}, context)
    with pytest.raises(StepError, match="not a dict"):
        execute_step("t_not_dict", {}, context)
    assert execute_step("t_good", {"value": 3}, context) == {"a": [1, "x"]}
    assert context.work_dir.is_dir()


def test_registration_rules(temporary_types: list[str]) -> None:
    class Loose(BaseModel):
        value: int = 0

    loose = _make_type("t_loose", (), {})
    loose.Params = Loose
    with pytest.raises(TypeError, match="extra='forbid'"):
        register_step_type(loose)
    with pytest.raises(TypeError, match="already registered"):
        register_step_type(_make_type("python", (), {}))


def test_artifact_digests_cover_only_artifacts_of_the_store(context: StepContext) -> None:
    store = context.artifacts
    uri = store.put_bytes(context.output_uri("a.txt"), b"hello")
    outputs = {"file": uri, "rows": 3, "external": "file:///elsewhere/x.csv", "names": ["a"]}
    digests = artifact_digests(outputs, store)
    assert digests == {"file": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}
    missing = {"gone": context.output_uri("missing.bin")}
    with pytest.raises(StepError, match="does not exist"):
        artifact_digests(missing, store)
