"""``data_validation``: check a dataset against expectations and write a report.

Every check runs, pass or fail; the JSON report (each check, its expectation and what was
observed) is saved as an artifact before the step fails, so a failed run keeps its evidence.
The report holds no timestamps or run ids: the same data gives the same bytes and digest.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.steps.datasets import load_dataset
from mlops.steps.framework import (
    STEP_LIBRARY_VERSION,
    StepContext,
    StepError,
    StepType,
    register_step_type,
)

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
DtypeKind = Literal["numeric", "string", "datetime", "bool"]
_SAMPLE = 10


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class DataValidationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="Dataset URI (path, file://, sklearn://...).")
    min_rows: int = Field(default=1, ge=0)
    max_rows: int | None = Field(default=None, ge=0)
    required_columns: list[str] = Field(default_factory=list)
    max_null_fraction: Fraction | dict[str, Fraction] = Field(
        default=1.0, description="For every column, or per column."
    )
    ranges: dict[str, Range] = Field(default_factory=dict, description="{column: {min, max}}")
    allowed_values: dict[str, list[Any]] = Field(default_factory=dict)
    dtypes: dict[str, DtypeKind] = Field(default_factory=dict)
    unique: list[str] = Field(default_factory=list, description="Columns without duplicates.")


def plain(value: Any) -> Any:
    """``value`` made JSON-safe: numpy scalars to Python, NaN to None, timestamps to text."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _check(name: str, passed: bool, expected: Any, observed: Any, detail: str) -> dict[str, Any]:
    return {
        "check": name,
        "passed": bool(passed),
        "expected": plain(expected),
        "observed": plain(observed),
        "detail": detail,
    }


def _missing(name: str, column: str, expected: Any) -> dict[str, Any]:
    return _check(name, False, expected, None, f"column {column!r} is missing")


def _kind_of(series: Any) -> str:
    from pandas.api import types  # type: ignore[import-untyped,unused-ignore]

    if types.is_bool_dtype(series):
        return "bool"
    if types.is_numeric_dtype(series):
        return "numeric"
    if types.is_datetime64_any_dtype(series):
        return "datetime"
    if types.is_string_dtype(series):
        return "string"
    if series.dtype == object and all(isinstance(v, str) for v in series.dropna()):
        return "string"
    return "other"


def run_checks(df: Any, params: DataValidationParams) -> list[dict[str, Any]]:
    from pandas.api import types

    rows = len(df)
    columns = [str(c) for c in df.columns]
    checks = [
        _check(
            "min_rows",
            rows >= params.min_rows,
            f">= {params.min_rows}",
            rows,
            f"{rows} rows, expected at least {params.min_rows}",
        ),
    ]
    if params.max_rows is not None:
        checks.append(
            _check(
                "max_rows",
                rows <= params.max_rows,
                f"<= {params.max_rows}",
                rows,
                f"{rows} rows, expected at most {params.max_rows}",
            )
        )
    if params.required_columns:
        absent = [c for c in params.required_columns if c not in columns]
        checks.append(
            _check(
                "required_columns",
                not absent,
                params.required_columns,
                {"missing": absent},
                f"missing columns: {absent}" if absent else "all present",
            )
        )
    limits = (
        params.max_null_fraction
        if isinstance(params.max_null_fraction, dict)
        else dict.fromkeys(columns, params.max_null_fraction)
    )
    for column, limit in limits.items():
        name = f"max_null_fraction[{column}]"
        if column not in columns:
            checks.append(_missing(name, column, f"<= {limit}"))
            continue
        fraction = float(df[column].isna().mean()) if rows else 0.0
        checks.append(
            _check(
                name,
                fraction <= limit,
                f"<= {limit}",
                round(fraction, 6),
                f"{column!r} null fraction {fraction:.4f}, limit {limit}",
            )
        )
    for column, bounds in params.ranges.items():
        checks.append(_range_check(df, columns, column, bounds, types))
    for column, allowed in params.allowed_values.items():
        name = f"allowed_values[{column}]"
        if column not in columns:
            checks.append(_missing(name, column, allowed))
            continue
        series = df[column]
        bad = series[series.notna() & ~series.isin(allowed)]
        sample = sorted({str(v) for v in bad.unique()})[:_SAMPLE]
        checks.append(
            _check(
                name,
                bad.empty,
                allowed,
                {"unexpected_count": len(bad), "unexpected_sample": sample},
                f"{len(bad)} values of {column!r} outside the allowed set"
                + (f", e.g. {sample}" if sample else ""),
            )
        )
    for column, kind in params.dtypes.items():
        name = f"dtype[{column}]"
        if column not in columns:
            checks.append(_missing(name, column, kind))
            continue
        observed = _kind_of(df[column])
        checks.append(
            _check(
                name,
                observed == kind,
                kind,
                {"kind": observed, "dtype": str(df[column].dtype)},
                f"{column!r} is {observed} ({df[column].dtype}), expected {kind}",
            )
        )
    for column in params.unique:
        name = f"unique[{column}]"
        if column not in columns:
            checks.append(_missing(name, column, "no duplicates"))
            continue
        duplicates = int(df[column].duplicated().sum())
        checks.append(
            _check(
                name,
                duplicates == 0,
                "no duplicates",
                {"duplicates": duplicates},
                f"{duplicates} duplicate values in {column!r}",
            )
        )
    return checks


def _range_check(
    df: Any, columns: list[str], column: str, bounds: Range, types: Any
) -> dict[str, Any]:
    name = f"range[{column}]"
    expected = bounds.model_dump()
    if column not in columns:
        return _missing(name, column, expected)
    series = df[column]
    if not types.is_numeric_dtype(series):
        return _check(
            name,
            False,
            expected,
            {"dtype": str(series.dtype)},
            f"{column!r} is not numeric ({series.dtype})",
        )
    values = series.dropna().astype("float64")
    below = int((values < bounds.min).sum()) if bounds.min is not None else 0
    above = int((values > bounds.max).sum()) if bounds.max is not None else 0
    observed = {
        "min": values.min() if len(values) else None,
        "max": values.max() if len(values) else None,
        "below_min": below,
        "above_max": above,
    }
    return _check(
        name,
        below == 0 and above == 0,
        expected,
        observed,
        f"{column!r}: {below} values below {bounds.min}, {above} above {bounds.max}",
    )


@register_step_type
class DataValidation(StepType):
    name: ClassVar[str] = "data_validation"
    Params: ClassVar[type[BaseModel]] = DataValidationParams
    outputs: ClassVar[tuple[str, ...]] = ("dataset", "report", "rows")
    description: ClassVar[str] = (
        "Check row count, required columns, null fractions, value ranges, allowed values, "
        "dtypes and uniqueness; save a JSON report; fail if any check fails."
    )

    def run(self, context: StepContext, params: DataValidationParams) -> dict[str, Any]:
        df = load_dataset(params.dataset, context.artifacts)
        checks = run_checks(df, params)
        failed = [check for check in checks if not check["passed"]]
        report = {
            "step_library_version": STEP_LIBRARY_VERSION,
            "dataset": params.dataset,
            "passed": not failed,
            "rows": len(df),
            "columns": [str(c) for c in df.columns],
            "checks_total": len(checks),
            "checks_failed": len(failed),
            "failed": [check["check"] for check in failed],
            "checks": checks,
        }
        body = json.dumps(report, indent=2, allow_nan=False).encode()
        report_uri = context.artifacts.put_bytes(context.output_uri("report.json"), body)
        if failed:
            summary = "; ".join(f"{c['check']}: {c['detail']}" for c in failed[:_SAMPLE])
            more = f" (+{len(failed) - _SAMPLE} more)" if len(failed) > _SAMPLE else ""
            raise StepError(
                f"data validation failed: {len(failed)} of {len(checks)} checks failed: "
                f"{summary}{more}. Report: {report_uri}"
            )
        return {"dataset": params.dataset, "report": report_uri, "rows": len(df)}
