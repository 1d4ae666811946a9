"""Routes of the training domain: jobs, their trials, the estimator catalogue and the registry.
Thin: each awaits one service call."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, Response, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from mlops.core.database import SessionDep
from mlops.core.pagination import Page, PageDep, page_of, paginate
from mlops.core.settings import Settings, SettingsDep
from mlops.pipelines.engine import PipelineEngine
from mlops.pipelines.states import RunStatus
from mlops.security.auth import require
from mlops.security.permissions import Permission
from mlops.security.principal import Principal
from mlops.training.catalogue import CATALOGUE
from mlops.training.models import TrainingJob
from mlops.training.registry import Registry
from mlops.training.schemas import (
    AliasUpdate,
    EstimatorOut,
    JobOut,
    JobSummary,
    ModelVersionOut,
    RegisteredModelOut,
    TrialOut,
)
from mlops.training.service import SYSTEM_PIPELINE, TrainingService, settle_search, summarize
from mlops.training.spec import TrainingJobSpec

router = APIRouter(prefix="/api/v1/training", tags=["training"])
models_router = APIRouter(prefix="/api/v1/training/models", tags=["models"])
Read = Annotated[Principal, Depends(require(Permission.TRAINING_READ))]
Write = Annotated[Principal, Depends(require(Permission.TRAINING_WRITE))]
NO_JOB: dict[int | str, dict[str, Any]] = {404: {"description": "No such job"}}


async def training_service(session: SessionDep, settings: SettingsDep) -> TrainingService:
    return TrainingService(session, settings)


async def registry(settings: SettingsDep) -> Registry:
    return Registry(settings.effective_mlflow_uri)


ServiceDep = Annotated[TrainingService, Depends(training_service)]
RegistryDep = Annotated[Registry, Depends(registry)]


def _notify(request: Request, run_id: uuid.UUID) -> None:
    engine: PipelineEngine = request.app.state.pipeline_engine
    engine.notify(run_id)


@router.post(
    "/jobs",
    summary="Submit a training job (Idempotency-Key honoured)",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"description": "The job this Idempotency-Key already created"},
        409: {"description": "The Idempotency-Key was used with another body"},
        422: {
            "description": "Unknown estimator or parameter, a space the estimator refuses, "
            "a dataset that cannot be read or lacks the target column"
        },
    },
)
async def submit_job(
    spec: TrainingJobSpec,
    request: Request,
    response: Response,
    tasks: BackgroundTasks,
    principal: Write,
    service: ServiceDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Retries with the same key return the same job."),
    ] = None,
) -> JobOut:
    job, created = await service.submit(spec, principal.name, idempotency_key)
    if created:
        tasks.add_task(_notify, request, job.run_id)
    else:
        response.status_code = status.HTTP_200_OK
    return await service.describe(job)


@router.get("/jobs", summary="List training jobs, newest first", response_model=Page[JobSummary])
async def list_jobs(
    _: Read,
    service: ServiceDep,
    session: SessionDep,
    page: PageDep,
    job_status: Annotated[
        RunStatus | None, Query(alias="status", description="Only jobs in this status.")
    ] = None,
    model_name: Annotated[
        str | None, Query(description="Only jobs registering this model.")
    ] = None,
) -> Page[JobSummary]:
    return await paginate(session, service.jobs_query(job_status, model_name), page, JobSummary)


@router.get(
    "/jobs/{job_id}",
    summary="A job: status, trial progress, best value and parameters, MLflow ids, model version",
    response_model=JobOut,
    responses=NO_JOB,
)
async def get_job(job_id: uuid.UUID, _: Read, service: ServiceDep) -> JobOut:
    return await service.describe(await service.get(job_id))


@router.get(
    "/jobs/{job_id}/trials",
    summary="A job's trials in the order they started",
    response_model=Page[TrialOut],
    responses=NO_JOB,
)
async def list_trials(
    job_id: uuid.UUID,
    _: Read,
    service: ServiceDep,
    page: PageDep,
    state: Annotated[
        Literal["running", "complete", "pruned", "fail"] | None,
        Query(description="Only trials in this state."),
    ] = None,
) -> Page[TrialOut]:
    return page_of(await service.trials(await service.get(job_id), state), page)


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job: its workers are stopped, nothing is registered",
    response_model=JobSummary,
    responses={**NO_JOB, 409: {"description": "Already finished"}},
)
async def cancel_job(
    job_id: uuid.UUID, request: Request, tasks: BackgroundTasks, _: Write, service: ServiceDep
) -> JobSummary:
    job = await service.cancel(job_id)
    tasks.add_task(_notify, request, job.run_id)
    return summarize(job)


@router.get(
    "/estimators",
    summary="The estimator catalogue and each one's default search space",
    response_model=list[EstimatorOut],
)
async def list_estimators(_: Read) -> list[EstimatorOut]:
    return [
        EstimatorOut(
            name=spec.name,
            tasks=sorted(spec.classes),
            default_search_space=spec.default_space.model_dump(mode="json"),
        )
        for spec in CATALOGUE.values()
    ]


# ------------------------------------------------------------------------- the registry

MISSING: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such model, version or alias"},
    503: {"description": "The MLflow registry is unreachable"},
}


@models_router.get(
    "", summary="Registered models", response_model=Page[RegisteredModelOut], responses=MISSING
)
async def list_models(_: Read, models: RegistryDep, page: PageDep) -> Page[RegisteredModelOut]:
    return page_of(await run_in_threadpool(models.models), page)


@models_router.get(
    "/{name}",
    summary="A registered model and its aliases",
    response_model=RegisteredModelOut,
    responses=MISSING,
)
async def get_model(name: str, _: Read, models: RegistryDep) -> RegisteredModelOut:
    return await run_in_threadpool(models.model, name)


@models_router.get(
    "/{name}/versions",
    summary="A model's versions, newest first, with their lineage tags",
    response_model=Page[ModelVersionOut],
    responses=MISSING,
)
async def list_versions(
    name: str, _: Read, models: RegistryDep, page: PageDep
) -> Page[ModelVersionOut]:
    return page_of(await run_in_threadpool(models.versions, name), page)


@models_router.get(
    "/{name}/versions/{version}",
    summary="One model version",
    response_model=ModelVersionOut,
    responses=MISSING,
)
async def get_version(name: str, version: str, _: Read, models: RegistryDep) -> ModelVersionOut:
    return await run_in_threadpool(models.version, name, version)


@models_router.post(
    "/{name}/aliases",
    summary="Point an alias (champion, challenger, any name) at a version, moving it if set",
    response_model=ModelVersionOut,
    responses=MISSING,
)
async def set_alias(name: str, body: AliasUpdate, _: Write, models: RegistryDep) -> ModelVersionOut:
    return await run_in_threadpool(models.set_alias, name, body.alias, body.version)


@models_router.delete(
    "/{name}/aliases/{alias}",
    summary="Remove an alias",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=MISSING,
)
async def delete_alias(name: str, alias: str, _: Write, models: RegistryDep) -> Response:
    await run_in_threadpool(models.delete_alias, name, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def attach_engine(engine: PipelineEngine, settings: Settings) -> None:
    async def job_finished(run_id: uuid.UUID, run_status: str) -> None:
        if run_status == RunStatus.SUCCEEDED:
            return
        async with engine.database.sessionmaker() as session:
            job_id = await session.scalar(
                select(TrainingJob.id).where(TrainingJob.run_id == run_id)
            )
        if job_id is not None:
            await run_in_threadpool(settle_search, settings, str(job_id), run_status)

    engine.on_run_finished(SYSTEM_PIPELINE, job_finished)


ROUTERS = [router, models_router]
TAGS = [
    {"name": "training", "description": "Hyperparameter search jobs (Optuna, tracked in MLflow)."},
    {"name": "models", "description": "The MLflow model registry: models, versions, aliases."},
]
