"""The feature store end to end: a pipeline trains on a ``features://`` training set (point-in-
time correct, labels only learnable from the values known at their time), registers and
deploys the model with a feature service, and the deployment answers requests that carry
only entity keys, completed from the online store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.core.settings import Settings
from tests.api.test_pipeline_runs import apply, start
from tests.api.test_pipeline_runs import wait_for as wait_for_run
from tests.api.test_training_jobs import wait_for_job
from tests.conftest import ADMIN, client_for, running_app
from tests.integration.test_deployments import predict

pytestmark = pytest.mark.slow
BASE = "/api/v1/features"
CUSTOMERS = 120
NOW = datetime.now(UTC).replace(microsecond=0)


def history() -> tuple[pd.DataFrame, pd.DataFrame, dict[int, int]]:
    """Feature rows (3 updates per customer), labelled entity rows between the updates, and
    the label each customer's latest values give."""
    rng = np.random.default_rng(7)
    rows, entities = [], []
    latest: dict[int, int] = {}
    for customer in range(1, CUSTOMERS + 1):
        for hours_ago in (72, 48, 24):
            f1, f2, f3 = (float(x) for x in rng.normal(size=3))
            moment = NOW - timedelta(hours=hours_ago)
            rows.append(
                {"customer_id": customer, "event_timestamp": moment, "f1": f1, "f2": f2, "f3": f3}
            )
            label = int(f1 + f2 > 0)
            entities.append(
                {
                    "customer_id": customer,
                    "event_timestamp": moment + timedelta(hours=12),
                    "label": label,
                }
            )
            latest[customer] = label
    return pd.DataFrame(rows), pd.DataFrame(entities), latest


def training(dataset: str) -> dict[str, Any]:
    """The same search as a pipeline's train step and as a training job."""
    return {
        "dataset": dataset,
        "target": "label",
        "feature_columns": ["f1", "f2", "f3"],
        "estimator": "logistic_regression",
        "n_trials": 2,
        "cv_folds": 2,
    }


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the API tests cover Redis
async def test_a_pipeline_trains_from_features_and_serves_with_online_enrichment(
    settings: Settings, tmp_path: Path
) -> None:
    features, entities, latest = history()
    entities_file = tmp_path / "labels.parquet"
    entities.to_parquet(entities_file, index=False)
    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        for path, body in (
            ("entities/customer", {"join_keys": [{"name": "customer_id", "type": "int64"}]}),
            (
                "views/customer_activity",
                {
                    "entities": ["customer"],
                    "features": [{"name": f, "type": "float64"} for f in ("f1", "f2", "f3")],
                    "ttl_seconds": 7 * 86400,
                },
            ),
            ("services/churn", {"features": [{"view": "customer_activity"}]}),
        ):
            assert (await client.put(f"{BASE}/{path}", json=body)).status_code == 201
        stamped = features.assign(event_timestamp=features["event_timestamp"].map(str))
        stored = await client.post(
            f"{BASE}/views/customer_activity/ingest", json={"rows": stamped.to_dict("records")}
        )
        assert stored.status_code == 201, stored.text
        retrieved = await client.post(
            f"{BASE}/historical",
            json={"feature_service": "churn", "entities_uri": f"file://{entities_file}"},
        )
        assert retrieved.status_code == 200, retrieved.text
        dataset = retrieved.json()["dataset_uri"]

        pipeline: dict[str, Any] = {
            "name": "churn-from-features",
            "steps": [
                {
                    "name": "train",
                    "type": "train",
                    "params": {**training(dataset), "test_size": 0},
                },
                {
                    "name": "register",
                    "type": "register_model",
                    "depends_on": ["train"],
                    "params": {
                        "model_uri": "{{ steps.train.outputs.model_uri }}",
                        "name": "churn",
                    },
                },
                {
                    "name": "deploy",
                    "type": "deploy",
                    "depends_on": ["register"],
                    "params": {
                        "deployment": "churn",
                        "model_name": "churn",
                        "version": "{{ steps.register.outputs.model_version }}",
                        "feature_service": "churn",
                    },
                },
            ],
        }
        await apply(client, pipeline)
        run = await wait_for_run(client, (await start(client, pipeline["name"]))["id"], timeout=240)
        assert run["status"] == "succeeded", run
        score = {s["name"]: s for s in run["steps"]}["train"]["outputs"]["best_value"]
        assert score > 0.9, score  # learnable only from the values known at each label's time

        deployment = (await client.get("/api/v1/deployments/churn")).json()
        assert deployment["feature_service"] == "churn"
        unmaterialized = await predict(client, "churn", [{"customer_id": 1}])
        assert unmaterialized.status_code == 422
        assert unmaterialized.json()["errors"][0]["field"] == "instances.0.f1"
        assert "missing" in unmaterialized.json()["errors"][0]["message"]

        done = await client.post(f"{BASE}/views/customer_activity/materialize")
        assert done.json()["entities_written"] == CUSTOMERS, done.text
        customers = list(range(1, 41))
        answered = await predict(client, "churn", [{"customer_id": c} for c in customers])
        assert answered.status_code == 200, answered.text
        right = sum(
            int(p) == latest[c]
            for p, c in zip(answered.json()["predictions"], customers, strict=True)
        )
        assert right >= 36, (right, answered.json())
        # a column the caller sends wins over the store's
        overridden = await predict(client, "churn", [{"customer_id": 1, "f1": 50.0, "f2": 50.0}])
        assert overridden.json()["predictions"] == [1]
        in_use = await client.delete(f"{BASE}/services/churn")
        assert in_use.status_code == 409 and "churn" in in_use.json()["detail"]

        job = await client.post(
            "/api/v1/training/jobs",
            json={**training(dataset), "model_name": "churn-job"},
        )
        assert job.status_code == 202, job.text
        finished = await wait_for_job(client, job.json()["id"], timeout=180)
        assert finished["status"] == "succeeded", finished

        lineage = (await client.get(f"{BASE}/lineage/customer_activity")).json()
        assert [v["version"] for v in lineage["versions"]] == [1]
        assert lineage["feature_services"] == [{"name": "churn", "features": ["f1", "f2", "f3"]}]
        assert [(j["id"], j["feature_service"]) for j in lineage["training_jobs"]] == [
            (job.json()["id"], "churn")
        ]
        assert [
            (m["name"], m["version"], m["view_version"]) for m in lineage["model_versions"]
        ] == [
            ("churn", "1", 1),
            ("churn-job", "1", 1),
        ]
        assert lineage["deployments"] == [
            {
                "name": "churn",
                "via": "model_version",
                "model_name": "churn",
                "model_versions": ["1"],
                "feature_service": "churn",
            }
        ]
