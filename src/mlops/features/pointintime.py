"""Point-in-time join: for each entity row, the feature values that were known at its timestamp.

For an entity row with join-key values k at time t, a feature view's *candidates* are its rows
with the same key values, ``event_timestamp <= t`` and ``created_timestamp <= t``: a value
written or backfilled after t was not known at t, and using it would leak the future into
training data. The *winner* is the candidate with the greatest event time, then the greatest
created time, then the one latest in the view frame's row order (a later ingestion of the same
row wins). With a ttl, a winner more than ttl older than t is stale and the features are missing;
exactly ttl old is still present.

Missing features (no candidate, a stale winner, a key the view does not hold or a null key, a
null entity timestamp) are NaN in float columns, None in object columns and the dtype's own
missing value in extension columns; int and bool columns become the nullable ``Int64``-style
and ``boolean`` dtypes when at least one value is missing. A feature row with a null event time
is ignored; a null created time counts as earlier than any time (known from the event time on).

The result is the entity frame in its original row order, index reset, with all its columns,
plus one column per output name.

How: a feature row is visible from ``v = max(event, created)``. The view's rows are ranked by
(event, created, position); in order of visibility, a running maximum of the rank per key gives
the best row visible so far, and a backward as-of merge on (key, v <= t) picks it up for each
entity row. Features are then gathered by row position, never by a wide merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mlops.features.frames import CREATED, EVENT

NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)  # eq=False: a DataFrame field has no == or hash
class ViewFrame:
    """One feature view's rows and the features to take from them."""

    name: str
    join_keys: tuple[str, ...]
    frame: pd.DataFrame  # join keys, EVENT, CREATED and feature columns
    features: tuple[str, ...]
    output_names: tuple[str, ...]  # the result's column for each feature
    ttl: timedelta | None = None  # None: no time-to-live

    def __post_init__(self) -> None:
        if not self.join_keys:
            raise ValueError(f"feature view {self.name!r} has no join keys")
        if len(self.features) != len(self.output_names):
            raise ValueError(
                f"feature view {self.name!r}: {len(self.features)} features but "
                f"{len(self.output_names)} output names"
            )


def point_in_time_join(
    entities: pd.DataFrame, timestamp_column: str, views: Sequence[ViewFrame]
) -> pd.DataFrame:
    """``entities`` (original order, index reset) with each view's features as of each row's
    ``timestamp_column``; see the module docstring for the rules."""
    _check(entities, timestamp_column, views)
    times = _nanoseconds(entities, timestamp_column, "the entity frame")
    result = entities.reset_index(drop=True)
    columns: dict[str, Any] = {}
    for view in views:
        where = f"feature view {view.name!r}"
        event = _nanoseconds(view.frame, EVENT, where)
        created = _nanoseconds(view.frame, CREATED, where)
        entity_keys, view_keys = _key_codes(entities, view)
        rows = _winners(entity_keys, times, view_keys, event, created)
        missing = rows < 0
        if view.ttl is not None and not missing.all():
            ttl = pd.Timedelta(view.ttl).value  # nanoseconds
            missing |= times - event[np.where(missing, 0, rows)] > ttl
        # reading a large frame in row order is twice as fast as at random: gather in that
        # order, then put the values back in the entities' order
        ordered = np.argsort(rows)
        back = np.empty_like(ordered)
        back[ordered] = np.arange(len(ordered))
        for feature, output in zip(view.features, view.output_names, strict=True):
            values = _gather(view.frame[feature], rows[ordered], missing[ordered]).take(back)
            # the array's own dtype: from object values pandas would infer strings
            columns[output] = pd.Series(values, dtype=values.dtype, copy=False)
    return pd.concat([result, pd.DataFrame(columns, index=result.index, copy=False)], axis=1)


def _check(entities: pd.DataFrame, timestamp_column: str, views: Sequence[ViewFrame]) -> None:
    outputs = [name for view in views for name in view.output_names]
    taken = set(entities.columns)
    for name in outputs:
        if name in taken:
            raise ValueError(f"output column {name!r} is already in the entity frame or repeated")
        taken.add(name)
    for view in views:
        for key in view.join_keys:
            if key not in entities.columns:
                raise ValueError(f"the entity frame has no join key column {key!r}")
        for column in (*view.join_keys, EVENT, CREATED, *view.features):
            if column not in view.frame.columns:
                raise ValueError(f"feature view {view.name!r} has no column {column!r}")


def _nanoseconds(frame: pd.DataFrame, column: str, where: str) -> Ints:
    if column not in frame.columns:
        raise ValueError(f"{where} has no timestamp column {column!r}")
    series = frame[column]
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"column {column!r} of {where} must hold tz-aware timestamps, not {series.dtype}"
        )
    # tz_convert(None) gives UTC wall time: the same instants, as a plain numpy datetime64
    naive = series.dt.as_unit("ns").dt.tz_convert(None).to_numpy()
    return np.asarray(naive.view(np.int64))


def _key_codes(entities: pd.DataFrame, view: ViewFrame) -> tuple[Ints, Ints]:
    """One int64 code per row for the join-key values, shared by both frames; -1 if any is null."""
    count = len(entities)
    code: Ints = np.zeros(count + len(view.frame), dtype=np.int64)
    null = np.zeros(len(code), dtype=bool)
    size = 1
    for key in view.join_keys:
        both = pd.concat([entities[key], view.frame[key]], ignore_index=True)
        codes, uniques = pd.factorize(both)
        null |= codes < 0
        code = code * max(len(uniques), 1) + np.maximum(codes, 0)
        size *= max(len(uniques), 1)
        if size > len(code):  # keep the codes small: _winners multiplies them by a row count
            code, uniques = pd.factorize(code)
            size = len(uniques)
    code[null] = -1
    return code[:count], code[count:]


def _winners(entity_keys: Ints, times: Ints, view_keys: Ints, event: Ints, created: Ints) -> Ints:
    """Each entity row's winning row position in the view frame, -1 for none."""
    usable = np.flatnonzero((view_keys >= 0) & (event != NAT))
    found = np.full(len(times), -1, dtype=np.int64)
    if not len(usable):
        return found
    rank, by_rank = _rank(view_keys[usable], event[usable], created[usable])
    visible = np.maximum(event[usable], created[usable])
    by_time = np.argsort(visible)
    keys = view_keys[usable][by_time]
    # at each row in order of visibility, the best rank of its key so far
    best = pd.Series(rank[by_time]).groupby(keys).cummax().to_numpy()
    asked = np.flatnonzero((entity_keys >= 0) & (times != NAT))
    asked = asked[np.argsort(times[asked])]
    # backward as-of merge: per key, the LAST right row with time <= t (documented), which among
    # rows visible at the same moment is the one whose running maximum covers them all
    answer = pd.merge_asof(
        pd.DataFrame({"time": times[asked], "key": entity_keys[asked]}),
        pd.DataFrame({"time": visible[by_time], "key": keys, "best": best}),
        on="time",
        by="key",
        allow_exact_matches=True,
    )["best"]
    found[asked] = answer.fillna(-1).to_numpy(dtype=np.int64)
    return np.where(found >= 0, usable[by_rank[np.maximum(found, 0)]], -1)


def _rank(keys: Ints, event: Ints, created: Ints) -> tuple[Ints, Ints]:
    """Ranks, all distinct, that order each key's rows by (event, created, position), and the
    rows in rank order. Rows of different keys are never compared, so only rows that tie with
    one of their own key on the event need the slow lexicographic sort: with daily snapshots
    nearly every row ties on the event, but with another key."""
    order = np.argsort(event)
    ordered = event[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = ordered[1:] == ordered[:-1]
    tied = repeat.copy()
    tied[:-1] |= repeat[1:]
    spots = np.flatnonzero(tied)
    if len(spots):
        runs = np.cumsum(~repeat[spots])  # which run of equal events each spot is in
        clash = pd.Series(runs * (int(keys.max()) + 1) + keys[order[spots]]).duplicated(keep=False)
        spots = spots[clash.to_numpy()]
        rows = np.sort(order[spots])  # in frame order, which the stable lexsort keeps for ties
        order[spots] = rows[np.lexsort((created[rows], event[rows]))]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank, order


def _gather(column: pd.Series, rows: Ints, missing: Bools) -> Any:
    """``column``'s values at ``rows`` as an array, missing where ``missing``."""
    dtype = column.dtype
    if not missing.any():
        return column.array.take(rows)
    if isinstance(dtype, np.dtype) and dtype.kind in "iubfcO":
        values = (
            column.to_numpy().take(np.where(missing, 0, rows))
            if len(column)
            else np.zeros(len(rows), dtype=dtype)
        )
        if dtype.kind in "iu":
            return pd.arrays.IntegerArray(values, missing)
        if dtype.kind == "b":
            return pd.arrays.BooleanArray(values, missing)
        values[missing] = None if dtype.kind == "O" else np.nan
        return values
    return column.array.take(np.where(missing, -1, rows), allow_fill=True)
