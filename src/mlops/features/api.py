"""Definition routes of the feature store (entities, feature views, feature services); the data
routes are in ``data_api.py``. Thin: each awaits one manager call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Query,
    Request,
    Response,
    status,
)

from mlops.core.pagination import Page, PageDep, page_of, paginate_as
from mlops.features.data_api import data_router, online_router
from mlops.features.deps import NOT_FOUND, Read, StoreDep, Write
from mlops.features.models import FeatureServiceRecord, FeatureViewVersion
from mlops.features.schemas import (
    Applied,
    EntityIn,
    EntityOut,
    FeatureServiceIn,
    FeatureServiceOut,
    FeatureViewIn,
    FeatureViewOut,
)
from mlops.features.serving import OnlineFeatures

router = APIRouter(prefix="/api/v1/features", tags=["features"])
IN_USE: dict[int | str, dict[str, Any]] = {409: {"description": "Other definitions use it"}}
APPLIED: dict[int | str, dict[str, Any]] = {
    201: {"description": "Created", "model": Applied},
    409: {"description": "A breaking change without a new version, or it is in use"},
}


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
    listed = page_of(await store.registry.services(), page)
    items = [
        _service_out(record, (await store.registry.resolve(record)).columns)
        for record in listed.items  # only this page's services are bound to their views
    ]
    return Page[FeatureServiceOut](
        items=items, total=listed.total, limit=listed.limit, offset=listed.offset
    )


@router.get(
    "/services/{name}",
    summary="One feature service and the features it answers",
    response_model=FeatureServiceOut,
    responses=NOT_FOUND,
)
async def get_service(name: str, _: Read, store: StoreDep) -> FeatureServiceOut:
    record = await store.registry.service_record(name)
    return _service_out(record, (await store.registry.resolve(record)).columns)


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


TAGS = [
    {
        "name": "features",
        "description": "The feature store: entities, versioned feature views, feature services, "
        "ingest, point-in-time training data, materialization and online reads.",
    }
]
ROUTERS = [router, data_router]
HOT_ROUTERS = [online_router]
