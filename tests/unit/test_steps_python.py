"""The ``python`` step type and the testing callables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import StepContext, StepError, artifact_digests, execute_step

TESTING = "mlops.steps.library.testing"


async def async_double(value: int) -> dict[str, int]:
    return {"double": value * 2}


def returns_a_list() -> list[int]:
    return [1, 2]


def takes_context(context: StepContext, label: str) -> dict[str, Any]:
    return {"label": label, "run": context.run_id, "step": context.step_name}


NOT_CALLABLE = 42


@pytest.fixture
def ctx(tmp_path: Path) -> StepContext:
    return StepContext("run-9", "py", 2, ArtifactStore(str(tmp_path / "art")), tmp_path / "w")


def call(ctx: StepContext, target: str, **kwargs: Any) -> dict[str, Any]:
    return execute_step("python", {"callable": target, "kwargs": kwargs}, ctx)


def test_echo_noop_and_sleep(ctx: StepContext) -> None:
    assert call(ctx, f"{TESTING}:echo", a=1, b=["x"]) == {"a": 1, "b": ["x"]}
    assert call(ctx, f"{TESTING}:noop") == {}
    assert call(ctx, f"{TESTING}:sleep", seconds=0.01) == {"slept": 0.01}
    assert execute_step("python", {"callable": f"{TESTING}:noop"}, ctx) == {}


def test_context_is_passed_when_the_function_asks_for_it(ctx: StepContext) -> None:
    here = f"{__name__}:takes_context"
    assert call(ctx, here, label="x") == {"label": "x", "run": "run-9", "step": "py"}
    outputs = call(ctx, f"{TESTING}:write_artifact", text="hi")
    assert outputs["artifact"] == ctx.output_uri("out.txt")
    assert outputs["attempt"] == 2
    assert artifact_digests(outputs, ctx.artifacts)["artifact"].startswith("8f434346")
    with pytest.raises(StepError, match="must not contain 'context'"):
        call(ctx, here, label="x", context="mine")


def test_async_functions_are_awaited(ctx: StepContext) -> None:
    assert call(ctx, f"{__name__}:async_double", value=4) == {"double": 8}


def test_count_calls_counts_executions(ctx: StepContext, tmp_path: Path) -> None:
    counter = tmp_path / "calls.txt"
    for expected in (1, 2, 3):
        assert call(ctx, f"{TESTING}:count_calls", path=str(counter)) == {"calls": expected}
    assert len(counter.read_text().splitlines()) == 3


def test_fail_raises_a_step_error(ctx: StepContext) -> None:
    with pytest.raises(StepError, match="custom failure"):
        call(ctx, f"{TESTING}:fail", message="custom failure")


def test_fail_until_succeeds_on_the_given_attempt(ctx: StepContext) -> None:
    assert call(ctx, f"{TESTING}:fail_until", attempt=2) == {"attempt": 2}
    with pytest.raises(StepError, match="attempt 2 fails"):
        call(ctx, f"{TESTING}:fail_until", attempt=3)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:run", "cannot import 'no_such_module_xyz:run'"),
        (f"{TESTING}:missing", f"cannot import '{TESTING}:missing'"),
        (f"{__name__}:NOT_CALLABLE", "is not callable"),
        (f"{__name__}:returns_a_list", "must return a dict"),
    ],
)
def test_bad_callables_are_step_errors(ctx: StepContext, target: str, message: str) -> None:
    with pytest.raises(StepError, match=message):
        call(ctx, target)


@pytest.mark.parametrize("target", ["no-colon", "mod:", ":func", "a b:c"])
def test_the_callable_must_be_an_import_path(ctx: StepContext, target: str) -> None:
    with pytest.raises(ValidationError, match="callable"):
        execute_step("python", {"callable": target}, ctx)


def divide(a: float, b: float) -> dict[str, float]:
    return {"quotient": a / b}


def test_exceptions_from_the_function_propagate(ctx: StepContext) -> None:
    assert call(ctx, f"{__name__}:divide", a=1, b=4) == {"quotient": 0.25}
    with pytest.raises(ZeroDivisionError):
        call(ctx, f"{__name__}:divide", a=1, b=0)


def test_kwargs_must_fit_the_signature(ctx: StepContext) -> None:
    with pytest.raises(StepError, match="cannot be called with these kwargs"):
        call(ctx, f"{__name__}:divide", a=1)
    with pytest.raises(StepError, match="unexpected keyword"):
        call(ctx, f"{TESTING}:sleep", seconds=0, extra=1)
