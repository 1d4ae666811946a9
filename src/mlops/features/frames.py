"""Rows into a view version's canonical table, checked: the join keys, ``event_timestamp``,
``created_timestamp`` and the features, each with its declared type. A row or column that
does not fit is refused with its name; nothing is half-converted.

A view without a created-timestamp field takes each value as known from its event time (the
usual case: a value is recorded when it happens). One with it says when each value became
known, so that a backfilled value never reaches a point-in-time query before that moment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops.core.errors import InvalidFields, InvalidInput

EVENT = "event_timestamp"
CREATED = "created_timestamp"
TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class ViewSchema:
    """The columns of one view version: (name, type) of its join keys and of its features."""

    join_keys: tuple[tuple[str, str], ...]
    features: tuple[tuple[str, str], ...]
    timestamp_field: str
    created_timestamp_field: str | None

    @property
    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field(name, ARROW_TYPES[kind]) for name, kind in self.join_keys]
        fields += [pa.field(EVENT, TIMESTAMP), pa.field(CREATED, TIMESTAMP)]
        fields += [pa.field(name, ARROW_TYPES[kind]) for name, kind in self.features]
        return pa.schema(fields)

    @property
    def input_columns(self) -> list[str]:
        """The columns a row must carry, named as the source names them."""
        columns = [name for name, _ in self.join_keys] + [self.timestamp_field]
        if self.created_timestamp_field:
            columns.append(self.created_timestamp_field)
        return columns + [name for name, _ in self.features]


def _fits(kind: str, value: Any) -> bool:
    if kind == "int64":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float64":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, bool)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):
        moment = value
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def table_from_rows(schema: ViewSchema, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """JSON rows (field ``rows.N.column``) as the view's table."""
    expected = schema.input_columns
    allowed = set(expected)
    problems: list[tuple[list[str | int], str]] = []
    kinds = dict(schema.join_keys) | dict(schema.features)
    keys = {name for name, _ in schema.join_keys}
    stamps = {schema.timestamp_field, schema.created_timestamp_field} - {None}
    columns: dict[str, list[Any]] = {name: [] for name in expected}
    for index, row in enumerate(rows):
        for name in row.keys() - allowed:
            problems.append((["body", "rows", index, name], f"unknown column; expected {expected}"))
        for name in expected:
            if name not in row:
                problems.append((["body", "rows", index, name], "missing"))
                continue
            value = row[name]
            if name in stamps:
                value = _timestamp(value)
                if value is None:
                    problems.append(
                        (["body", "rows", index, name], "expected an ISO 8601 timestamp")
                    )
            elif value is None:
                if name in keys:
                    problems.append((["body", "rows", index, name], "a join key cannot be null"))
            elif not _fits(kinds[name], value) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                problems.append(
                    (["body", "rows", index, name], f"expected {kinds[name]}, got {value!r:.40}")
                )
            columns[name].append(value)
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise InvalidFields(problems[:MAX_PROBLEMS])
    return _assemble(schema, columns)


def table_from_frame(schema: ViewSchema, frame: pd.DataFrame, field: str) -> pa.Table:
    """A file's frame (the error names ``field`` and the column) as the view's table."""
    missing = [name for name in schema.input_columns if name not in frame.columns]
    unknown = [str(name) for name in frame.columns if name not in set(schema.input_columns)]
    if missing or unknown:
        parts = [f"missing columns {missing}"] if missing else []
        parts += [f"unknown columns {unknown}"] if unknown else []
        raise InvalidInput("; ".join(parts), field=["body", field])
    kinds = dict(schema.join_keys) | dict(schema.features)
    keys = {name for name, _ in schema.join_keys}
    columns: dict[str, Any] = {}
    for name in schema.input_columns:
        series = frame[name]
        if name in (schema.timestamp_field, schema.created_timestamp_field):
            columns[name] = _timestamp_column(series, field, name)
            continue
        if name in keys and series.isna().any():
            row = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise InvalidInput(
                f"column {name!r}: a join key cannot be null (row {row})", field=["body", field]
            )
        columns[name] = _typed_column(series, kinds[name], field, name)
    return _assemble(schema, columns)


_ACCEPTS: dict[str, tuple[Any, ...]] = {
    "int64": (pa.types.is_integer, pa.types.is_floating),  # floats only if whole
    "float64": (pa.types.is_integer, pa.types.is_floating),
    "string": (pa.types.is_string, pa.types.is_large_string),
    "bool": (pa.types.is_boolean,),
}


def _typed_column(series: pd.Series, kind: str, field: str, name: str) -> pa.Array:
    try:
        array = pa.Array.from_pandas(series)
        if not (pa.types.is_null(array.type) or any(ok(array.type) for ok in _ACCEPTS[kind])):
            raise ValueError(f"found {array.type}")
        if kind == "int64" and pa.types.is_floating(array.type):
            values = series.dropna().to_numpy()
            if not np.all(np.mod(values, 1) == 0):
                raise ValueError("found values with fractions")
        return array.cast(ARROW_TYPES[kind])
    except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(
            f"column {name!r}: expected {kind}; {reason}", field=["body", field]
        ) from exc


def _timestamp_column(series: pd.Series, field: str, name: str) -> pa.Array:
    try:
        moments = pd.to_datetime(
            series, utc=True, format="ISO8601" if series.dtype == object else None
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"column {name!r}: expected timestamps; {exc}", field=["body", field]
        ) from exc
    if moments.isna().any():
        raise InvalidInput(f"column {name!r}: timestamps cannot be null", field=["body", field])
    return pa.Array.from_pandas(moments).cast(TIMESTAMP)


def _assemble(schema: ViewSchema, columns: dict[str, Any]) -> pa.Table:
    def array(values: Any, kind: pa.DataType) -> pa.Array:
        return values.cast(kind) if isinstance(values, pa.Array) else pa.array(values, kind)

    arrays = [array(columns[name], ARROW_TYPES[kind]) for name, kind in schema.join_keys]
    arrays.append(array(columns[schema.timestamp_field], TIMESTAMP))
    if schema.created_timestamp_field:
        arrays.append(array(columns[schema.created_timestamp_field], TIMESTAMP))
    else:
        arrays.append(arrays[-1])
    arrays += [array(columns[name], ARROW_TYPES[kind]) for name, kind in schema.features]
    return pa.Table.from_arrays(arrays, schema=schema.arrow_schema)
