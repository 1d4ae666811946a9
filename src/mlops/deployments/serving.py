"""Serving one registered model version in-process: resolve it, load it once, warm it on its
input example, check each request against its signature, and micro-batch its predictions.

Decisions:

- Requests are checked per request, before batching, in plain Python (``inputs.py``).
  MLflow's own ``_enforce_schema`` costs ~1.5 ms of CPU per call even for one row, more than the
  whole per-request budget, so when those checks cover everything it would do (a signature of
  named scalar columns) batches go straight to the flavor's ``predict``
  (``PyFuncModel._model_impl``, a stable developer API). Warm-up proves that both paths answer
  the same on the input example, and keeps ``PyFuncModel.predict`` if they do not.
- A model without a signature or an input example is refused: its requests could not be
  checked, nor the model smoke-tested before it takes traffic.
- The model is loaded from its version's download URI with the tracking URI given, not through
  ``models:/`` and MLflow's process-wide registry URI, so stores can be served side by side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops.core.errors import DomainError, InvalidFields, NotFound, ServiceUnavailable
from mlops.deployments.batching import (
    DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_MAX_WAIT_MS,
    MicroBatcher,
    split_predictions,
)
from mlops.deployments.inputs import InputSchema, ModelInput
from mlops.training.registry import Registry
from mlops.training.stores import import_mlflow

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.pyfunc import PyFuncModel

log = logging.getLogger(__name__)


class ModelLoadFailed(Exception):
    """A version that failed to load or to answer its smoke predictions: it gets no traffic.
    ``transient`` when the registry was unreachable, so trying again later may work."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class PredictionFailed(DomainError):
    """The model raised, or answered nonsense, on input that passed its signature."""

    slug = "prediction-failed"


class ServingRegistry(Registry):
    """The look-ups serving needs, with ``Registry``'s translation of MLflow's errors."""

    def version_by_alias(self, name: str, alias: str) -> str:
        call = lambda: self.client.get_model_version_by_alias(name, alias)  # noqa: E731
        return str(self._found(name, call, f"Model '{name}' has no alias '{alias}'").version)

    def existing_version(self, name: str, version: str) -> str:
        call = lambda: self.client.get_model_version(name, version)  # noqa: E731
        return str(self._found(name, call, f"Model '{name}' has no version {version}").version)

    def download_uri(self, name: str, version: str) -> str:
        call = lambda: self.client.get_model_version_download_uri(name, version)  # noqa: E731
        return str(self._found(name, call, f"Model '{name}' has no version {version}"))

    def _found(self, name: str, call: Callable[[], Any], missing: str) -> Any:
        import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            return self._call(call, missing)
        except NotFound:
            self.model(name)  # says so when the model itself is missing
            raise
        except MlflowException as exc:  # a version that is not a number, say
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            self.model(name)
            raise NotFound(missing) from None


def resolve_version(
    registry: str | Registry, name: str, version: str | int | None = None, alias: str | None = None
) -> str:
    """The version number ``alias`` points to, or ``version`` once it is known to exist.
    Blocking (MLflow's client is synchronous): call it from a thread. ``NotFound`` for an unknown
    model, version or alias; ``ServiceUnavailable`` when the registry is unreachable."""
    if (version is None) == (alias is None):
        raise ValueError("give exactly one of version and alias")
    serving = ServingRegistry(registry if isinstance(registry, str) else registry.tracking_uri)
    if alias is not None:
        return serving.version_by_alias(name, alias)
    return serving.existing_version(name, str(version))


# --- the loaded model ------------------------------------------------------------------------


class LoadedModel:
    """One model version in memory, warmed, answering through its micro-batcher. Build it with
    ``await LoadedModel.load(...)``; ``await model.close()`` when it is unloaded."""

    def __init__(self, name: str, version: str, pyfunc: PyFuncModel, example: Any) -> None:
        self.name = name
        self.version = version
        self.pyfunc = pyfunc
        schema = pyfunc.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        if schema is None:
            raise ModelLoadFailed(
                f"{self.label} was logged without a signature, so requests to it could not be "
                "checked; log it with signature="
            )
        try:
            self.schema = InputSchema(schema)
        except ValueError as exc:
            raise ModelLoadFailed(f"{self.label} cannot be served: {exc}") from None
        self.input_columns = self.schema.names
        self.load_seconds = 0.0
        self.warm_up_seconds = 0.0
        self.direct = False  # batches skip MLflow's own schema enforcement (see the top)
        self.batcher: MicroBatcher[ModelInput, list[Any]] | None = None
        self._example = example
        self._predict: Callable[[Any], Any] = pyfunc.predict

    @property
    def label(self) -> str:
        return f"model '{self.name}' version {self.version}"

    @classmethod
    async def load(
        cls,
        tracking_uri: str,
        name: str,
        version: str | int,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        isolate_failures: bool = True,
    ) -> LoadedModel:
        """Load ``models:/name/version`` (in a thread), warm it and start serving it; raises
        ``ModelLoadFailed`` with the reason when it cannot take traffic."""
        started = time.perf_counter()
        pyfunc, example = await asyncio.to_thread(open_version, tracking_uri, name, str(version))
        model = cls(name, str(version), pyfunc, example)
        model.load_seconds = time.perf_counter() - started
        await model.start(
            max_batch_rows=max_batch_rows,
            max_wait_ms=max_wait_ms,
            isolate_failures=isolate_failures,
        )
        return model

    async def start(
        self,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        isolate_failures: bool = True,
    ) -> None:
        """Warm the model (in a thread), then let it take requests (see ``MicroBatcher``)."""
        started = time.perf_counter()
        await asyncio.to_thread(self._warm)
        self.warm_up_seconds = time.perf_counter() - started
        self.batcher = MicroBatcher(
            self._predict_batch,
            name=self.label,
            max_batch_rows=max_batch_rows,
            max_wait_ms=max_wait_ms,
            isolate_failures=isolate_failures,
        )

    def describe(self) -> str:
        return (
            f"loaded in {self.load_seconds:.2f} s, warmed and smoke-tested on its input example "
            f"in {self.warm_up_seconds:.2f} s"
        )

    def parse(self, body: Any) -> ModelInput:
        """A request body checked against the signature (``InvalidFields`` naming the field)."""
        return self.schema.parse(body)

    async def predict(self, data: ModelInput | pd.DataFrame) -> list[Any]:
        """JSON-able predictions, one per row, batched with concurrent callers' rows."""
        if self.batcher is None:
            raise ServiceUnavailable(f"{self.label} is not serving yet")
        model_input = data if isinstance(data, ModelInput) else self.parse(_split_body(data))
        return await self.batcher.submit(model_input, len(model_input))

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()

    def _predict_batch(self, inputs: list[ModelInput]) -> list[list[Any]]:
        """In the model's thread: one ``predict`` over the rows of ``inputs``, shared back."""
        frame = self.schema.frame(inputs)
        try:
            return split_predictions(self._predict(frame), [len(one) for one in inputs])
        except Exception as exc:
            raise PredictionFailed(f"{self.label} failed to predict: {_why(exc)}") from exc

    def _warm(self) -> None:
        """Smoke predictions on the input example, through MLflow's own ``predict`` and then
        through the request path, which goes direct only if it answers the same."""
        import pandas as pd

        example = self._example
        example = pd.DataFrame(example) if isinstance(example, dict) else example
        if not isinstance(example, pd.DataFrame):
            raise ModelLoadFailed(f"{self.label} has no table input example to warm it on")
        try:
            (expected,) = split_predictions(self.pyfunc.predict(example), [len(example)])
            model_input = self.parse(_split_body(example))
        except InvalidFields as exc:
            reason = f"{self.label}'s input example breaks its own signature: {exc.detail}"
            raise ModelLoadFailed(reason) from exc
        except Exception as exc:
            raise ModelLoadFailed(f"{self.label} failed on its input example: {_why(exc)}") from exc
        impl = self.pyfunc._model_impl
        if self.schema.complete and not _typed_signature(self.pyfunc):
            self._predict = impl.predict
            self.direct = self._answers(model_input) == expected
            if not self.direct:
                log.warning("%s: predicting through MLflow's own enforcement", self.label)
        if not self.direct:
            self._predict = self.pyfunc.predict
            if self._answers(model_input) != expected:
                raise ModelLoadFailed(f"{self.label} answers its input example inconsistently")

    def _answers(self, model_input: ModelInput) -> list[Any] | None:
        try:
            return self._predict_batch([model_input])[0]
        except PredictionFailed as exc:
            log.info("%s failed a smoke prediction: %s", self.label, exc.detail)
            return None


def open_version(tracking_uri: str, name: str, version: str) -> tuple[PyFuncModel, Any]:
    """The model and its input example, from the version's artifacts (blocking)."""
    registry = ServingRegistry(tracking_uri)
    try:
        uri = registry.download_uri(name, version)
    except NotFound as exc:
        raise ModelLoadFailed(exc.detail) from exc
    except ServiceUnavailable as exc:
        raise ModelLoadFailed(exc.detail, transient=True) from exc
    except Exception as exc:
        raise ModelLoadFailed(f"models:/{name}/{version} was not found: {_why(exc)}") from exc
    try:
        import mlflow.artifacts
        import mlflow.pyfunc

        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
        pyfunc = mlflow.pyfunc.load_model(path)
        example = pyfunc.metadata.load_input_example(path)
    except Exception as exc:
        raise ModelLoadFailed(f"models:/{name}/{version} failed to load: {_why(exc)}") from exc
    if example is None:
        raise ModelLoadFailed(
            f"models:/{name}/{version} was logged without an input example, so it cannot be "
            "smoke-tested before it takes traffic; log it with input_example="
        )
    return pyfunc, example


def _typed_signature(pyfunc: PyFuncModel) -> bool:
    """Signatures from a PythonModel's type hints are enforced inside its own ``predict``."""
    metadata: Any = pyfunc.metadata
    return bool(metadata._is_signature_from_type_hint() or metadata._is_type_hint_from_example())


def _split_body(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": frame.to_dict(orient="split")}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
