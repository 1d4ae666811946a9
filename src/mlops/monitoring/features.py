"""Monitored columns: which columns of the data (a DataFrame or a mapping of column ->
array) are watched, as which kind (numeric or categorical), in which role (a feature, or the
model's prediction); kinds come from the dtypes unless given. :class:`ProfileError` is the
error of the whole profile side: the data, the specs, or a stored profile that cannot be used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

FeatureKind = Literal["numeric", "categorical"]
FeatureRole = Literal["feature", "prediction"]
Data: TypeAlias = pd.DataFrame | Mapping[str, Any]

_KINDS = ("numeric", "categorical")
_ROLES = ("feature", "prediction")


class ProfileError(ValueError):
    """The data or the stored profile cannot be used: names the column and the reason."""


@dataclass(frozen=True)
class FeatureSpec:
    """One monitored column. ``role="prediction"`` marks the model's output, compared with the
    same machinery (prediction drift) but not counted among the features."""

    name: str
    kind: FeatureKind
    role: FeatureRole = "feature"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ProfileError(f"{self.name}: kind must be one of {', '.join(_KINDS)}")
        if self.role not in _ROLES:
            raise ProfileError(f"{self.name}: role must be one of {', '.join(_ROLES)}")


# --------------------------------------------------------------------------- columns


def column(data: Data, name: str) -> Any:
    """A column of a DataFrame or a mapping of column -> array, without copying it."""
    try:
        return data[name]
    except KeyError:
        raise ProfileError(f"{name}: no such column") from None


def column_names(data: Data) -> list[str]:
    return [str(name) for name in (data.columns if isinstance(data, pd.DataFrame) else data)]


def infer_kind(values: Any, name: str = "") -> FeatureKind:
    """``numeric`` for integer and float dtypes, ``categorical`` for booleans, strings,
    objects and pandas ``Categorical``; dates and durations are refused."""
    dtype = values.dtype if hasattr(values, "dtype") else np.asarray(values).dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        raise ProfileError(f"{name}: dates and durations are not supported; derive a number")
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return "numeric"
    return "categorical"


def infer_specs(
    data: Data,
    *,
    columns: Sequence[str] | None = None,
    kinds: Mapping[str, FeatureKind] | None = None,
    prediction: str | Sequence[str] | None = None,
) -> tuple[FeatureSpec, ...]:
    """Specs for ``columns`` (default: all), kinds from ``kinds`` or else from the dtypes;
    ``prediction`` names the prediction column(s)."""
    names = list(columns) if columns is not None else column_names(data)
    kinds = dict(kinds or {})
    predictions = {prediction} if isinstance(prediction, str) else set(prediction or ())
    unknown = (set(kinds) | predictions) - set(names)
    if unknown:
        raise ProfileError(f"{', '.join(sorted(unknown))}: not among the columns")
    return tuple(
        FeatureSpec(
            name,
            kinds.get(name) or infer_kind(column(data, name), name),
            "prediction" if name in predictions else "feature",
        )
        for name in names
    )
