"""The serving core against a real local MLflow (SQLite store, local artifacts): versions and
aliases resolved, models loaded and warmed on their input example, single and concurrent
micro-batched predictions identical to the model's own, and failures kept to their callers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from mlops.core.errors import NotFound, ServiceUnavailable
from mlops.deployments.batching import MicroBatcher, ModelUnavailable, split_predictions
from mlops.deployments.serving import (
    LoadedModel,
    ModelLoadFailed,
    PredictionFailed,
    resolve_version,
)
from mlops.training.stores import open_tracking
from tests.conftest import free_port
from tests.model_registry import tracking_at

BATCHES: list[int] = []  # the batch sizes ``Poisoned`` saw (it is loaded in this process)


class Raises(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        raise RuntimeError("the model is broken")


class Poisoned(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Doubles the radius, and fails on a negative one (which passes the signature)."""

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        BATCHES.append(len(model_input))
        if (model_input["mean radius"] < 0).any():
            raise ValueError("a negative radius")
        return model_input["mean radius"] * 2


@dataclass
class Store:
    uri: str
    features: pd.DataFrame
    forest: Any


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = open_tracking(uri)
    experiment = client.create_experiment("serving", artifact_location=(root / "art").as_uri())
    features, labels = load_breast_cancer(return_X_y=True, as_frame=True)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels)
    example = features.head(5)
    signature = infer_signature(example, forest.predict(example))

    def log(name: str, flavor: Any, **kwargs: Any) -> str:
        with mlflow.start_run(experiment_id=experiment):
            info = flavor.log_model(
                name="model", signature=signature, pip_requirements=[], **kwargs
            )
        return str(mlflow.register_model(info.model_uri, name).version)

    with tracking_at(uri):  # and back to unset: get_tracking_uri() would give MLflow's default
        sk = mlflow.sklearn
        forest_args = {"sk_model": forest, "serialization_format": "cloudpickle"}
        log("forest", sk, input_example=example, **forest_args)
        version = log("forest", sk, input_example=example, **forest_args)
        client.set_registered_model_alias("forest", "champion", version)
        log("forest-no-example", sk, **forest_args)
        log("broken", mlflow.pyfunc, python_model=Raises(), input_example=example)
        log("poisoned", mlflow.pyfunc, python_model=Poisoned(), input_example=example)
    yield Store(uri, features, forest)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict(orient="records")  # type: ignore[no-any-return]


# --- versions and aliases ----------------------------------------------------------------------


def test_an_alias_resolves_to_its_version_and_a_version_to_itself(store: Store) -> None:
    assert resolve_version(store.uri, "forest", alias="champion") == "2"
    assert resolve_version(store.uri, "forest", version=1) == "1"
    assert resolve_version(store.uri, "forest", version="2") == "2"


@pytest.mark.parametrize(
    ("name", "version", "alias", "message"),
    [
        ("forest", "9", None, "Model 'forest' has no version 9"),
        ("forest", "latest", None, "Model 'forest' has no version latest"),
        ("forest", None, "staging", "Model 'forest' has no alias 'staging'"),
        ("ghost", "1", None, "No registered model 'ghost'"),
        ("ghost", None, "champion", "No registered model 'ghost'"),
    ],
)
def test_unknown_models_versions_and_aliases_are_not_found(
    store: Store, name: str, version: str | None, alias: str | None, message: str
) -> None:
    with pytest.raises(NotFound) as caught:
        resolve_version(store.uri, name, version=version, alias=alias)
    assert caught.value.detail == message


def test_an_unreachable_registry_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(ServiceUnavailable):
        resolve_version(f"http://127.0.0.1:{free_port()}", "forest", alias="champion")


# --- loading and warming -----------------------------------------------------------------------


async def test_a_loaded_model_is_warm_and_answers_like_the_model(store: Store) -> None:
    version = resolve_version(store.uri, "forest", alias="champion")
    model = await LoadedModel.load(store.uri, "forest", version)
    try:
        assert (model.name, model.version) == ("forest", "2")
        assert model.input_columns == tuple(store.features.columns)
        assert model.load_seconds > 0 and model.warm_up_seconds > 0
        assert model.direct  # the checks here cover the signature: MLflow's enforcement skipped

        rows = store.features.iloc[100:106]
        expected = store.forest.predict(rows).tolist()
        one = await model.predict(model.parse({"instances": records(rows.head(1))}))
        assert one == expected[:1] and type(one[0]) is int
        split = {"dataframe_split": rows.to_dict(orient="split")}
        assert await model.predict(model.parse(split)) == expected
        assert await model.predict(rows) == expected
    finally:
        await model.close()


async def test_concurrent_single_rows_are_answered_in_micro_batches(store: Store) -> None:
    model = await LoadedModel.load(store.uri, "forest", 1, max_batch_rows=8, max_wait_ms=20)
    try:
        rows = store.features.sample(40, random_state=1)
        bodies = [{"instances": [record]} for record in records(rows)]
        answers = await asyncio.gather(*(model.predict(model.parse(b)) for b in bodies))
        assert [answer[0] for answer in answers] == store.forest.predict(rows).tolist()
        assert model.batcher is not None
        stats = model.batcher.stats
        assert (stats.requests, stats.rows) == (40, 40)
        assert 5 <= stats.batches < 40  # at most 8 rows a batch, and coalesced
    finally:
        await model.close()


async def test_a_model_failing_its_smoke_prediction_gets_no_traffic(store: Store) -> None:
    with pytest.raises(ModelLoadFailed) as caught:
        await LoadedModel.load(store.uri, "broken", 1)
    assert "failed on its input example: RuntimeError: the model is broken" in caught.value.reason


async def test_a_model_without_an_input_example_gets_no_traffic(store: Store) -> None:
    with pytest.raises(ModelLoadFailed, match="without an input example"):
        await LoadedModel.load(store.uri, "forest-no-example", 1)


async def test_an_unknown_version_fails_to_load(store: Store) -> None:
    with pytest.raises(ModelLoadFailed) as caught:
        await LoadedModel.load(store.uri, "forest", 7)
    assert caught.value.reason == "Model 'forest' has no version 7"
    assert not caught.value.transient


# --- failures stay with their callers ----------------------------------------------------------


def radius_bodies(store: Store, radii: list[float]) -> list[dict[str, Any]]:
    rows = records(store.features.head(len(radii)))
    return [{"instances": [{**row, "mean radius": r}]} for row, r in zip(rows, radii, strict=True)]


async def test_a_failing_batch_fails_only_its_own_callers(store: Store) -> None:
    model = await LoadedModel.load(store.uri, "poisoned", 1, max_wait_ms=50, isolate_failures=False)
    try:
        BATCHES.clear()
        bodies = radius_bodies(store, [1.0, -1.0, 2.0])
        answers = await asyncio.gather(
            *(model.predict(model.parse(b)) for b in bodies), return_exceptions=True
        )
        assert BATCHES == [3]
        assert all(isinstance(answer, PredictionFailed) for answer in answers)
        assert "ValueError: a negative radius" in str(answers[0])
        assert await model.predict(model.parse(radius_bodies(store, [4.0])[0])) == [8.0]
    finally:
        await model.close()


async def test_a_bad_row_in_a_shared_batch_fails_only_its_caller(store: Store) -> None:
    model = await LoadedModel.load(store.uri, "poisoned", 1, max_wait_ms=50)
    try:
        BATCHES.clear()
        bodies = radius_bodies(store, [1.0, -1.0, 2.0, 3.0])
        answers = await asyncio.gather(
            *(model.predict(model.parse(b)) for b in bodies), return_exceptions=True
        )
        assert BATCHES == [4, 1, 1, 1, 1]  # the batch failed, then each request ran alone
        assert isinstance(answers[1], PredictionFailed)
        assert [answers[0], answers[2], answers[3]] == [[2.0], [4.0], [6.0]]
    finally:
        await model.close()


async def test_closing_fails_waiting_callers_and_refuses_new_ones(store: Store) -> None:
    model = await LoadedModel.load(store.uri, "forest", 1, max_wait_ms=60_000)
    body = model.parse({"instances": records(store.features.head(1))})
    waiting = [asyncio.create_task(model.predict(body)) for _ in range(3)]
    await asyncio.sleep(0.05)  # queued, in a gathering window that will not end by itself
    await model.close()
    for task in waiting:
        with pytest.raises(ModelUnavailable, match="model 'forest' version 1 was unloaded"):
            await asyncio.wait_for(task, 10)
    with pytest.raises(ModelUnavailable, match="is no longer served"):
        await model.predict(body)
    await model.close()  # twice is fine


# --- the batcher itself ------------------------------------------------------------------------


async def test_batches_keep_order_and_their_row_limit() -> None:
    seen: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        seen.append(items)
        return [item.upper() for item in items]

    batcher: MicroBatcher[str, str] = MicroBatcher(run, max_batch_rows=7, max_wait_ms=20)
    try:
        words = [f"w{i}" for i in range(10)]
        sizes = {word: 3 for word in words} | {"w4": 9}  # w4 alone is over the limit
        answers = await asyncio.gather(*(batcher.submit(w, sizes[w]) for w in words))
        assert answers == [word.upper() for word in words]
        assert [item for batch in seen for item in batch] == words
        assert ["w4"] in seen
        assert all(sum(sizes[w] for w in batch) <= 7 for batch in seen if batch != ["w4"])
    finally:
        await batcher.close()


async def test_without_a_wait_only_what_is_queued_is_batched() -> None:
    seen: list[int] = []

    def run(items: list[int]) -> list[int]:
        seen.append(len(items))
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_wait_ms=0)
    try:
        assert await asyncio.gather(*(batcher.submit(i, 1) for i in range(5))) == list(range(5))
        assert await batcher.submit(5, 1) == 5
        assert sum(seen) == 6 and seen[-1] == 1
    finally:
        await batcher.close()


async def test_a_caller_that_gives_up_is_dropped_and_a_running_batch_fails_on_close() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        seen.append(items)
        started.set()
        release.wait(10)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_wait_ms=0)
    running = asyncio.create_task(batcher.submit(1, 1))
    await asyncio.to_thread(started.wait, 10)
    gave_up = asyncio.create_task(batcher.submit(2, 1))
    queued = asyncio.create_task(batcher.submit(3, 1))
    await asyncio.sleep(0.01)
    gave_up.cancel()
    release.set()
    assert await asyncio.wait_for(running, 10) == 1
    assert await asyncio.wait_for(queued, 10) == 3
    assert seen == [[1], [3]]

    release.clear()
    started.clear()
    in_flight = asyncio.create_task(batcher.submit(4, 1))
    await asyncio.to_thread(started.wait, 10)
    await batcher.close()
    with pytest.raises(ModelUnavailable):
        await asyncio.wait_for(in_flight, 10)
    release.set()


def test_predictions_come_back_as_json_values_one_share_per_caller() -> None:
    assert split_predictions(np.array([1, 2, 3]), [2, 1]) == [[1, 2], [3]]
    assert split_predictions(np.array([0.5, np.nan]), [2]) == [[0.5, None]]
    assert split_predictions(pd.Series(["a", "b"]), [1, 1]) == [["a"], ["b"]]
    frame = pd.DataFrame({"p": [0.1, np.nan], "label": ["x", "y"]})
    assert split_predictions(frame, [2]) == [[{"p": 0.1, "label": "x"}, {"p": None, "label": "y"}]]
    assert split_predictions([np.int64(1), np.float32(0.5)], [2]) == [[1, 0.5]]
    assert split_predictions(np.array([[0.2, 0.8]]), [1]) == [[[0.2, 0.8]]]
    with pytest.raises(ValueError, match="2 predictions for 3 rows"):
        split_predictions(np.array([1, 2]), [3])
