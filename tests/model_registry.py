"""Small models registered in a real MLflow store, for the deployment tests.

``register(tracking_uri, name, kind)`` logs a model with a signature and an input example and
registers a new version: ``good`` is a random forest on breast_cancer; ``flaky`` is the same
forest wrapped so that it raises for rows whose ``mean radius`` is above ``FLAKY_RADIUS`` (about a
quarter of the data set, none of its input example): a version that errors on a share of
requests; ``broken`` raises on every row, its input example included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

FLAKY_RADIUS = 17.0
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class _Wrapped:
    """A pyfunc model around a fitted estimator, failing as its ``mode`` says."""

    def __new__(cls, model: Any, mode: str) -> Any:
        import mlflow.pyfunc

        class Wrapped(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
            def __init__(self) -> None:
                self.model = model
                self.mode = mode

            def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
                if self.mode == "broken":
                    raise RuntimeError("this version is broken on purpose")
                if self.mode == "flaky" and (model_input["mean radius"] > FLAKY_RADIUS).any():
                    raise RuntimeError("this version fails on large tumours on purpose")
                return self.model.predict(model_input)

        return Wrapped()


@lru_cache(maxsize=1)
def data() -> Any:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    return frame.drop(columns="target"), frame["target"]


@lru_cache(maxsize=1)
def forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    features, labels = data()
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels)


def example_rows() -> Any:
    features, _ = data()
    return features[features["mean radius"] < 13].head(3)


@contextmanager
def tracking_at(uri: str) -> Iterator[None]:
    """MLflow's module-level API pointed at ``uri``, then back: ``set_tracking_uri`` also sets
    ``MLFLOW_TRACKING_URI`` in the environment, which the service's settings read."""
    import mlflow

    saved = {key: os.environ.get(key) for key in URI_VARIABLES}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:  # None unsets MLflow's global and its variable; "" would set an empty URI
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def register(tracking_uri: str, name: str, kind: str = "good", alias: str | None = None) -> str:
    with tracking_at(tracking_uri):
        return _register(tracking_uri, name, kind, alias)


def _register(tracking_uri: str, name: str, kind: str, alias: str | None) -> str:
    import mlflow
    from mlflow.models import infer_signature

    example = example_rows()
    signature = infer_signature(example, forest().predict(example))
    with mlflow.start_run():
        if kind == "good":
            info = mlflow.sklearn.log_model(
                forest(),
                name="model",
                signature=signature,
                input_example=example,
                serialization_format="cloudpickle",
                pip_requirements=[],
            )
        else:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=_Wrapped(forest(), kind),
                signature=signature,
                input_example=example,
                pip_requirements=[],
            )
    version = str(mlflow.register_model(info.model_uri, name).version)
    if alias:
        mlflow.MlflowClient(tracking_uri, tracking_uri).set_registered_model_alias(
            name, alias, version
        )
    return version


def rows(n: int, *, large: bool | None = None) -> list[dict[str, Any]]:
    """``n`` records of breast_cancer: only large tumours, only small ones, or as they come."""
    features, _ = data()
    if large is not None:
        features = features[(features["mean radius"] > FLAKY_RADIUS) == large]
    picked = features.sample(n=n, replace=True, random_state=n)
    return [{k: float(v) for k, v in row.items()} for row in picked.to_dict("records")]
