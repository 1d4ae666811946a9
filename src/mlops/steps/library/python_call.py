"""``python``: call any importable function as a step.

The function gets ``kwargs`` and, if it has a parameter called ``context``, the StepContext.
It returns a dict (the step's outputs, any names: this type's outputs are dynamic) or None.
Coroutine functions are run to completion.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mlops.steps.framework import StepContext, StepError, StepType, register_step_type

CALLABLE_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class PythonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callable: str = Field(
        pattern=CALLABLE_PATTERN,
        description="Import path 'package.module:function' (or 'module:Class.method').",
        examples=["mlops.steps.library.testing:echo"],
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)


def resolve_callable(path: str) -> Callable[..., Any]:
    """The object at ``module:attribute``; StepError naming the path if it cannot be found."""
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised while importing the module
        raise StepError(f"cannot import {path!r}: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise StepError(f"cannot import {path!r}: {module_name} has no {attribute!r}") from None
    if not callable(target):
        raise StepError(f"{path!r} is not callable ({type(target).__name__})")
    function: Callable[..., Any] = target
    return function


def _accepts_context(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    parameter = parameters.get("context")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _check_arguments(function: Callable[..., Any], kwargs: dict[str, Any], path: str) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise StepError(f"{path}{signature} cannot be called with these kwargs: {exc}") from None


@register_step_type
class PythonCall(StepType):
    name: ClassVar[str] = "python"
    Params: ClassVar[type[BaseModel]] = PythonParams
    outputs: ClassVar[tuple[str, ...]] = ()
    dynamic_outputs: ClassVar[bool] = True
    description: ClassVar[str] = (
        "Call an importable Python function with kwargs (plus the step context if it takes a "
        "'context' parameter); the dict it returns becomes the outputs."
    )

    def run(self, context: StepContext, params: PythonParams) -> dict[str, Any]:
        function = resolve_callable(params.callable)
        kwargs = dict(params.kwargs)
        if _accepts_context(function):
            if "context" in kwargs:
                raise StepError("kwargs must not contain 'context': the step passes it")
            kwargs["context"] = context
        _check_arguments(function, kwargs, params.callable)
        result = function(**kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        if result is None:
            return {}
        if not isinstance(result, dict):
            raise StepError(
                f"{params.callable} returned {type(result).__name__}; a step function must "
                "return a dict of outputs or None"
            )
        return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
