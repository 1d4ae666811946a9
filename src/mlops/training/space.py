"""Search spaces: the public shapes of the job file and how each one asks Optuna for a value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

if TYPE_CHECKING:
    import optuna


class IntRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.log and self.low < 1:
            raise ValueError("a log range needs low >= 1")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


class FloatRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


class LogFloatRange(FloatRange):
    """``{type: log-float}``: shorthand for a float range sampled on a log scale."""

    type: Literal["log-float"] = "log-float"  # type: ignore[assignment]
    log: bool = True


class Categorical(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["categorical"] = "categorical"
    choices: list[str | int | float | bool | None] = Field(min_length=1)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)


Dimension = Annotated[
    IntRange | FloatRange | LogFloatRange | Categorical, Field(discriminator="type")
]


class SearchSpace(RootModel[dict[str, Dimension]]):
    """``{parameter: dimension}``; suggests one configuration per Optuna trial."""

    def __init__(self, root: dict[str, Any] | None = None, **data: Any) -> None:
        super().__init__(root if root is not None else data)

    @property
    def parameters(self) -> dict[str, Dimension]:
        return self.root

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {name: dimension.suggest(trial, name) for name, dimension in self.root.items()}
