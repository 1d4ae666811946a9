"""The pipeline manager: definitions and their versions, runs, cancellation and schedules.

Methods only ``flush()``; the request's session commits. The engine (``engine.py``) moves runs
forward; this module only creates and cancels them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.backends import FLAVORS, is_whole_run
from mlops.backends.base import CACHE, LOGS
from mlops.core.errors import Conflict, InvalidFields, InvalidInput, NotFound, NotSupported
from mlops.pipelines.models import Pipeline, PipelineRun, PipelineVersion, StepRun
from mlops.pipelines.schedule import next_fire_time
from mlops.pipelines.spec import (
    PARAM_REF,
    PipelineSpec,
    check_field_value,
    is_whole_template,
    templates_in,
)
from mlops.pipelines.states import FINAL_RUN, RunStatus, StepStatus, settle_cancelled
from mlops.pipelines.validation import validate_pipeline
from mlops.steps.framework import get_step_type


def digest_of(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class PipelineService:
    def __init__(
        self,
        session: AsyncSession,
        *,
        default_backend: str,
        backend_problem: Callable[[str], str | None] | None = None,
    ):
        self.session = session
        self.default_backend = default_backend
        self.backend_problem = backend_problem

    # ---------------------------------------------------------------- definitions

    async def apply(
        self, spec: PipelineSpec, created_by: str
    ) -> tuple[Pipeline, PipelineVersion, bool]:
        validate_pipeline(spec, backend_problem=self.backend_problem)
        self._check_capabilities(spec)
        document = spec.model_dump(mode="json", exclude_none=True)
        digest = digest_of(document)
        pipeline = await self.session.scalar(select(Pipeline).where(Pipeline.name == spec.name))
        now = datetime.now(UTC)
        if pipeline is not None:
            latest = await self._version(pipeline, pipeline.latest_version)
            if latest.digest == digest:
                return pipeline, latest, False
            pipeline.latest_version += 1
        else:
            pipeline = Pipeline(name=spec.name, latest_version=1, created_at=now)
            self.session.add(pipeline)
        pipeline.description = spec.description
        pipeline.updated_at = now
        pipeline.schedule_cron = spec.schedule.cron if spec.schedule else None
        pipeline.schedule_timezone = spec.schedule.timezone if spec.schedule else None
        pipeline.next_fire_at = (
            next_fire_time(spec.schedule.cron, spec.schedule.timezone, now)
            if spec.schedule
            else None
        )
        try:
            await self.session.flush()
            version = PipelineVersion(
                pipeline_id=pipeline.id,
                version=pipeline.latest_version,
                spec=document,
                digest=digest,
                created_by=created_by,
                created_at=now,
            )
            self.session.add(version)
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict(f"Pipeline '{spec.name}' was changed concurrently; apply again") from exc
        return pipeline, version, True

    async def get(self, name: str) -> Pipeline:
        pipeline = await self.session.scalar(select(Pipeline).where(Pipeline.name == name))
        if pipeline is None:
            raise NotFound(f"No pipeline named '{name}'")
        return pipeline

    def pipelines_query(self) -> Select[Pipeline]:
        # system pipelines (named "_...", like the one training jobs run on) are not listed
        return (
            select(Pipeline)
            .where(~Pipeline.name.startswith("_", autoescape=True))
            .order_by(Pipeline.name)
        )

    def versions_query(self, pipeline: Pipeline) -> Select[PipelineVersion]:
        return (
            select(PipelineVersion)
            .where(PipelineVersion.pipeline_id == pipeline.id)
            .order_by(PipelineVersion.version.desc())
        )

    async def _version(self, pipeline: Pipeline, version: int) -> PipelineVersion:
        row = await self.session.scalar(
            select(PipelineVersion).where(
                PipelineVersion.pipeline_id == pipeline.id, PipelineVersion.version == version
            )
        )
        if row is None:
            raise NotFound(f"Pipeline '{pipeline.name}' has no version {version}")
        return row

    async def version(self, name: str, version: int) -> PipelineVersion:
        return await self._version(await self.get(name), version)

    async def set_paused(self, name: str, paused: bool) -> Pipeline:
        pipeline = await self.get(name)
        if pipeline.schedule_cron is None:
            raise Conflict(f"Pipeline '{name}' has no schedule")
        pipeline.schedule_paused = paused
        await self.session.flush()
        return pipeline

    def backend_of(self, spec: PipelineSpec) -> str:
        return spec.backend or self.default_backend

    def _check_capabilities(self, spec: PipelineSpec) -> None:
        """Refuse what the pipeline's backend cannot do (whole-run backends have no cache)."""
        flavor = FLAVORS.get(self.backend_of(spec))
        if flavor is None or CACHE in flavor.capabilities:
            return
        problems = [
            (("steps", index, "cache"), f"{flavor.not_supported(CACHE)}; set cache: false")
            for index, step in enumerate(spec.steps)
            if step.cache
        ]
        if problems:
            raise InvalidFields(problems)

    # ---------------------------------------------------------------- runs

    async def create_run(
        self,
        name: str,
        params: dict[str, Any],
        created_by: str,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        trigger: str = "api",
    ) -> tuple[PipelineRun, bool]:
        """Queue a run; with an idempotency key already used, return that run instead."""
        pipeline = await self.get(name)
        request_digest = digest_of({"params": params, "version": version})
        if idempotency_key:
            existing = await self.session.scalar(
                select(PipelineRun).where(
                    PipelineRun.pipeline_id == pipeline.id,
                    PipelineRun.created_by == created_by,
                    PipelineRun.idempotency_key == idempotency_key,
                )
            )
            if existing is not None:
                if existing.request_digest != request_digest:
                    raise Conflict("This Idempotency-Key was used with a different request body")
                return existing, False
        stored = await self._version(pipeline, version or pipeline.latest_version)
        spec = PipelineSpec.model_validate(stored.spec)
        problem = self.backend_problem(self.backend_of(spec)) if self.backend_problem else None
        if problem:  # configured when the pipeline was applied, not any more
            raise InvalidInput(problem, field=("backend",))
        self._check_capabilities(spec)  # the default backend may have changed since
        resolved = _run_params(spec, params)
        now = datetime.now(UTC)
        run = PipelineRun(
            pipeline_id=pipeline.id,
            pipeline_name=pipeline.name,
            version=stored.version,
            backend=self.backend_of(spec),
            status=RunStatus.QUEUED,
            params=resolved,
            trigger=trigger,
            created_by=created_by,
            idempotency_key=idempotency_key,
            request_digest=request_digest,
            created_at=now,
        )
        self.session.add(run)
        await self.session.flush()
        for position, step in enumerate(spec.steps):
            self.session.add(
                StepRun(
                    run_id=run.id,
                    name=step.name,
                    type=step.type,
                    position=position,
                    depends_on=step.depends_on,
                    params=step.params,
                    status=StepStatus.PENDING,
                    attempts=0,
                    max_attempts=step.retries.max + 1,
                    backoff_seconds=step.retries.backoff_seconds,
                    max_backoff_seconds=step.retries.max_backoff_seconds,
                    timeout_seconds=step.timeout_seconds,
                    cache=step.cache,
                )
            )
        await self.session.flush()
        return run, True

    async def run(self, run_id: uuid.UUID) -> tuple[PipelineRun, list[StepRun]]:
        run = await self.session.get(PipelineRun, run_id)
        if run is None:
            raise NotFound(f"No pipeline run with id {run_id}")
        steps = (
            await self.session.scalars(
                select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.position)
            )
        ).all()
        return run, list(steps)

    async def step(self, run_id: uuid.UUID, name: str) -> StepRun:
        step = await self.session.scalar(
            select(StepRun).where(StepRun.run_id == run_id, StepRun.name == name)
        )
        if step is None:
            raise NotFound(f"Run {run_id} has no step named '{name}'")
        return step

    async def step_with_logs(self, run_id: uuid.UUID, name: str) -> StepRun:
        """The step, if its run's backend keeps logs."""
        step = await self.step(run_id, name)
        run = await self.session.get(PipelineRun, run_id)
        flavor = FLAVORS.get(run.backend) if run is not None else None
        if flavor is not None and LOGS not in flavor.capabilities:
            raise NotSupported(flavor.not_supported(LOGS))
        return step

    def runs_query(
        self, pipeline: str | None = None, status: RunStatus | None = None
    ) -> Select[PipelineRun]:
        query = select(PipelineRun).order_by(PipelineRun.created_at.desc(), PipelineRun.id)
        if pipeline:
            query = query.where(PipelineRun.pipeline_name == pipeline)
        if status:
            query = query.where(PipelineRun.status == status.value)
        return query

    async def cancel(self, run_id: uuid.UUID) -> PipelineRun:
        run, steps = await self.run(run_id)
        if run.status in FINAL_RUN:
            raise Conflict(f"Run {run_id} already finished as {run.status}")
        now = datetime.now(UTC)
        run.status = RunStatus.CANCELLED
        run.finished_at = now
        run.error = "cancelled on request"
        # the engine stops the attempts that were running, or tells the run's backend
        run.external_cancel_pending = is_whole_run(run.backend)
        settle_cancelled(steps, now)
        await self.session.flush()
        return run


def _run_params(spec: PipelineSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's defaults overridden by ``given``; each value checked where it is used."""
    for key in given:
        if key not in spec.params:
            takes = ", ".join(spec.params) or "none"
            raise InvalidInput(
                f"unknown parameter {key!r}; this pipeline takes: {takes}",
                field=("body", "params", key),
            )
    resolved = {**spec.params, **given}
    for step in spec.steps:
        fields = get_step_type(step.type).Params.model_fields
        for field_name, value in step.params.items():
            if not is_whole_template(value) or field_name not in fields:
                continue
            match = PARAM_REF.match(templates_in(value)[0])
            if match and match.group(1) in given:
                message = check_field_value(fields[field_name], resolved[match.group(1)])
                if message:
                    raise InvalidInput(
                        f"{message} (used by step {step.name!r} as {field_name})",
                        field=("body", "params", match.group(1)),
                    )
    return resolved
