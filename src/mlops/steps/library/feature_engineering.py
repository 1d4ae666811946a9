"""``feature_engineering``: fit imputers, scalers and encoders; save them and the features.

The fitted scikit-learn transformer is saved with joblib (pickle). TRUST BOUNDARY: unpickling
runs code, so ``load_transformer`` only loads artifacts of this service's own store, written by
this step; never point it at a file from anywhere else.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.datasets import load_dataset, save_dataset
from mlops.steps.framework import StepContext, StepError, StepType, register_step_type


class FeatureEngineeringParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="Dataset URI (path, file://, sklearn://...).")
    target: str | None = Field(
        default="target", description="Label column: kept out of the transform, carried along."
    )
    numeric: list[str] | Literal["auto"] = "auto"
    categorical: list[str] | Literal["auto"] = "auto"
    drop: list[str] = Field(default_factory=list, description="Columns to leave out (ids...).")
    scale: Literal["standard", "minmax", "none"] = "standard"
    impute_numeric: Literal["mean", "median", "most_frequent"] = "median"
    impute_categorical: Literal["most_frequent", "constant"] = "most_frequent"
    one_hot: bool = Field(default=True, description="One-hot (unknowns ignored), else ordinal.")


def as_float(frame: Any) -> Any:
    """Numeric columns as float64 (nullable integers and booleans included, NA as NaN)."""
    return frame.astype("float64")


def as_object(frame: Any) -> Any:
    """Categorical columns as Python objects with NaN for every kind of missing value."""
    import numpy as np

    values = frame.astype(object)
    return values.where(values.notna(), np.nan)


def _split_columns(df: Any, params: FeatureEngineeringParams) -> tuple[list[str], list[str]]:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    from pandas.api import types  # type: ignore[import-untyped,unused-ignore]

    columns = [str(c) for c in df.columns]
    excluded = set(params.drop) | ({params.target} if params.target else set())
    for label, chosen in (("numeric", params.numeric), ("categorical", params.categorical)):
        if chosen != "auto":
            absent = [c for c in chosen if c not in columns]
            if absent:
                raise StepError(f"{label} columns not in the dataset: {absent}")
            clash = [c for c in chosen if c in excluded]
            if clash:
                raise StepError(f"{label} columns include the target or dropped columns: {clash}")
    explicit = {*(params.numeric if params.numeric != "auto" else [])}
    explicit |= set(params.categorical if params.categorical != "auto" else [])
    free = [c for c in columns if c not in excluded and c not in explicit]

    def is_numeric(column: str) -> bool:
        series = df[column]
        return bool(types.is_numeric_dtype(series) and not types.is_bool_dtype(series))

    def is_categorical(column: str) -> bool:
        series = df[column]
        return bool(
            types.is_bool_dtype(series)
            or types.is_string_dtype(series)
            or isinstance(series.dtype, pd.CategoricalDtype)
            or series.dtype == object
        )

    numeric = params.numeric if params.numeric != "auto" else [c for c in free if is_numeric(c)]
    categorical = (
        params.categorical
        if params.categorical != "auto"
        else [c for c in free if c not in numeric and is_categorical(c)]
    )
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise StepError(f"columns listed as both numeric and categorical: {both}")
    not_numeric = [c for c in numeric if not types.is_numeric_dtype(df[c])]
    if not_numeric:
        raise StepError(f"numeric columns that are not numeric: {not_numeric}")
    if not numeric and not categorical:
        raise StepError("no feature columns: give numeric or categorical columns")
    return list(numeric), list(categorical)


def build_transformer(
    numeric: list[str], categorical: list[str], params: FeatureEngineeringParams
) -> Any:
    from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped,unused-ignore]
    from sklearn.impute import SimpleImputer  # type: ignore[import-untyped,unused-ignore]
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped,unused-ignore]
    from sklearn.preprocessing import (  # type: ignore[import-untyped,unused-ignore]
        FunctionTransformer,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = [
            ("as_float", FunctionTransformer(as_float, feature_names_out="one-to-one")),
            ("impute", SimpleImputer(strategy=params.impute_numeric)),
        ]
        if params.scale == "standard":
            steps.append(("scale", StandardScaler()))
        elif params.scale == "minmax":
            steps.append(("scale", MinMaxScaler()))
        parts.append(("num", Pipeline(steps), numeric))
    if categorical:
        encoder = (
            OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            if params.one_hot
            else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        )
        imputer = (
            SimpleImputer(strategy="constant", fill_value="missing")
            if params.impute_categorical == "constant"
            else SimpleImputer(strategy="most_frequent")
        )
        cat_steps = [
            ("as_object", FunctionTransformer(as_object, feature_names_out="one-to-one")),
            ("impute", imputer),
            ("encode", encoder),
        ]
        parts.append(("cat", Pipeline(cat_steps), categorical))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def load_transformer(uri: str, artifacts: ArtifactStore) -> Any:
    """Load a transformer saved by this step. Refuses anything outside the service's store
    (see the trust boundary note at the top of this module)."""
    import joblib  # type: ignore[import-untyped,unused-ignore]

    if not artifacts.owns(uri):
        raise StepError(f"refusing to unpickle {uri!r}: not an artifact of {artifacts.root}")
    with artifacts.open(uri, "rb") as handle:
        return joblib.load(handle)


@register_step_type
class FeatureEngineering(StepType):
    name: ClassVar[str] = "feature_engineering"
    Params: ClassVar[type[BaseModel]] = FeatureEngineeringParams
    outputs: ClassVar[tuple[str, ...]] = ("dataset", "transformer", "n_features", "feature_names")
    description: ClassVar[str] = (
        "Impute, scale and encode columns with a fitted scikit-learn ColumnTransformer; save the "
        "transformer (joblib) and the numeric features plus the target as parquet."
    )

    def run(self, context: StepContext, params: FeatureEngineeringParams) -> dict[str, Any]:
        import joblib
        import pandas as pd

        df = load_dataset(params.dataset, context.artifacts)
        df.columns = [str(c) for c in df.columns]
        if params.target is not None and params.target not in df.columns:
            raise StepError(
                f"target column {params.target!r} is not in the dataset "
                f"(columns: {list(df.columns)[:20]}); set target to null if there is none"
            )
        numeric, categorical = _split_columns(df, params)
        transformer = build_transformer(numeric, categorical, params)
        try:
            matrix = transformer.fit_transform(df)
            try:
                names = [str(n) for n in transformer.get_feature_names_out()]
            except ValueError:  # short names collide: fall back to "num__x", "cat__y_a"
                transformer.set_params(verbose_feature_names_out=True)
                names = [str(n) for n in transformer.get_feature_names_out()]
        except (ValueError, TypeError) as exc:
            raise StepError(f"cannot fit the feature transformer: {exc}") from exc
        if params.target is not None and params.target in names:
            raise StepError(f"a feature is named like the target {params.target!r}")
        features = pd.DataFrame(matrix, columns=names).astype("float64")
        if params.target is not None:
            features[params.target] = df[params.target].reset_index(drop=True)
        local = context.work_dir / "transformer.joblib"
        joblib.dump(transformer, local)
        transformer_uri = context.artifacts.put_file(
            context.output_uri("transformer.joblib"), local
        )
        dataset_uri = save_dataset(
            features, context.output_uri("dataset.parquet"), context.artifacts
        )
        return {
            "dataset": dataset_uri,
            "transformer": transformer_uri,
            "n_features": len(names),
            "feature_names": names,
        }
