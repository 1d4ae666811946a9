"""Expectations on a view's features, checked on ingest and on materialization.

Types are enforced by the view's schema before this runs; here each feature may also require
values to be present, inside a range or among allowed values, and the view may require its
newest value to be fresh. A check reports how many rows failed and a few of the values, with
the first failing row's index so that a refused ingest names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlops.features.frames import EVENT

SAMPLES = 5


@dataclass(frozen=True)
class Failure:
    feature: str
    expectation: str  # not_null | min | max | allowed_values | freshness
    failed_rows: int
    first_row: int | None
    sample: list[Any]

    def message(self) -> str:
        return f"{self.failed_rows} row(s) break {self.expectation}: e.g. {self.sample}"


def _failure(feature: str, expectation: str, values: pa.ChunkedArray, mask: Any) -> Failure | None:
    mask = pc.fill_null(mask, False)
    failed = pc.sum(mask).as_py() or 0
    if not failed:
        return None
    rows = pc.indices_nonzero(mask)
    sample = pc.take(values, rows.slice(0, SAMPLES)).to_pylist()
    return Failure(feature, expectation, int(failed), int(rows[0].as_py()), sample)


def check_expectations(table: pa.Table, expectations: dict[str, dict[str, Any]]) -> list[Failure]:
    """Each expectation a feature's values break (``expectations``: feature -> its block)."""
    failures: list[Failure | None] = []
    for feature, expected in expectations.items():
        if feature not in table.column_names:
            continue
        values = table.column(feature)
        if not expected.get("nullable", True):
            failures.append(_failure(feature, "not_null", values, pc.is_null(values)))
        if expected.get("min") is not None:
            failures.append(_failure(feature, "min", values, pc.less(values, expected["min"])))
        if expected.get("max") is not None:
            failures.append(_failure(feature, "max", values, pc.greater(values, expected["max"])))
        if expected.get("allowed_values") is not None:
            allowed = pa.array(expected["allowed_values"], type=values.type)
            outside = pc.invert(pc.is_in(values, value_set=allowed))
            failures.append(
                _failure(feature, "allowed_values", values, pc.and_(outside, pc.is_valid(values)))
            )
    return [failure for failure in failures if failure is not None]


def check_freshness(
    table: pa.Table, freshness_seconds: int | None, now: datetime
) -> Failure | None:
    """The newest event older than the view allows (an empty table is never fresh)."""
    if freshness_seconds is None:
        return None
    newest = pc.max(table.column(EVENT)).as_py() if table.num_rows else None
    age = (now - newest).total_seconds() if newest is not None else None
    if age is not None and age <= freshness_seconds:
        return None
    shown = f"{age:.0f} s old" if age is not None else "no rows"
    return Failure("*", "freshness", 1, None, [shown])


def report(rows: int, failures: list[Failure]) -> dict[str, Any]:
    return {
        "rows": rows,
        "passed": not failures,
        "failures": [
            {
                "feature": f.feature,
                "expectation": f.expectation,
                "failed_rows": f.failed_rows,
                "first_row": f.first_row,
                "sample": f.sample,
            }
            for f in failures
        ],
    }
