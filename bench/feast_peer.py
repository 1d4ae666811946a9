"""Feast as the peer of the service's feature store: the same data, Redis and requests.

Run by the Feast venv's Python (Feast's pins conflict with the service's), not by
``python -m bench``::

    .bench/feast/venv/bin/python bench/feast_peer.py --data DIR \\
        --redis redis://127.0.0.1:6379/0 --out result.json [--skip-historical]

``DIR`` holds the files of ``bench/features_data.py`` (written here if missing, with the
parameters of ``DIR/manifest.json`` or the defaults). A Feast repo is written into a temporary
directory: project ``--project`` (default ``fsbench_feast_peer``), a file registry, the file
(Dask) offline store over the Parquet files and the Redis online store at ``--redis``; an entity
``entity_id`` (int64); two feature views of the same 50 float64 features with a ttl of
``--ttl-days`` (``latest`` over ``features.parquet``, ``history`` over ``history.parquet``) and a
feature service of all 50 features of each (``online_all``, ``history_all``). They are applied
with ``FeatureStore.apply`` (what ``feast apply`` does). Then, each phase timed on the wall clock:

- ``materialize``: ``store.materialize(start, end, ["latest"])`` of the 100k latest rows into
  Redis (default settings, so Feast reads each key's timestamp before writing it) -> rows/s.
- ``sdk_online``: ``store.get_online_features(features=online_all, entity_rows=...).to_dict()``
  for 1 entity and for 100 entities per request, ``--n1`` / ``--n100`` sequential requests after
  a warm-up, entities drawn at random with a fixed seed; p50/p99 per request. Keys ``1x50`` and
  ``100x50`` name the features by the feature service; ``*_feature_list`` repeat them with the
  50 ``latest:fNN`` references instead (resolving a feature service costs ~2 ms a call).
- ``serve_online``: ``feast serve --host 127.0.0.1 --port P --workers 1 --max-requests 0
  --no-access-log`` as a subprocess (gunicorn master + one uvicorn worker), the same requests as
  ``POST /get-online-features`` with ``{"feature_service": "online_all", "entities": ...}`` over
  one persistent HTTP/1.1 connection (``http.client``), each timed from send to the parsed JSON
  body (``feature_service`` and ``*_feature_list`` as above); the server is stopped with
  SIGTERM to its process group and checked to leave nothing.
- ``historical``: ``store.get_historical_features(entity_df=<1M-row frame>,
  features=history_all).to_df()`` against the 10M-row history, in a child process (so a
  time-out or a memory blow-up only loses that figure) limited to ``--historical-timeout``
  seconds and ``--historical-max-rss-gib`` GiB (at most the memory available less 2 GiB); the
  wall time of that call (reading the entity frame is timed apart) and the peak RSS of the
  child (its VmHWM, polled every 0.1 s, so known even when it had to be killed).
  ``--historical-entity-rows N [N ...]`` runs one query per N with the first N rows of the
  entity frame; ``historical`` is the list of their results.
- ``redis_layout``: how Feast laid out its keys, read back from Redis.

Every response is checked for missing values (``null_values``: a FLUSHALL by someone else
during the run shows up there). Feast's keys (the entity key prefix ... project suffix pattern
that Feast itself deletes with) are removed before and after the run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

try:  # imported as bench.feast_peer (python -m bench imports every bench module)
    from bench import features_data
except ImportError:  # run as a script: bench/ is on sys.path
    import features_data  # type: ignore[no-redef]

Result = dict[str, Any]

ENTITY = "entity_id"
LATEST_VIEW = "latest"
HISTORY_VIEW = "history"
ONLINE_SERVICE = "online_all"
HISTORY_SERVICE = "history_all"
_MIB = 2**20


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentiles(samples_s: Sequence[float]) -> Result:
    """p50/p99 (linear interpolation between closest ranks), mean and max, in ms."""
    ordered = sorted(samples_s)
    n = len(ordered)

    def at(q: float) -> float:
        pos = q * (n - 1)
        low = int(pos)
        high = min(low + 1, n - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    return {
        "n": n,
        "p50_ms": round(at(0.50) * 1e3, 3),
        "p99_ms": round(at(0.99) * 1e3, 3),
        "mean_ms": round(sum(ordered) / n * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


def proc_status_kib(pid: int | str, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def group_rss_mib(pgid: int) -> float:
    return sum(proc_status_kib(pid, "VmRSS") for pid in group_members(pgid)) / 1024


def stop_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> Result:
    """SIGTERM the process group led by ``process``, SIGKILL it if it lingers, verify it is gone."""
    pgid = process.pid
    signalled = "SIGTERM"
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signalled = "SIGKILL"
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline and signalled == "SIGTERM":
        time.sleep(0.1)
    if group_members(pgid):
        signalled = "SIGKILL"
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=timeout)
        time.sleep(0.5)
    left = group_members(pgid)
    return {"signal": signalled, "exit_code": process.returncode, "leftover_pids": left}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_settings(url: str) -> tuple[str, int, int, str | None]:
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", ""):
        raise SystemExit(f"--redis: only redis:// URLs are supported, not {url!r}")
    db = int(parsed.path.lstrip("/") or 0)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379, db, parsed.password


# --------------------------------------------------------------------------- the Feast repo


def write_repo(repo: Path, project: str, redis_url: str) -> None:
    host, port, db, password = redis_settings(redis_url)
    connection = f"{host}:{port},db={db}" + (f",password={password}" if password else "")
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: {project}
            provider: local
            registry: {repo / "registry.db"}
            online_store:
              type: redis
              connection_string: "{connection}"
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """
        )
    )


def feast_objects(data: features_data.DataFiles, ttl_days: int) -> list[Any]:
    """The entity, both feature views and both feature services (what a repo's .py declares)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    entity = Entity(
        name=ENTITY, join_keys=[ENTITY], value_type=ValueType.INT64, description="benchmark entity"
    )
    schema = [Field(name=ENTITY, dtype=Int64)] + [
        Field(name=name, dtype=Float64) for name in features_data.feature_names(data.spec.features)
    ]
    views = [
        FeatureView(
            name=name,
            entities=[entity],
            ttl=timedelta(days=ttl_days),
            schema=schema,
            online=True,
            source=FileSource(
                name=f"{name}_source",
                path=str(path.resolve()),
                timestamp_field="event_timestamp",
                created_timestamp_column="created_timestamp",
            ),
        )
        for name, path in ((LATEST_VIEW, data.features), (HISTORY_VIEW, data.history))
    ]
    services = [
        FeatureService(name=ONLINE_SERVICE, features=[views[0]]),
        FeatureService(name=HISTORY_SERVICE, features=[views[1]]),
    ]
    return [entity, *views, *services]


# --------------------------------------------------------------------------- Redis keys


def entity_key_prefix() -> bytes:
    """Feast's serialized entity key (version 3) up to the value: what all our keys start with."""
    name = ENTITY.encode()
    string_type = 2  # ValueType.STRING, the tag Feast writes before each join-key name
    return (
        struct.pack("<I", 1) + struct.pack("<I", string_type) + struct.pack("<I", len(name)) + name
    )


def key_pattern(project: str) -> bytes:
    # the same pattern as Feast's RedisOnlineStore.delete_entity_values
    return entity_key_prefix() + b"*" + project.encode()


def delete_feast_keys(client: Any, project: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=key_pattern(project), count=5_000):
        batch.append(key)
        if len(batch) >= 5_000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def count_feast_keys(client: Any, project: str) -> int:
    return sum(1 for _ in client.scan_iter(match=key_pattern(project), count=5_000))


def describe_layout(client: Any, project: str, entity_id: int, features: int) -> Result:
    """Read back the hash Feast wrote for one entity and say what each part is."""
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    entity_key = EntityKey(join_keys=[ENTITY], entity_values=[Value(int64_val=entity_id)])
    key: bytes = _redis_key(project, entity_key, entity_key_serialization_version=3)
    fields: dict[bytes, bytes] = client.hgetall(key)
    feature_fields = {
        _mmh3(f"{LATEST_VIEW}:{name}"): name for name in features_data.feature_names(features)
    }
    sample_field = next(iter(feature_fields))
    ts_field = f"_ts:{LATEST_VIEW}".encode()
    value = Value()
    value.ParseFromString(fields.get(sample_field, b""))
    return {
        "key_example_entity_id": entity_id,
        "key_hex": key.hex(),
        "key_repr": repr(key),
        "key_bytes": len(key),
        "key_type": client.type(key).decode(),
        "hash_fields": len(fields),
        "feature_field_example": {
            "field_hex": sample_field.hex(),
            "is_mmh3_of": f"{LATEST_VIEW}:{feature_fields[sample_field]}",
            "value_bytes": len(fields.get(sample_field, b"")),
            "value_decoded": str(value).strip(),
        },
        "timestamp_field": ts_field.decode(),
        "timestamp_value_bytes": len(fields.get(ts_field, b"")),
        "ttl_seconds": client.ttl(key),
        "memory_usage_bytes": client.memory_usage(key),
        "hash_encoding": client.object("encoding", key).decode(),
    }


# --------------------------------------------------------------------------- measurements


def request_sets(entities: int, seed: int, n1: int, n100: int, warmup: float) -> Result:
    """The entity lists of every request, shared by the SDK and the server runs."""
    rng = random.Random(seed)
    sets: Result = {}
    for label, size, count in (("1x50", 1, n1), ("100x50", 100, n100)):
        warm = max(1, int(count * warmup))
        sets[label] = {
            "warmup": [rng.sample(range(entities), size) for _ in range(warm)],
            "timed": [rng.sample(range(entities), size) for _ in range(count)],
        }
    return sets


def timed_loop(
    call: Callable[[list[int]], Any], check: Callable[[Any], int], requests: Result
) -> Result:
    for ids in requests["warmup"]:
        call(ids)
    samples: list[float] = []
    nulls = 0
    started = time.perf_counter()
    for ids in requests["timed"]:
        t0 = time.perf_counter()
        response = call(ids)
        samples.append(time.perf_counter() - t0)
        nulls += check(response)
    wall = time.perf_counter() - started
    stats = percentiles(samples)
    stats["requests_per_second"] = round(len(samples) / wall, 1)
    stats["null_values"] = nulls
    return stats


def feature_refs(features: int) -> list[str]:
    """The same 50 features as ONLINE_SERVICE, as ``view:feature`` references."""
    return [f"{LATEST_VIEW}:{name}" for name in features_data.feature_names(features)]


def measure_sdk(store: Any, sets: Result, features: int) -> Result:
    service = store.get_feature_service(ONLINE_SERVICE)
    refs = feature_refs(features)

    def check(result: dict[str, list[Any]]) -> int:
        return sum(v is None for name, vs in result.items() if name != ENTITY for v in vs)

    out: Result = {}
    for suffix, wanted in (("", service), ("_feature_list", refs)):

        def call(ids: list[int], wanted: Any = wanted) -> dict[str, list[Any]]:
            rows = [{ENTITY: entity_id} for entity_id in ids]
            response = store.get_online_features(features=wanted, entity_rows=rows)
            result: dict[str, list[Any]] = response.to_dict()
            return result

        for label, requests in sets.items():
            key = label + suffix
            log(f"sdk_online {key}: {len(requests['timed'])} requests")
            out[key] = timed_loop(call, check, requests)
            log(f"sdk_online {key}: {out[key]}")
    return out


def feast_binary() -> str:
    return str(Path(sys.executable).parent / "feast")


@contextmanager
def feast_server(
    repo: Path, port: int, log_path: Path, stop_report: Result
) -> Iterator[subprocess.Popen[bytes]]:
    """``feast serve`` in its own process group; ``stop_report`` gets how it was stopped."""
    command = [
        feast_binary(),
        "-c",
        str(repo),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--max-requests",
        "0",
        "--no-access-log",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            stop_report.update(stop_group(process))


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"feast serve exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"feast serve not healthy after {timeout:.0f} s")


def measure_serve(repo: Path, sets: Result, work: Path, features: int) -> Result:
    port = free_port()
    out: Result = {
        "command": (
            f"feast -c REPO serve --host 127.0.0.1 --port {port} --workers 1 "
            "--max-requests 0 --no-access-log"
        ),
        "client": "http.client, one persistent HTTP/1.1 connection, sequential requests",
    }
    stop_report: Result = {}
    with feast_server(repo, port, work / "serve.log", stop_report) as process:
        out["startup_seconds"] = round(wait_healthy(port, process), 2)
        log(f"feast serve healthy on port {port} after {out['startup_seconds']} s")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json"}
        statuses: set[int] = set()

        selectors: list[tuple[str, dict[str, Any]]] = [
            ("", {"feature_service": ONLINE_SERVICE}),
            ("_feature_list", {"features": feature_refs(features)}),
        ]

        def call(ids: list[int], selector: dict[str, Any]) -> Any:
            body = json.dumps({**selector, "entities": {ENTITY: ids}})
            connection.request("POST", "/get-online-features", body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            statuses.add(response.status)
            return json.loads(payload)

        def check(payload: Any) -> int:
            names = payload["metadata"]["feature_names"]
            return sum(
                status != "PRESENT"
                for name, result in zip(names, payload["results"], strict=True)
                if name != ENTITY
                for status in result["statuses"]
            )

        pids_before = sorted(group_members(process.pid))
        for suffix, selector in selectors:
            for label, requests in sets.items():
                key = label + suffix
                log(f"serve_online {key}: {len(requests['timed'])} requests")
                out[key] = timed_loop(partial(call, selector=selector), check, requests)
                log(f"serve_online {key}: {out[key]}")
        connection.close()
        out["http_statuses"] = sorted(statuses)
        out["server_rss_mib"] = round(group_rss_mib(process.pid), 1)
        pids_after = sorted(group_members(process.pid))
        out["worker_restarted"] = pids_before != pids_after
    out["stop"] = stop_report
    log(f"feast serve stopped: {out['stop']}")
    return out


def historical_child(repo: Path, entities_path: Path, rows: int, out_path: Path) -> None:
    """In the child process: one get_historical_features(...).to_df(), result to out_path."""
    import pandas as pd
    from feast import FeatureStore

    started = time.perf_counter()
    entity_df = pd.read_parquet(entities_path).head(rows)
    read_seconds = time.perf_counter() - started
    store = FeatureStore(repo_path=str(repo))
    service = store.get_feature_service(HISTORY_SERVICE)
    started = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    seconds = time.perf_counter() - started
    feature_columns = [c for c in frame.columns if c.startswith("f")]
    result = {
        "entity_rows": len(entity_df),
        "result_rows": len(frame),
        "entity_rows_dropped": len(entity_df) - len(frame),
        "result_columns": len(frame.columns),
        "rows_without_features": int(frame[feature_columns].isna().all(axis=1).sum()),
        "read_entity_df_seconds": round(read_seconds, 2),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(proc_status_kib("self", "VmHWM") / 1024, 1),
    }
    out_path.write_text(json.dumps(result))


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def measure_historical(
    repo: Path,
    data: features_data.DataFiles,
    entity_rows: int,
    work: Path,
    timeout: float,
    max_rss_gib: float,
) -> Result:
    """Run historical_child under a time and memory limit; keep the figures whatever happens.

    The memory limit is ``max_rss_gib`` but at most what the machine has available now less
    2 GiB, so this script kills the child before the kernel's OOM killer picks a process.
    """
    out_path = work / "historical.json"
    available = mem_available_gib()
    limit_gib = min(max_rss_gib, available - 2)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_historical",
        "--repo",
        str(repo),
        "--entities",
        str(data.entities),
        "--rows",
        str(entity_rows),
        "--result",
        str(out_path),
    ]
    result: Result = {
        "entity_rows": entity_rows,
        "feature_rows": data.spec.history_rows,
        "features": data.spec.features,
        "timeout_seconds": timeout,
        "max_rss_gib": round(limit_gib, 1),
        "mem_available_gib_at_start": round(available, 1),
    }
    peak_kib = 0
    status, detail = "ok", ""
    started = time.monotonic()
    with (work / "historical.log").open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        last_report = last_group_check = started
        while process.poll() is None:
            # the child's own high-water mark every 0.1 s (Dask runs threads in it); the RSS of
            # its whole process group every 2 s in case anything forks
            peak_kib = max(peak_kib, proc_status_kib(process.pid, "VmHWM"))
            if time.monotonic() - last_group_check > 2:
                peak_kib = max(peak_kib, int(group_rss_mib(process.pid) * 1024))
                last_group_check = time.monotonic()
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                status, detail = "timeout", f"killed after {elapsed:.0f} s"
            elif peak_kib > limit_gib * 2**20:
                status, detail = "memory", f"killed at {peak_kib / 1024:,.0f} MiB RSS"
            if status != "ok":
                result["stop"] = stop_group(process, timeout=5)
                break
            if time.monotonic() - last_report > 30:
                log(f"historical: {elapsed:.0f} s, peak RSS {peak_kib / 1024:,.0f} MiB so far")
                last_report = time.monotonic()
            time.sleep(0.1)
    result["child_wall_seconds"] = round(time.monotonic() - started, 2)
    if status == "ok" and process.returncode == 0 and out_path.exists():
        child = json.loads(out_path.read_text())
        child["peak_rss_mib"] = max(child["peak_rss_mib"], round(peak_kib / 1024, 1))
        result.update(child)
    else:
        tail = (work / "historical.log").read_text(errors="replace")[-2_000:]
        if status == "ok" and process.returncode == -signal.SIGKILL:
            status = "memory"
            detail = (
                f"SIGKILL from outside this script (the kernel's OOM killer?) at "
                f"{peak_kib / 1024:,.0f} MiB RSS after {result['child_wall_seconds']:.0f} s"
            )
        elif status == "ok":
            status = "error"
            detail = f"exit code {process.returncode}: {tail}"
        result["seconds"] = None
        result["peak_rss_mib"] = round(peak_kib / 1024, 1)
    result["status"] = status
    result["detail"] = detail
    return result


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> Result:
    import feast
    import redis
    from feast import FeatureStore

    t_start = time.monotonic()
    spec = features_data.read_spec(args.data) or features_data.DataSpec()
    data = features_data.ensure_data(args.data, spec, skip_history=args.skip_historical)
    timings: Result = {"data_seconds": round(time.monotonic() - t_start, 1)}
    result: Result = {
        "feast_version": feast.__version__,
        "project": args.project,
        "redis": args.redis,
        "data": {**asdict(spec), "directory": str(Path(args.data).resolve())},
        "config": {
            "ttl_days": args.ttl_days,
            "offline_store": "file (dask)",
            "online_store": "redis, default settings (skip_dedup false, no key ttl)",
            "sdk_call": "get_online_features(features=FeatureService, entity_rows).to_dict()",
            "seed": args.seed,
        },
        "timings": timings,
    }
    client = redis.Redis.from_url(args.redis)
    client.ping()
    removed = delete_feast_keys(client, args.project)
    if removed:
        log(f"removed {removed} keys left by an earlier run of project {args.project}")

    with tempfile.TemporaryDirectory(prefix="feast_peer_", dir=args.workdir) as tmp:
        work = Path(tmp)
        repo = work / "repo"
        write_repo(repo, args.project, args.redis)
        try:
            phase = time.monotonic()
            store = FeatureStore(repo_path=str(repo))
            store.apply(feast_objects(data, args.ttl_days))
            timings["apply_seconds"] = round(time.monotonic() - phase, 2)
            log(f"applied the repo in {timings['apply_seconds']} s")

            end = spec.end_time + timedelta(seconds=1)
            start = spec.end_time - timedelta(days=2 + spec.rows_per_entity // 24)
            log(f"materialize {spec.entities:,} rows ({start} .. {end})")
            phase = time.monotonic()
            store.materialize(start_date=start, end_date=end, feature_views=[LATEST_VIEW])
            seconds = time.monotonic() - phase
            keys = count_feast_keys(client, args.project)
            result["materialize"] = {
                "rows": spec.entities,
                "keys_in_redis": keys,
                "seconds": round(seconds, 2),
                "rows_per_second": round(spec.entities / seconds, 1),
            }
            log(f"materialize: {result['materialize']}")
            result["redis_layout"] = describe_layout(client, args.project, 0, spec.features)
            result["redis_layout"]["keys_in_redis"] = keys

            sets = request_sets(spec.entities, args.seed, args.n1, args.n100, args.warmup)
            phase = time.monotonic()
            result["sdk_online"] = measure_sdk(store, sets, spec.features)
            timings["sdk_online_seconds"] = round(time.monotonic() - phase, 1)

            phase = time.monotonic()
            result["serve_online"] = measure_serve(repo, sets, work, spec.features)
            timings["serve_online_seconds"] = round(time.monotonic() - phase, 1)

            if args.skip_historical:
                result["historical"] = []
            else:
                result["historical"] = []
                for wanted in args.historical_entity_rows or [spec.entity_rows]:
                    entity_rows = min(wanted, spec.entity_rows)
                    log(
                        f"historical: {entity_rows:,} entity rows x {spec.history_rows:,} "
                        f"history rows (limit {args.historical_timeout:.0f} s, "
                        f"{args.historical_max_rss_gib} GiB or the memory available less 2 GiB)"
                    )
                    phase = time.monotonic()
                    measured = measure_historical(
                        repo,
                        data,
                        entity_rows,
                        work,
                        args.historical_timeout,
                        args.historical_max_rss_gib,
                    )
                    result["historical"].append(measured)
                    timings[f"historical_{entity_rows}_seconds"] = round(
                        time.monotonic() - phase, 1
                    )
                    log(f"historical: {measured}")
        except Exception as error:  # keep what was measured, say what broke
            result["error"] = "".join(traceback.format_exception(error))[-4_000:]
            log(f"error: {error!r}")
        finally:
            result["cleanup_deleted_keys"] = delete_feast_keys(client, args.project)
            result["cleanup_remaining_keys"] = count_feast_keys(client, args.project)
            timings["total_seconds"] = round(time.monotonic() - t_start, 1)
            log(
                f"removed {result['cleanup_deleted_keys']} Feast keys "
                f"({result['cleanup_remaining_keys']} left)"
            )
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="bench/features_data.py DIR")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    parser.add_argument("--project", default="fsbench_feast_peer", help="Feast project name")
    parser.add_argument("--skip-historical", action="store_true")
    parser.add_argument("--n1", type=int, default=2_000, help="timed 1-entity requests")
    parser.add_argument("--n100", type=int, default=300, help="timed 100-entity requests")
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up, share of timed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ttl-days", type=int, default=3_650)
    parser.add_argument("--historical-timeout", type=float, default=900.0)
    parser.add_argument("--historical-max-rss-gib", type=float, default=20.0)
    parser.add_argument(
        "--historical-entity-rows",
        type=int,
        nargs="+",
        default=None,
        help="one query per N, each with the first N rows of the entity frame (default: all)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temp repo")
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_historical"]:
        child = argparse.ArgumentParser()
        child.add_argument("--repo", type=Path, required=True)
        child.add_argument("--entities", type=Path, required=True)
        child.add_argument("--rows", type=int, required=True)
        child.add_argument("--result", type=Path, required=True)
        child_args = child.parse_args(argv[1:])
        historical_child(child_args.repo, child_args.entities, child_args.rows, child_args.result)
        return 0
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 1 if "error" in result else 0


# No ``main()`` on purpose: ``python -m bench`` runs every bench module that has one, and this
# one needs the Feast venv.
if __name__ == "__main__":
    sys.exit(cli())
