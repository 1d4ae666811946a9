"""Serving one registered model version in-process: resolve it, load it once, warm it on its
input example, check each request against its signature, and micro-batch its predictions.

Decisions:

- Requests are checked here, per request and before batching, in plain Python: a row that breaks
  the signature is a 422 naming the row and column, and never reaches (or fails) a batch shared
  with other callers. MLflow's own ``_enforce_schema`` costs ~1.5 ms of CPU per call even for
  one row, more than the whole per-request budget, so when these checks cover everything it
  would do (a signature of named scalar columns) batches go straight to the flavor's ``predict``
  (``PyFuncModel._model_impl``, a stable developer API). Warm-up proves that both paths answer
  the same on the input example, and keeps ``PyFuncModel.predict`` if they do not.
- Checked rows stay Python lists until a batch is built: one DataFrame per batch (from one 2-D
  array when all columns share a float dtype) rather than one per request and a ``concat``.
- A required column may not be null (or NaN), even where MLflow's ``double`` lets NaN through:
  most models fail on it, and in a batch that failure would hit every caller.
- A model without a signature or an input example is refused: its requests could not be
  checked, nor the model smoke-tested before it takes traffic.
- The model is loaded from its version's download URI with the tracking URI given, not through
  ``models:/`` and MLflow's process-wide registry URI, so stores can be served side by side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.core.errors import DomainError, InvalidFields, NotFound, ServiceUnavailable
from mlops.deployments.batching import (
    DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_MAX_WAIT_MS,
    MicroBatcher,
    split_predictions,
)
from mlops.training.registry import Registry

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.pyfunc import PyFuncModel
    from mlflow.types import Schema

log = logging.getLogger(__name__)

MAX_PROBLEMS = 20  # a 10,000-row request full of errors is answered with the first ones
_MISSING = object()
Location = tuple[str | int, ...]


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


# --- request input ---------------------------------------------------------------------------

_KINDS: dict[str, tuple[tuple[type, ...], str, str]] = {
    # MLflow type: the JSON value types it takes, how messages name them, its numpy dtype
    "double": ((float, int), "a number", "float64"),
    "float": ((float, int), "a number", "float32"),
    "long": ((int,), "an integer", "int64"),
    "integer": ((int,), "an integer", "int32"),
    "boolean": ((bool,), "true or false", "bool"),
    "string": ((str,), "a string", "object"),
}
_BOUNDS = {"long": 2**63, "integer": 2**31}
_JSON_KINDS = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    kind: str
    required: bool
    accepts: tuple[type, ...]
    expected: str
    dtype: str

    def problem(self, value: Any) -> str | None:
        """Why ``value`` cannot go in this column, or None if it can."""
        if type(value) in self.accepts:  # type(), not isinstance(): a bool is no number here
            if value != value:  # NaN counts as null
                return self.null()
            bound = _BOUNDS.get(self.kind)
            if bound is not None and not -bound <= value < bound:
                return f"{value} is out of range for {self.kind}"
            return None
        if value is None:
            return self.null()
        if self.kind == "any":  # checked by MLflow's enforcement instead
            return None
        got = _JSON_KINDS.get(type(value)) or ("a list" if isinstance(value, list) else "an object")
        return f"expected {self.expected} ({self.kind}), got {got}"

    def null(self) -> str | None:
        return f"column '{self.name}' is required: null is not allowed" if self.required else None


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One request's rows, checked, in the signature's column order."""

    columns: tuple[str, ...]
    rows: list[list[Any]]
    index: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.rows)


class InputSchema:
    """A model's input signature as request checks. Signatures beyond named scalar columns
    (datetime, binary, arrays, objects, tensors) are checked per request by MLflow itself."""

    def __init__(self, schema: Schema) -> None:
        if not schema.has_input_names():
            raise ValueError("its signature takes an unnamed tensor, not named columns")
        self.schema = schema
        self.columns = _scalar_columns(schema)
        self.complete = bool(self.columns)  # these checks do all that MLflow's would
        if not self.complete:
            self.columns = tuple(
                _Column(str(spec.name), "any", getattr(spec, "required", True), (), "", "object")
                for spec in schema.inputs
            )
        self.names = tuple(column.name for column in self.columns)
        self._known = frozenset(self.names)
        dtypes = {column.dtype for column in self.columns}
        self._matrix = dtypes.pop() if dtypes in ({"float64"}, {"float32"}) else None
        self._index: pd.Index | None = None

    def parse(self, body: Any) -> ModelInput:
        """A request body with ``instances`` (records) or ``dataframe_split``, as checked rows;
        ``InvalidFields`` naming each problem (up to ``MAX_PROBLEMS``) otherwise."""
        given = [
            k for k in ("instances", "dataframe_split") if isinstance(body, dict) and k in body
        ]
        if len(given) != 1:
            message = "give exactly one of 'instances' (a list of records) and 'dataframe_split'"
            raise _invalid(("body",), message)
        key = given[0]
        parsed = self._records(body[key]) if key == "instances" else self._split(body[key])
        if not self.complete:
            self._enforce(parsed, key)
        return parsed

    def frame(self, inputs: Sequence[ModelInput]) -> pd.DataFrame:
        """One DataFrame of every row of ``inputs``, typed as the signature says."""
        import numpy as np
        import pandas as pd

        rows = inputs[0].rows if len(inputs) == 1 else [r for one in inputs for r in one.rows]
        if self._matrix is not None:  # None becomes NaN, as an optional column allows
            if self._index is None:  # cached: a new Index per batch costs more than the array
                self._index = pd.Index(self.names)
            return pd.DataFrame(np.array(rows, dtype=self._matrix), columns=self._index)
        return pd.DataFrame(
            {c.name: _array([row[i] for row in rows], c.dtype) for i, c in enumerate(self.columns)}
        )

    def _records(self, records: Any) -> ModelInput:
        where: Location = ("body", "instances")
        if not isinstance(records, list) or not records:
            raise _invalid(where, "expected a non-empty list of records (column: value objects)")
        problems: list[tuple[Location, str]] = []
        rows = []
        for i, record in enumerate(records):
            if isinstance(record, dict):
                rows.append(self._record(record, (*where, i), problems))
            else:
                problems.append(((*where, i), "expected a record (a column: value object)"))
            if len(problems) >= MAX_PROBLEMS:
                break
        _raise(problems)
        return ModelInput(self.names, rows)

    def _record(self, record: dict[str, Any], where: Location, problems: list[Any]) -> list[Any]:
        row = []
        found = 0
        for column in self.columns:
            value = record.get(column.name, _MISSING)
            if value is _MISSING:
                value = None
                if column.required:
                    problems.append(((*where, column.name), "required column is missing"))
            else:
                found += 1
                message = column.problem(value)
                if message:
                    problems.append(((*where, column.name), message))
            row.append(value)
        if found < len(record):
            unknown = [key for key in record if key not in self._known]
            problems.extend(((*where, key), self._unknown(key)) for key in unknown)
        return row

    def _split(self, split: Any) -> ModelInput:
        where: Location = ("body", "dataframe_split")
        if not isinstance(split, dict):
            raise _invalid(where, "expected an object with 'columns' and 'data'")
        positions, width = self._positions(split.get("columns"), (*where, "columns"))
        data, index = _split_data(split, width, where)
        problems: list[tuple[Location, str]] = []
        rows = []
        for i, values in enumerate(data):
            row = [values[p] if p is not None else None for p in positions]
            for column, value in zip(self.columns, row, strict=True):
                message = column.problem(value)
                if message:
                    problems.append(((*where, "data", i, column.name), message))
            rows.append(row)
            if len(problems) >= MAX_PROBLEMS:
                break
        _raise(problems)
        return ModelInput(self.names, rows, index)

    def _positions(self, columns: Any, where: Location) -> tuple[list[int | None], int]:
        """Where each signature column is among the request's columns, and how many those are."""
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise _invalid(where, "expected a list of column names")
        given = {name: i for i, name in enumerate(columns)}
        problems = [(where, f"column '{name}' is given twice") for name in _twice(columns)]
        problems += [
            (where, f"required column '{c.name}' is missing")
            for c in self.columns
            if c.required and c.name not in given
        ]
        problems += [(where, self._unknown(name)) for name in given if name not in self._known]
        _raise(problems[:MAX_PROBLEMS])
        return [given.get(c.name) for c in self.columns], len(columns)

    def _unknown(self, name: str) -> str:
        shown = ", ".join(self.names[:8])
        more = f" and {len(self.names) - 8} more" if len(self.names) > 8 else ""
        return f"unknown column '{name}'; the model takes {shown}{more}"

    def _enforce(self, parsed: ModelInput, key: str) -> None:
        from mlflow.models.utils import _enforce_schema

        try:
            _enforce_schema(self.frame([parsed]), self.schema)
        except Exception as exc:
            raise _invalid(("body", key), f"does not match the model's signature: {exc}") from None


def _scalar_columns(schema: Schema) -> tuple[_Column, ...]:
    """The signature's columns if all are named and of a scalar type checked here, else ()."""
    if schema.is_tensor_spec():
        return ()
    columns = []
    for spec in schema.inputs:
        kind = getattr(spec.type, "name", None)
        if kind not in _KINDS or spec.name is None:
            return ()
        accepts, expected, dtype = _KINDS[kind]
        columns.append(_Column(str(spec.name), kind, spec.required, accepts, expected, dtype))
    return tuple(columns)


def _twice(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return [name for name in names if name in seen or seen.add(name)]  # type: ignore[func-returns-value]


def _split_data(split: dict[str, Any], width: int, where: Location) -> tuple[list[Any], Any]:
    data, index = split.get("data"), split.get("index")
    if not isinstance(data, list) or not data:
        raise _invalid((*where, "data"), "expected a non-empty list of rows")
    problems: list[tuple[Location, str]] = [
        ((*where, "data", i), f"expected a list of {width} values, one per column")
        for i, row in enumerate(data)
        if not isinstance(row, list) or len(row) != width
    ]
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        problems.append(((*where, "index"), f"expected a list of {len(data)} labels, one per row"))
    _raise(problems[:MAX_PROBLEMS])
    return data, index


def _array(values: list[Any], dtype: str) -> Any:
    import numpy as np
    import pandas as pd

    if dtype in ("bool", "int32", "int64") and any(value is None for value in values):
        dtype = "object"  # a null in an optional integer or boolean column
    if dtype == "object":  # a Series keeps list values as values, where numpy adds dimensions
        return pd.Series(values, dtype=object)
    return np.array(values, dtype=dtype)


def _invalid(where: Location, message: str) -> InvalidFields:
    return InvalidFields([(where, message)], detail=f"{_dotted(where)}: {message}")


def _raise(problems: list[tuple[Location, str]]) -> None:
    if problems:
        where, message = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise InvalidFields(problems, detail=f"{_dotted(where)}: {message}{more}")


def _dotted(where: Location) -> str:
    return ".".join(str(part) for part in where[1:] or where)


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
        pyfunc, example = await asyncio.to_thread(_open, tracking_uri, name, str(version))
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


def _open(tracking_uri: str, name: str, version: str) -> tuple[PyFuncModel, Any]:
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
