"""Retraining policies: create, read, change and delete them, and where each stands (in
flight, cooling down, at its daily maximum, or free to start a retraining)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from mlops.core.database import as_utc
from mlops.core.errors import Conflict, InvalidFields, InvalidInput, NotFound
from mlops.core.settings import Settings
from mlops.deployments.models import Deployment
from mlops.deployments.service import DeploymentService, primary_variant
from mlops.features.models import FeatureViewVersion
from mlops.retraining.models import RetrainingEvent, RetrainingPolicy
from mlops.retraining.schemas import (
    IN_FLIGHT,
    PolicyBody,
    PolicyIn,
    PolicyOut,
    PolicyPatch,
    VolumeTrigger,
)
from mlops.steps.framework import StepError
from mlops.training.catalogue import CatalogueError

DAY = timedelta(days=1)


def body_of(policy: RetrainingPolicy) -> PolicyBody:
    return PolicyBody.model_validate(policy.definition)


def actor_of(policy_name: str) -> str:
    """Who a policy's automatic steps are recorded as."""
    return f"retraining/{policy_name}"


class PolicyService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

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
        return (await self.policy_outs([policy]))[0]

    async def policy_outs(self, policies: Sequence[RetrainingPolicy]) -> list[PolicyOut]:
        """The policies with where each stands, read for all of them in two queries."""
        ids = [policy.id for policy in policies]
        running = dict(
            (
                await self.session.execute(
                    select(RetrainingEvent.policy_id, RetrainingEvent.id).where(
                        RetrainingEvent.policy_id.in_(ids),
                        RetrainingEvent.status.in_([s.value for s in IN_FLIGHT]),
                    )
                )
            ).all()
        )
        last = dict(
            (
                await self.session.execute(
                    select(RetrainingEvent.policy_id, func.max(RetrainingEvent.created_at))
                    .where(RetrainingEvent.policy_id.in_(ids))
                    .group_by(RetrainingEvent.policy_id)
                )
            ).all()
        )
        return [
            PolicyOut.model_validate(
                {
                    **policy.definition,
                    "name": policy.name,
                    "deployment": policy.deployment,
                    "enabled": policy.enabled,
                    "in_flight": running.get(policy.id),
                    "last_triggered_at": as_utc(last[policy.id]) if policy.id in last else None,
                    "created_by": policy.created_by,
                    "created_at": policy.created_at,
                    "updated_at": policy.updated_at,
                }
            )
            for policy in policies
        ]

    async def _check(self, body: PolicyBody) -> None:
        """What the schema cannot know: the estimator's catalogue, named views and datasets."""
        template = body.training
        try:
            template.resolved()
        except CatalogueError as exc:
            field = ("body", "training", *exc.field.split("."))
            raise InvalidInput(str(exc), field=field) from None
        named = (
            (template.dataset, ("body", "training", "dataset")),
            (body.comparison.holdout.dataset, ("body", "comparison", "holdout", "dataset")),
        )
        for uri, field in named:
            if uri is not None:
                await run_in_threadpool(self._readable, uri, field)
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

    def _readable(self, uri: str, field: tuple[str, ...]) -> None:
        """The dataset can be read (its header or footer): a bad URI is a 422 now, not a
        retraining that fails later."""
        from mlops.steps.artifacts import ArtifactStore
        from mlops.steps.datasets import peek_dataset

        try:
            peek_dataset(uri, ArtifactStore(self.settings.effective_artifact_root))
        except StepError as exc:
            raise InvalidInput(str(exc), field=field) from None

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


def _definition(body: PolicyBody) -> dict[str, Any]:
    """The stored definition: the body's own fields (a PolicyIn's name, deployment and enabled
    are columns of their own)."""
    own = body.model_dump(include=set(PolicyBody.model_fields))
    return PolicyBody.model_validate(own).model_dump(mode="json")
