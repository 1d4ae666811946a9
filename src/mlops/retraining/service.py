"""The retraining manager: policies, starting a retraining, approvals, and the history.

A retraining is a ``RetrainingEvent`` whose status walks training → comparing →
(awaiting_approval →) rolling_out → an outcome; each step adds a link to its lineage chain.
The controller (``controller.py``) moves it along; this module holds the transitions, so that a
person's request (trigger, approve, reject) and the controller's pass change state one way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from mlops.core.database import as_utc
from mlops.core.errors import Conflict, DomainError, InvalidFields, InvalidInput, NotFound
from mlops.core.settings import Settings
from mlops.deployments.models import Deployment
from mlops.deployments.schemas import DeploymentUpdate, ModelRef
from mlops.deployments.service import DeploymentService, primary_variant
from mlops.deployments.serving import resolve_version
from mlops.features.models import FeatureViewVersion
from mlops.monitoring.labelled import LabelledQuery, labelled_uri
from mlops.retraining.metrics import record_outcome
from mlops.retraining.models import RetrainingEvent, RetrainingLink, RetrainingPolicy
from mlops.retraining.schemas import (
    IN_FLIGHT,
    EvaluationOut,
    EventStatus,
    PolicyBody,
    PolicyIn,
    PolicyOut,
    PolicyPatch,
    TriggerCheck,
    VolumeTrigger,
)
from mlops.retraining.triggers import Context, check
from mlops.training.catalogue import CatalogueError
from mlops.training.registry import Registry
from mlops.training.service import TrainingService
from mlops.training.spec import TrainingJobSpec
from mlops.training.tracking import TAG_METRIC, TAG_METRIC_VALUE

CONTROLLER = "retraining-controller"
DAY = timedelta(days=1)
# monitoring's error metrics as scikit-learn scorers (which negate them)
SCORERS = {"rmse": "root_mean_squared_error", "mae": "mean_absolute_error"}


def body_of(policy: RetrainingPolicy) -> PolicyBody:
    return PolicyBody.model_validate(policy.definition)


def actor_of(policy_name: str) -> str:
    """Who a policy's automatic steps are recorded as."""
    return f"retraining/{policy_name}"


class RetrainingService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        # what the controller decided, for the audit log once committed: (action, event, why)
        self.decisions: list[tuple[str, RetrainingEvent, str]] = []

    # ---------------------------------------------------------------- policies

    async def create(self, body: PolicyIn, actor: str) -> RetrainingPolicy:
        if await self._find(body.name) is not None:
            raise Conflict(f"A retraining policy '{body.name}' exists; PATCH it instead")
        await self._deployment(body.deployment, ("body", "deployment"))
        await self._check(body)
        now = datetime.now(UTC)
        policy = RetrainingPolicy(
            name=body.name,
            deployment=body.deployment,
            definition=_definition(body),
            enabled=body.enabled,
            schedule_state={},
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        self.session.add(policy)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict(f"A retraining policy '{body.name}' was created meanwhile") from exc
        return policy

    async def get(self, name: str) -> RetrainingPolicy:
        found = await self._find(name)
        if found is None:
            raise NotFound(f"No retraining policy '{name}'")
        return found

    async def _find(self, name: str) -> RetrainingPolicy | None:
        return await self.session.scalar(
            select(RetrainingPolicy).where(RetrainingPolicy.name == name)
        )

    def policies_query(
        self, deployment: str | None = None, enabled: bool | None = None
    ) -> Select[Any]:
        query = select(RetrainingPolicy).order_by(RetrainingPolicy.name)
        if deployment is not None:
            query = query.where(RetrainingPolicy.deployment == deployment)
        if enabled is not None:
            query = query.where(RetrainingPolicy.enabled == enabled)
        return query

    async def update(self, name: str, patch: PolicyPatch) -> RetrainingPolicy:
        policy = await self.get(name)
        changes = patch.model_dump(exclude_unset=True, exclude={"enabled"})
        try:
            merged = PolicyBody.model_validate({**policy.definition, **changes})
        except ValidationError as exc:  # the merged policy breaks a rule: a 422, not a 500
            raise InvalidFields(
                [(("body", *error["loc"]), error["msg"]) for error in exc.errors()]
            ) from None
        await self._check(merged)
        if "triggers" in changes:
            policy.schedule_state = {"origin": datetime.now(UTC).isoformat()}
        policy.definition = _definition(merged)
        if patch.enabled is not None:
            policy.enabled = patch.enabled
        policy.updated_at = datetime.now(UTC)
        await self.session.flush()
        return policy

    async def set_enabled(self, name: str, enabled: bool) -> RetrainingPolicy:
        policy = await self.get(name)
        policy.enabled, policy.updated_at = enabled, datetime.now(UTC)
        await self.session.flush()
        return policy

    async def delete(self, name: str) -> None:
        policy = await self.get(name)
        running = await self.in_flight(policy)
        if running is not None:
            raise Conflict(
                f"Retraining {running.id} of policy '{name}' is {running.status}; "
                "wait for it (or reject it) before deleting the policy"
            )
        await self.session.delete(policy)
        await self.session.flush()

    async def policy_out(self, policy: RetrainingPolicy) -> PolicyOut:
        running = await self.in_flight(policy)
        last = await self.last_started(policy)
        return PolicyOut.model_validate(
            {
                **policy.definition,
                "name": policy.name,
                "deployment": policy.deployment,
                "enabled": policy.enabled,
                "in_flight": running.id if running else None,
                "last_triggered_at": last,
                "created_by": policy.created_by,
                "created_at": policy.created_at,
                "updated_at": policy.updated_at,
            }
        )

    async def _check(self, body: PolicyBody) -> None:
        """What the schema cannot know: the estimator's catalogue, named views and datasets."""
        template = body.training
        try:
            template.resolved()
        except CatalogueError as exc:
            field = ("body", "training", *exc.field.split("."))
            raise InvalidInput(str(exc), field=field) from None
        for index, trigger in enumerate(body.triggers):
            if isinstance(trigger, VolumeTrigger) and trigger.feature_view is not None:
                known = await self.session.scalar(
                    select(FeatureViewVersion.id)
                    .where(FeatureViewVersion.name == trigger.feature_view)
                    .limit(1)
                )
                if known is None:
                    raise InvalidInput(
                        f"no feature view '{trigger.feature_view}'",
                        field=("body", "triggers", index, "feature_view"),
                    )

    async def _deployment(self, name: str, field: tuple[str, ...] | None = None) -> Deployment:
        found = await self.session.scalar(select(Deployment).where(Deployment.name == name))
        if found is None:
            if field is not None:
                raise InvalidInput(f"no deployment '{name}'", field=field)
            raise Conflict(f"The policy's deployment '{name}' no longer exists")
        return found

    # ---------------------------------------------------------------- state of a policy

    async def in_flight(self, policy: RetrainingPolicy) -> RetrainingEvent | None:
        return await self.session.scalar(
            select(RetrainingEvent)
            .where(
                RetrainingEvent.policy_id == policy.id,
                RetrainingEvent.status.in_([s.value for s in IN_FLIGHT]),
            )
            .limit(1)
        )

    async def last_started(self, policy: RetrainingPolicy) -> datetime | None:
        last = await self.session.scalar(
            select(func.max(RetrainingEvent.created_at)).where(
                RetrainingEvent.policy_id == policy.id
            )
        )
        return as_utc(last) if last is not None else None

    async def started_since(self, policy: RetrainingPolicy, since: datetime) -> int:
        count = await self.session.scalar(
            select(func.count()).where(
                RetrainingEvent.policy_id == policy.id, RetrainingEvent.created_at >= since
            )
        )
        return int(count or 0)

    async def blocked_by(self, policy: RetrainingPolicy, now: datetime) -> str | None:
        """Why an automatic trigger would start nothing now, or None."""
        if not policy.enabled:
            return "the policy is disabled"
        running = await self.in_flight(policy)
        if running is not None:
            return f"retraining {running.id} is in flight ({running.status})"
        deployment = await self.session.scalar(
            select(Deployment).where(Deployment.name == policy.deployment)
        )
        if deployment is None:
            return f"the deployment '{policy.deployment}' no longer exists"
        live = await DeploymentService(self.session).variants(deployment, live_only=True)
        if primary_variant(live) is None:
            return f"the deployment '{policy.deployment}' serves no model to challenge"
        body = body_of(policy)
        last = await self.last_started(policy)
        if last is not None and now < last + timedelta(minutes=body.cooldown_minutes):
            until = last + timedelta(minutes=body.cooldown_minutes)
            return f"cooldown until {until.isoformat()}"
        if await self.started_since(policy, now - DAY) >= body.max_runs_per_day:
            return f"{body.max_runs_per_day} retraining(s) in the last 24 h, the daily maximum"
        return None

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
        sign = -1.0 if recorded == f"neg_{SCORERS.get(metric, metric)}" else 1.0
        if recorded not in (metric, f"neg_{SCORERS.get(metric, metric)}"):
            return None
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


def _definition(body: PolicyBody) -> dict[str, Any]:
    """The stored definition: the body's own fields (a PolicyIn's name, deployment and enabled
    are columns of their own)."""
    own = body.model_dump(include=set(PolicyBody.model_fields))
    return PolicyBody.model_validate(own).model_dump(mode="json")
