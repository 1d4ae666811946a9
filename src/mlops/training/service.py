"""The training manager: jobs are submitted, read, listed and cancelled here.

A job runs as a run of the system pipeline ``_training``: ``prepare`` → ``search-1..N`` (one
per unit of parallelism, sharing one Optuna study) → ``finalize``. The pipeline engine queues
the steps over the backend's workers, retries them, recovers them after a restart and cancels
them; this module only translates between jobs and runs, and reads progress from the study.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from mlops.core.errors import Conflict, InvalidInput, NotFound
from mlops.core.settings import Settings
from mlops.pipelines.models import Pipeline, PipelineRun, StepRun
from mlops.pipelines.service import PipelineService, digest_of
from mlops.pipelines.states import RunStatus, StepStatus
from mlops.steps.framework import StepError
from mlops.steps.library.training import job_study
from mlops.training.catalogue import CatalogueError
from mlops.training.models import TrainingJob
from mlops.training.runner import ATTR_ERROR
from mlops.training.schemas import JobOut, JobResult, JobSummary, Progress, TrialOut
from mlops.training.spec import TrainingJobSpec

SYSTEM_PIPELINE = "_training"  # names starting with "_" cannot be applied by users
PREPARE, FINALIZE = "prepare", "finalize"
PHASE_RETRIES = 2
# A trial that started before the deadline may run past it; the step's hard limit allows that.
SEARCH_OVERRUN_SECONDS = 1800.0


def search_step(worker: int) -> str:
    return f"search-{worker + 1}"


class TrainingService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    # ---------------------------------------------------------------- submission

    async def submit(
        self, spec: TrainingJobSpec, created_by: str, idempotency_key: str | None = None
    ) -> tuple[TrainingJob, bool]:
        """Queue a job; with an idempotency key already used, return that job instead."""
        document = spec.model_dump(mode="json", exclude_none=True)
        request_digest = digest_of(document)
        if idempotency_key:
            existing = await self.session.scalar(
                select(TrainingJob).where(
                    TrainingJob.created_by == created_by,
                    TrainingJob.idempotency_key == idempotency_key,
                )
            )
            if existing is not None:
                if existing.request_digest != request_digest:
                    raise Conflict("This Idempotency-Key was used with a different request body")
                return existing, False
        await run_in_threadpool(check_job, spec, self.settings)
        pipeline = await self._system_pipeline()
        now = datetime.now(UTC)
        job_id = uuid.uuid4()
        run = PipelineRun(
            pipeline_id=pipeline.id,
            pipeline_name=SYSTEM_PIPELINE,
            version=1,
            backend=self.settings.pipeline_backend,
            status=RunStatus.QUEUED,
            params={"job_id": str(job_id)},
            trigger="training",
            created_by=created_by,
            created_at=now,
        )
        self.session.add(run)
        await self.session.flush()
        for position, step in enumerate(_job_steps(job_id, document, spec)):
            self.session.add(StepRun(run_id=run.id, position=position, **step))
        job = TrainingJob(
            id=job_id,
            spec=document,
            estimator=spec.estimator,
            model_name=spec.model_name,
            run_id=run.id,
            created_by=created_by,
            idempotency_key=idempotency_key,
            request_digest=request_digest,
            created_at=now,
        )
        self.session.add(job)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict("This Idempotency-Key is being used by a concurrent request") from exc
        await self.session.refresh(job)
        return job, True

    async def _system_pipeline(self) -> Pipeline:
        query = select(Pipeline).where(Pipeline.name == SYSTEM_PIPELINE)
        pipeline = await self.session.scalar(query)
        if pipeline is not None:
            return pipeline
        try:
            async with self.session.begin_nested():
                pipeline = Pipeline(
                    name=SYSTEM_PIPELINE,
                    description="Training jobs: each run is one job (system pipeline).",
                    latest_version=1,
                )
                self.session.add(pipeline)
        except IntegrityError:  # created by a concurrent submission
            pipeline = await self.session.scalar(query)
        assert pipeline is not None
        return pipeline

    # ---------------------------------------------------------------- reading

    async def get(self, job_id: uuid.UUID) -> TrainingJob:
        job = await self.session.get(TrainingJob, job_id)
        if job is None:
            raise NotFound(f"No training job with id {job_id}")
        return job

    def jobs_query(
        self, status: RunStatus | None = None, model_name: str | None = None
    ) -> Select[Any]:
        query = (
            select(TrainingJob)
            .join(TrainingJob.run)
            .order_by(TrainingJob.created_at.desc(), TrainingJob.id)
        )
        if status:
            query = query.where(PipelineRun.status == status.value)
        if model_name:
            query = query.where(TrainingJob.model_name == model_name)
        return query

    async def describe(self, job: TrainingJob) -> JobOut:
        spec = TrainingJobSpec.model_validate(job.spec)
        steps = {
            step.name: step
            for step in await self.session.scalars(
                select(StepRun).where(StepRun.run_id == job.run_id)
            )
        }
        progress = await run_in_threadpool(self._progress, job, spec)
        failed = [f"{s.name}: {s.error}" for s in steps.values() if s.status == StepStatus.FAILED]
        summary = summarize(job)
        if failed:
            summary.error = "; ".join(failed)
        return JobOut(
            **summary.model_dump(),
            spec=job.spec,
            metric=spec.effective_metric,
            direction=spec.direction,
            progress=progress,
            result=_result(steps),
        )

    def _progress(self, job: TrainingJob, spec: TrainingJobSpec) -> Progress | None:
        if job.run.status == RunStatus.QUEUED:
            return None  # not started: no study yet, so no storage read (submission answers this)
        trials = self._trials(job)
        if trials is None:
            return None
        states = [trial.state.name for trial in trials]
        # a trial a dead worker left behind fails without an error and is run again: not counted
        finished = [
            t
            for t in trials
            if t.state.name in ("COMPLETE", "PRUNED")
            or (t.state.name == "FAIL" and ATTR_ERROR in t.user_attrs)
        ]
        complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
        values = [float(t.value) for t in complete if t.value is not None]
        best = (max(values) if spec.direction == "maximize" else min(values)) if values else None
        running = job.run.status == RunStatus.RUNNING
        started = job.run.started_at
        end = job.run.finished_at or datetime.now(UTC)
        elapsed = (end - started).total_seconds() if started else None
        left = None
        if running and finished and elapsed is not None:
            per_trial = sum(
                (t.datetime_complete - t.datetime_start).total_seconds()
                for t in finished
                if t.datetime_start and t.datetime_complete
            ) / len(finished)
            remaining = max(0, spec.n_trials - len(finished))
            left = min(
                remaining * per_trial / spec.parallelism, max(0.0, spec.timeout_seconds - elapsed)
            )
        return Progress(
            trials_total=spec.n_trials,
            trials_finished=len(finished),
            trials_complete=states.count("COMPLETE"),
            trials_pruned=states.count("PRUNED"),
            trials_failed=len(finished) - states.count("COMPLETE") - states.count("PRUNED"),
            trials_running=states.count("RUNNING") if running else 0,
            best_value=best,
            elapsed_seconds=elapsed,
            estimated_seconds_left=left,
        )

    def _trials(self, job: TrainingJob) -> list[Any] | None:
        from mlops.training.stores import open_storage

        storage = open_storage(self.settings.optuna_storage_url)
        try:
            study_id = storage.get_study_id_from_name(job_study(str(job.id)))
        except KeyError:
            return None
        trials: list[Any] = storage.get_all_trials(study_id, deepcopy=False)
        return trials

    async def trials(self, job: TrainingJob, state: str | None) -> list[TrialOut]:
        trials = await run_in_threadpool(self._trials, job) or []
        return [_trial_out(t) for t in trials if not state or t.state.name.lower() == state]

    async def cancel(self, job_id: uuid.UUID) -> TrainingJob:
        job = await self.get(job_id)
        pipelines = PipelineService(
            self.session,
            default_backend=self.settings.pipeline_backend,
        )
        await pipelines.cancel(job.run_id)
        return job


def settle_search(settings: Settings, job_id: str, status: str) -> None:
    """After a job ends without finalizing (failed or cancelled), close what it left open:
    trials still marked running fail, and the MLflow parent run is ended as failed or killed.
    Idempotent."""
    from optuna.trial import TrialState

    from mlops.training.runner import ATTR_PARENT_RUN
    from mlops.training.stores import open_storage, open_tracking

    storage = open_storage(settings.optuna_storage_url)
    try:
        study_id = storage.get_study_id_from_name(job_study(job_id))
    except KeyError:
        return  # it never got as far as a study
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        with contextlib.suppress(RuntimeError):  # finished meanwhile
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
    parent = storage.get_study_user_attrs(study_id).get(ATTR_PARENT_RUN)
    if parent:
        ending = "KILLED" if status == RunStatus.CANCELLED else "FAILED"
        open_tracking(settings.effective_mlflow_uri).set_terminated(parent, ending)


def check_job(spec: TrainingJobSpec, settings: Settings) -> None:
    """What can be known before queueing: the catalogue, the space, the dataset's columns."""
    from mlops.steps.artifacts import ArtifactStore
    from mlops.steps.datasets import peek_dataset

    try:
        spec.resolved()
    except CatalogueError as exc:
        raise InvalidInput(str(exc), field=("body", *exc.field.split("."))) from None
    try:
        columns, rows = peek_dataset(spec.dataset, ArtifactStore(settings.effective_artifact_root))
    except StepError as exc:
        raise InvalidInput(str(exc), field=("body", "dataset")) from None
    if columns and spec.target not in columns:
        raise InvalidInput(
            f"target column {spec.target!r} is not in {spec.dataset}; "
            f"its columns: {', '.join(columns[:20])}",
            field=("body", "target"),
        )
    if rows == 0:
        raise InvalidInput(f"{spec.dataset} has no rows", field=("body", "dataset"))


def _job_steps(
    job_id: uuid.UUID, document: dict[str, Any], spec: TrainingJobSpec
) -> list[dict[str, Any]]:
    def step(
        name: str, type_: str, depends_on: list[str], timeout: float, worker: int = 0
    ) -> dict[str, Any]:
        return {
            "name": name,
            "type": type_,
            "depends_on": depends_on,
            "params": {"job_id": str(job_id), "job": document, "worker": worker},
            "status": StepStatus.PENDING,
            "attempts": 0,
            "max_attempts": PHASE_RETRIES + 1,
            "backoff_seconds": 2.0,
            "max_backoff_seconds": 30.0,
            "timeout_seconds": timeout,
            "cache": False,
        }

    searches = [search_step(worker) for worker in range(spec.parallelism)]
    return [
        step(PREPARE, "training_prepare", [], 900.0),
        *(
            step(
                name,
                "training_search",
                [PREPARE],
                spec.timeout_seconds + SEARCH_OVERRUN_SECONDS,
                worker,
            )
            for worker, name in enumerate(searches)
        ),
        step(FINALIZE, "training_finalize", searches, 3600.0),
    ]


def summarize(job: TrainingJob) -> JobSummary:
    return JobSummary.model_validate(job)


def _result(steps: dict[str, StepRun]) -> JobResult:
    prepared = (steps.get(PREPARE) and steps[PREPARE].outputs) or {}
    final = (steps.get(FINALIZE) and steps[FINALIZE].outputs) or {}
    return JobResult(
        best_value=final.get("best_value"),
        best_params=final.get("best_params"),
        best_trial=final.get("best_trial"),
        model_uri=final.get("model_uri"),
        model_version=final.get("model_version"),
        registered_model_uri=(
            f"models:/{final['model_name']}/{final['model_version']}"
            if final.get("model_name") and final.get("model_version")
            else None
        ),
        mlflow_experiment_id=prepared.get("experiment_id"),
        mlflow_parent_run_id=prepared.get("parent_run_id"),
        dataset_digest=prepared.get("dataset_digest"),
    )


def _trial_out(trial: Any) -> TrialOut:
    start, end = trial.datetime_start, trial.datetime_complete
    return TrialOut(
        number=trial.number,
        state=trial.state.name.lower(),
        value=trial.value,
        params=trial.params,
        intermediate_values=dict(trial.intermediate_values),
        error=trial.user_attrs.get("error"),
        started_at=start.astimezone(UTC) if start else None,
        finished_at=end.astimezone(UTC) if end else None,
        duration_seconds=(end - start).total_seconds() if start and end else None,
    )
