"""Routes of the pipeline domain. Thin: each awaits one service call."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse

from mlops.backends import FLAVORS, backend_problem, check_health
from mlops.core.database import SessionDep
from mlops.core.errors import InvalidFields
from mlops.core.pagination import Page, PageDep, paginate
from mlops.core.settings import SettingsDep
from mlops.pipelines.engine import PipelineEngine
from mlops.pipelines.logs import follow_log, read_log, step_log_path
from mlops.pipelines.models import PipelineRun, StepRun
from mlops.pipelines.schemas import (
    BackendOut,
    PipelineApplied,
    PipelineOut,
    PipelineVersionOut,
    RunCreate,
    RunOut,
    RunSummary,
    ScheduleUpdate,
    StepRunOut,
)
from mlops.pipelines.service import PipelineService
from mlops.pipelines.spec import PipelineSpec, SpecProblem
from mlops.pipelines.states import RunStatus
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal

router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"])
Read = Annotated[Principal, Depends(require(Permission.PIPELINES_READ))]
Write = Annotated[Principal, Depends(require(Permission.PIPELINES_WRITE))]


async def pipeline_service(session: SessionDep, settings: SettingsDep) -> PipelineService:
    return PipelineService(
        session,
        default_backend=settings.pipeline_backend,
        backend_problem=lambda name: backend_problem(name, settings),
    )


ServiceDep = Annotated[PipelineService, Depends(pipeline_service)]


def _engine(request: Request) -> PipelineEngine:
    engine: PipelineEngine = request.app.state.pipeline_engine
    return engine


def _run_out(run: PipelineRun, steps: list[StepRun]) -> RunOut:
    return RunOut(
        **RunSummary.model_validate(run).model_dump(),
        steps=[StepRunOut.model_validate(step) for step in steps],
    )


# Run routes come first: "/runs" must not be taken for a pipeline called "runs".


@router.get("/runs", summary="List runs, newest first", response_model=Page[RunSummary])
async def list_runs(
    _: Read,
    service: ServiceDep,
    session: SessionDep,
    page: PageDep,
    pipeline: Annotated[str | None, Query(description="Only runs of this pipeline.")] = None,
    run_status: Annotated[
        RunStatus | None, Query(alias="status", description="Only runs in this status.")
    ] = None,
) -> Page[RunSummary]:
    return await paginate(session, service.runs_query(pipeline, run_status), page, RunSummary)


@router.get(
    "/runs/{run_id}",
    summary="A run with the state of each step",
    response_model=RunOut,
    responses={404: {"description": "No such run"}},
)
async def get_run(run_id: uuid.UUID, _: Read, service: ServiceDep) -> RunOut:
    run, steps = await service.run(run_id)
    return _run_out(run, steps)


@router.post(
    "/runs/{run_id}/cancel",
    summary="Cancel a run: running steps are stopped, the rest skipped",
    response_model=RunSummary,
    responses={404: {"description": "No such run"}, 409: {"description": "Already finished"}},
)
async def cancel_run(
    run_id: uuid.UUID, request: Request, tasks: BackgroundTasks, _: Write, service: ServiceDep
) -> RunSummary:
    run = await service.cancel(run_id)
    tasks.add_task(_engine(request).notify, run_id)
    return RunSummary.model_validate(run)


@router.get(
    "/runs/{run_id}/steps/{step}/logs",
    summary="A step's log: the last lines, or followed until the step ends",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}},
        404: {"description": "No such run or step"},
        501: {"description": "The run's backend has no logs (kubeflow, vertex)"},
    },
)
async def step_logs(
    run_id: uuid.UUID,
    step: str,
    request: Request,
    _: Read,
    service: ServiceDep,
    settings: SettingsDep,
    tail: Annotated[int, Query(ge=1, le=100_000, description="Lines from the end.")] = 200,
    attempt: Annotated[int | None, Query(ge=1, description="Default: the latest.")] = None,
    follow: Annotated[bool, Query(description="Stream until the step ends.")] = False,
) -> Response:
    step_run = await service.step_with_logs(run_id, step)
    chosen = attempt or max(step_run.attempts, 1)
    path = step_log_path(settings.data_dir, run_id, step, chosen)
    if not follow:
        return PlainTextResponse(read_log(path, tail))
    database = request.app.state.database
    return StreamingResponse(
        follow_log(path, tail, database, step_run.id, chosen), media_type="text/plain"
    )


@router.get(
    "/backends",
    summary="The orchestrator backends, whether each is configured, and its health",
    response_model=list[BackendOut],
)
async def list_backends(_: Read, settings: SettingsDep) -> list[BackendOut]:
    healths = await asyncio.gather(*(check_health(name, settings) for name in sorted(FLAVORS)))
    return [
        BackendOut(
            name=name,
            summary=FLAVORS[name].summary,
            default=name == settings.pipeline_backend,
            configured=FLAVORS[name].configured(settings),
            healthy=health.ok,
            detail=health.detail,
        )
        for name, health in zip(sorted(FLAVORS), healths, strict=True)
    ]


@router.post(
    "",
    summary="Create a pipeline, or a new version of it",
    response_model=PipelineApplied,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "Unchanged: the definition equals the latest version"},
        422: {"description": "Invalid definition; `errors` names the step and field"},
    },
)
async def apply_pipeline(
    spec: PipelineSpec, response: Response, principal: Write, service: ServiceDep
) -> PipelineApplied:
    try:
        pipeline, version, created = await service.apply(spec, principal.name)
    except SpecProblem as problem:
        raise InvalidFields([(("body", *loc), msg) for loc, msg in problem.problems]) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return PipelineApplied(
        **PipelineOut.model_validate(pipeline).model_dump(),
        version=version.version,
        created=created,
    )


@router.get("", summary="List pipelines", response_model=Page[PipelineOut])
async def list_pipelines(
    _: Read, service: ServiceDep, session: SessionDep, page: PageDep
) -> Page[PipelineOut]:
    return await paginate(session, service.pipelines_query(), page, PipelineOut)


@router.get(
    "/{name}",
    summary="A pipeline: latest version, schedule and next fire time",
    response_model=PipelineOut,
    responses={404: {"description": "No such pipeline"}},
)
async def get_pipeline(name: str, _: Read, service: ServiceDep) -> PipelineOut:
    return PipelineOut.model_validate(await service.get(name))


@router.get(
    "/{name}/versions",
    summary="A pipeline's versions, newest first",
    response_model=Page[PipelineVersionOut],
)
async def list_versions(
    name: str, _: Read, service: ServiceDep, session: SessionDep, page: PageDep
) -> Page[PipelineVersionOut]:
    pipeline = await service.get(name)
    return await paginate(session, service.versions_query(pipeline), page, PipelineVersionOut)


@router.get(
    "/{name}/versions/{version}",
    summary="One version's definition",
    response_model=PipelineVersionOut,
    responses={404: {"description": "No such pipeline or version"}},
)
async def get_version(name: str, version: int, _: Read, service: ServiceDep) -> PipelineVersionOut:
    return PipelineVersionOut.model_validate(await service.version(name, version))


@router.put(
    "/{name}/schedule",
    summary="Pause or resume a pipeline's schedule",
    response_model=PipelineOut,
    responses={404: {"description": "No such pipeline"}, 409: {"description": "No schedule"}},
)
async def set_schedule(
    name: str, body: ScheduleUpdate, _: Write, service: ServiceDep
) -> PipelineOut:
    return PipelineOut.model_validate(await service.set_paused(name, body.paused))


@router.post(
    "/{name}/runs",
    summary="Start a run with parameters (Idempotency-Key honoured)",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "No such pipeline or version"},
        409: {"description": "The Idempotency-Key was used with another body"},
    },
)
async def create_run(
    name: str,
    body: RunCreate,
    request: Request,
    tasks: BackgroundTasks,
    principal: Write,
    service: ServiceDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Retries with the same key return the same run."),
    ] = None,
) -> RunOut:
    run, _ = await service.create_run(
        name, body.params, principal.name, version=body.version, idempotency_key=idempotency_key
    )
    tasks.add_task(_engine(request).notify, run.id)
    _, steps = await service.run(run.id)
    return _run_out(run, steps)


ROUTERS = [router]
TAGS = [{"name": "pipelines", "description": "Pipeline definitions, runs and schedules."}]
