"""MLflow, as training uses it: one experiment per job, a parent run with a nested run per
trial, the refitted model logged with its signature and registered with its lineage tags."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.training.stores import mlflow_tracking_uri, open_tracking

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from mlflow import MlflowClient

# Tags every registered version carries, so a version leads back to what made it.
TAG_JOB = "mlops.job_id"
TAG_RUN = "mlops.pipeline_run_id"
TAG_DATASET = "mlops.dataset"
TAG_FEATURE_SERVICE = "mlops.feature_service"
TAG_FEATURE_VIEWS = "mlops.feature_views"  # "view:version,view:version" read by the run
TAG_DATASET_DIGEST = "mlops.dataset_digest"
TAG_METRIC = "mlops.metric"
TAG_METRIC_VALUE = "mlops.metric_value"
PARENT_TAG = "mlflow.parentRunId"


def client() -> MlflowClient:
    return open_tracking(mlflow_tracking_uri())


def use_store() -> None:
    """Point MLflow's module-level API (``log_model``, ``register_model``, ``load_model``) at
    the store this process tracks in."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_tracking_uri())
    mlflow.set_registry_uri(mlflow_tracking_uri())


def experiment_for(name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when two processes race)."""
    from mlflow.exceptions import MlflowException

    tracking = client()
    existing = tracking.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    try:
        return str(tracking.create_experiment(name))
    except MlflowException:
        again = tracking.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def start_parent_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    run = client().create_run(experiment_id, run_name=run_name, tags=tags)
    return str(run.info.run_id)


def log_trial(experiment_id: str, parent_run_id: str, trial: optuna.trial.FrozenTrial) -> None:
    """A finished trial as a nested run: its parameters, the per-fold running means and the
    final value, in one batch."""
    from mlflow.entities import Metric, Param

    tracking = client()
    started = _millis(trial.datetime_start)
    finished = _millis(trial.datetime_complete) or int(time.time() * 1000)
    run = tracking.create_run(
        experiment_id,
        start_time=started,
        run_name=f"trial-{trial.number}",
        tags={
            PARENT_TAG: parent_run_id,
            "optuna.trial": str(trial.number),
            "optuna.state": trial.state.name.lower(),
        },
    )
    params = [Param(name, str(value)) for name, value in trial.params.items()]
    metrics = [
        Metric("running_score", value, finished, int(step))
        for step, value in sorted(trial.intermediate_values.items())
    ]
    if trial.value is not None:
        metrics.append(Metric("score", float(trial.value), finished, 0))
    tracking.log_batch(run.info.run_id, metrics=metrics, params=params)
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(trial.state.name, "FAILED")
    tracking.set_terminated(run.info.run_id, status, end_time=finished)


def _millis(moment: Any) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


@dataclass(frozen=True)
class LoggedModel:
    model_uri: str
    version: str | None


def log_model(
    parent_run_id: str,
    model: Any,
    sample: pd.DataFrame,
    *,
    metrics: dict[str, float],
    params: dict[str, Any],
    register_as: str | None = None,
    version_tags: dict[str, str] | None = None,
) -> LoggedModel:
    """Log ``model`` (skops, with its signature and an input example) into the parent run, close
    the run, and register a new version of ``register_as`` when given."""
    import mlflow
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    use_store()
    example = sample.head(5)
    signature = infer_signature(example, model.predict(example))
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))  # our own model's types
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_params({f"best.{key}": value for key, value in params.items()})
        mlflow.log_metrics({f"best.{key}": value for key, value in metrics.items()})
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            skops_trusted_types=trusted,
        )
    version = register(info.model_uri, register_as, version_tags or {}) if register_as else None
    return LoggedModel(model_uri=info.model_uri, version=version)


def register(model_uri: str, name: str, tags: dict[str, str], alias: str | None = None) -> str:
    """A new version of ``name`` from ``model_uri``, tagged, optionally with ``alias``."""
    import mlflow

    use_store()
    version = mlflow.register_model(model_uri, name, tags=tags)
    if alias:
        client().set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"scikit-learn=={version('scikit-learn')}", f"skops=={version('skops')}"]


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status)
