"""Drift routes of the monitoring domain: a deployment's reference profile and its reports."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import HTMLResponse

from mlops.core.database import SessionDep
from mlops.core.pagination import Page, PageDep, paginate
from mlops.core.settings import SettingsDep
from mlops.deployments.models import Deployment
from mlops.monitoring.drift_service import DriftService
from mlops.monitoring.models import DriftReference, DriftReportRecord
from mlops.monitoring.schemas import (
    DriftReportOut,
    ProfiledFeature,
    ReferenceIn,
    ReferenceOut,
    ReportIn,
    ReportSummary,
)
from mlops.monitoring.service import MonitoringService
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

drift_router = APIRouter(prefix="/api/v1/monitoring/drift", tags=["monitoring"])
Read = Annotated[Principal, Depends(require(Permission.MONITORING_READ))]
Write = Annotated[Principal, Depends(require(Permission.MONITORING_WRITE))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such deployment"}}
NO_REFERENCE: dict[int | str, dict[str, Any]] = {
    409: {"description": "The deployment has no reference profile yet"}
}


async def drift_service(session: SessionDep, settings: SettingsDep) -> DriftService:
    return DriftService(session, settings.drift_max_window_rows)


ServiceDep = Annotated[DriftService, Depends(drift_service)]


async def _deployment(service: DriftService, name: str) -> Deployment:
    return await MonitoringService(service.session).deployment(name)


def reference_out(reference: DriftReference, deployment: str) -> ReferenceOut:
    return ReferenceOut(
        id=reference.id,
        deployment=deployment,
        source=reference.source,
        settings=reference.settings,
        rows=reference.rows,
        features=[
            ProfiledFeature(name=f["name"], kind=f["kind"], role=f["role"])
            for f in reference.profile["features"]
        ],
        created_by=reference.created_by,
        created_at=reference.created_at,
    )


def report_document(record: DriftReportRecord, deployment: str) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "deployment": deployment,
        "reference_id": str(record.reference_id),
        "since": record.since.isoformat(),
        "until": record.until.isoformat(),
        "trigger": record.trigger,
        "created_at": record.created_at.isoformat(),
        **record.report,
    }


@drift_router.put(
    "/{deployment}/reference",
    summary="Profile the deployment's reference data (a log window or a dataset), once",
    status_code=status.HTTP_201_CREATED,
    response_model=ReferenceOut,
    responses={**NOT_FOUND, 422: {"description": "An empty window, an unreadable dataset, …"}},
)
async def set_reference(
    deployment: str, body: ReferenceIn, principal: Write, service: ServiceDep
) -> ReferenceOut:
    found = await _deployment(service, deployment)
    return reference_out(await service.set_reference(found, body, principal.name), found.name)


@drift_router.get(
    "/{deployment}/reference",
    summary="The deployment's reference profile in use: its source, settings and features",
    response_model=ReferenceOut,
    responses={**NOT_FOUND, **NO_REFERENCE},
)
async def get_reference(deployment: str, _: Read, service: ServiceDep) -> ReferenceOut:
    found = await _deployment(service, deployment)
    return reference_out(await service.reference(found), found.name)


@drift_router.post(
    "/{deployment}/reports",
    summary="Compare a window of the prediction log with the reference, now",
    status_code=status.HTTP_201_CREATED,
    response_model=DriftReportOut,
    responses={**NOT_FOUND, **NO_REFERENCE, 422: {"description": "An empty or inverted window"}},
)
async def create_report(
    deployment: str, _: Write, service: ServiceDep, body: ReportIn | None = None
) -> DriftReportOut:
    found = await _deployment(service, deployment)
    window = body or ReportIn()
    record = await service.run_report(found, window.since, window.until)
    assert record is not None  # an empty window is a 422 for a report asked for
    return DriftReportOut.model_validate(report_document(record, found.name))


@drift_router.get(
    "/{deployment}/reports",
    summary="The deployment's drift reports, newest first",
    response_model=Page[ReportSummary],
    responses=NOT_FOUND,
)
async def list_reports(
    deployment: str,
    _: Read,
    service: ServiceDep,
    page: PageDep,
    drifted: Annotated[
        bool | None, Query(description="Only reports that flagged (or flagged no) feature.")
    ] = None,
) -> Page[ReportSummary]:
    found = await _deployment(service, deployment)
    listed = await paginate(
        service.session, service.reports_query(found, drifted), page, _RecordSummary
    )
    return Page[ReportSummary](
        items=[item.as_summary(found.name) for item in listed.items],
        total=listed.total,
        limit=listed.limit,
        offset=listed.offset,
    )


@drift_router.get(
    "/{deployment}/reports/{report_id}",
    summary="One drift report, as JSON or as an HTML page with histograms per feature",
    response_model=DriftReportOut,
    responses={
        **NOT_FOUND,
        200: {"content": {"text/html": {}}, "description": "JSON, or HTML with format=html"},
    },
)
async def get_report(
    deployment: str,
    report_id: uuid.UUID,
    request: Request,
    _: Read,
    service: ServiceDep,
    format: Annotated[
        Literal["json", "html"] | None,
        Query(description="Default: html when the Accept header prefers it, else json."),
    ] = None,
) -> Response | DriftReportOut:
    found = await _deployment(service, deployment)
    document = report_document(await service.report(found, report_id), found.name)
    wanted = format or ("html" if "text/html" in request.headers.get("accept", "") else "json")
    if wanted == "html":
        from mlops.monitoring.report_html import render_drift_report

        return HTMLResponse(render_drift_report(document))
    return DriftReportOut.model_validate(document)


class _RecordSummary(ReportSummary):
    """A stored report row as ``paginate`` reads it (the deployment's name added after)."""

    model_config = {"from_attributes": True}
    deployment: str = ""

    def as_summary(self, deployment: str) -> ReportSummary:
        return ReportSummary.model_validate({**self.model_dump(), "deployment": deployment})
