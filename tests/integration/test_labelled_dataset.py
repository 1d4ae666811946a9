"""``labelled://`` datasets read from a real database built by the migrations, on both stores:
only labelled, error-free requests of the window come back, one frame row per request row with
its own label, split into disjoint train and holdout parts; a step's process reads the same
frame through ``load_dataset``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from mlops.core.database import Database, create_database
from mlops.core.errors import InvalidInput, NotFound
from mlops.core.settings import Settings
from mlops.deployments.models import Deployment
from mlops.monitoring.labelled import (
    LINEAGE,
    LabelledQuery,
    in_holdout,
    labelled_uri,
    read_labelled,
)
from mlops.monitoring.models import GroundTruth, LoggedPrediction
from mlops.steps.datasets import load_dataset
from mlops.steps.framework import StepError
from tests.conftest import ROOT, _reset_state

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
UNTIL = T0 + timedelta(hours=10)
COLUMNS = ["a", "b", "c", "target"]
OUTSIDE = 10_000  # feature "a" of every row that must not come back starts here


def label(a: float) -> int:
    return int(a) * 2 + 1


class Log:
    """Writes a deployment's logged requests and truth; remembers the rows that should return."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.expected: list[dict[str, Any]] = []  # (created_at, id, row) order, filled by sort()
        self._keys: list[tuple[datetime, int, int]] = []

    async def deployment(self, name: str) -> uuid.UUID:
        async with self.database.sessionmaker() as session, session.begin():
            row = Deployment(
                name=name,
                model_name="m",
                strategy="direct",
                settings={},
                state="ready",
                created_by="test",
            )
            session.add(row)
        return row.id

    async def request(
        self,
        deployment: uuid.UUID,
        at: datetime,
        columns: list[str],
        rows: list[list[Any]],
        *,
        labels: list[Any] | None = None,
        error: str | None = None,
        returned: bool = True,
    ) -> int:
        async with self.database.sessionmaker() as session, session.begin():
            logged = LoggedPrediction(
                request_id=uuid.uuid4().hex,
                deployment_id=deployment,
                variant="primary",
                model_version="1",
                features={"columns": columns, "rows": rows},
                predictions=[] if error else [0] * len(rows),
                latency_ms=1.0,
                error=error,
                created_at=at,
            )
            session.add(logged)
            await session.flush()
            if labels is not None:
                session.add(
                    GroundTruth(prediction_id=logged.id, deployment_id=deployment, labels=labels)
                )
        if returned:
            for index, values in enumerate(rows):
                named = dict(zip(columns, values, strict=True))
                self.expected.append({c: named.get(c) for c in COLUMNS[:3]} | {"_id": logged.id})
                self.expected[-1]["target"] = (labels or [])[index]
                self._keys.append((at, logged.id, index))
        return logged.id

    def sort(self) -> None:
        order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
        self.expected = [self.expected[i] | {"_row": self._keys[i][2]} for i in order]


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    await _reset_state(settings)  # the migrations, then every table emptied
    created = create_database(settings)
    try:
        yield created
    finally:
        await created.dispose()


@pytest.fixture
async def log(database: Database) -> Log:
    log = Log(database)
    churn = await log.deployment("churn")
    other = await log.deployment("other")
    ab = ["a", "b"]
    hour = timedelta(hours=1)
    # written out of time order, so that (created_at, id) is not the insertion order
    rows: list[list[Any]] = [[0.5, 40, "x"], [1.5, 41, "y"]]
    await log.request(churn, T0 + 4 * hour, ["b", "a", "c"], rows, labels=[81, 83])
    await log.request(churn, T0, ab, [[1, 0.25]], labels=[label(1)])  # since is inclusive
    rows = [[2, 0.5], [3, 0.5], [4, 0.5]]
    await log.request(churn, T0 + hour, ab, rows, labels=[5, 7, 9])
    left_out: list[tuple[uuid.UUID, datetime, int, list[int] | None, str | None]] = [
        (churn, T0 + 2 * hour, 2, [1, 1], "the model failed"),
        (churn, T0 + 3 * hour, 1, None, None),  # no ground truth
        (churn, T0 - timedelta(microseconds=1), 1, [1], None),  # before since
        (churn, UNTIL, 1, [1], None),  # until is exclusive
        (other, T0 + hour, 1, [1], None),  # another deployment
        (churn, T0 + 3 * hour, 2, [1], None),  # truth of the wrong length
    ]
    for n, (deployment, at, count, labels, error) in enumerate(left_out):
        rows = [[OUTSIDE + 10 * n + r, 0] for r in range(count)]
        await log.request(deployment, at, ab, rows, labels=labels, error=error, returned=False)
    for i in range(80):  # enough rows for both sides of the split; pairs share a moment
        at = T0 + timedelta(hours=5, minutes=i // 2)
        rows = [[100 + 10 * i + r, float(r)] for r in range(1 + i % 4)]
        await log.request(churn, at, ab, rows, labels=[label(row[0]) for row in rows])
    log.sort()
    return log


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")
    ]


async def read(database: Database, query: LabelledQuery) -> pd.DataFrame:
    async with database.sessionmaker() as session:
        return await read_labelled(session, query)


async def test_only_labelled_error_free_rows_of_the_window_come_back_in_order(
    database: Database, log: Log
) -> None:
    frame = await read(database, LabelledQuery("churn", T0, UNTIL))
    assert list(frame.columns) == COLUMNS  # first-seen order, the target last
    expected = [{k: row[k] for k in COLUMNS} for row in log.expected]
    assert records(frame) == expected
    assert (frame["a"] < OUTSIDE).all()
    assert (frame["target"] == frame["a"].astype(int) * 2 + 1).all()  # labels line up
    assert frame["c"].notna().sum() == 2  # only the request that logged a "c"
    assert frame.attrs[LINEAGE] == {
        "deployment": "churn",
        "since": T0.isoformat(),
        "until": UNTIL.isoformat(),
        "part": "all",
        "holdout_share": 0.3,
        "target": "target",
        "requests": 83,
        "rows": len(log.expected),
        "skipped_requests": 1,
    }


async def test_train_and_holdout_are_disjoint_and_make_up_the_whole(
    database: Database, log: Log
) -> None:
    every = await read(database, LabelledQuery("churn", T0, UNTIL))
    train = await read(database, LabelledQuery("churn", T0, UNTIL, part="train"))
    holdout = await read(database, LabelledQuery("churn", T0, UNTIL, part="holdout"))
    assert len(train) and len(holdout) and len(train) + len(holdout) == len(every)
    assert list(train.columns) == list(holdout.columns) == COLUMNS  # one schema for both parts
    assert set(train["a"]).isdisjoint(holdout["a"])
    assert set(train["a"]) | set(holdout["a"]) == set(every["a"])
    held = [row for row in log.expected if in_holdout(row["_id"], row["_row"], 0.3)]
    assert list(holdout["a"]) == [row["a"] for row in held]  # the split of (id, row), in order
    assert (train["target"] == train["a"].astype(int) * 2 + 1).all()
    assert (holdout["target"] == holdout["a"].astype(int) * 2 + 1).all()
    assert holdout.attrs[LINEAGE]["part"] == "holdout"
    assert holdout.attrs[LINEAGE]["rows"] == len(holdout)
    assert train.attrs[LINEAGE]["rows"] == len(train)
    again = await read(database, LabelledQuery("churn", T0, UNTIL, part="holdout"))
    assert records(again) == records(holdout)


async def test_empty_windows_unknown_deployments_and_a_feature_named_like_the_target(
    database: Database, log: Log
) -> None:
    empty = await read(
        database, LabelledQuery("churn", UNTIL + timedelta(hours=1), UNTIL + timedelta(days=1))
    )
    assert list(empty.columns) == ["target"] and len(empty) == 0
    assert empty.attrs[LINEAGE]["requests"] == 0 and empty.attrs[LINEAGE]["rows"] == 0
    with pytest.raises(NotFound, match="No deployment 'nope'"):
        await read(database, LabelledQuery("nope", T0, UNTIL))
    clash = await log.deployment("clash")
    await log.request(clash, T0, ["target", "b"], [[1, 2]], labels=[3], returned=False)
    with pytest.raises(InvalidInput, match="feature named 'target'"):
        await read(database, LabelledQuery("clash", T0, UNTIL))
    renamed = await read(database, LabelledQuery("clash", T0, UNTIL, target="y"))
    assert records(renamed) == [{"target": 1, "b": 2, "y": 3}]


async def test_a_step_process_loads_the_frame_through_load_dataset(
    settings: Settings, log: Log, database: Database
) -> None:
    uri = labelled_uri(LabelledQuery("churn", T0, UNTIL, part="train", holdout_share=0.4))
    code = (
        "import sys; from mlops.steps.datasets import load_dataset;"
        "frame = load_dataset(sys.argv[1]);"
        "print(frame.to_json(orient='split', index=False)); print(frame.attrs)"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code, uri],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **settings.step_environment()},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed, attrs = done.stdout.splitlines()
    split = json.loads(printed)
    assert split["columns"] == COLUMNS
    held = [row for row in log.expected if not in_holdout(row["_id"], row["_row"], 0.4)]
    assert [row[1] for row in split["data"]] == [row["b"] for row in held]
    assert [row[3] for row in split["data"]] == [row["target"] for row in held]
    assert f"'rows': {len(held)}" in attrs and "'part': 'train'" in attrs


async def test_a_bad_uri_or_unknown_deployment_is_a_step_error(
    settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in settings.step_environment().items():
        monkeypatch.setenv(name, value)
    unknown = labelled_uri(LabelledQuery("missing", T0, UNTIL))
    with pytest.raises(StepError, match=r"labelled://missing\?.*: No deployment 'missing'"):
        await asyncio.to_thread(load_dataset, unknown)
    with pytest.raises(StepError, match="gives no until="):
        await asyncio.to_thread(load_dataset, "labelled://churn?since=2026-01-01")
