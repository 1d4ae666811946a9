"""Request input checked against a model's signature, in plain Python, before batching.

A row that breaks the signature is a 422 naming the row and column, and never reaches (or
fails) a batch shared with other callers. Checked rows stay Python lists until a batch is built:
one DataFrame per batch (from one 2-D array when all columns share a float dtype) rather than
one per request and a ``concat``. A required column may not be null (or NaN), even where
MLflow's ``double`` lets NaN through: most models fail on it, and in a batch that failure would
hit every caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.core.errors import InvalidFields

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.types import Schema

MAX_PROBLEMS = 20  # a 10,000-row request full of errors is answered with the first ones
_MISSING = object()
Location = tuple[str | int, ...]

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
