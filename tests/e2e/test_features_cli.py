"""``mlops features`` as a CI job runs it against a service in its own process: definitions
applied from YAML (again: unchanged; a breaking change: refused), a Parquet file ingested and
materialized, and the values read online."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import BOOTSTRAP_KEY, free_port
from tests.e2e.test_pipeline_cli import mlops
from tests.processes import service_env, start_service, stop_service

pytestmark = pytest.mark.slow
DEFINITIONS = {
    "entities": [{"name": "driver", "join_keys": [{"name": "driver_id", "type": "int64"}]}],
    "feature_views": [
        {
            "name": "driver_stats",
            "entities": ["driver"],
            "features": [
                {"name": "conv_rate", "type": "float64", "expectations": {"min": 0, "max": 1}},
                {"name": "trips", "type": "int64"},
            ],
            "ttl_seconds": 86400,
        }
    ],
    "feature_services": [{"name": "eta", "features": [{"view": "driver_stats"}]}],
}


@pytest.fixture
def service_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start_service(service_env(tmp_path / "data"), port, tmp_path / "service.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)


def test_definitions_apply_from_yaml_and_data_reaches_the_online_store(
    service_url: str, tmp_path: Path
) -> None:
    spec = copy.deepcopy(DEFINITIONS)
    definitions = tmp_path / "features.yaml"
    definitions.write_text(yaml.safe_dump(spec))
    applied = mlops(service_url, "features", "apply", "-f", str(definitions))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stdout.splitlines() == [
        "entity driver (created)",
        "feature_view driver_stats version 1 (created)",
        "feature_service eta (created)",
    ]
    again = mlops(service_url, "features", "apply", "-f", str(definitions))
    assert "feature_view driver_stats version 1 (unchanged)" in again.stdout

    spec["feature_views"][0]["features"][1]["type"] = "string"
    definitions.write_text(yaml.safe_dump(spec))
    breaking = mlops(service_url, "features", "apply", "-f", str(definitions))
    assert breaking.returncode == 1 and "version 2" in breaking.stderr, breaking.stderr

    now = datetime.now(UTC)
    rows = pd.DataFrame(
        {
            "driver_id": [1, 2],
            "event_timestamp": [now - timedelta(hours=1), now - timedelta(hours=2)],
            "conv_rate": [0.5, 0.25],
            "trips": [3, 7],
        }
    )
    parquet = tmp_path / "stats.parquet"
    rows.to_parquet(parquet, index=False)
    ingested = mlops(service_url, "features", "ingest", "driver_stats", "-f", str(parquet))
    assert ingested.returncode == 0, ingested.stderr
    assert ingested.stdout.strip() == "2 rows into driver_stats version 1"
    refused = rows.assign(conv_rate=[0.5, 4.0])
    refused.to_parquet(parquet, index=False)
    bad = mlops(service_url, "features", "ingest", "driver_stats", "-f", str(parquet))
    assert bad.returncode == 2 and "conv_rate" in bad.stderr, bad.stderr

    materialized = mlops(service_url, "features", "materialize", "driver_stats")
    assert materialized.returncode == 0, materialized.stderr
    assert materialized.stdout.startswith("succeeded: 2 rows read, 2 entities written")
    online = httpx.post(
        f"{service_url}/api/v1/features/online",
        json={"feature_service": "eta", "entities": [{"driver_id": 2}]},
        headers={"X-API-Key": BOOTSTRAP_KEY},
    ).json()
    assert online["results"] == [{"values": [0.25, 7], "statuses": ["present", "present"]}]
