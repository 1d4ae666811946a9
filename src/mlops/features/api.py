"""Routes of the feature store: definitions, ingest, materialization, point-in-time and online
retrieval. Thin: each awaits one manager call."""

from __future__ import annotations

import io
from typing import Annotated, Any

import orjson
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    File,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)

from mlops.core.database import SessionDep
from mlops.core.errors import parse_json_body
from mlops.core.pagination import Page, PageDep, paginate_as
from mlops.core.settings import SettingsDep
from mlops.features.lineage import view_lineage
from mlops.features.models import FeatureBatch, FeatureServiceRecord, FeatureViewVersion
from mlops.features.schemas import (
    Applied,
    EntityIn,
    EntityOut,
    FeatureServiceIn,
    FeatureServiceOut,
    FeatureViewIn,
    FeatureViewOut,
    HistoricalIn,
    HistoricalOut,
    IngestIn,
    IngestOut,
    LineageOut,
    MaterializationOut,
    MaterializeIn,
    OnlineIn,
    OnlineOut,
)
from mlops.features.service import FeatureStore, Stores, read_upload
from mlops.features.serving import OnlineFeatures
from mlops.security.audit import mark_read_only
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

router = APIRouter(prefix="/api/v1/features", tags=["features"])
Read = Annotated[Principal, Depends(require(Permission.FEATURES_READ))]
Write = Annotated[Principal, Depends(require(Permission.FEATURES_WRITE))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such definition"}}
IN_USE: dict[int | str, dict[str, Any]] = {409: {"description": "Other definitions use it"}}
APPLIED: dict[int | str, dict[str, Any]] = {
    201: {"description": "Created", "model": Applied},
    409: {"description": "A breaking change without a new version, or it is in use"},
}
PARQUET = "application/vnd.apache.parquet"


async def feature_store(request: Request, session: SessionDep) -> FeatureStore:
    stores: Stores = request.app.state.feature_stores
    return FeatureStore(session, stores)


StoreDep = Annotated[FeatureStore, Depends(feature_store)]


def _applied(response: Response, request: Request, applied: Applied) -> Applied:
    if applied.outcome == "created":
        response.status_code = status.HTTP_201_CREATED
    if applied.outcome != "unchanged":
        online: OnlineFeatures = request.app.state.online_features
        online.forget()
    return applied


def _entity_out(record: Any) -> EntityOut:
    return EntityOut(
        name=record.name,
        join_keys=record.join_keys,
        description=record.description,
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _view_out(record: FeatureViewVersion) -> FeatureViewOut:
    return FeatureViewOut(
        **record.definition,
        name=record.name,
        version=record.version,
        join_keys=record.join_keys,
        rows=record.rows,
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _service_out(record: FeatureServiceRecord, columns: list[str]) -> FeatureServiceOut:
    return FeatureServiceOut(
        **record.definition,
        name=record.name,
        columns=columns,
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


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


# -- entities -------------------------------------------------------------------------------


@router.put(
    "/entities/{name}",
    summary="Declare or change an entity (its join keys cannot change while views use it)",
    response_model=Applied,
    responses=APPLIED,
)
async def put_entity(
    name: str,
    body: EntityIn,
    principal: Write,
    store: StoreDep,
    request: Request,
    response: Response,
) -> Applied:
    return _applied(response, request, await store.registry.put_entity(name, body, principal.name))


@router.get("/entities", summary="Entities, by name", response_model=Page[EntityOut])
async def list_entities(_: Read, store: StoreDep, page: PageDep) -> Page[EntityOut]:
    return await paginate_as(store.session, store.registry.entities_query(), page, _entity_out)


@router.get("/entities/{name}", summary="One entity", response_model=EntityOut, responses=NOT_FOUND)
async def get_entity(name: str, _: Read, store: StoreDep) -> EntityOut:
    return _entity_out(await store.registry.entity(name))


@router.delete(
    "/entities/{name}",
    summary="Delete an entity no feature view uses",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, **IN_USE},
)
async def delete_entity(name: str, _: Write, store: StoreDep) -> Response:
    await store.registry.delete_entity(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- feature views ----------------------------------------------------------------------------


@router.put(
    "/views/{name}",
    summary="Declare or change a feature view; a breaking change needs the next version",
    response_model=Applied,
    responses={**APPLIED, 422: {"description": "An unknown entity, a clashing name, …"}},
)
async def put_view(
    name: str,
    body: FeatureViewIn,
    principal: Write,
    store: StoreDep,
    request: Request,
    response: Response,
) -> Applied:
    return _applied(response, request, await store.registry.put_view(name, body, principal.name))


@router.get(
    "/views", summary="Feature views at their newest version", response_model=Page[FeatureViewOut]
)
async def list_views(_: Read, store: StoreDep, page: PageDep) -> Page[FeatureViewOut]:
    from mlops.core.pagination import page_of

    return page_of([_view_out(view) for view in await store.registry.current_views()], page)


@router.get(
    "/views/{name}",
    summary="A feature view: its newest version, or the one asked for",
    response_model=FeatureViewOut,
    responses=NOT_FOUND,
)
async def get_view(
    name: str,
    _: Read,
    store: StoreDep,
    version: Annotated[int | None, Query(ge=1, description="Default: the newest.")] = None,
) -> FeatureViewOut:
    return _view_out(await store.registry.view(name, version))


@router.get(
    "/views/{name}/versions",
    summary="Every version of a feature view, oldest first",
    response_model=list[FeatureViewOut],
    responses=NOT_FOUND,
)
async def list_view_versions(name: str, _: Read, store: StoreDep) -> list[FeatureViewOut]:
    return [_view_out(version) for version in await store.registry.view_versions(name)]


@router.delete(
    "/views/{name}",
    summary="Delete a feature view no feature service uses, with its rows in both stores",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, **IN_USE},
)
async def delete_view(
    name: str, _: Write, store: StoreDep, background: BackgroundTasks
) -> Response:
    removed = await store.delete_view(name)
    background.add_task(store.purge, removed)  # after the commit: files go once nothing names them
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- ingest and materialization -------------------------------------------------------------


@router.post(
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
    return _batch_out(batch, await store.registry.view(name))


@router.post(
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
    frame = read_upload(await file.read(), file.filename or "")
    batch = await store.ingest_frame(name, frame, "file", "file", principal.name)
    return _batch_out(batch, await store.registry.view(name))


@router.post(
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
    return _materialization_out(run, await store.registry.view(name))


@router.get(
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


# -- feature services -------------------------------------------------------------------------


@router.put(
    "/services/{name}",
    summary="Declare or change a feature service: the features a model consumes",
    response_model=Applied,
    responses={**APPLIED, 422: {"description": "An unknown view or feature, a clashing name"}},
)
async def put_service(
    name: str,
    body: FeatureServiceIn,
    principal: Write,
    store: StoreDep,
    request: Request,
    response: Response,
) -> Applied:
    applied = await store.registry.put_service(name, body, principal.name)
    return _applied(response, request, applied)


@router.get(
    "/services", summary="Feature services, by name", response_model=Page[FeatureServiceOut]
)
async def list_services(_: Read, store: StoreDep, page: PageDep) -> Page[FeatureServiceOut]:
    from mlops.core.pagination import page_of

    services = [
        _service_out(record, (await store.registry.resolve_service(record.name)).columns)
        for record in await store.registry.services()
    ]
    return page_of(services, page)


@router.get(
    "/services/{name}",
    summary="One feature service and the features it answers",
    response_model=FeatureServiceOut,
    responses=NOT_FOUND,
)
async def get_service(name: str, _: Read, store: StoreDep) -> FeatureServiceOut:
    record = await store.registry.service_record(name)
    return _service_out(record, (await store.registry.resolve_service(name)).columns)


@router.delete(
    "/services/{name}",
    summary="Delete a feature service",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
)
async def delete_service(name: str, _: Write, store: StoreDep, request: Request) -> Response:
    await store.registry.delete_service(name)
    request.app.state.online_features.forget()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/lineage/{view}",
    summary="A view's lineage: source, versions, services, training jobs, models, deployments",
    response_model=LineageOut,
    responses=NOT_FOUND,
)
async def lineage(view: str, _: Read, store: StoreDep, settings: SettingsDep) -> LineageOut:
    return await view_lineage(store.session, settings.effective_mlflow_uri, view)


# -- retrieval --------------------------------------------------------------------------------


@router.post(
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


TAGS = [
    {
        "name": "features",
        "description": "The feature store: entities, versioned feature views, feature services, "
        "ingest, point-in-time training data, materialization and online reads.",
    }
]
ROUTERS = [router]
HOT_ROUTERS = [online_router]
