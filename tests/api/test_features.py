"""The feature store through the API, on both stores: definitions and their versions, ingest
with its checks, point-in-time retrieval, materialization and online reads."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pytest

from mlops.core.settings import Settings
from tests.conftest import ADMIN, create_key, free_port

BASE = "/api/v1/features"
NOW = datetime.now(UTC).replace(microsecond=0)


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


DRIVER = {"join_keys": [{"name": "driver_id", "type": "int64"}], "description": "a driver"}
STATS = {
    "entities": ["driver"],
    "features": [
        {"name": "conv_rate", "type": "float64"},
        {"name": "trips", "type": "int64"},
        {"name": "city", "type": "string"},
    ],
    "ttl_seconds": 24 * 3600,
    "owner": "rides@example.com",
    "tags": {"team": "rides"},
}
SERVICE = {"features": [{"view": "driver_stats", "features": ["conv_rate", "trips"]}]}


async def define(client: httpx.AsyncClient) -> None:
    for path, body in (
        ("entities/driver", DRIVER),
        ("views/driver_stats", STATS),
        ("services/eta", SERVICE),
    ):
        answered = await client.put(f"{BASE}/{path}", json=body, headers=ADMIN)
        assert answered.status_code == 201, answered.text


def row(driver: int, hours_ago: float, conv: float | None, trips: int | None, city: str) -> dict:
    return {
        "driver_id": driver,
        "event_timestamp": at(hours_ago),
        "conv_rate": conv,
        "trips": trips,
        "city": city,
    }


async def ingest(client: httpx.AsyncClient, rows: list[dict[str, Any]]) -> httpx.Response:
    return await client.post(
        f"{BASE}/views/driver_stats/ingest", json={"rows": rows}, headers=ADMIN
    )


async def test_definitions_apply_idempotently_and_breaking_changes_need_a_version(
    client: httpx.AsyncClient,
) -> None:
    await define(client)
    again = await client.put(f"{BASE}/views/driver_stats", json=STATS, headers=ADMIN)
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged", again.text

    compatible = {**STATS, "features": [*STATS["features"], {"name": "rating", "type": "float64"}]}
    updated = await client.put(f"{BASE}/views/driver_stats", json=compatible, headers=ADMIN)
    assert updated.json() == {
        "kind": "feature_view",
        "name": "driver_stats",
        "outcome": "updated",
        "version": 1,
    }

    retyped = {
        **compatible,
        "features": [{"name": "conv_rate", "type": "string"}, *compatible["features"][1:]],
    }
    refused = await client.put(f"{BASE}/views/driver_stats", json=retyped, headers=ADMIN)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "conv_rate" in refused.json()["detail"] and "version 2" in refused.json()["detail"]

    # the service uses trips: a version without it is refused until the service changes
    without_trips = {
        **retyped,
        "features": [f for f in retyped["features"] if f["name"] != "trips"],
    }
    in_use = await client.put(
        f"{BASE}/views/driver_stats", json={**without_trips, "version": 2}, headers=ADMIN
    )
    assert in_use.status_code == 409 and "eta" in in_use.json()["detail"], in_use.text
    versioned = await client.put(
        f"{BASE}/views/driver_stats", json={**retyped, "version": 2}, headers=ADMIN
    )
    assert versioned.json()["outcome"] == "new_version" and versioned.json()["version"] == 2

    versions = (await client.get(f"{BASE}/views/driver_stats/versions", headers=ADMIN)).json()
    assert [(v["version"], v["features"][0]["type"]) for v in versions] == [
        (1, "float64"),
        (2, "string"),
    ]
    assert versions[0]["join_keys"] == [{"name": "driver_id", "type": "int64"}]
    old = await client.get(f"{BASE}/views/driver_stats?version=1", headers=ADMIN)
    assert old.json()["version"] == 1
    listed = (await client.get(f"{BASE}/views", headers=ADMIN)).json()
    assert listed["total"] == 1 and listed["items"][0]["version"] == 2

    skipped = await client.put(
        f"{BASE}/views/driver_stats", json={**retyped, "version": 4}, headers=ADMIN
    )
    assert skipped.status_code == 409, skipped.text


async def test_bad_definitions_name_their_fields(client: httpx.AsyncClient) -> None:
    await define(client)
    cases = [
        ("views/other", {**STATS, "entities": ["rider"]}, "entities.0"),
        (
            "views/other",
            {**STATS, "features": [{"name": "driver_id", "type": "int64"}]},
            "features.0.name",
        ),
        (
            "services/bad",
            {"features": [{"view": "driver_stats", "features": ["conv_rate", "nope"]}]},
            "features.0.features.1",
        ),
        ("services/bad", {"features": [{"view": "nowhere"}]}, "features.0.view"),
        ("views/Bad-Name", STATS, "name"),
        ("entities/rider", {"join_keys": [{"name": "event_timestamp"}]}, "join_keys"),
    ]
    for path, body, field in cases:
        answered = await client.put(f"{BASE}/{path}", json=body, headers=ADMIN)
        assert answered.status_code == 422, (path, answered.text)
        assert field in [error["field"] for error in answered.json()["errors"]], answered.json()

    in_use = await client.delete(f"{BASE}/views/driver_stats", headers=ADMIN)
    assert in_use.status_code == 409
    entity_in_use = await client.put(
        f"{BASE}/entities/driver",
        json={"join_keys": [{"name": "driver", "type": "string"}]},
        headers=ADMIN,
    )
    assert entity_in_use.status_code == 409, entity_in_use.text
    missing = await client.get(f"{BASE}/services/nope", headers=ADMIN)
    assert missing.status_code == 404


async def test_roles_and_authentication(client: httpx.AsyncClient) -> None:
    viewer = await create_key(client, "viewer")
    assert (await client.get(f"{BASE}/views")).status_code == 401
    denied = await client.put(f"{BASE}/entities/driver", json=DRIVER, headers={"X-API-Key": viewer})
    assert denied.status_code == 403
    scientist = await create_key(client, "data_scientist")
    allowed = await client.put(
        f"{BASE}/entities/driver", json=DRIVER, headers={"X-API-Key": scientist}
    )
    assert allowed.status_code == 201
    online = await client.post(
        f"{BASE}/online", json={"feature_service": "eta", "entities": [{"driver_id": 1}]}
    )
    assert online.status_code == 401


async def test_ingest_checks_every_row_and_writes_nothing_on_a_bad_one(
    client: httpx.AsyncClient,
) -> None:
    await define(client)
    bad = [
        row(1, 5, 0.5, 3, "x"),
        {**row(2, 5, 0.5, 3, "x"), "trips": "many"},
        {**row(3, 5, 0.5, 3, "x"), "surprise": 1},
        {k: v for k, v in row(4, 5, 0.5, 3, "x").items() if k != "city"},
        {**row(5, 5, 0.5, 3, "x"), "event_timestamp": "yesterday"},
        {**row(6, 5, 0.5, 3, "x"), "driver_id": None},
    ]
    refused = await ingest(client, bad)
    assert refused.status_code == 422, refused.text
    fields = [error["field"] for error in refused.json()["errors"]]
    assert fields == [
        "rows.1.trips",
        "rows.2.surprise",
        "rows.3.city",
        "rows.4.event_timestamp",
        "rows.5.driver_id",
    ]
    view = (await client.get(f"{BASE}/views/driver_stats", headers=ADMIN)).json()
    assert view["rows"] == 0

    accepted = await ingest(client, [row(1, 5, 0.5, 3, "x"), row(2, 4, None, None, "y")])
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["rows"] == 2 and accepted.json()["version"] == 1
    view = (await client.get(f"{BASE}/views/driver_stats", headers=ADMIN)).json()
    assert view["rows"] == 2


async def test_files_are_ingested_with_their_columns_checked(client: httpx.AsyncClient) -> None:
    await define(client)
    frame = pd.DataFrame([row(1, 3, 0.25, 7, "a"), row(2, 2, 0.75, 9, "b")])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"])
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    uploaded = await client.post(
        f"{BASE}/views/driver_stats/ingest/file",
        files={"file": ("stats.parquet", parquet.getvalue())},
        headers=ADMIN,
    )
    assert uploaded.status_code == 201, uploaded.text
    csv = frame.assign(trips=[1.5, 2.0]).to_csv(index=False).encode()
    refused = await client.post(
        f"{BASE}/views/driver_stats/ingest/file",
        files={"file": ("stats.csv", csv)},
        headers=ADMIN,
    )
    assert refused.status_code == 422, refused.text
    assert "'trips'" in refused.json()["detail"] and refused.json()["errors"][0]["field"] == "file"
    good_csv = frame.to_csv(index=False).encode()
    accepted = await client.post(
        f"{BASE}/views/driver_stats/ingest/file",
        files={"file": ("stats.csv", good_csv)},
        headers=ADMIN,
    )
    assert accepted.status_code == 201, accepted.text
    unreadable = await client.post(
        f"{BASE}/views/driver_stats/ingest/file",
        files={"file": ("stats.parquet", b"not parquet")},
        headers=ADMIN,
    )
    assert unreadable.status_code == 422 and "parquet" in unreadable.json()["detail"]


async def test_historical_retrieval_is_point_in_time_correct(client: httpx.AsyncClient) -> None:
    await define(client)
    await ingest(client, [row(1, 10, 0.1, 1, "a"), row(1, 5, 0.2, 2, "a"), row(2, 30, 0.9, 9, "b")])
    answered = await client.post(
        f"{BASE}/historical",
        json={
            "feature_service": "eta",
            "entities": [
                {"driver_id": 1, "event_timestamp": at(7), "label": 1},
                {"driver_id": 1, "event_timestamp": at(1), "label": 0},
                {"driver_id": 1, "event_timestamp": at(11), "label": 0},
                {"driver_id": 2, "event_timestamp": at(1), "label": 1},  # 29 h old: past ttl
                {"driver_id": 3, "event_timestamp": at(1), "label": 1},
            ],
        },
        headers=ADMIN,
    )
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["columns"] == ["driver_id", "event_timestamp", "label", "conv_rate", "trips"]
    assert [r[3:] for r in body["rows"]] == [
        [0.1, 1],
        [0.2, 2],
        [None, None],
        [None, None],
        [None, None],
    ]
    as_parquet = await client.post(
        f"{BASE}/historical",
        json={
            "feature_service": "eta",
            "entities": [{"driver_id": 1, "event_timestamp": at(1)}],
            "format": "parquet",
        },
        headers=ADMIN,
    )
    assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
    frame = pd.read_parquet(io.BytesIO(as_parquet.content))
    assert frame["conv_rate"].tolist() == [0.2]

    missing_key = await client.post(
        f"{BASE}/historical",
        json={"feature_service": "eta", "entities": [{"event_timestamp": at(1)}]},
        headers=ADMIN,
    )
    assert missing_key.status_code == 422 and "driver_id" in missing_key.text


async def test_materialized_features_are_served_online_with_their_status(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await define(client)
    await ingest(
        client, [row(1, 10, 0.1, 1, "a"), row(1, 2, 0.2, 2, "a"), row(2, 30, 0.9, None, "b")]
    )

    async def online(*drivers: Any) -> dict[str, Any]:
        answered = await client.post(
            f"{BASE}/online",
            json={"feature_service": "eta", "entities": [{"driver_id": d} for d in drivers]},
            headers=ADMIN,
        )
        assert answered.status_code == 200, answered.text
        return dict(answered.json())

    before = await online(1)
    assert before["results"][0]["statuses"] == ["missing", "missing"]
    run = await client.post(f"{BASE}/views/driver_stats/materialize", headers=ADMIN)
    assert run.status_code == 201, run.text
    assert run.json()["mode"] == "incremental" and run.json()["status"] == "succeeded"
    assert run.json()["rows_read"] == 3 and run.json()["entities_written"] == 2

    served = await online(1, 2, 3)
    assert served["features"] == ["conv_rate", "trips"]
    assert served["results"] == [
        {"values": [0.2, 2], "statuses": ["present", "present"]},
        {"values": [None, None], "statuses": ["outside_ttl", "outside_ttl"]},
        {"values": [None, None], "statuses": ["missing", "missing"]},
    ]

    # a late row older than what is served changes nothing; a newer one does, once materialized
    await ingest(client, [row(1, 20, 0.05, 0, "a"), row(2, 1, 0.8, 8, "b")])
    assert (await online(2))["results"][0]["statuses"] == ["outside_ttl", "outside_ttl"]
    second = await client.post(f"{BASE}/views/driver_stats/materialize", headers=ADMIN)
    assert second.json()["rows_read"] == 2
    served = await online(1, 2)
    assert [r["values"] for r in served["results"]] == [[0.2, 2], [0.8, 8]]

    runs = (await client.get(f"{BASE}/views/driver_stats/materializations", headers=ADMIN)).json()
    assert runs["total"] == 2 and runs["items"][0]["rows_read"] == 2

    ranged = await client.post(
        f"{BASE}/views/driver_stats/materialize",
        json={"start": at(48), "end": at(0)},
        headers=ADMIN,
    )
    assert ranged.json()["mode"] == "range" and ranged.json()["rows_read"] == 5
    inverted = await client.post(
        f"{BASE}/views/driver_stats/materialize",
        json={"start": at(0), "end": at(48)},
        headers=ADMIN,
    )
    assert inverted.status_code == 422

    mistyped = await client.post(
        f"{BASE}/online",
        json={"feature_service": "eta", "entities": [{"driver_id": 1}, {"driver_id": "1"}]},
        headers=ADMIN,
    )
    assert mistyped.status_code == 422
    assert mistyped.json()["errors"][0]["field"] == "entities.1.driver_id"
    unknown = await client.post(
        f"{BASE}/online",
        json={"feature_service": "nope", "entities": [{"driver_id": 1}]},
        headers=ADMIN,
    )
    assert unknown.status_code == 404


async def test_a_deleted_view_leaves_no_rows_behind(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await define(client)
    await ingest(client, [row(1, 1, 0.1, 1, "a")])
    await client.post(f"{BASE}/views/driver_stats/materialize", headers=ADMIN)
    assert (await client.delete(f"{BASE}/services/eta", headers=ADMIN)).status_code == 204
    assert (await client.delete(f"{BASE}/views/driver_stats", headers=ADMIN)).status_code == 204
    assert (await client.get(f"{BASE}/views/driver_stats", headers=ADMIN)).status_code == 404
    files = list((settings.data_dir / "features").rglob("*.parquet"))
    assert files == []
    assert (await client.delete(f"{BASE}/entities/driver", headers=ADMIN)).status_code == 204


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_a_features_uri_names_the_same_training_set(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await define(client)
    await ingest(client, [row(1, 10, 0.1, 1, "a"), row(1, 5, 0.2, 2, "a")])
    entities = tmp_path / "entities.csv"
    pd.DataFrame({"driver_id": [1, 1], "event_timestamp": [at(7), at(1)], "label": [1, 0]}).to_csv(
        entities, index=False
    )
    answered = await client.post(
        f"{BASE}/historical",
        json={"feature_service": "eta", "entities_uri": f"file://{entities}"},
        headers=ADMIN,
    )
    assert answered.status_code == 200, answered.text
    uri = answered.json()["dataset_uri"]
    assert uri.startswith("features://eta?entities=file%3A%2F%2F")

    from mlops.steps.datasets import load_dataset

    for variable, value in settings.step_environment().items():
        monkeypatch.setenv(variable, value)
    frame = await asyncio.to_thread(load_dataset, uri)  # as a step's process does, off the loop
    assert frame["conv_rate"].tolist() == [0.1, 0.2]
    assert frame["label"].tolist() == [1, 0]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_an_unreachable_online_store_fails_clearly(settings_factory: Any) -> None:
    from tests.conftest import client_for, running_app

    settings = settings_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        await define(client)
        await ingest(client, [row(1, 1, 0.1, 1, "a")])
        run = await client.post(f"{BASE}/views/driver_stats/materialize")
        assert run.status_code == 201 and run.json()["status"] == "failed", run.text
        assert run.json()["error"]
        online = await client.post(
            f"{BASE}/online", json={"feature_service": "eta", "entities": [{"driver_id": 1}]}
        )
        assert online.status_code == 503, online.text
        assert "online store is unreachable" in online.json()["detail"]
        again = await client.post(f"{BASE}/views/driver_stats/materialize")
        assert again.json()["rows_read"] == 1  # the failed run left its batch to the next one


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_an_in_process_online_store_is_refilled_after_a_restart(settings: Settings) -> None:
    from mlops.app import create_app
    from tests.conftest import client_for, running_app

    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        await define(client)
        await ingest(client, [row(1, 3, 0.1, 1, "a"), row(1, 2, 0.2, 2, "a")])
        await client.post(f"{BASE}/views/driver_stats/materialize")
    restarted = create_app(settings)
    async with (
        restarted.router.lifespan_context(restarted),
        client_for(restarted, **ADMIN) as client,
    ):
        assert await restarted.state.feature_schedule.refill == ["driver_stats"]
        online = await client.post(
            f"{BASE}/online", json={"feature_service": "eta", "entities": [{"driver_id": 1}]}
        )
        assert online.json()["results"][0] == {
            "values": [0.2, 2],
            "statuses": ["present", "present"],
        }
        runs = (await client.get(f"{BASE}/views/driver_stats/materializations")).json()
        newest = runs["items"][0]
        assert (newest["mode"], newest["created_by"]) == ("full", "start-up")
