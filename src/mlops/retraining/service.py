"""The retraining manager: triggers, starting a retraining, approvals, and the history
(policies themselves are ``policies.py``'s).

A retraining is a ``RetrainingEvent`` whose status walks training → comparing →
(awaiting_approval →) rolling_out → an outcome; each step adds a link to its lineage chain.
The controller (``controller.py``) moves it along; this module holds the transitions, so that a
person's request (trigger, approve, reject) and the controller's pass change state one way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from mlops.core.database import as_utc
from mlops.core.errors import Conflict, DomainError, NotFound
from mlops.core.settings import Settings
from mlops.deployments.schemas import DeploymentUpdate, ModelRef
from mlops.deployments.service import DeploymentService, primary_variant
from mlops.deployments.serving import resolve_version
from mlops.monitoring.labelled import LabelledQuery, labelled_uri
from mlops.retraining.metrics import record_outcome
from mlops.retraining.models import RetrainingEvent, RetrainingLink, RetrainingPolicy
from mlops.retraining.policies import PolicyService, actor_of, body_of
from mlops.retraining.schemas import (
    EvaluationOut,
    EventStatus,
    PolicyBody,
    TriggerCheck,
)
from mlops.retraining.triggers import Context, check
from mlops.training.registry import Registry
from mlops.training.service import TrainingService
from mlops.training.spec import TrainingJobSpec
from mlops.training.tracking import TAG_METRIC, TAG_METRIC_VALUE

CONTROLLER = "retraining-controller"
# monitoring's error metrics as scikit-learn scorers (which negate them)
SCORERS = {"rmse": "root_mean_squared_error", "mae": "mean_absolute_error"}


class RetrainingService(PolicyService):
    """Policies (``PolicyService``), and the retrainings they start: triggers, transitions,
    people's decisions and the history."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        super().__init__(session, settings)
        # what the controller decided, for the audit log once committed: (action, event, why)
        self.decisions: list[tuple[str, RetrainingEvent, str]] = []

    # ---------------------------------------------------------------- triggers

    async def check_triggers(self, policy: RetrainingPolicy, now: datetime) -> list[TriggerCheck]:
        """Each trigger's verdict now, in the policy's order."""
        body = body_of(policy)
        deployment = await self._deployment(policy.deployment)
        last = await self.last_started(policy)
        since = last or as_utc(policy.created_at)
        state = policy.schedule_state or {}
        # a schedule counts its slots from the policy (or its triggers' last change) and from
        # its own last firing; other retrainings do not move it (the cooldown debounces them)
        origin = (
            as_utc(datetime.fromisoformat(state["origin"]))
            if "origin" in state
            else as_utc(policy.created_at)
        )

        def schedule_origin(index: int) -> datetime:
            fired = state.get(str(index))
            return max(origin, as_utc(datetime.fromisoformat(fired))) if fired else origin

        champion = primary_variant(
            await DeploymentService(self.session).variants(deployment, live_only=True)
        )
        context = Context(
            session=self.session,
            deployment=deployment,
            now=now,
            since=since,
            since_what="the last retraining" if last else "the policy",
            champion_since=as_utc(champion.created_at) if champion else None,
            schedule_origin=schedule_origin,
            baseline=lambda metric: self._baseline(
                deployment.model_name, champion.model_version if champion else None, metric
            ),
        )
        return [await check(trigger, i, context) for i, trigger in enumerate(body.triggers)]

    async def _baseline(
        self, model: str, version: str | None, metric: str
    ) -> tuple[float, str] | None:
        """The champion's own evaluation of ``metric``: what its training job recorded."""
        if version is None:
            return None
        registry = Registry(self.settings.effective_mlflow_uri)
        try:
            tags = (await run_in_threadpool(registry.version, model, version)).tags
        except NotFound:  # not in this registry: nothing recorded (the other triggers still count)
            return None
        recorded, value = tags.get(TAG_METRIC), tags.get(TAG_METRIC_VALUE)
        if recorded is None or value is None:
            return None
        negated = f"neg_{SCORERS.get(metric, metric)}"  # how scikit-learn names an error
        if recorded not in (metric, negated):
            return None
        sign = -1.0 if recorded == negated else 1.0
        return sign * float(value), f"models:/{model}/{version} ({recorded})"

    async def evaluation(self, policy: RetrainingPolicy, now: datetime) -> EvaluationOut:
        checks = await self.check_triggers(policy, now)
        fired = next((c for c in checks if c.fired), None)
        blocked = await self.blocked_by(policy, now) if fired else None
        return EvaluationOut(
            policy=policy.name,
            would_start=fired is not None and blocked is None,
            trigger=fired.type if fired else None,
            blocked_by=blocked,
            checks=checks,
            evaluated_at=now,
        )

    # ---------------------------------------------------------------- starting

    async def trigger(
        self, policy: RetrainingPolicy, actor: str, reason: str, idempotency_key: str | None
    ) -> tuple[RetrainingEvent, bool]:
        """A manual trigger; with an Idempotency-Key already used, that retraining instead."""
        if idempotency_key:
            existing = await self.session.scalar(
                select(RetrainingEvent).where(
                    RetrainingEvent.actor == actor,
                    RetrainingEvent.idempotency_key == idempotency_key,
                )
            )
            if existing is not None:
                if existing.policy_name != policy.name:
                    raise Conflict(
                        f"This Idempotency-Key started a retraining of '{existing.policy_name}'"
                    )
                return existing, False
        event = await self.start(policy, "manual", reason, {}, actor, idempotency_key)
        return event, True

    async def start(
        self,
        policy: RetrainingPolicy,
        trigger: str,
        reason: str,
        figures: dict[str, Any],
        actor: str,
        idempotency_key: str | None = None,
    ) -> RetrainingEvent:
        """A new retraining: the trigger, then the training job (a pipeline run) it submits.
        Conflict when one is in flight; a job that cannot be submitted fails the event."""
        locked = await self.session.scalar(
            select(RetrainingPolicy).where(RetrainingPolicy.id == policy.id).with_for_update()
        )
        assert locked is not None
        running = await self.in_flight(locked)
        if running is not None:
            raise Conflict(
                f"Retraining {running.id} of policy '{policy.name}' is in flight "
                f"({running.status}); a second does not start"
            )
        deployment = await self._deployment(policy.deployment)
        live = await DeploymentService(self.session).variants(deployment, live_only=True)
        champion = primary_variant(live)
        if champion is None:
            raise Conflict(f"Deployment '{deployment.name}' serves no model to challenge")
        body = body_of(policy)
        now = datetime.now(UTC)
        event = RetrainingEvent(
            id=uuid.uuid4(),
            policy_id=policy.id,
            policy_name=policy.name,
            deployment=deployment.name,
            model_name=deployment.model_name,
            status=EventStatus.TRAINING.value,
            trigger=trigger,
            reason=reason,
            actor=actor,
            idempotency_key=idempotency_key,
            champion_version=champion.model_version,
            data_since=now - timedelta(hours=body.data_window_hours),
            data_until=now,
            created_at=now,
            updated_at=now,
        )
        self.session.add(event)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict("This Idempotency-Key is being used by a concurrent request") from exc
        await self.link(event, "trigger", actor, f"{trigger}: {reason}", detail=figures)
        spec = self._job_spec(event, body)
        try:
            job, _ = await TrainingService(self.session, self.settings).submit(
                spec, actor_of(policy.name)
            )
        except DomainError as exc:
            await self.finish(event, EventStatus.FAILED, f"the training job was refused: {exc}")
            return event
        event.training_job_id, event.pipeline_run_id = job.id, job.run_id
        await self.link(
            event,
            "pipeline_run",
            actor_of(policy.name),
            f"pipeline run of {spec.estimator} on {spec.dataset}",
            ref=str(job.run_id),
            detail={"dataset": spec.dataset},
        )
        await self.link(
            event,
            "training_job",
            actor_of(policy.name),
            f"training job registering {spec.model_name}",
            ref=str(job.id),
        )
        self._decided("retraining.started", event, reason)
        return event

    def _job_spec(self, event: RetrainingEvent, body: PolicyBody) -> TrainingJobSpec:
        template = body.training
        holdout = body.comparison.holdout
        dataset = template.dataset or labelled_uri(
            LabelledQuery(
                deployment=event.deployment,
                since=event.data_since,
                until=event.data_until,
                part="train" if holdout.source == "recent" else "all",
                holdout_share=holdout.share,
                target=template.target,
            )
        )
        document = template.model_dump(mode="json", exclude_none=True)
        return TrainingJobSpec.model_validate(
            {**document, "dataset": dataset, "model_name": event.model_name}
        )

    # ---------------------------------------------------------------- transitions

    async def link(
        self,
        event: RetrainingEvent,
        stage: str,
        actor: str,
        summary: str,
        *,
        ref: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        position = await self.session.scalar(
            select(func.count()).where(RetrainingLink.event_id == event.id)
        )
        self.session.add(
            RetrainingLink(
                event_id=event.id,
                position=int(position or 0),
                stage=stage,
                actor=actor,
                ref=ref,
                summary=summary,
                detail=detail or {},
                created_at=datetime.now(UTC),
            )
        )
        event.updated_at = datetime.now(UTC)
        await self.session.flush()

    async def finish(
        self, event: RetrainingEvent, status: EventStatus, reason: str, actor: str = CONTROLLER
    ) -> None:
        now = datetime.now(UTC)
        event.status, event.outcome_reason, event.finished_at = status.value, reason, now
        if status is EventStatus.PROMOTED:
            event.seconds_to_promotion = (now - as_utc(event.created_at)).total_seconds()
        await self.link(event, "outcome", actor, f"{status.value}: {reason}")
        record_outcome(event.trigger, status.value, event.seconds_to_promotion)
        self._decided(f"retraining.{status.value}", event, reason)

    async def roll_out(self, event: RetrainingEvent, actor: str) -> None:
        """Hand the challenger to the deployment's strategy (a Conflict leaves the event)."""
        policy = await self.session.get(RetrainingPolicy, event.policy_id)
        promotion = body_of(policy).promotion if policy is not None else None
        assert event.challenger_version is not None
        update = DeploymentUpdate(
            model=ModelRef(name=event.model_name, version=event.challenger_version),
            strategy=promotion.strategy if promotion else None,
            settings=promotion.settings if promotion else None,
        )
        tracking_uri = self.settings.effective_mlflow_uri
        deployments = DeploymentService(
            self.session,
            lambda name, version, alias: resolve_version(tracking_uri, name, version, alias),
        )
        deployment = await deployments.roll_out(event.deployment, update, actor)
        rollout = deployment.rollout or {}
        event.rollout_variant = rollout.get("variant")
        event.status = EventStatus.ROLLING_OUT.value
        await self.link(
            event,
            "rollout",
            actor,
            f"version {event.challenger_version} rolling out as {event.rollout_variant} "
            f"by {rollout.get('strategy')}",
            ref=f"/api/v1/deployments/{event.deployment}",
            detail={"variant": event.rollout_variant, "strategy": rollout.get("strategy")},
        )

    # ---------------------------------------------------------------- people's decisions

    async def approve(self, event_id: uuid.UUID, actor: str, reason: str) -> RetrainingEvent:
        event = await self._awaiting(event_id)
        await self.link(event, "approval", actor, f"approved: {reason or 'no reason given'}")
        await self.roll_out(event, actor)
        return event

    async def reject(self, event_id: uuid.UUID, actor: str, reason: str) -> RetrainingEvent:
        event = await self._awaiting(event_id)
        await self.link(event, "approval", actor, f"rejected: {reason or 'no reason given'}")
        await self.finish(event, EventStatus.REJECTED, reason or f"rejected by {actor}", actor)
        return event

    async def _awaiting(self, event_id: uuid.UUID) -> RetrainingEvent:
        event = await self.event(event_id)
        if event.status != EventStatus.AWAITING_APPROVAL:
            raise Conflict(f"Retraining {event_id} is {event.status}, not awaiting approval")
        return event

    # ---------------------------------------------------------------- history

    def events_query(
        self,
        policy: str | None = None,
        status: EventStatus | None = None,
        trigger: str | None = None,
    ) -> Select[Any]:
        query = select(RetrainingEvent).order_by(
            RetrainingEvent.created_at.desc(), RetrainingEvent.id
        )
        if policy is not None:
            query = query.where(RetrainingEvent.policy_name == policy)
        if status is not None:
            query = query.where(RetrainingEvent.status == status.value)
        if trigger is not None:
            query = query.where(RetrainingEvent.trigger == trigger)
        return query

    async def event(self, event_id: uuid.UUID) -> RetrainingEvent:
        found = await self.session.get(RetrainingEvent, event_id)
        if found is None:
            raise NotFound(f"No retraining event {event_id}")
        return found

    async def chain(self, event: RetrainingEvent) -> list[RetrainingLink]:
        rows = await self.session.scalars(
            select(RetrainingLink)
            .where(RetrainingLink.event_id == event.id)
            .order_by(RetrainingLink.position)
        )
        return list(rows.all())

    def _decided(self, action: str, event: RetrainingEvent, reason: str) -> None:
        self.decisions.append((action, event, reason))
