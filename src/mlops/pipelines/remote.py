"""Runs on whole-run backends (Airflow, Kubeflow, Vertex AI): submitted once, then observed.

The engine hands each such run here on every pass; at most every ``poll_seconds`` of its
backend, the run is submitted (the first time) or observed, and what the backend reports is
copied into the run's record: each step's state, attempts, start and end, outputs and error,
and, where the backend has logs, each attempt's log into the same files the local backends
write. No database transaction is held across a call to the backend.

A transient failure (unreachable, 5xx, a DAG not parsed yet) leaves the run running with the
reason in its ``error``, until ``give_up_seconds`` have passed without an answer; then, or at
once for a permanent failure, the run fails with that reason. A run cancelled in the service
(or given up) keeps ``external_cancel_pending`` until the backend has been told to stop it, so
neither a crash nor an unreachable backend leaves it running there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mlops.backends import FLAVORS, create_run_orchestrator, whole_run_backends
from mlops.backends.base import (
    LOGS,
    BackendUnavailable,
    PlanStep,
    RunObservation,
    RunOrchestrator,
    RunPlan,
    StepObservation,
)
from mlops.core.database import Database
from mlops.core.settings import Settings
from mlops.pipelines.logs import step_log_path
from mlops.pipelines.metrics import record_run_finished, record_step_finished
from mlops.pipelines.models import PipelineRun, StepRun
from mlops.pipelines.states import FINAL_RUN, FINAL_STEP, RunStatus, StepStatus

logger = logging.getLogger("mlops.pipelines.remote")
Finished = Callable[[str, uuid.UUID, str], None]  # pipeline name, run id, status
RETRYING = "; retrying"
_REMOTE_FINAL = {
    "succeeded": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,  # stopped on the backend itself, not through the service
}


@dataclass
class _Contact:
    next_poll: float = 0.0
    failing_since: float | None = None


def plan_for(run: PipelineRun, steps: list[StepRun], artifact_root: str) -> RunPlan:
    return RunPlan(
        run_id=str(run.id),
        pipeline=run.pipeline_name,
        version=run.version,
        description=f"{run.pipeline_name} version {run.version} (mlops)",
        params=run.params,
        steps=[
            PlanStep(
                name=step.name,
                type=step.type,
                params=step.params,
                depends_on=list(step.depends_on),
                retries=step.max_attempts - 1,
                backoff_seconds=step.backoff_seconds,
                max_backoff_seconds=step.max_backoff_seconds,
                timeout_seconds=step.timeout_seconds,
            )
            for step in sorted(steps, key=lambda s: s.position)
        ],
        artifact_root=artifact_root,
    )


class RemoteRuns:
    def __init__(self, database: Database, settings: Settings, finished: Finished) -> None:
        self.database = database
        self.settings = settings
        self.finished = finished
        self.orchestrators: dict[str, RunOrchestrator] = {}
        self.contacts: dict[uuid.UUID, _Contact] = {}
        self.logs_done: set[tuple[uuid.UUID, str, int]] = set()

    async def orchestrator(self, name: str) -> RunOrchestrator:
        if name not in self.orchestrators:
            orchestrator = create_run_orchestrator(name, self.settings)
            await orchestrator.start()
            self.orchestrators[name] = orchestrator
        return self.orchestrators[name]

    async def close(self) -> None:
        for orchestrator in self.orchestrators.values():
            try:
                await orchestrator.close()
            except Exception:
                logger.exception("backend %s did not close cleanly", orchestrator.name)
        self.orchestrators.clear()

    def poll_intervals(self) -> list[float]:
        """``poll_seconds`` of every configured whole-run backend."""
        return [
            self._config(name).poll_seconds
            for name in whole_run_backends()
            if self._config(name) is not None
        ]

    def _config(self, backend: str) -> Any:
        block = FLAVORS[backend].settings_block
        return getattr(self.settings, block) if block else None

    async def advance(self, run_id: uuid.UUID) -> None:
        loop = asyncio.get_running_loop()
        contact = self.contacts.setdefault(run_id, _Contact())
        if loop.time() < contact.next_poll:
            return  # asked again within poll_seconds: not even the database is read
        async with self.database.sessionmaker() as session:
            run = await session.get(PipelineRun, run_id)
            if run is None:
                self.contacts.pop(run_id, None)
                return
            steps = list(
                (await session.scalars(select(StepRun).where(StepRun.run_id == run_id))).all()
            )
        cancel_pending = run.external_cancel_pending and not await self._cancel(run)
        config = self._config(run.backend)
        contact.next_poll = loop.time() + config.poll_seconds
        if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            if not cancel_pending:
                self.contacts.pop(run_id, None)
            return
        try:
            orchestrator = await self.orchestrator(run.backend)
        except Exception as exc:  # its client cannot be built: nothing to wait for
            logger.exception("backend %s could not start", run.backend)
            await self._fail(run_id, f"backend {run.backend!r} cannot start: {exc}")
            return
        plan = plan_for(run, steps, self.settings.effective_artifact_root)
        try:
            external_id = run.external_id
            if external_id is None:
                external_id = await orchestrator.submit(plan)
                await self._submitted(run_id, external_id)
            observation = await orchestrator.observe(external_id, plan)
            if LOGS in orchestrator.capabilities:
                await self._copy_logs(orchestrator, run_id, external_id, observation)
        except BackendUnavailable as exc:
            await self._unavailable(run_id, contact, exc, loop.time(), config.give_up_seconds)
            return
        contact.failing_since = None
        await self._apply(run_id, observation)

    # ------------------------------------------------------------------ writes

    async def _submitted(self, run_id: uuid.UUID, external_id: str) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            run = await session.get(PipelineRun, run_id)
            if run is None:
                return
            run.external_id = external_id
            if run.status in FINAL_RUN:  # cancelled while it was being submitted
                run.external_cancel_pending = True
            elif run.status == RunStatus.QUEUED:
                run.status, run.started_at = RunStatus.RUNNING, datetime.now(UTC)

    async def _unavailable(
        self,
        run_id: uuid.UUID,
        contact: _Contact,
        exc: BackendUnavailable,
        now: float,
        give_up_seconds: float,
    ) -> None:
        if contact.failing_since is None:
            contact.failing_since = now
        waited = now - contact.failing_since
        if exc.transient and waited < give_up_seconds:
            logger.warning(
                "run %s: %s (retrying for %.0f s more)", run_id, exc, give_up_seconds - waited
            )
            async with self.database.sessionmaker() as session, session.begin():
                run = await session.get(PipelineRun, run_id)
                if run is not None and run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
                    run.error = f"{exc}{RETRYING}"
            return
        reason = str(exc) if not exc.transient else f"{exc} (gave up after {waited:.0f} s)"
        await self._fail(run_id, reason)

    async def _fail(self, run_id: uuid.UUID, reason: str) -> None:
        """The run fails with ``reason``; whatever may still run remotely is to be stopped."""
        now = datetime.now(UTC)
        async with self.database.sessionmaker() as session, session.begin():
            run = await session.get(PipelineRun, run_id)
            if run is None or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
                return
            for step in (
                await session.scalars(select(StepRun).where(StepRun.run_id == run_id))
            ).all():
                if step.status == StepStatus.RUNNING:
                    step.status, step.finished_at, step.error = StepStatus.FAILED, now, reason
                elif step.status == StepStatus.PENDING:
                    step.status, step.finished_at, step.error = StepStatus.SKIPPED, now, reason
            run.status, run.error, run.finished_at = RunStatus.FAILED, reason, now
            run.started_at = run.started_at or now
            run.external_cancel_pending = run.external_id is not None
            name = run.pipeline_name
            record_run_finished(name, run.status)
        self.finished(name, run_id, RunStatus.FAILED)

    async def _cancel(self, run: PipelineRun) -> bool:
        """Tell the backend to stop the run; whether that is done (or nothing is left to do)."""
        if run.external_id is not None:
            try:
                orchestrator = await self.orchestrator(run.backend)
                await orchestrator.cancel(run.external_id)
            except BackendUnavailable as exc:
                if exc.transient:
                    logger.warning("run %s: cancel not delivered yet: %s", run.id, exc)
                    return False
                logger.warning("run %s: the backend refused the cancel: %s", run.id, exc)
            except Exception:
                logger.exception("run %s: cancelling on %s failed", run.id, run.backend)
                return False
        async with self.database.sessionmaker() as session, session.begin():
            stored = await session.get(PipelineRun, run.id)
            if stored is not None and stored.external_id == run.external_id:
                stored.external_cancel_pending = False
        return True

    async def _apply(self, run_id: uuid.UUID, observation: RunObservation) -> None:
        now = datetime.now(UTC)
        async with self.database.sessionmaker() as session, session.begin():
            run = await session.get(PipelineRun, run_id)
            if run is None or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
                return  # cancelled meanwhile
            steps = (await session.scalars(select(StepRun).where(StepRun.run_id == run_id))).all()
            for step in steps:
                seen = observation.steps.get(step.name)
                if seen is not None:
                    _copy_step(step, seen)
            run.error = observation.error
            final = _REMOTE_FINAL.get(observation.status)
            if final is None:
                return
            for step in steps:  # the backend is done: nothing of it is still going
                if step.status not in FINAL_STEP:
                    step.status = (
                        StepStatus.SKIPPED
                        if step.status == StepStatus.PENDING
                        else StepStatus.FAILED
                    )
                    step.finished_at = step.finished_at or now
                    step.error = step.error or f"left {step.status} when the run ended"
            failed = [step.name for step in steps if step.status == StepStatus.FAILED]
            if final == RunStatus.SUCCEEDED and failed:
                final = RunStatus.FAILED
            run.status, run.finished_at = final, now
            if final == RunStatus.CANCELLED:
                run.error = observation.error or f"cancelled on the {run.backend} backend"
            elif failed:
                run.error = f"failed steps: {', '.join(sorted(failed))}"
            name = run.pipeline_name
            record_run_finished(name, run.status)
        self.contacts.pop(run_id, None)
        self.finished(name, run_id, final)

    async def _copy_logs(
        self,
        orchestrator: RunOrchestrator,
        run_id: uuid.UUID,
        external_id: str,
        observation: RunObservation,
    ) -> None:
        """Each attempt's log into its file: running ones again on every poll, finished ones
        once. A log that cannot be read now is read on a later poll."""
        for name, seen in observation.steps.items():
            for attempt in range(1, seen.attempts + 1):
                key = (run_id, name, attempt)
                if key in self.logs_done:
                    continue
                over = attempt < seen.attempts or seen.status != StepStatus.RUNNING
                try:
                    text = await orchestrator.step_log(external_id, name, attempt)
                except BackendUnavailable as exc:
                    logger.info(
                        "run %s: the log of %s.%d is not readable yet: %s",
                        run_id,
                        name,
                        attempt,
                        exc,
                    )
                    continue
                _write_log(step_log_path(self.settings.data_dir, run_id, name, attempt), text)
                if over:
                    self.logs_done.add(key)


def _copy_step(step: StepRun, seen: StepObservation) -> None:
    if step.status in FINAL_STEP:
        return
    step.status = seen.status
    step.attempts = max(step.attempts, seen.attempts)
    step.started_at = seen.started_at or step.started_at
    step.error = seen.error
    if seen.status in FINAL_STEP:
        step.finished_at = seen.finished_at or datetime.now(UTC)
        if seen.status == StepStatus.SUCCEEDED:
            step.outputs = seen.outputs or {}
        if seen.status in (StepStatus.SUCCEEDED, StepStatus.FAILED) and step.started_at:
            duration = (step.finished_at - step.started_at).total_seconds()
            record_step_finished(step.type, step.status, max(duration, 0.0))


def _write_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
