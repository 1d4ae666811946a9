"""The retraining controller: one elected process evaluates every enabled policy's triggers
and moves each retraining along, periodically and at once when a monitoring alert fires.

Each pass first advances what is in flight (a finished training job gives the challenger, a
challenger is compared with the champion, a rollout's end is the outcome), then starts a
retraining for each policy a trigger fires for, unless the policy is in flight, cooling down
or at its daily maximum. All state is in the database: a restarted controller carries on where
the last one stopped (a comparison cut short is simply made again).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from mlops.core.database import Database
from mlops.core.errors import Conflict, DomainError
from mlops.core.leadership import ElectedLoop
from mlops.core.settings import Settings
from mlops.deployments.manager import DeploymentManager
from mlops.monitoring.labelled import LINEAGE, LabelledQuery, read_labelled
from mlops.pipelines.engine import PipelineEngine
from mlops.pipelines.models import PipelineRun, StepRun
from mlops.pipelines.states import RunStatus
from mlops.retraining.evaluation import EvaluationError, compare_versions
from mlops.retraining.models import RetrainingEvent, RetrainingPolicy
from mlops.retraining.policies import actor_of, body_of
from mlops.retraining.promotion import CHALLENGER, settle_rollout
from mlops.retraining.schemas import IN_FLIGHT, EventStatus, PolicyBody
from mlops.retraining.service import CONTROLLER, RetrainingService
from mlops.security.audit import AuditLog, AuditRecord
from mlops.steps.framework import StepError
from mlops.training.models import TrainingJob
from mlops.training.registry import Registry
from mlops.training.service import FINALIZE, SYSTEM_PIPELINE

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("mlops")

RETRAINING_LOCK = 0x6D6C6F7073_50


class RetrainingController:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        audit_log: AuditLog,
        engine: PipelineEngine,
        deployments: DeploymentManager,
    ) -> None:
        self.database = database
        self.settings = settings
        self.audit_log = audit_log
        self.engine = engine  # told of each queued job; tells when a job ends
        self.deployments = deployments  # told of each rollout started; tells when one ends
        engine.on_run_finished(SYSTEM_PIPELINE, self._job_finished)
        deployments.on_rollout_ended = self.wake
        self.registry = Registry(settings.effective_mlflow_uri)
        self.loop = ElectedLoop(
            database,
            RETRAINING_LOCK,
            settings.retraining_evaluation_seconds,
            self.run_pass,
            "retraining",
        )

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    def wake(self, deployment: str | None = None) -> None:
        """Evaluate now rather than at the next interval (an alert fired on ``deployment``,
        a person triggered or approved a retraining)."""
        self.loop.wake()

    # ---------------------------------------------------------------- one pass

    async def run_pass(self, now: datetime | None = None) -> None:
        for event_id in await self._in_flight():
            try:
                await self.advance(event_id)
            except Exception:
                logger.exception("advancing a retraining failed", extra={"event": str(event_id)})
        await self.evaluate_policies(now)

    async def _in_flight(self) -> list[uuid.UUID]:
        async with self.database.sessionmaker() as session:
            rows = await session.scalars(
                select(RetrainingEvent.id)
                .where(RetrainingEvent.status.in_([s.value for s in IN_FLIGHT]))
                .order_by(RetrainingEvent.created_at)
            )
            return list(rows.all())

    async def evaluate_policies(self, now: datetime | None = None) -> list[RetrainingEvent]:
        """Start a retraining for each enabled policy a trigger fires for."""
        now = now or datetime.now(UTC)
        async with self.database.sessionmaker() as session:
            names = (
                await session.scalars(
                    select(RetrainingPolicy.name).where(RetrainingPolicy.enabled.is_(True))
                )
            ).all()
        started: list[RetrainingEvent] = []
        for name in names:
            try:
                event = await self._evaluate(name, now)
            except Exception:
                logger.exception("evaluating a retraining policy failed", extra={"policy": name})
                continue
            if event is not None:
                started.append(event)
        return started

    async def _evaluate(self, name: str, now: datetime) -> RetrainingEvent | None:
        async with self.database.sessionmaker() as session, session.begin():
            service = RetrainingService(session, self.settings)
            policy = await service.get(name)
            if await service.blocked_by(policy, now) is not None:
                return None
            checks = await service.check_triggers(policy, now)
            fired = next((check for check in checks if check.fired), None)
            if fired is None:
                return None
            if fired.type == "schedule":
                policy.schedule_state = {**policy.schedule_state, str(fired.index): now.isoformat()}
            try:
                event = await service.start(
                    policy, fired.type, fired.reason, fired.figures, actor_of(policy.name)
                )
            except Conflict:  # started by a person meanwhile
                return None
        await self._audit(service)
        self._queued(event)
        return event

    def _queued(self, event: RetrainingEvent) -> None:
        if event.pipeline_run_id is not None:
            self.engine.notify(event.pipeline_run_id)

    async def _job_finished(self, run_id: uuid.UUID, status: str) -> None:
        self.wake()

    # ---------------------------------------------------------------- moving a retraining

    async def advance(self, event_id: uuid.UUID) -> None:
        """Move the retraining along as far as it goes now: a job that has just finished is
        compared in the same pass, not the next one."""
        steps = {
            EventStatus.TRAINING: self._after_training,
            EventStatus.COMPARING: self._compare,
            EventStatus.ROLLING_OUT: self._after_rollout,
        }
        seen: set[str] = set()
        while True:
            async with self.database.sessionmaker() as session:
                event = await session.get(RetrainingEvent, event_id)
                status = event.status if event is not None else None
            step = steps.get(EventStatus(status)) if status is not None else None
            if step is None or status is None or status in seen:  # done, or nothing moved
                return
            seen.add(status)
            await step(event_id)

    async def _after_training(self, event_id: uuid.UUID) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            service = RetrainingService(session, self.settings)
            event = await service.event(event_id)
            if event.status != EventStatus.TRAINING:
                return
            job = await session.get(TrainingJob, event.training_job_id)
            run = await session.get(PipelineRun, job.run_id) if job else None
            if job is None or run is None:
                await service.finish(event, EventStatus.FAILED, "its training job is gone")
            elif run.status == RunStatus.SUCCEEDED:
                final = await session.scalar(
                    select(StepRun.outputs).where(
                        StepRun.run_id == run.id, StepRun.name == FINALIZE
                    )
                )
                version = str((final or {}).get("model_version") or "")
                if not version:
                    reason = "the training job registered no model version"
                    await service.finish(event, EventStatus.FAILED, reason)
                else:
                    await self._challenger(service, event, version, final or {})
            elif run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                reason = f"the training job {run.status}: {run.error or 'no reason recorded'}"
                await service.finish(event, EventStatus.FAILED, reason)
        await self._audit(service)

    async def _challenger(
        self,
        service: RetrainingService,
        event: RetrainingEvent,
        version: str,
        final: dict[str, Any],
    ) -> None:
        await run_in_threadpool(self.registry.set_alias, event.model_name, CHALLENGER, version)
        event.challenger_version, event.status = version, EventStatus.COMPARING.value
        await service.link(
            event,
            "model_version",
            actor_of(event.policy_name),
            f"version {version} of {event.model_name}, alias '{CHALLENGER}'",
            ref=f"models:/{event.model_name}/{version}",
            detail={"best_value": final.get("best_value"), "best_params": final.get("best_params")},
        )

    async def _compare(self, event_id: uuid.UUID) -> None:
        async with self.database.sessionmaker() as session:
            event = await session.get(RetrainingEvent, event_id)
            policy = await session.get(RetrainingPolicy, event.policy_id) if event else None
            if event is None or event.status != EventStatus.COMPARING:
                return
            if policy is None:
                await self._fail(event_id, "its policy was deleted before the comparison")
                return
            body = body_of(policy)
            try:
                holdout = await self._holdout(session, event, body)
            except StepError as exc:
                await self._fail(event_id, f"the holdout cannot be read: {exc}")
                return
        label = body.comparison.holdout.label_column or body.training.target
        try:
            report = await asyncio.to_thread(
                compare_versions,
                self.settings.effective_mlflow_uri,
                event.model_name,
                str(event.champion_version),
                str(event.challenger_version),
                holdout,
                label,
                body.comparison,
                body.training.task.value,
            )
        except EvaluationError as exc:
            await self._fail(event_id, f"the comparison failed: {exc}")
            return
        report["holdout"] = {
            "source": body.comparison.holdout.source,
            "dataset": body.comparison.holdout.dataset,
            **holdout.attrs.get(LINEAGE, {}),  # a labelled:// frame's provenance, JSON already
        }
        await self._decide(event_id, report, body.promotion.mode)

    async def _holdout(
        self, session: AsyncSession, event: RetrainingEvent, body: PolicyBody
    ) -> pd.DataFrame:
        holdout = body.comparison.holdout
        if holdout.source == "dataset":
            from mlops.steps.datasets import load_dataset

            assert holdout.dataset is not None
            return await asyncio.to_thread(load_dataset, holdout.dataset)
        query = LabelledQuery(
            deployment=event.deployment,
            since=event.data_since,
            until=event.data_until,
            part="holdout",
            holdout_share=holdout.share,
            target=holdout.label_column or body.training.target,
        )
        return await read_labelled(session, query)

    async def _decide(self, event_id: uuid.UUID, report: dict[str, Any], mode: str) -> None:
        rolled_out = False
        async with self.database.sessionmaker() as session, session.begin():
            service = RetrainingService(session, self.settings)
            event = await service.event(event_id)
            if event.status != EventStatus.COMPARING:
                return
            event.comparison = report
            await service.link(
                event,
                "comparison",
                CONTROLLER,
                f"{report['decision']}: {report['reason']}",
                detail={
                    key: report.get(key)
                    for key in ("metric", "test", "rows", "improvement", "significant", "decision")
                },
            )
            if report["decision"] != "challenger_better":
                reason = f"kept the champion: {report['reason']}"
                await service.finish(event, EventStatus.KEPT_CHAMPION, reason)
            elif mode == "approval":
                event.status = EventStatus.AWAITING_APPROVAL.value
            else:
                try:
                    async with session.begin_nested():
                        await service.roll_out(event, actor_of(event.policy_name))
                    rolled_out = True
                except DomainError as exc:
                    reason = f"the challenger could not be rolled out: {exc}"
                    await service.finish(event, EventStatus.FAILED, reason)
        await self._audit(service)
        if rolled_out:
            self.deployments.notify()

    async def _after_rollout(self, event_id: uuid.UUID) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            service = RetrainingService(session, self.settings)
            event = await service.event(event_id)
            if event.status == EventStatus.ROLLING_OUT:
                await settle_rollout(service, self.registry, event)
        await self._audit(service)

    async def _fail(self, event_id: uuid.UUID, reason: str) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            service = RetrainingService(session, self.settings)
            event = await service.event(event_id)
            if event.status in (s.value for s in IN_FLIGHT):
                await service.finish(event, EventStatus.FAILED, reason)
        await self._audit(service)

    async def _audit(self, service: RetrainingService) -> None:
        """The controller's decisions, committed, into the audit log beside people's requests."""
        for action, event, reason in service.decisions:
            await self.audit_log.append(
                AuditRecord(
                    principal=CONTROLLER,
                    action=action,
                    resource=f"/api/v1/retraining/events/{event.id}",
                    outcome="success",
                    status_code=200,
                    details={"policy": event.policy_name, "reason": reason[:1000]},
                )
            )
        service.decisions.clear()
