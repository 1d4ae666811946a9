"""The feature store's manager: ingest into the offline store, point-in-time retrieval and
materialization into the online store. Definitions live in ``registry.py``, online reads on
the request hot path in ``serving.py``."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.database import Database, as_utc, utcnow
from mlops.core.errors import InvalidFields, InvalidInput
from mlops.core.settings import Settings
from mlops.features.dataset import FEATURE_LINEAGE, features_uri, load_entities
from mlops.features.frames import CREATED, EVENT, table_from_frame, table_from_rows
from mlops.features.metrics import MATERIALIZATIONS, MATERIALIZED_ENTITIES, record_failures
from mlops.features.models import FeatureBatch, FeatureMaterialization, FeatureViewVersion
from mlops.features.offline import OfflineStore, ParquetOfflineStore
from mlops.features.online import OnlineRow, OnlineStore, encode_entity_key, open_online_store
from mlops.features.pointintime import ViewFrame, point_in_time_join
from mlops.features.registry import (
    FeatureRegistry,
    ResolvedService,
    ResolvedView,
    expectations_of,
    resolve_view,
)
from mlops.features.schemas import HistoricalIn
from mlops.features.validation import check_expectations, check_freshness
from mlops.features.validation import report as validation_report

UPLOAD_FORMATS = (".parquet", ".csv")


@dataclass(frozen=True)
class Purge:
    paths: list[str]
    namespaces: list[str]


@dataclass(frozen=True)
class Stores:
    offline: OfflineStore
    online: OnlineStore


def open_stores(settings: Settings) -> Stores:
    return Stores(
        offline=ParquetOfflineStore(settings.effective_feature_offline_root),
        online=open_online_store(settings.redis_dsn),
    )


async def resolve_feature_service(database: Database, name: str) -> ResolvedService:
    async with database.sessionmaker() as session:
        return await FeatureRegistry(session).resolve_service(name)


def read_upload(content: bytes, filename: str) -> pd.DataFrame:
    """An uploaded Parquet or CSV file as a frame (422 on field ``file`` otherwise)."""
    kind = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if kind not in UPLOAD_FORMATS:
        raise InvalidInput(
            f"unsupported file type {kind or '(none)'!r}; send one of {list(UPLOAD_FORMATS)}",
            field=["body", "file"],
        )
    try:
        if kind == ".csv":
            return pd.read_csv(io.BytesIO(content))
        return pd.read_parquet(io.BytesIO(content))
    except Exception as exc:  # any parser failure is the same answer: not a readable file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(
            f"cannot read the {kind[1:]} file: {reason}", field=["body", "file"]
        ) from exc


class FeatureStore:
    def __init__(self, session: AsyncSession, stores: Stores) -> None:
        self.session = session
        self.stores = stores
        self.registry = FeatureRegistry(session)

    async def view_of(self, view_id: uuid.UUID) -> FeatureViewVersion:
        """The version a batch or run belongs to (this session already holds it)."""
        found = await self.session.get(FeatureViewVersion, view_id)
        assert found is not None  # a batch or run is never without its version
        return found

    # -- ingest -----------------------------------------------------------------------------

    async def ingest_rows(
        self, name: str, rows: Sequence[dict[str, Any]], actor: str
    ) -> FeatureBatch:
        record = await self.registry.view(name)
        view = resolve_view(record)
        table = await asyncio.to_thread(table_from_rows, view.schema, rows)
        return await self._store_batch(record, table, "rows", "rows", actor)

    async def ingest_frame(
        self, name: str, frame: pd.DataFrame, origin: str, field: str, actor: str
    ) -> FeatureBatch:
        record = await self.registry.view(name)
        view = resolve_view(record)
        table = await asyncio.to_thread(table_from_frame, view.schema, frame, field)
        return await self._store_batch(record, table, origin, field, actor)

    async def ingest_source(self, name: str, actor: str) -> FeatureBatch:
        record = await self.registry.view(name)
        source = record.definition.get("source")
        if not source:
            raise InvalidInput(
                f"feature view {name!r} declares no source", field=["body", "from_source"]
            )
        from mlops.steps.datasets import load_dataset
        from mlops.steps.framework import StepError

        try:
            frame = await asyncio.to_thread(load_dataset, source["uri"])
        except StepError as exc:
            raise InvalidInput(str(exc), field=["body", "from_source"]) from exc
        return await self.ingest_frame(name, frame, "source", "from_source", actor)

    async def _store_batch(
        self, record: FeatureViewVersion, table: pa.Table, origin: str, field: str, actor: str
    ) -> FeatureBatch:
        if table.num_rows == 0:
            raise InvalidInput("no rows to ingest", field=["body", field])
        failures = check_expectations(table, expectations_of(record.definition))
        record_failures(record.name, "ingest", failures)
        if failures and record.definition.get("on_violation", "reject") == "reject":
            raise InvalidFields(
                [
                    (
                        ["body", "rows", f.first_row or 0, f.feature]
                        if field == "rows"
                        else ["body", field],
                        f.message() if field == "rows" else f"column {f.feature!r}: {f.message()}",
                    )
                    for f in failures
                ]
            )
        events = table.column(EVENT)
        batch = FeatureBatch(
            id=uuid.uuid4(),
            view_id=record.id,
            origin=origin,
            rows=table.num_rows,
            min_event_at=pc.min(events).as_py(),
            max_event_at=pc.max(events).as_py(),
            created_by=actor,
            created_at=utcnow(),
            validation=validation_report(table.num_rows, failures),
        )
        batch.path = f"{record.name}/v{record.version}/{batch.id.hex}.parquet"
        await asyncio.to_thread(self.stores.offline.write, batch.path, table)
        self.session.add(batch)
        record.rows += table.num_rows
        await self.session.flush()
        return batch

    async def batches(self, view_id: uuid.UUID, only_new: bool = False) -> list[FeatureBatch]:
        query = select(FeatureBatch).where(FeatureBatch.view_id == view_id)
        if only_new:
            query = query.where(FeatureBatch.materialized_at.is_(None))
        query = query.order_by(FeatureBatch.created_at, FeatureBatch.id)
        return list((await self.session.scalars(query)).all())

    async def _read_view(
        self,
        view: ResolvedView,
        batches: Sequence[FeatureBatch],
        features: Sequence[str],
        event_between: tuple[datetime | None, datetime | None] = (None, None),
    ) -> pa.Table:
        low, high = event_between
        chosen = [
            batch.path
            for batch in batches
            if (low is None or as_utc(batch.max_event_at) >= low)
            and (high is None or as_utc(batch.min_event_at) <= high)
        ]
        columns = [*view.key_names, EVENT, CREATED, *features]
        return await asyncio.to_thread(
            self.stores.offline.read, chosen, view.schema.arrow_schema, columns, event_between
        )

    async def delete_view(self, name: str) -> Purge:
        """Delete the view's definitions and batch records; what ``purge`` must then remove."""
        versions = await self.registry.view_versions(name)
        paths = [batch.path for version in versions for batch in await self.batches(version.id)]
        await self.registry.delete_view(name)
        return Purge(paths=paths, namespaces=[resolve_view(v).namespace for v in versions])

    async def purge(self, purge: Purge) -> None:
        await asyncio.to_thread(self.stores.offline.remove, purge.paths)
        for namespace in purge.namespaces:
            await self.stores.online.delete_namespace(namespace)

    # -- point-in-time retrieval --------------------------------------------------------------

    async def training_frame(self, body: HistoricalIn) -> tuple[pd.DataFrame, str | None]:
        """The point-in-time frame a request asks for and, when its entity frame is a
        dataset, the ``features://`` URI that names the same training set."""
        service = await self.registry.resolve_service(body.feature_service)
        if body.entities_uri is None:
            entities, uri = pd.DataFrame(body.entities), None
        else:
            entities = await load_entities(body.entities_uri)
            uri = features_uri(body.feature_service, body.entities_uri, body.timestamp_column)
        frame = await self.historical(service, entities, body.timestamp_column)
        # what a training run records of the data it read (``training/runner.feature_tags``)
        frame.attrs[FEATURE_LINEAGE] = {
            "service": service.name,
            "views": {part.view.name: part.view.version for part in service.parts},
        }
        return frame, uri

    async def historical(
        self, service: ResolvedService, entities: pd.DataFrame, timestamp_column: str
    ) -> pd.DataFrame:
        """For each entity row, each feature's value as known at the row's timestamp."""
        entities = _checked_entities(entities, service, timestamp_column)
        moments = entities[timestamp_column]
        frames: list[ViewFrame] = []
        for part in service.parts:
            view = part.view
            earliest = moments.min() - view.ttl if view.ttl else None
            table = await self._read_view(
                view,
                await self.batches(view.id),
                part.features,
                (
                    earliest.to_pydatetime() if earliest is not None else None,
                    moments.max().to_pydatetime(),
                ),
            )
            frames.append(
                ViewFrame(
                    name=view.name,
                    join_keys=view.key_names,
                    frame=_frame_of(table),
                    features=part.features,
                    output_names=part.features,
                    ttl=view.ttl,
                )
            )
        return await asyncio.to_thread(point_in_time_join, entities, timestamp_column, frames)

    # -- materialization ---------------------------------------------------------------------

    async def materialize(
        self,
        name: str,
        actor: str,
        start: datetime | None = None,
        end: datetime | None = None,
        every_batch: bool = False,
    ) -> FeatureMaterialization:
        """Each entity's latest row into the online store: rows with event times in
        [start, end], or every batch (``every_batch``), or else every batch not materialized
        yet."""
        record = await self.registry.view(name)
        view = resolve_view(record)
        incremental = start is None and end is None and not every_batch
        if start is not None and end is not None and start > end:
            raise InvalidFields([(["body", "end"], "end is before start")])
        started = utcnow()
        batches = await self.batches(view.id, only_new=incremental)
        features = [feature for feature, _ in view.schema.features]
        run = FeatureMaterialization(
            view_id=record.id,
            mode="incremental" if incremental else "full" if every_batch else "range",
            start_at=start,
            end_at=end,
            created_by=actor,
            started_at=started,
        )
        try:
            table = await self._read_view(view, batches, features, (start, end))
            run.rows_read = table.num_rows
            failures = check_expectations(table, expectations_of(record.definition))
            stale = check_freshness(table, record.definition.get("freshness_seconds"), started)
            failures += [stale] if stale else []
            record_failures(record.name, "materialize", failures)
            run.validation = validation_report(table.num_rows, failures)
            rows = await asyncio.to_thread(latest_rows, table, view.key_names, features)
            written = await self.stores.online.write(view.namespace, rows)
        except (OSError, RedisError, pa.ArrowException) as exc:
            MATERIALIZATIONS.labels(record.name, "failed").inc()
            run.status, run.error, run.finished_at = "failed", str(exc)[:2000], utcnow()
            self.session.add(run)
            await self.session.flush()
            return run
        if incremental:
            for batch in batches:
                batch.materialized_at = started
        MATERIALIZATIONS.labels(record.name, "succeeded").inc()
        MATERIALIZED_ENTITIES.labels(record.name).inc(written)
        run.status, run.entities_written = "succeeded", written
        run.finished_at = utcnow()
        self.session.add(run)
        await self.session.flush()
        return run

    def materializations_query(self, view_ids: Sequence[uuid.UUID]) -> Any:
        return (
            select(FeatureMaterialization)
            .where(FeatureMaterialization.view_id.in_(view_ids))
            .order_by(FeatureMaterialization.finished_at.desc())
        )


def _frame_of(table: pa.Table) -> pd.DataFrame:
    """Column by column, each Arrow buffer released once converted: the rows are held once
    rather than twice (10M rows x 50 floats is 4 GB)."""
    return table.to_pandas(split_blocks=True, self_destruct=True)


def latest_rows(
    table: pa.Table, key_names: Sequence[str], features: Sequence[str]
) -> list[OnlineRow]:
    """Each entity's row with the greatest (event, created) time; among full ties the last."""
    if table.num_rows == 0:
        return []
    frame = table.to_pandas()
    frame["_order"] = range(len(frame))
    frame = frame.sort_values([*key_names, EVENT, CREATED, "_order"], kind="stable")
    latest = frame.drop_duplicates(list(key_names), keep="last")
    keys = latest[list(key_names)].to_numpy(dtype=object).tolist()
    events = latest[EVENT].dt.as_unit("us").astype("int64").to_numpy() / 1e6
    createds = latest[CREATED].dt.as_unit("us").astype("int64").to_numpy() / 1e6
    values = pa.Table.from_pandas(latest[list(features)], preserve_index=False).to_pylist()
    return [
        OnlineRow(
            entity_key=encode_entity_key(key),
            values=value,
            event_time=float(event),
            created_time=float(created),
        )
        for key, value, event, created in zip(keys, values, events, createds, strict=True)
    ]


def _checked_entities(
    entities: pd.DataFrame, service: ResolvedService, timestamp_column: str
) -> pd.DataFrame:
    problems: list[tuple[list[str | int], str]] = []
    if timestamp_column not in entities.columns:
        problems.append(
            (["body", "timestamp_column"], f"no column {timestamp_column!r} in entities")
        )
    missing = [name for name, _ in service.join_keys if name not in entities.columns]
    if missing:
        problems.append((["body", "entities"], f"join keys missing: {missing}"))
    if entities.empty:
        problems.append((["body", "entities"], "no entity rows"))
    if problems:
        raise InvalidFields(problems)
    entities = entities.copy()
    try:
        entities[timestamp_column] = pd.to_datetime(
            entities[timestamp_column], utc=True, format="ISO8601"
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"timestamps: {exc}", field=["body", "entities", timestamp_column]
        ) from exc
    if entities[timestamp_column].isna().any():
        raise InvalidInput(
            "timestamps cannot be null", field=["body", "entities", timestamp_column]
        )
    return entities
