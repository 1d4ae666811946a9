"""Routes of the deployment domain. Thin: each awaits one service or runtime call."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from mlops.core.database import SessionDep
from mlops.core.errors import InvalidFields, parse_json_body
from mlops.core.pagination import Page, PageDep, paginate
from mlops.core.settings import SettingsDep
from mlops.deployments.experiments import ExperimentService
from mlops.deployments.manager import DeploymentManager
from mlops.deployments.models import Deployment
from mlops.deployments.schemas import (
    Decision,
    DeploymentCreate,
    DeploymentOut,
    DeploymentState,
    DeploymentSummary,
    DeploymentUpdate,
    EventOut,
    ExperimentOut,
    OutcomesAccepted,
    OutcomesIn,
    PredictRequest,
    PredictResponse,
    VariantOut,
)
from mlops.deployments.service import DeploymentService
from mlops.deployments.serving import resolve_version
from mlops.observability.context import current_request_id
from mlops.security.audit import mark_read_only
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])
Read = Annotated[Principal, Depends(require(Permission.DEPLOYMENTS_READ))]
Write = Annotated[Principal, Depends(require(Permission.DEPLOYMENTS_WRITE))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such deployment"}}
MAX_CORRELATION_ID = 200


async def deployment_service(session: SessionDep, settings: SettingsDep) -> DeploymentService:
    tracking_uri = settings.effective_mlflow_uri
    return DeploymentService(
        session, lambda name, version, alias: resolve_version(tracking_uri, name, version, alias)
    )


ServiceDep = Annotated[DeploymentService, Depends(deployment_service)]


def _manager(request: Request) -> DeploymentManager:
    manager: DeploymentManager = request.app.state.deployments
    return manager


async def _out(service: DeploymentService, deployment: Deployment) -> DeploymentOut:
    variants = await service.variants(deployment)
    return DeploymentOut(
        **DeploymentSummary.model_validate(deployment).model_dump(),
        variants=[VariantOut.model_validate(v) for v in variants],
    )


async def _applied(
    request: Request, service: DeploymentService, deployment: Deployment
) -> DeploymentOut:
    """The change committed (the answer read first), and the deployment loop told at once."""
    out = await _out(service, deployment)
    await service.session.commit()
    _manager(request).notify()
    return out


# The prediction route has a router of its own, matched before every other route of the
# service (``HOT_ROUTERS``): FastAPI tries routes in order, and ~60 failed matches cost more CPU
# than the rest of the request's routing. It reads and writes its JSON itself, which saves
# FastAPI's second pass over the body (``model_dump``) and over the answer (``response_model``).
serving_router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])
_PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
}


@serving_router.post(
    "/{name}/predict",
    summary="Predictions from the deployment's variants, split by their weights",
    response_model=PredictResponse,
    responses={
        **NOT_FOUND,
        409: {"description": "No healthy variant takes traffic yet"},
        422: {"description": "The input does not match the model's signature (field named)"},
    },
    openapi_extra={"requestBody": _PREDICT_BODY},
)
async def predict(name: str, request: Request, _: Read) -> Response:
    mark_read_only(request.state)  # predictions change nothing: counted in metrics, not audited
    body = parse_json_body(PredictRequest, await request.body())
    request_id = current_request_id() or uuid.uuid4().hex
    runtime = _manager(request).runtime
    key = body.key or request.headers.get(runtime.key_header(name))
    model_input = {"instances": body.instances, "dataframe_split": body.dataframe_split}
    correlation_id = body.correlation_id or request.headers.get("x-correlation-id")
    if correlation_id is not None and len(correlation_id) > MAX_CORRELATION_ID:
        raise InvalidFields(
            [(("header", "x-correlation-id"), f"at most {MAX_CORRELATION_ID} characters")]
        )
    variant, version, predictions = await runtime.predict(
        name,
        {k: v for k, v in model_input.items() if v is not None},
        key,
        request_id,
        correlation_id,
    )
    answer = {
        "predictions": predictions,
        "variant": variant,
        "model_version": version,
        "request_id": request_id,
    }
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")


@router.post(
    "",
    summary="Deploy a registered model version (or alias) as a new endpoint",
    response_model=DeploymentOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "No such model, version or alias in the registry"},
        409: {"description": "A deployment of that name exists"},
    },
)
async def create_deployment(
    body: DeploymentCreate, request: Request, principal: Write, service: ServiceDep
) -> DeploymentOut:
    return await _applied(request, service, await service.create(body, principal.name))


@router.get("", summary="List deployments, newest first", response_model=Page[DeploymentSummary])
async def list_deployments(
    _: Read,
    service: ServiceDep,
    session: SessionDep,
    page: PageDep,
    state: Annotated[DeploymentState | None, Query(description="Only in this state.")] = None,
) -> Page[DeploymentSummary]:
    return await paginate(session, service.query(state), page, DeploymentSummary)


@router.get(
    "/{name}",
    summary="A deployment: its variants, weights, state and rollout",
    response_model=DeploymentOut,
    responses=NOT_FOUND,
)
async def get_deployment(name: str, _: Read, service: ServiceDep) -> DeploymentOut:
    return await _out(service, await service.get(name))


@router.patch(
    "/{name}",
    summary="Roll a new model version out under the deployment's strategy",
    response_model=DeploymentOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **NOT_FOUND,
        409: {"description": "A rollout is in progress, or the version serves"},
    },
)
async def roll_out(
    name: str, body: DeploymentUpdate, request: Request, principal: Write, service: ServiceDep
) -> DeploymentOut:
    return await _applied(request, service, await service.roll_out(name, body, principal.name))


@router.post(
    "/{name}/promote",
    summary="Give the rolling-out variant all traffic now",
    response_model=DeploymentOut,
    responses={**NOT_FOUND, 409: {"description": "No rollout, or its variant is not ready"}},
)
async def promote(
    name: str, request: Request, principal: Write, service: ServiceDep, body: Decision | None = None
) -> DeploymentOut:
    return await _applied(
        request, service, await service.promote(name, principal.name, body.reason if body else "")
    )


@router.post(
    "/{name}/rollback",
    summary="Abort the rollout, or switch back to the variant kept on standby",
    response_model=DeploymentOut,
    responses={**NOT_FOUND, 409: {"description": "Nothing to roll back to"}},
)
async def rollback(
    name: str, request: Request, principal: Write, service: ServiceDep, body: Decision | None = None
) -> DeploymentOut:
    return await _applied(
        request, service, await service.rollback(name, principal.name, body.reason if body else "")
    )


@router.delete(
    "/{name}",
    summary="Delete a deployment and unload its models",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
)
async def delete_deployment(name: str, request: Request, _: Write, service: ServiceDep) -> Response:
    await service.delete(name)
    await service.session.commit()
    _manager(request).notify()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{name}/history",
    summary="Every change of the deployment, oldest first: what, why, who, the split after it",
    response_model=Page[EventOut],
    responses=NOT_FOUND,
)
async def history(
    name: str, _: Read, service: ServiceDep, session: SessionDep, page: PageDep
) -> Page[EventOut]:
    deployment = await service.get(name)
    return await paginate(session, service.events_query(deployment), page, EventOut)


@router.post(
    "/{name}/outcomes",
    summary="Report outcomes of an A/B test's predictions, by request id (in bulk)",
    response_model=OutcomesAccepted,
    responses=NOT_FOUND,
)
async def record_outcomes(
    name: str, body: OutcomesIn, _: Write, service: ServiceDep
) -> OutcomesAccepted:
    deployment = await service.get(name)
    return await ExperimentService(service.session).record_outcomes(deployment, body)


@router.get(
    "/{name}/experiment",
    summary="The A/B test: per-variant counts and rates or means, each tested against the control",
    response_model=ExperimentOut,
    responses={**NOT_FOUND, 409: {"description": "No A/B prediction recorded"}},
)
async def experiment(name: str, _: Read, service: ServiceDep) -> ExperimentOut:
    deployment = await service.get(name)
    return await ExperimentService(service.session).report(deployment)


HOT_ROUTERS = [serving_router]
ROUTERS = [router]
TAGS = [
    {
        "name": "deployments",
        "description": "Model endpoints: variants, traffic splits, rollouts and predictions.",
    }
]
