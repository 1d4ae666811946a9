"""Routes of the monitoring domain. Thin: each awaits one service call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select

from mlops.core.database import SessionDep, as_utc
from mlops.core.errors import InvalidFields
from mlops.core.pagination import Page, PageDep
from mlops.monitoring.alerting.api import alerts_router
from mlops.monitoring.drift_api import drift_router
from mlops.monitoring.schemas import (
    GroundTruthAccepted,
    GroundTruthIn,
    LoggedPredictionOut,
    QualityOut,
)
from mlops.monitoring.service import MonitoringService
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])
Read = Annotated[Principal, Depends(require(Permission.MONITORING_READ))]
Write = Annotated[Principal, Depends(require(Permission.MONITORING_WRITE))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such deployment"}}
DEFAULT_WINDOW = timedelta(hours=24)


async def monitoring_service(session: SessionDep) -> MonitoringService:
    return MonitoringService(session)


ServiceDep = Annotated[MonitoringService, Depends(monitoring_service)]


class Window:
    """``since`` and ``until`` (UTC; a naive time is taken as UTC), the last 24 hours unless
    given; ``since`` must come before ``until``."""

    def __init__(
        self,
        since: Annotated[
            datetime | None, Query(description="Start (inclusive); default: 24 hours before until.")
        ] = None,
        until: Annotated[
            datetime | None, Query(description="End (exclusive); default: now.")
        ] = None,
    ) -> None:
        self.until = as_utc(until) if until else datetime.now(UTC)
        self.since = as_utc(since) if since else self.until - DEFAULT_WINDOW
        if self.since >= self.until:
            raise InvalidFields([(("query", "since"), "must be before until")])


WindowDep = Annotated[Window, Depends()]


@router.post(
    "/ground-truth",
    summary="Report the true outcomes of logged predictions, by request or correlation id",
    response_model=GroundTruthAccepted,
    responses={422: {"description": "An item is malformed or its label count does not match"}},
)
async def record_ground_truth(
    body: GroundTruthIn, _: Write, service: ServiceDep
) -> GroundTruthAccepted:
    return await service.record_ground_truth(body)


@router.get(
    "/predictions",
    summary="Logged predictions of a deployment in a time window, newest first, with any truth",
    response_model=Page[LoggedPredictionOut],
    responses=NOT_FOUND,
)
async def list_predictions(
    deployment: Annotated[str, Query(description="The deployment's name.")],
    _: Read,
    service: ServiceDep,
    window: WindowDep,
    page: PageDep,
    variant: Annotated[str | None, Query(description="Only this variant's.")] = None,
) -> Page[LoggedPredictionOut]:
    found = await service.deployment(deployment)
    query = service.predictions_query(found, window.since, window.until, variant)
    session = service.session
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.execute(query.limit(page.limit).offset(page.offset))
    items = [
        LoggedPredictionOut.model_validate(entry).model_copy(update={"labels": labels})
        for entry, labels in rows
    ]
    return Page[LoggedPredictionOut](
        items=items, total=int(total or 0), limit=page.limit, offset=page.offset
    )


@router.get(
    "/quality/{deployment}",
    summary="Model quality per variant in a time window, from logged predictions and their truth",
    response_model=QualityOut,
    responses=NOT_FOUND,
)
async def quality(
    deployment: str,
    _: Read,
    service: ServiceDep,
    window: WindowDep,
    variant: Annotated[str | None, Query(description="Only this variant.")] = None,
    task: Annotated[
        Literal["classification", "regression"] | None,
        Query(description="Default: inferred from the labels and predictions."),
    ] = None,
) -> QualityOut:
    found = await service.deployment(deployment)
    return await service.quality(found, window.since, window.until, variant, task)


ROUTERS = [router, drift_router, alerts_router]
TAGS = [
    {
        "name": "monitoring",
        "description": "The prediction log, ground truth, model quality and drift.",
    }
]
