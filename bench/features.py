"""The feature store against Feast and against redis-py, on the same Redis and the same data.

Online reads and materialization go through the service over HTTP with its whole middleware
on (authentication by API key, rate limits in Redis, audit, metrics); point-in-time retrieval
runs the service's own code path (offline store read + join) in a child process, as Feast's
SDK runs in its own. The Feast figures come from ``bench/feast_peer.py`` in a venv of its own.
"""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.api_overhead import CREDENTIALS, Store
from bench.common import ROOT, Record, machine_info, record, utc_now, venv_python, write_results
from bench.features_data import DataFiles, ensure_data, feature_names
from bench.http_load import percentile
from bench.pipeline_overhead import Service
from bench.serving import wait_until_ready

DATA_DIR = ROOT / ".bench" / "features-data"
FEAST_DIR = ROOT / ".bench" / "feast"
FEAST_REQUIREMENTS = ("feast[redis]==0.67.0",)
REDIS_URL = "redis://127.0.0.1:6379/13"  # the service's online store and rate limits
FEAST_REDIS_URL = "redis://127.0.0.1:6379/12"
SEED = 7
READS = {1: 3000, 100: 400}  # requests of each size, after WARMUP of each
WARMUP = {1: 300, 100: 40}
TARGET_P99_MS = {1: 2.0, 100: 25.0}
TARGET_MATERIALIZE_RATIO = 2.0
PIT_TIMEOUT_SECONDS = 1800
COLUMNS = ("service", "baseline", "ratio")
VIEW, SERVICE = "bench_stats", "bench_all"
ONLINE_STORE = "SQLite + Redis"
KEY_PREFIX = "mlops:fs:"  # RedisOnlineStore's default: the floor reads the keys it wrote
EVENT_TIME_FIELD = b"@et"  # and the event time the service reads with the features
PIT_ROWS = (1_000_000, 100_000)  # entity rows per point-in-time query (Feast: 1M does not fit)

DESCRIPTION = """\
One run, one machine, one Redis server, one data set (`bench/features_data.py`: 100,000
entities x 50 float features; a 10,000,000-row history over 30 days; 1,000,000 labelled entity
rows). **Online reads**: a single keep-alive HTTP client sends sequential
`POST /api/v1/features/online` requests (random entities, seeded) with an API key, through the
whole middleware (authentication, rate limits counted in Redis, metrics, audit skip) into the
Redis online store; *baseline* is `feast serve --max-requests 0` answering the same entities
from the same client code, and the floor rows are the same `HMGET`s sent directly with
redis-py (one pipeline per request). **Materialization**: the 100,000 latest rows, from the
offline store into Redis, timed around the `materialize` call; *baseline* Feast's
`materialize()` of the same rows. **Point-in-time retrieval**: the service's
`FeatureStore.training_frame` (offline Parquet read + join) in a child process against Feast's
`get_historical_features(...).to_df()` in its own; peak RSS is each child's high-water mark.
"""


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    n: int

    @classmethod
    def of(cls, samples_s: list[float]) -> Latency:
        us = [s * 1e6 for s in samples_s]
        return cls(percentile(us, 50) / 1000, percentile(us, 99) / 1000, len(us))


def request_entities(entities: int, size: int, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed * 1000 + size)
    return [[rng.randrange(entities) for _ in range(size)] for _ in range(count)]


def define(client: httpx.Client, data: DataFiles) -> None:
    features = [{"name": name, "type": "float64"} for name in feature_names(data.spec.features)]
    for path, body in (
        ("entities/entity", {"join_keys": [{"name": "entity_id", "type": "int64"}]}),
        (
            f"views/{VIEW}",
            {
                "entities": ["entity"],
                "features": features,
                "source": {"uri": f"file://{data.features}"},
                "created_timestamp_field": "created_timestamp",
            },
        ),
        (f"services/{SERVICE}", {"features": [{"view": VIEW}]}),
    ):
        answered = client.put(f"/api/v1/features/{path}", json=body)
        answered.raise_for_status()


def timed_online_reads(port: int, bodies: list[bytes], warmup: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {**CREDENTIALS, "Content-Type": "application/json"}
    samples: list[float] = []
    try:
        for index, body in enumerate(bodies):
            started = time.perf_counter()
            connection.request("POST", "/api/v1/features/online", body, headers)
            response = connection.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"online read answered {response.status}: {payload[:300]!r}")
            if index >= warmup:
                samples.append(elapsed)
    finally:
        connection.close()
    return samples


def redis_floor(keys: list[list[bytes]], fields: list[bytes], warmup: int) -> list[float]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    samples: list[float] = []
    try:
        for index, batch in enumerate(keys):
            started = time.perf_counter()
            pipeline = client.pipeline(transaction=False)
            for key in batch:
                pipeline.hmget(key, fields)
            replies = pipeline.execute()
            elapsed = time.perf_counter() - started
            if any(reply[0] is None for reply in replies):
                raise RuntimeError("the floor read a key the service did not write")
            if index >= warmup:
                samples.append(elapsed)
    finally:
        client.close()
    return samples


def ours(data: DataFiles, tmp: Path) -> dict[str, Any]:
    import redis

    from mlops.features.online import encode_entity_key

    redis.Redis.from_url(REDIS_URL).flushdb()
    store = Store(ONLINE_STORE, embedded=False, redis_url=REDIS_URL)
    figures: dict[str, Any] = {}
    with (
        Service(store, tmp) as service,
        httpx.Client(base_url=service.base_url, headers=CREDENTIALS, timeout=600) as client,
    ):
        define(client, data)
        started = time.perf_counter()
        ingest = f"/api/v1/features/views/{VIEW}/ingest"
        client.post(ingest, json={"from_source": True}).raise_for_status()
        figures["ingest_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        run = client.post(f"/api/v1/features/views/{VIEW}/materialize").json()
        seconds = time.perf_counter() - started
        if run["status"] != "succeeded" or run["entities_written"] != data.spec.entities:
            raise RuntimeError(f"materialization: {run}")
        figures["materialize"] = {
            "rows": run["rows_read"],
            "seconds": seconds,
            "rows_per_second": run["rows_read"] / seconds,
        }
        figures["ready_seconds"] = wait_until_ready(client)  # start-up imports are done
        fields = [name.encode() for name in feature_names(data.spec.features)]
        for size in (1, 100):
            total = WARMUP[size] + READS[size]
            picks = request_entities(data.spec.entities, size, total, SEED)
            bodies = [
                orjson.dumps(
                    {"feature_service": SERVICE, "entities": [{"entity_id": e} for e in pick]}
                )
                for pick in picks
            ]
            figures[f"online_{size}x50"] = Latency.of(
                timed_online_reads(service.port, bodies, WARMUP[size])
            ).__dict__
            keys = [
                [f"{KEY_PREFIX}{VIEW}:v1:{encode_entity_key([e])}".encode() for e in pick]
                for pick in picks
            ]
            figures[f"floor_{size}x50"] = Latency.of(
                redis_floor(keys, [*fields, EVENT_TIME_FIELD], WARMUP[size])
            ).__dict__
    return figures


def _pit_database(work: Path) -> Any:
    from mlops.core.database import Database

    return Database(f"sqlite+aiosqlite:///{work / 'pit.db'}")


def _pit_stores(work: Path) -> Any:
    from mlops.features.offline import ParquetOfflineStore
    from mlops.features.online import MemoryOnlineStore
    from mlops.features.service import Stores

    return Stores(ParquetOfflineStore(str(work / "offline")), MemoryOnlineStore())


def pit_ingest(data_dir: Path, work: Path) -> dict[str, Any]:
    """Child process: the history into the service's offline store, in 1M-row batches."""
    import asyncio

    import pyarrow.parquet as pq

    from mlops.core.migrations import upgrade_database
    from mlops.features.schemas import EntityIn, FeatureServiceIn, FeatureViewIn, JoinKey
    from mlops.features.service import FeatureStore

    data = ensure_data(data_dir, log=False)

    async def run() -> float:
        database = _pit_database(work)
        await upgrade_database(database)
        features = [{"name": n, "type": "float64"} for n in feature_names(data.spec.features)]
        started = time.perf_counter()
        async with database.sessionmaker() as session:
            store = FeatureStore(session, _pit_stores(work))
            keys = [JoinKey(name="entity_id", type="int64")]
            await store.registry.put_entity("entity", EntityIn(join_keys=keys), "bench")
            view = FeatureViewIn.model_validate(
                {
                    "entities": ["entity"],
                    "features": features,
                    "created_timestamp_field": "created_timestamp",
                }
            )
            await store.registry.put_view("history", view, "bench")
            service = FeatureServiceIn.model_validate({"features": [{"view": "history"}]})
            await store.registry.put_service("history_all", service, "bench")
            for batch in pq.ParquetFile(data.history).iter_batches(batch_size=1_000_000):
                await store.ingest_frame("history", batch.to_pandas(), "file", "file", "bench")
            await session.commit()
        await database.dispose()
        return time.perf_counter() - started

    return {"ingest_seconds": asyncio.run(run())}


def pit_retrieve(data_dir: Path, work: Path, rows: int) -> dict[str, Any]:
    """Child process: one point-in-time retrieval of the first ``rows`` entity rows, timed."""
    import asyncio

    import pyarrow.parquet as pq

    from mlops.features.schemas import HistoricalIn
    from mlops.features.service import FeatureStore

    data = ensure_data(data_dir, log=False)
    entities = work / f"entities-{rows}.parquet"
    if not entities.exists():
        pq.write_table(pq.read_table(data.entities).slice(0, rows), entities)

    async def run() -> dict[str, Any]:
        database = _pit_database(work)
        async with database.sessionmaker() as session:
            store = FeatureStore(session, _pit_stores(work))
            body = HistoricalIn(feature_service="history_all", entities_uri=f"file://{entities}")
            before = _high_water_mib()
            started = time.perf_counter()
            frame, _ = await store.training_frame(body)
            seconds = time.perf_counter() - started
        await database.dispose()
        first = feature_names(data.spec.features)[0]
        return {
            "entity_rows": len(frame),
            "feature_rows": data.spec.history_rows,
            "seconds": seconds,
            "rss_before_mib": before,
            "rows_without_features": int(frame[first].isna().sum()),
        }

    result = asyncio.run(run())
    result["peak_rss_mib"] = _high_water_mib()
    return result


def _high_water_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.features", *args],
        capture_output=True,
        text=True,
        timeout=PIT_TIMEOUT_SECONDS,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def ours_historical(tmp: Path) -> dict[str, Any]:
    work = tmp / "pit"
    work.mkdir()
    figures = _child("--pit-ingest", str(DATA_DIR), str(work))
    for rows in PIT_ROWS:
        figures[str(rows)] = _child("--pit-retrieve", str(DATA_DIR), str(work), str(rows))
    return figures


def feast(tmp: Path) -> tuple[dict[str, Any], float | None]:
    python, install_seconds = venv_python(FEAST_DIR, FEAST_REQUIREMENTS)
    out = tmp / "feast.json"
    done = subprocess.run(
        [
            str(python),
            str(ROOT / "bench" / "feast_peer.py"),
            *("--data", str(DATA_DIR), "--redis", FEAST_REDIS_URL, "--out", str(out)),
            *("--workdir", str(tmp), "--historical-entity-rows", *map(str, PIT_ROWS)),
        ],
        capture_output=True,
        text=True,
        timeout=3 * PIT_TIMEOUT_SECONDS,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Feast peer failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(out.read_text())), install_seconds


def _online_records(ours_: dict[str, Any], peer: dict[str, Any]) -> list[Record]:
    records: list[Record] = []
    for size in (1, 100):
        kind = f"{size}x50"
        name = f"online read, {size} entit{'y' if size == 1 else 'ies'} x 50 features"
        mine = ours_[f"online_{kind}"]
        serve = peer["serve_online"][kind]  # by feature service, as the service is asked
        serve_list = peer["serve_online"][f"{kind}_feature_list"]
        sdk = peer["sdk_online"][kind]
        floor = ours_[f"floor_{kind}"]
        target = TARGET_P99_MS[size]
        for q in ("p50", "p99"):
            records.append(
                record(
                    name,
                    ONLINE_STORE,
                    f"{q}, over HTTP; baseline `feast serve` with the feature service",
                    "ms",
                    mine[f"{q}_ms"],
                    serve[f"{q}_ms"],
                    compare="ratio",
                    target=f"≤ {target:g} ms" if q == "p99" else None,
                    met=mine["p99_ms"] <= target if q == "p99" else None,
                    runs={"ours": mine, "feast_serve": serve},
                )
            )
        for label, peer_figures in (
            ("`feast serve` with the 50 features listed", serve_list),
            ("Feast's SDK in-process (no HTTP), feature service", sdk),
            ("redis-py, the same HMGETs pipelined (no HTTP)", floor),
        ):
            records.append(
                record(
                    name,
                    ONLINE_STORE,
                    f"p99, over HTTP; baseline {label}",
                    "ms",
                    mine["p99_ms"],
                    peer_figures["p99_ms"],
                    compare="ratio",
                    runs={"baseline": peer_figures},
                )
            )
    return records


def records_of(ours_: dict[str, Any], peer: dict[str, Any], pit: dict[str, Any]) -> list[Record]:
    records = _online_records(ours_, peer)
    mine, theirs = ours_["materialize"], peer["materialize"]
    ratio = mine["rows_per_second"] / theirs["rows_per_second"]
    records.append(
        record(
            "materialize 100,000 entities x 50 features into Redis",
            ONLINE_STORE,
            "rows per second; baseline Feast's materialize()",
            "rows/s",
            mine["rows_per_second"],
            theirs["rows_per_second"],
            compare="ratio",
            target=f"≥ {TARGET_MATERIALIZE_RATIO:g}x Feast",
            met=ratio >= TARGET_MATERIALIZE_RATIO,
            runs={"ours": mine, "feast": theirs},
        )
    )
    feast_runs = {run["entity_rows"]: run for run in peer["historical"]}
    for rows in PIT_ROWS:
        mine = pit[str(rows)]
        theirs = feast_runs.get(rows, {})
        finished = theirs.get("status") == "ok"
        name = f"point-in-time retrieval, {rows:,} entity rows x 10,000,000 feature rows"
        records.append(
            record(
                name,
                "Parquet offline store",
                "seconds; baseline Feast's get_historical_features().to_df() "
                + ("" if finished else f"({theirs.get('status')}: {theirs.get('detail')})"),
                "s",
                mine["seconds"],
                theirs.get("seconds") if finished else None,
                compare="ratio" if finished else None,
                runs={"ours": mine, "feast": theirs},
            )
        )
        records.append(
            record(
                name,
                "Parquet offline store",
                "peak RSS of the process; baseline Feast's child process",
                "MiB",
                mine["peak_rss_mib"],
                theirs.get("peak_rss_mib"),
                compare="ratio",
            )
        )
    return records


def notes_of(
    ours_: dict[str, Any],
    peer: dict[str, Any],
    pit: dict[str, Any],
    load: tuple[tuple[float, ...], tuple[float, ...]],
    install_seconds: float | None,
) -> list[str]:
    notes = [
        f"Feast {peer['feast_version']} in its own venv (`{' '.join(FEAST_REQUIREMENTS)}`"
        + (f", installed in {install_seconds:.0f} s" if install_seconds else "")
        + f"); it keeps one Redis hash per entity ({peer['redis_layout'].get('hash_fields')} "
        "fields named by murmur3 hashes of the feature names, values as serialized protobufs); "
        "the service one hash per entity and view version, fields named by the features, "
        "values as JSON.",
        f"The service ingested the 100,000 rows from its source file in "
        f"{ours_['ingest_seconds']:.1f} s and the 10,000,000-row history (10 batches of "
        f"1,000,000) in {pit['ingest_seconds']:.0f} s; neither is a compared figure.",
        "Feast's file offline store joins every entity row with every history row of its entity "
        "before filtering (about 100 rows each here), which is why its 1,000,000-row query runs "
        "out of memory; it also drops entity rows that have no history at or before their time, "
        "where the service keeps them with nulls.",
        f"Load average (1 min) {load[0][0]:.2f} before, {load[1][0]:.2f} after.",
    ]
    return notes


def main() -> None:
    import os
    import tempfile

    load_before = os.getloadavg()
    data = ensure_data(DATA_DIR)
    with tempfile.TemporaryDirectory(prefix="mlops-features-bench-") as name:
        tmp = Path(name)
        (tmp / "service").mkdir()
        print("features: the service (online reads, materialization)", flush=True)
        mine = ours(data, tmp / "service")
        print(f"features: {json.dumps(mine)}", flush=True)
        print("features: Feast", flush=True)
        peer, install_seconds = feast(tmp)
        print("features: point-in-time retrieval (the service's code, child processes)", flush=True)
        pit = ours_historical(tmp)
        print(f"features: {json.dumps(pit)}", flush=True)
    load_after = os.getloadavg()
    records = records_of(mine, peer, pit)
    notes = notes_of(mine, peer, pit, (load_before, load_after), install_seconds)
    setup = {
        "data": peer.get("data"),
        "reads": READS,
        "warmup": WARMUP,
        "seed": SEED,
        "feast": list(FEAST_REQUIREMENTS),
        "feast_config": peer.get("config"),
    }
    stamp, machine = utc_now(), machine_info()
    for entry in records:
        entry.update(machine=machine, date=stamp, setup=setup, notes=notes)
    path = write_results("features", records)
    print(f"features: wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pit-ingest"]:
        print(json.dumps(pit_ingest(Path(sys.argv[2]), Path(sys.argv[3]))))
    elif sys.argv[1:2] == ["--pit-retrieve"]:
        print(json.dumps(pit_retrieve(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
