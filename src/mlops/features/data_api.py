"""Data routes of the feature store: ingest, materialization, point-in-time and online
retrieval, lineage. Thin: each awaits one manager call."""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Request, Response, UploadFile, status

from mlops.core.errors import parse_json_body
from mlops.core.pagination import Page, PageDep, paginate_as
from mlops.core.settings import SettingsDep
from mlops.features.deps import NOT_FOUND, Read, StoreDep, Write
from mlops.features.lineage import LineageOut, view_lineage
from mlops.features.models import FeatureBatch, FeatureViewVersion
from mlops.features.schemas import (
    HistoricalIn,
    HistoricalOut,
    IngestIn,
    IngestOut,
    MaterializationOut,
    MaterializeIn,
    OnlineIn,
    OnlineOut,
)
from mlops.features.service import read_upload
from mlops.features.serving import OnlineFeatures
from mlops.security.audit import mark_read_only

data_router = APIRouter(prefix="/api/v1/features", tags=["features"])
PARQUET = "application/vnd.apache.parquet"


def _materialization_out(run: Any, record: FeatureViewVersion) -> MaterializationOut:
    return MaterializationOut(
        id=run.id,
        view=record.name,
        version=record.version,
        mode=run.mode,
        start=run.start_at,
        end=run.end_at,
        status=run.status,
        rows_read=run.rows_read,
        entities_written=run.entities_written,
        error=run.error,
        validation=run.validation,
        created_by=run.created_by,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _batch_out(batch: FeatureBatch, record: FeatureViewVersion) -> IngestOut:
    return IngestOut(
        batch_id=batch.id,
        view=record.name,
        version=record.version,
        rows=batch.rows,
        min_event_timestamp=batch.min_event_at,
        max_event_timestamp=batch.max_event_at,
        validation=batch.validation,
    )


# -- ingest and materialization -------------------------------------------------------------


@data_router.post(
    "/views/{name}/ingest",
    summary="Add rows to the view's offline store, as JSON or from its source file",
    status_code=status.HTTP_201_CREATED,
    response_model=IngestOut,
    responses={
        **NOT_FOUND,
        422: {"description": "A row or column that does not fit the view (named); none written"},
    },
)
async def ingest(name: str, body: IngestIn, principal: Write, store: StoreDep) -> IngestOut:
    if body.rows is not None:
        batch = await store.ingest_rows(name, body.rows, principal.name)
    else:
        batch = await store.ingest_source(name, principal.name)
    return _batch_out(batch, await store.view_of(batch.view_id))


@data_router.post(
    "/views/{name}/ingest/file",
    summary="Add rows to the view's offline store from an uploaded Parquet or CSV file",
    status_code=status.HTTP_201_CREATED,
    response_model=IngestOut,
    responses={
        **NOT_FOUND,
        422: {"description": "An unreadable file, or a column that does not fit (named)"},
    },
)
async def ingest_file(
    name: str,
    principal: Write,
    store: StoreDep,
    file: Annotated[
        UploadFile, File(description="A .parquet or .csv file with the view's columns.")
    ],
) -> IngestOut:
    frame = await asyncio.to_thread(read_upload, await file.read(), file.filename or "")
    batch = await store.ingest_frame(name, frame, "file", "file", principal.name)
    return _batch_out(batch, await store.view_of(batch.view_id))


@data_router.post(
    "/views/{name}/materialize",
    summary="Write each entity's latest values into the online store",
    status_code=status.HTTP_201_CREATED,
    response_model=MaterializationOut,
    responses=NOT_FOUND,
)
async def materialize(
    name: str, principal: Write, store: StoreDep, body: MaterializeIn | None = None
) -> MaterializationOut:
    window = body or MaterializeIn()
    run = await store.materialize(name, principal.name, window.start, window.end)
    return _materialization_out(run, await store.view_of(run.view_id))


@data_router.get(
    "/views/{name}/materializations",
    summary="The view's materializations, newest first",
    response_model=Page[MaterializationOut],
    responses=NOT_FOUND,
)
async def list_materializations(
    name: str, _: Read, store: StoreDep, page: PageDep
) -> Page[MaterializationOut]:
    versions = {v.id: v for v in await store.registry.view_versions(name)}
    query = store.materializations_query(list(versions))
    return await paginate_as(
        store.session, query, page, lambda run: _materialization_out(run, versions[run.view_id])
    )


@data_router.get(
    "/lineage/{view}",
    summary="A view's lineage: source, versions, services, training jobs, models, deployments",
    response_model=LineageOut,
    responses=NOT_FOUND,
)
async def lineage(view: str, _: Read, store: StoreDep, settings: SettingsDep) -> LineageOut:
    return await view_lineage(store.session, settings.effective_mlflow_uri, view)


# -- retrieval --------------------------------------------------------------------------------


@data_router.post(
    "/historical",
    summary="Point-in-time correct training data: each feature as known at each row's time",
    response_model=HistoricalOut,
    responses={
        **NOT_FOUND,
        200: {"content": {PARQUET: {}}, "description": "JSON, or Parquet with format=parquet"},
        422: {"description": "Missing join keys or timestamps, an unreadable dataset"},
    },
)
async def historical(
    body: HistoricalIn, request: Request, _: Read, store: StoreDep
) -> HistoricalOut | Response:
    mark_read_only(request.state)
    frame, dataset_uri = await store.training_frame(body)
    if body.format == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return Response(buffer.getvalue(), media_type=PARQUET)
    rows = orjson.loads(frame.to_json(orient="values", date_format="iso", date_unit="us"))
    return HistoricalOut(
        feature_service=body.feature_service,
        columns=[str(column) for column in frame.columns],
        rows=rows,
        dataset_uri=dataset_uri,
    )


# The online read has a router of its own, matched before every other route of the service
# (``HOT_ROUTERS``), and reads and writes its JSON itself: it answers in about a millisecond.
online_router = APIRouter(prefix="/api/v1/features", tags=["features"])
_ONLINE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": OnlineIn.model_json_schema()}},
}


@online_router.post(
    "/online",
    summary="Each entity's latest feature values from the online store, with their status",
    response_model=OnlineOut,
    responses={
        404: {"description": "No such feature service"},
        422: {"description": "A missing or mistyped join key (named)"},
    },
    openapi_extra={"requestBody": _ONLINE_BODY},
)
async def online(request: Request, _: Read) -> Response:
    mark_read_only(request.state)
    body = parse_json_body(OnlineIn, await request.body())
    features: OnlineFeatures = request.app.state.online_features
    answer = await features.read(body.feature_service, body.entities)
    return Response(orjson.dumps(answer), media_type="application/json")
