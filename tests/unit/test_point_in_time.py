"""Point-in-time join (mlops.features.pointintime) against a brute-force reference."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.features.pointintime import ViewFrame, point_in_time_join

BASE = pd.Timestamp("2024-01-01", tz="UTC")


def at(minutes: float) -> pd.Timestamp:
    return BASE + pd.Timedelta(minutes=minutes)


def stamps(minutes: Any, unit: str = "ns") -> pd.Series:
    return (BASE + pd.to_timedelta(pd.Series(minutes, dtype="float64"), unit="min")).dt.as_unit(
        unit
    )


def view_frame(
    keys: dict[str, list[Any]], event: list[float], created: list[float], **features: Any
) -> pd.DataFrame:
    return pd.DataFrame(
        {**keys, "event_timestamp": stamps(event), "created_timestamp": stamps(created), **features}
    )


def entity_frame(driver_ids: list[Any], minutes: list[float], **extra: Any) -> pd.DataFrame:
    return pd.DataFrame({"driver_id": driver_ids, "ts": stamps(minutes), **extra})


def simple_view(frame: pd.DataFrame, ttl: timedelta | None = None, **kwargs: Any) -> ViewFrame:
    features = kwargs.get("features", ("value",))
    return ViewFrame(
        name="drivers",
        join_keys=kwargs.get("join_keys", ("driver_id",)),
        frame=frame,
        features=features,
        output_names=kwargs.get("output_names", tuple(f"drivers__{f}" for f in features)),
        ttl=ttl,
    )


def reference(entities: pd.DataFrame, timestamp_column: str, view: ViewFrame) -> list[int | None]:
    """The winning row position of ``view.frame`` for each entity row, by brute force."""
    by_key: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for position, row in enumerate(view.frame[list(view.join_keys)].itertuples(index=False)):
        by_key[tuple(row)].append(position)
    events = list(view.frame["event_timestamp"])
    createds = list(view.frame["created_timestamp"])
    winners: list[int | None] = []
    for _, entity in entities.iterrows():
        t = entity[timestamp_column]
        best: tuple[Any, ...] | None = None
        for position in by_key.get(tuple(entity[k] for k in view.join_keys), []):
            event, created = events[position], createds[position]
            if pd.isna(event) or event > t or (not pd.isna(created) and created > t):
                continue
            candidate = (event, created if not pd.isna(created) else pd.Timestamp.min, position)
            if best is None or candidate > best:
                best = candidate
        if best is not None and view.ttl is not None and t - best[0] > view.ttl:
            best = None
        winners.append(None if best is None else best[2])
    return winners


def assert_matches_reference(
    result: pd.DataFrame, entities: pd.DataFrame, views: list[ViewFrame]
) -> None:
    for column in entities.columns:
        pd.testing.assert_series_equal(
            result[column], entities[column].reset_index(drop=True), check_names=False
        )
    for view in views:
        winners = reference(entities, "ts", view)
        for feature, output in zip(view.features, view.output_names, strict=True):
            got = result[output]
            source = view.frame[feature]
            for i, winner in enumerate(winners):
                if winner is None:
                    assert pd.isna(got.iloc[i]), (output, i)
                else:
                    assert got.iloc[i] == source.iloc[winner], (output, i, winner)


def test_label_between_two_updates_gets_the_earlier_value() -> None:
    frame = view_frame({"driver_id": [1, 1]}, [0, 10], [0, 10], value=[1.0, 2.0])
    entities = entity_frame([1, 1, 1, 1], [5, -1, 10, 11])
    result = point_in_time_join(entities, "ts", [simple_view(frame)])
    assert result["drivers__value"].tolist()[0] == 1.0
    assert pd.isna(result["drivers__value"][1])  # before any update
    assert result["drivers__value"].tolist()[2:] == [2.0, 2.0]  # exactly at the event: visible


def test_ttl_boundary_exactly_ttl_is_present() -> None:
    frame = view_frame({"driver_id": [1]}, [0], [0], value=[7.0])
    entities = entity_frame([1, 1, 1], [59, 60, 60.5])
    result = point_in_time_join(entities, "ts", [simple_view(frame, ttl=timedelta(minutes=60))])
    values = result["drivers__value"]
    assert values[0] == 7.0 and values[1] == 7.0  # just inside, exactly ttl
    assert pd.isna(values[2])  # older than the ttl


def test_same_event_time_later_created_wins_unless_created_after_label() -> None:
    frame = view_frame({"driver_id": [1, 1]}, [0, 0], [30, 5], value=[2.0, 1.0])
    entities = entity_frame([1, 1, 1], [10, 30, 3])
    result = point_in_time_join(entities, "ts", [simple_view(frame)])
    values = result["drivers__value"]
    assert values[0] == 1.0  # the created-at-30 correction was not known at 10
    assert values[1] == 2.0  # at 30 it was
    assert pd.isna(values[2])  # neither was created by 3


def test_full_tie_last_row_in_frame_order_wins() -> None:
    frame = view_frame({"driver_id": [1, 1, 1]}, [0, 0, 0], [1, 1, 1], value=[1.0, 2.0, 3.0])
    result = point_in_time_join(entity_frame([1], [5]), "ts", [simple_view(frame)])
    assert result["drivers__value"][0] == 3.0


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
def test_rows_visible_at_the_same_moment(permutation: tuple[int, ...]) -> None:
    # all three become visible at 10; the greatest event time wins whatever the frame order
    rows = [(0, 10, 1.0), (5, 10, 2.0), (10, 3, 3.0)]
    event, created, value = zip(*(rows[i] for i in permutation), strict=True)
    frame = view_frame({"driver_id": [1, 1, 1]}, list(event), list(created), value=list(value))
    result = point_in_time_join(entity_frame([1, 1], [9, 10]), "ts", [simple_view(frame)])
    assert pd.isna(result["drivers__value"][0])
    assert result["drivers__value"][1] == 3.0


def test_backfilled_value_is_not_used_before_it_was_created() -> None:
    # the event at 20 is backfilled at 100, long after the label at 50 was taken
    frame = view_frame({"driver_id": [1, 1]}, [0, 20], [0, 100], value=[1.0, 9.0])
    entities = entity_frame([1, 1, 1], [50, 100, 150])
    result = point_in_time_join(entities, "ts", [simple_view(frame)])
    assert result["drivers__value"].tolist() == [1.0, 9.0, 9.0]


def random_views(rng: np.random.Generator) -> list[ViewFrame]:
    def created_after(events: np.ndarray) -> Any:
        kind = rng.choice(4, size=len(events), p=[0.3, 0.4, 0.2, 0.1])
        offsets = np.select(
            [kind == 0, kind == 1, kind == 2],
            [0, rng.integers(0, 6, len(events)), rng.integers(100, 400, len(events))],
            rng.integers(-3, 0, len(events)),  # created before the event: odd but allowed
        )
        return events + offsets

    count = 5_000
    events = rng.integers(0, 600, count)
    by_city = pd.DataFrame(
        {
            "driver_id": rng.integers(0, 300, count),
            "city": rng.choice(["ams", "ber", "par"], count),
            "event_timestamp": stamps(events),
            "created_timestamp": stamps(created_after(events)),
            "trips": rng.normal(size=count),
            "rating": rng.integers(0, 5, count),
            "tier": pd.Series(rng.choice(["gold", "silver"], count), dtype=object),
        }
    )
    count = 3_000
    events = rng.integers(0, 600, count)
    by_driver = pd.DataFrame(  # microsecond timestamps against the entities' nanoseconds
        {
            "driver_id": rng.integers(0, 300, count),
            "event_timestamp": stamps(events, "us"),
            "created_timestamp": stamps(created_after(events), "us"),
            "acceleration": rng.normal(size=count),
        }
    )
    return [
        ViewFrame(
            "by_city",
            ("driver_id", "city"),
            by_city,
            ("trips", "rating", "tier"),
            ("city_trips", "city_rating", "city_tier"),
            None,
        ),
        ViewFrame(
            "by_driver",
            ("driver_id",),
            by_driver,
            ("acceleration",),
            ("driver_acceleration",),
            timedelta(minutes=45),
        ),
    ]


def test_random_data_matches_brute_force() -> None:
    rng = np.random.default_rng(20240101)
    views = random_views(rng)
    count = 2_000
    entities = pd.DataFrame(
        {
            "driver_id": rng.integers(0, 330, count),  # some drivers no view holds
            "city": rng.choice(["ams", "ber", "par", "rom"], count),
            "ts": stamps(rng.integers(0, 700, count)),
            "label": rng.integers(0, 2, count),
        }
    )
    entities.index = rng.permutation(count) + 1000  # a scrambled index: reset in the result
    result = point_in_time_join(entities, "ts", views)
    assert len(result) == count
    assert list(result.index) == list(range(count))
    assert_matches_reference(result, entities, views)
    # the data exercised what it should: found, missing and stale rows in both views
    assert 0 < result["city_trips"].isna().sum() < count
    assert 0 < result["driver_acceleration"].isna().sum() < count


def test_order_duplicates_extra_columns_and_missing_values() -> None:
    frame = view_frame(
        {"driver_id": ["a", "b", "b"]},
        [0, 0, 10],
        [0, 0, 10],
        count=np.array([1, 2, 3], dtype=np.int64),
        ratio=[0.5, 0.25, 0.75],
        active=[True, False, True],
        name=pd.Series(["x", "y", "z"], dtype=object),
    )
    features = ("count", "ratio", "active", "name")
    entities = entity_frame(
        ["b", "zz", "a", "b", "b", None], [20, 20, 20, 5, 20, 20], label=range(6)
    )
    result = point_in_time_join(entities, "ts", [simple_view(frame, features=features)])
    assert list(result.columns) == [
        "driver_id",
        "ts",
        "label",
        "drivers__count",
        "drivers__ratio",
        "drivers__active",
        "drivers__name",
    ]
    assert result["label"].tolist() == list(range(6))
    assert result["drivers__count"].dtype == "Int64"
    assert result["drivers__count"].tolist() == [3, pd.NA, 1, 2, 3, pd.NA]
    assert result["drivers__ratio"].dtype == np.float64
    assert result["drivers__ratio"].isna().tolist() == [False, True, False, False, False, True]
    assert result["drivers__active"].dtype == "boolean"
    assert result["drivers__active"].tolist() == [True, pd.NA, True, False, True, pd.NA]
    assert result["drivers__name"].tolist() == ["z", None, "x", "y", "z", None]
    # nothing missing: the feature keeps its own dtype
    found = point_in_time_join(entities.iloc[[0, 2]], "ts", [simple_view(frame, features=features)])
    assert found["drivers__count"].dtype == np.int64
    assert found["drivers__active"].dtype == bool


def test_empty_view_gives_missing_features() -> None:
    frame = view_frame({"driver_id": []}, [], [], value=np.array([], dtype=np.int64))
    result = point_in_time_join(entity_frame([1, 2], [0, 1]), "ts", [simple_view(frame)])
    assert result["drivers__value"].dtype == "Int64"
    assert result["drivers__value"].isna().all()


def errors_cases() -> list[Any]:
    frame = view_frame({"driver_id": [1]}, [0], [0], value=[1.0])
    entities = entity_frame([1], [0])
    naive_entities = entities.assign(ts=entities["ts"].dt.tz_localize(None))
    naive_view = frame.assign(created_timestamp=frame["created_timestamp"].dt.tz_localize(None))
    return [
        pytest.param(entities.drop(columns="ts"), simple_view(frame), "'ts'", id="no timestamp"),
        pytest.param(naive_entities, simple_view(frame), "'ts'.*tz-aware", id="naive entity"),
        pytest.param(
            entities, simple_view(naive_view), "'created_timestamp'.*tz-aware", id="naive view"
        ),
        pytest.param(
            entities.drop(columns="driver_id"), simple_view(frame), "'driver_id'", id="entity key"
        ),
        pytest.param(
            entities, simple_view(frame.drop(columns="driver_id")), "'driver_id'", id="view key"
        ),
        pytest.param(
            entities,
            simple_view(frame.drop(columns="event_timestamp")),
            "'event_timestamp'",
            id="no event",
        ),
        pytest.param(entities, simple_view(frame, features=("speed",)), "'speed'", id="no feature"),
        pytest.param(
            entities, simple_view(frame, output_names=("ts",)), "'ts'", id="output collides"
        ),
    ]


@pytest.mark.parametrize(("entities", "view", "message"), errors_cases())
def test_errors(entities: pd.DataFrame, view: ViewFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        point_in_time_join(entities, "ts", [view])


def test_view_frame_checks_its_names() -> None:
    frame = view_frame({"driver_id": [1]}, [0], [0], value=[1.0])
    with pytest.raises(ValueError, match="2 output names"):
        simple_view(frame, output_names=("a", "b"))
    with pytest.raises(ValueError, match="no join keys"):
        simple_view(frame, join_keys=())


def test_large_join_completes() -> None:
    rng = np.random.default_rng(3)
    rows, entity_rows = 1_000_000, 200_000
    start = BASE.value
    frame = pd.DataFrame(
        {
            "driver_id": rng.integers(0, 50_000, rows),
            "event_timestamp": pd.to_datetime(start + rng.integers(0, 10**15, rows), utc=True),
            "created_timestamp": pd.to_datetime(start + rng.integers(0, 10**15, rows), utc=True),
            "value": rng.normal(size=rows),
        }
    )
    entities = pd.DataFrame(
        {
            "driver_id": rng.integers(0, 50_000, entity_rows),
            "ts": pd.to_datetime(start + rng.integers(0, 10**15, entity_rows), utc=True),
        }
    )
    began = time.perf_counter()
    result = point_in_time_join(entities, "ts", [simple_view(frame, ttl=timedelta(days=3))])
    print(f"200,000 x 1,000,000 rows: {time.perf_counter() - began:.2f} s")
    assert len(result) == entity_rows
    assert result["drivers__value"].notna().any()
