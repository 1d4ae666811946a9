"""Retraining routes: policies, their dry run and manual trigger, the history of retrainings
with their lineage, and approvals. Thin: each awaits one service call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    Header,
    Query,
    Request,
    Response,
    status,
)

from mlops.core.database import SessionDep
from mlops.core.pagination import Page, PageDep, paginate, paginate_as
from mlops.core.settings import SettingsDep
from mlops.retraining.models import RetrainingEvent
from mlops.retraining.schemas import (
    EvaluationOut,
    EventOut,
    EventStatus,
    EventSummary,
    ManualTrigger,
    PolicyIn,
    PolicyOut,
    PolicyPatch,
    Verdict,
)
from mlops.retraining.service import RetrainingService
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

router = APIRouter(prefix="/api/v1/retraining", tags=["retraining"])
Read = Annotated[Principal, Depends(require(Permission.RETRAINING_READ))]
Write = Annotated[Principal, Depends(require(Permission.RETRAINING_WRITE))]
Responses = dict[int | str, dict[str, Any]]
NO_POLICY: Responses = {404: {"description": "No such policy"}}
NO_EVENT: Responses = {404: {"description": "No such retraining event"}}


async def retraining_service(session: SessionDep, settings: SettingsDep) -> RetrainingService:
    return RetrainingService(session, settings)


ServiceDep = Annotated[RetrainingService, Depends(retraining_service)]


def _started(request: Request, event: RetrainingEvent) -> None:
    """After the commit: the engine runs the queued job; the controller follows it."""
    if event.pipeline_run_id is not None:
        request.app.state.pipeline_engine.notify(event.pipeline_run_id)
    _wake(request)


def _wake(request: Request) -> None:
    request.app.state.retraining.wake()
    request.app.state.deployments.notify()


async def _event_out(service: RetrainingService, event: RetrainingEvent) -> EventOut:
    chain = await service.chain(event)
    summary = EventSummary.model_validate(event).model_dump()
    return EventOut.model_validate({**summary, "comparison": event.comparison, "chain": chain})


# --------------------------------------------------------------------------- policies


@router.post(
    "/policies",
    summary="Create a retraining policy guarding a deployment's champion",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
    responses={
        409: {"description": "A policy of that name exists"},
        422: {"description": "An unknown deployment, estimator or feature view; a bad trigger"},
    },
)
async def create_policy(body: PolicyIn, principal: Write, service: ServiceDep) -> PolicyOut:
    return await service.policy_out(await service.create(body, principal.name))


@router.get("/policies", summary="The policies by name", response_model=Page[PolicyOut])
async def list_policies(
    _: Read,
    service: ServiceDep,
    session: SessionDep,
    page: PageDep,
    deployment: Annotated[str | None, Query(description="Only this deployment's.")] = None,
    enabled: Annotated[bool | None, Query(description="Only enabled (or disabled) ones.")] = None,
) -> Page[PolicyOut]:
    listed = await paginate_as(
        session, service.policies_query(deployment, enabled), page, lambda policy: policy
    )
    items = await service.policy_outs(listed.items)
    return Page[PolicyOut](items=items, total=listed.total, limit=page.limit, offset=page.offset)


@router.get("/policies/{name}", summary="One policy", response_model=PolicyOut, responses=NO_POLICY)
async def get_policy(name: str, _: Read, service: ServiceDep) -> PolicyOut:
    return await service.policy_out(await service.get(name))


@router.patch(
    "/policies/{name}",
    summary="Change a policy: its training, triggers, comparison, promotion or limits",
    response_model=PolicyOut,
    responses={**NO_POLICY, 422: {"description": "A bad part; the merged policy is checked"}},
)
async def update_policy(name: str, body: PolicyPatch, _: Write, service: ServiceDep) -> PolicyOut:
    return await service.policy_out(await service.update(name, body))


@router.post(
    "/policies/{name}/enable",
    summary="Enable a policy: its triggers are evaluated again",
    response_model=PolicyOut,
    responses=NO_POLICY,
)
async def enable_policy(name: str, _: Write, service: ServiceDep) -> PolicyOut:
    return await service.policy_out(await service.set_enabled(name, True))


@router.post(
    "/policies/{name}/disable",
    summary="Disable a policy: no trigger starts a retraining (a manual one still can)",
    response_model=PolicyOut,
    responses=NO_POLICY,
)
async def disable_policy(name: str, _: Write, service: ServiceDep) -> PolicyOut:
    return await service.policy_out(await service.set_enabled(name, False))


@router.delete(
    "/policies/{name}",
    summary="Delete a policy (its history stays)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**NO_POLICY, 409: {"description": "A retraining of it is in flight"}},
)
async def delete_policy(name: str, _: Write, service: ServiceDep) -> Response:
    await service.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/policies/{name}/evaluate",
    summary="Dry run: which trigger would fire now and why, with the figures",
    response_model=EvaluationOut,
    responses={**NO_POLICY, 409: {"description": "The policy's deployment is gone"}},
)
async def evaluate_policy(name: str, _: Read, service: ServiceDep) -> EvaluationOut:
    return await service.evaluation(await service.get(name), datetime.now(UTC))


@router.post(
    "/policies/{name}/trigger",
    summary="Start a retraining now (a manual trigger: no cooldown, no daily maximum)",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventOut,
    responses={
        **NO_POLICY,
        200: {"description": "The retraining this Idempotency-Key already started"},
        409: {
            "description": "A retraining of the policy is in flight; the deployment serves "
            "nothing; the Idempotency-Key started another policy's retraining"
        },
    },
)
async def trigger_policy(
    name: str,
    request: Request,
    response: Response,
    tasks: BackgroundTasks,
    principal: Write,
    service: ServiceDep,
    body: ManualTrigger | None = None,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Retries with the same key get the same retraining."),
    ] = None,
) -> EventOut:
    policy = await service.get(name)
    reason = (body.reason if body else "") or f"triggered by {principal.name}"
    event, created = await service.trigger(policy, principal.name, reason, idempotency_key)
    if created:
        tasks.add_task(_started, request, event)
    else:
        response.status_code = status.HTTP_200_OK
    return await _event_out(service, event)


# --------------------------------------------------------------------------- history


@router.get(
    "/events",
    summary="Retrainings, newest first: what triggered each and where it stands",
    response_model=Page[EventSummary],
)
async def list_events(
    _: Read,
    service: ServiceDep,
    session: SessionDep,
    page: PageDep,
    policy: Annotated[str | None, Query(description="Only this policy's.")] = None,
    event_status: Annotated[
        EventStatus | None, Query(alias="status", description="Only retrainings in this status.")
    ] = None,
    trigger: Annotated[
        str | None,
        Query(description="performance_degradation, data_drift, schedule, data_volume or manual"),
    ] = None,
) -> Page[EventSummary]:
    query = service.events_query(policy, event_status, trigger)
    return await paginate(session, query, page, EventSummary)


@router.get(
    "/events/{event_id}",
    summary="One retraining with its lineage: trigger → pipeline run → training job → model "
    "version → comparison → rollout → outcome",
    response_model=EventOut,
    responses=NO_EVENT,
)
async def get_event(event_id: uuid.UUID, _: Read, service: ServiceDep) -> EventOut:
    return await _event_out(service, await service.event(event_id))


@router.post(
    "/events/{event_id}/approve",
    summary="Approve a challenger awaiting approval: it rolls out by the policy's strategy",
    response_model=EventOut,
    responses={
        **NO_EVENT,
        409: {"description": "Not awaiting approval; the deployment is busy with a rollout"},
    },
)
async def approve_event(
    event_id: uuid.UUID,
    request: Request,
    tasks: BackgroundTasks,
    principal: Write,
    service: ServiceDep,
    body: Verdict | None = None,
) -> EventOut:
    event = await service.approve(event_id, principal.name, body.reason if body else "")
    tasks.add_task(_wake, request)
    return await _event_out(service, event)


@router.post(
    "/events/{event_id}/reject",
    summary="Reject a challenger awaiting approval: the champion stays",
    response_model=EventOut,
    responses={**NO_EVENT, 409: {"description": "Not awaiting approval"}},
)
async def reject_event(
    event_id: uuid.UUID, principal: Write, service: ServiceDep, body: Verdict | None = None
) -> EventOut:
    event = await service.reject(event_id, principal.name, body.reason if body else "")
    return await _event_out(service, event)


ROUTERS = [router]
TAGS = [
    {
        "name": "retraining",
        "description": "Closing the loop: triggers → retraining pipeline → champion against "
        "challenger on a holdout → rollout → promotion or rollback, each step on one lineage.",
    }
]
