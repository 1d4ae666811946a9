"""Where a deployment's models run: the serving-target interface and the in-process target.

The deployment manager never touches a model library itself: it asks its ``ServingTarget`` to
load a version, and routes requests to the ``ServedModel`` it gets back. A load that raises
``ModelLoadFailed`` means the variant never takes traffic. The in-process target (the embedded
default) loads through ``mlflow.pyfunc`` into this process and micro-batches its predictions.
Remote endpoints (a KServe ``InferenceService`` on Kubernetes, a Vertex AI endpoint) fit the
same two protocols: ``load`` creates or finds the endpoint and returns once it has answered its
smoke predictions, ``parse`` checks a body against the version's signature here, before any
network call, and ``predict`` forwards the checked rows.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from mlops.deployments.batching import DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_WAIT_MS
from mlops.deployments.inputs import ModelInput
from mlops.deployments.serving import LoadedModel
from mlops.training.stores import import_mlflow, open_tracking

logger = logging.getLogger("mlops.deployments")


class ServedModel(Protocol):
    """One model version taking requests on a target."""

    name: str
    version: str

    def parse(self, body: Any) -> ModelInput:
        """``body`` (``instances`` or ``dataframe_split``) checked against the signature;
        ``InvalidFields`` naming the row and column otherwise."""
        ...

    async def predict(self, data: ModelInput) -> list[Any]:
        """One JSON-able prediction per row of a parsed body; ``PredictionFailed`` when the
        model fails on input that passed its signature."""
        ...

    def describe(self) -> str:
        """How the version was loaded and proved healthy, for the variant's detail."""
        ...

    async def close(self) -> None: ...


class ServingTarget(Protocol):
    name: str

    async def prepare(self) -> None:
        """Whatever makes the first load fast, done once at start-up; never raises."""
        ...

    async def load(self, model: str, version: str) -> ServedModel:
        """The version loaded, warmed and smoke-tested; ``ModelLoadFailed`` with the reason."""
        ...


class InProcessTarget:
    """Models loaded into this process through ``mlflow.pyfunc`` (``serving.LoadedModel``)."""

    name = "in_process"

    def __init__(
        self,
        tracking_uri: str,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.max_batch_rows = max_batch_rows
        self.max_wait_ms = max_wait_ms

    async def prepare(self) -> None:
        await asyncio.to_thread(_prepare_serving_stack, self.tracking_uri)

    async def load(self, model: str, version: str) -> LoadedModel:
        return await LoadedModel.load(
            self.tracking_uri,
            model,
            version,
            max_batch_rows=self.max_batch_rows,
            max_wait_ms=self.max_wait_ms,
        )


def _prepare_serving_stack(tracking_uri: str) -> None:
    """Import what loading a model needs (seconds: MLflow, pandas, scikit-learn), map the
    installed distributions MLflow checks a model's requirements against, and open a
    database-backed registry (MLflow checks its schema on first use). A SQLite registry that
    does not exist yet holds no model to deploy, and making it would cost seconds: it is left
    alone. A remote tracking server is not called: it may be down, and a client for it costs
    nothing to make. Failures are not fatal: the first deploy opens what it needs."""
    try:
        import_mlflow()
        import sklearn.base  # noqa: F401  (unpickling a scikit-learn model imports it: ~1.5 s)
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        # the first check of a model's requirements maps every installed distribution (~1 s)
        warn_dependency_requirement_mismatches(["mlflow"])
        if tracking_uri.startswith("sqlite:///"):
            if Path(tracking_uri.removeprefix("sqlite:///")).exists():
                open_tracking(tracking_uri)
        elif not tracking_uri.startswith(("http://", "https://", "databricks")):
            open_tracking(tracking_uri)
    except Exception:
        logger.warning("could not preload the serving stack", exc_info=True)
