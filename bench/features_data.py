"""Deterministic feature-store benchmark data, shared by every feature-store benchmark.

Writes three Parquet files that the service's ``bench/features.py`` and the Feast peer
(``bench/feast_peer.py``, run in its own venv) both read, so every store is loaded with the same
bytes. Only numpy, pyarrow and the standard library are used, and the files are written through
pyarrow rather than pandas, so both venvs produce identical files whatever their pandas version.

- ``features.parquet`` (:func:`feature_rows`): the online data set: one latest row per entity
  (``rows_per_entity`` of them if asked), columns ``entity_id`` (int64), ``event_timestamp``
  and ``created_timestamp`` (timestamp[us, UTC]) and ``f00`` .. ``f49`` (float64). Event times
  fall in the last day before ``end``.
- ``history.parquet`` (:func:`history_rows`): the offline history: ``rows`` rows spread evenly
  over the entities (row ``i`` belongs to entity ``i % entities``) with event times uniform over
  the ``history_days`` before ``end``; written one row group at a time, so memory stays at one
  row group (250,000 rows x 50 features is about 100 MB) whatever the row count.
- ``entities.parquet`` (:func:`entity_frame`): the entity frame of a training-set query:
  ``entity_id``, ``event_timestamp`` uniform over the history's span, and a 0/1 ``label``.

Feature values are standard-normal float64, which do not compress: the 10 M-row history is about
4 GB on disk. Every chunk of ``CHUNK_ROWS`` rows draws from its own generator seeded with
``(seed, file tag, chunk index)``, so the data depend on the parameters only.

``python bench/features_data.py DIR`` writes all three into DIR, skipping a file whose entry in
``DIR/manifest.json`` has the same parameters and whose size still matches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GENERATOR_VERSION = 1
DEFAULT_SEED = 20_260_101
DEFAULT_END = datetime(2026, 1, 1, tzinfo=UTC)
HISTORY_DAYS = 30
CHUNK_ROWS = 250_000

FEATURES_FILE = "features.parquet"
HISTORY_FILE = "history.parquet"
ENTITIES_FILE = "entities.parquet"
MANIFEST_FILE = "manifest.json"

_US_PER_SECOND = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_SECOND
_CREATED_LAG_US = 60 * _US_PER_SECOND
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_TAG_FEATURES, _TAG_HISTORY, _TAG_ENTITIES = 1, 2, 3


def feature_names(features: int = 50) -> list[str]:
    """``f00`` .. ``f49`` (zero-padded to at least two digits)."""
    width = max(2, len(str(features - 1)))
    return [f"f{i:0{width}d}" for i in range(features)]


def _epoch_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _US_PER_SECOND + delta.microseconds


def _schema(features: int, *, label: bool = False) -> pa.Schema:
    fields = [
        pa.field("entity_id", pa.int64(), nullable=False),
        pa.field("event_timestamp", _TIMESTAMP, nullable=False),
    ]
    if label:
        fields.append(pa.field("label", pa.int64(), nullable=False))
    else:
        fields.append(pa.field("created_timestamp", _TIMESTAMP, nullable=False))
        fields += [pa.field(name, pa.float64(), nullable=False) for name in feature_names(features)]
    return pa.schema(fields)


def _chunks(total: int) -> Iterator[tuple[int, int, int]]:
    """(chunk index, first row, row count) of each CHUNK_ROWS slice of ``total`` rows."""
    for index, first in enumerate(range(0, total, CHUNK_ROWS)):
        yield index, first, min(CHUNK_ROWS, total - first)


def _feature_table(
    schema: pa.Schema,
    entity_ids: np.ndarray[Any, np.dtype[np.int64]],
    event_us: np.ndarray[Any, np.dtype[np.int64]],
    rng: np.random.Generator,
    features: int,
) -> pa.Table:
    created_us = event_us + rng.integers(0, _CREATED_LAG_US, size=len(event_us), dtype=np.int64)
    values = rng.standard_normal((features, len(event_us)))  # column-major: one row per feature
    columns: list[pa.Array] = [
        pa.array(entity_ids, type=pa.int64()),
        pa.array(event_us, type=pa.int64()).cast(_TIMESTAMP),
        pa.array(created_us, type=pa.int64()).cast(_TIMESTAMP),
    ]
    columns += [pa.array(values[i], type=pa.float64()) for i in range(features)]
    return pa.Table.from_arrays(columns, schema=schema)


def _write(path: Path, schema: pa.Schema, tables: Iterator[pa.Table]) -> int:
    """Write each table as one row group into a temporary file, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    rows = 0
    with pq.ParquetWriter(partial, schema, compression="snappy") as writer:
        for table in tables:
            writer.write_table(table, row_group_size=len(table))
            rows += len(table)
    partial.replace(path)
    return rows


def feature_rows(
    path: str | Path,
    entities: int = 100_000,
    features: int = 50,
    rows_per_entity: int = 1,
    seed: int = DEFAULT_SEED,
    end: datetime = DEFAULT_END,
) -> Path:
    """The online data set: ``rows_per_entity`` rows per entity, the latest in the last day.

    With more than one row per entity, row ``k`` (0 = latest) of an entity is ``k`` hours
    older than the latest one, so the latest row is unambiguous.
    """
    out = Path(path)
    schema = _schema(features)
    end_us = _epoch_us(end)
    total = entities * rows_per_entity

    def tables() -> Iterator[pa.Table]:
        for index, first, count in _chunks(total):
            rng = np.random.default_rng([seed, _TAG_FEATURES, index])
            row = np.arange(first, first + count, dtype=np.int64)
            entity_ids = row % entities
            age = row // entities  # 0 for the latest row of each entity
            offset = rng.integers(1, _US_PER_DAY - _CREATED_LAG_US, size=count, dtype=np.int64)
            event_us = end_us - offset - age * 3_600 * _US_PER_SECOND
            yield _feature_table(schema, entity_ids, event_us, rng, features)

    _write(out, schema, tables())
    return out


def history_rows(
    path: str | Path,
    entities: int = 100_000,
    rows: int = 10_000_000,
    features: int = 50,
    seed: int = DEFAULT_SEED,
    end: datetime = DEFAULT_END,
    days: int = HISTORY_DAYS,
) -> Path:
    """The offline history: ``rows`` rows over ``entities`` entities across ``days`` days."""
    out = Path(path)
    schema = _schema(features)
    end_us = _epoch_us(end)
    span_us = days * _US_PER_DAY

    def tables() -> Iterator[pa.Table]:
        for index, first, count in _chunks(rows):
            rng = np.random.default_rng([seed, _TAG_HISTORY, index])
            entity_ids = np.arange(first, first + count, dtype=np.int64) % entities
            event_us = end_us - span_us + rng.integers(0, span_us, size=count, dtype=np.int64)
            yield _feature_table(schema, entity_ids, event_us, rng, features)

    _write(out, schema, tables())
    return out


def entity_frame(
    path: str | Path,
    rows: int = 1_000_000,
    entities: int = 100_000,
    seed: int = DEFAULT_SEED,
    end: datetime = DEFAULT_END,
    days: int = HISTORY_DAYS,
) -> Path:
    """The entity frame of a training-set query: random entities at times within the history."""
    out = Path(path)
    schema = _schema(0, label=True)
    end_us = _epoch_us(end)
    span_us = days * _US_PER_DAY

    def tables() -> Iterator[pa.Table]:
        for index, _first, count in _chunks(rows):
            rng = np.random.default_rng([seed, _TAG_ENTITIES, index])
            entity_ids = rng.integers(0, entities, size=count, dtype=np.int64)
            event_us = end_us - span_us + rng.integers(0, span_us, size=count, dtype=np.int64)
            labels = rng.integers(0, 2, size=count, dtype=np.int64)
            yield pa.Table.from_arrays(
                [
                    pa.array(entity_ids, type=pa.int64()),
                    pa.array(event_us, type=pa.int64()).cast(_TIMESTAMP),
                    pa.array(labels, type=pa.int64()),
                ],
                schema=schema,
            )

    _write(out, schema, tables())
    return out


@dataclass(frozen=True)
class DataSpec:
    """Every parameter of the three files (all of them go into the manifest)."""

    entities: int = 100_000
    features: int = 50
    rows_per_entity: int = 1
    history_rows: int = 10_000_000
    entity_rows: int = 1_000_000
    history_days: int = HISTORY_DAYS
    seed: int = DEFAULT_SEED
    end: str = DEFAULT_END.isoformat()

    @property
    def end_time(self) -> datetime:
        return datetime.fromisoformat(self.end)

    @property
    def history_start(self) -> datetime:
        return self.end_time - timedelta(days=self.history_days)


@dataclass(frozen=True)
class DataFiles:
    features: Path
    history: Path
    entities: Path
    spec: DataSpec


def _file_params(name: str, spec: DataSpec) -> dict[str, Any]:
    common = {"generator_version": GENERATOR_VERSION, "seed": spec.seed, "end": spec.end}
    if name == FEATURES_FILE:
        own = {
            "entities": spec.entities,
            "features": spec.features,
            "rows_per_entity": spec.rows_per_entity,
        }
    elif name == HISTORY_FILE:
        own = {
            "entities": spec.entities,
            "rows": spec.history_rows,
            "features": spec.features,
            "days": spec.history_days,
        }
    else:
        own = {"entities": spec.entities, "rows": spec.entity_rows, "days": spec.history_days}
    return {**common, **own, "chunk_rows": CHUNK_ROWS}


def read_spec(directory: str | Path) -> DataSpec | None:
    """The parameters that ``directory``'s manifest was last written with, if any."""
    try:
        saved = json.loads((Path(directory) / MANIFEST_FILE).read_text())["spec"]
        return DataSpec(**saved)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_data(
    directory: str | Path,
    spec: DataSpec | None = None,
    *,
    skip_history: bool = False,
    force: bool = False,
    log: bool = True,
) -> DataFiles:
    """Write the three files into ``directory`` unless the manifest says they are already there.

    ``skip_history`` leaves out the 10 M-row history and the entity frame (online-only runs).
    """
    spec = spec or DataSpec()
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST_FILE
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
    files: dict[str, Any] = manifest.setdefault("files", {})
    manifest["spec"] = asdict(spec)

    writers = {
        FEATURES_FILE: lambda p: feature_rows(
            p, spec.entities, spec.features, spec.rows_per_entity, spec.seed, spec.end_time
        ),
        HISTORY_FILE: lambda p: history_rows(
            p,
            spec.entities,
            spec.history_rows,
            spec.features,
            spec.seed,
            spec.end_time,
            spec.history_days,
        ),
        ENTITIES_FILE: lambda p: entity_frame(
            p, spec.entity_rows, spec.entities, spec.seed, spec.end_time, spec.history_days
        ),
    }
    wanted = [FEATURES_FILE] if skip_history else list(writers)
    for name in wanted:
        target = root / name
        params = _file_params(name, spec)
        entry = files.get(name, {})
        if (
            not force
            and target.exists()
            and entry.get("params") == params
            and entry.get("bytes") == target.stat().st_size
        ):
            if log:
                print(f"{name}: up to date ({entry['bytes'] / 2**20:,.0f} MiB)", flush=True)
            continue
        if log:
            print(f"{name}: writing ...", flush=True)
        started = time.perf_counter()
        writers[name](target)
        seconds = time.perf_counter() - started
        files[name] = {
            "params": params,
            "bytes": target.stat().st_size,
            "rows": pq.ParquetFile(target).metadata.num_rows,
            "seconds": round(seconds, 2),
        }
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if log:
            size = files[name]["bytes"] / 2**20
            print(f"{name}: {files[name]['rows']:,} rows, {size:,.0f} MiB in {seconds:.1f} s")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return DataFiles(root / FEATURES_FILE, root / HISTORY_FILE, root / ENTITIES_FILE, spec)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    defaults = DataSpec()
    parser.add_argument("--entities", type=int, default=defaults.entities)
    parser.add_argument("--features", type=int, default=defaults.features)
    parser.add_argument("--rows-per-entity", type=int, default=defaults.rows_per_entity)
    parser.add_argument("--history-rows", type=int, default=defaults.history_rows)
    parser.add_argument("--entity-rows", type=int, default=defaults.entity_rows)
    parser.add_argument("--history-days", type=int, default=defaults.history_days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--skip-history", action="store_true", help="only features.parquet")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = parser.parse_args(argv)
    spec = DataSpec(
        entities=args.entities,
        features=args.features,
        rows_per_entity=args.rows_per_entity,
        history_rows=args.history_rows,
        entity_rows=args.entity_rows,
        history_days=args.history_days,
        seed=args.seed,
    )
    print(json.dumps(asdict(spec)), flush=True)
    ensure_data(args.directory, spec, skip_history=args.skip_history, force=args.force)
    return 0


# No ``main()`` on purpose: ``python -m bench`` runs every bench module that has one.
if __name__ == "__main__":
    sys.exit(cli())
