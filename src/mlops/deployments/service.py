"""The deployment manager: deployments, their variants and weights, rollouts and history.

Every change of weights or status goes through here and leaves an event (what, why, who, and
the split after it), whether a person asked for it or the rollout controller decided it.
Methods only ``flush()``; the caller's session commits. Loading models is not done here: the
controller (``manager.py``) loads a new variant and reports whether it became ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.core.errors import Conflict, InvalidFields, NotFound
from mlops.deployments.metrics import record_rollback, record_weights
from mlops.deployments.models import (
    Deployment,
    DeploymentEvent,
    DeploymentVariant,
)
from mlops.deployments.schemas import (
    DeploymentCreate,
    DeploymentState,
    DeploymentUpdate,
    ModelRef,
    Strategy,
    VariantStatus,
)

Resolver = Callable[[str, str | None, str | None], str]  # model, version, alias -> version
CONTROLLER = "rollout-controller"
LIVE = (VariantStatus.LOADING, VariantStatus.READY, VariantStatus.STANDBY)


class DeploymentService:
    def __init__(self, session: AsyncSession, resolve: Resolver | None = None) -> None:
        self.session = session
        self.resolve = resolve
        self.decisions: list[tuple[str, str, str]] = []  # the controller's: deployment, kind, why

    # ---------------------------------------------------------------- reading

    def query(self, state: DeploymentState | None = None) -> Select[Deployment]:
        query = select(Deployment).order_by(Deployment.created_at.desc(), Deployment.id)
        return query.where(Deployment.state == state.value) if state else query

    async def get(self, name: str) -> Deployment:
        found = await self.session.scalar(select(Deployment).where(Deployment.name == name))
        if found is None:
            raise NotFound(f"No deployment '{name}'")
        return found

    async def variants(
        self, deployment: Deployment, live_only: bool = False
    ) -> list[DeploymentVariant]:
        query = select(DeploymentVariant).where(DeploymentVariant.deployment_id == deployment.id)
        if live_only:
            query = query.where(DeploymentVariant.status.in_([s.value for s in LIVE]))
        return list(
            (await self.session.scalars(query.order_by(DeploymentVariant.created_at))).all()
        )

    def events_query(self, deployment: Deployment) -> Select[DeploymentEvent]:
        return (
            select(DeploymentEvent)
            .where(DeploymentEvent.deployment_id == deployment.id)
            .order_by(DeploymentEvent.created_at, DeploymentEvent.id)
        )

    # ---------------------------------------------------------------- changes asked for

    async def _check_feature_service(self, name: str) -> None:
        from mlops.features.models import FeatureServiceRecord

        found = await self.session.scalar(
            select(FeatureServiceRecord.id).where(FeatureServiceRecord.name == name)
        )
        if found is None:
            raise InvalidFields(
                [(["body", "feature_service"], f"no feature service named {name!r}")]
            )

    async def create(self, body: DeploymentCreate, actor: str) -> Deployment:
        existing = await self.session.scalar(
            select(Deployment.id).where(Deployment.name == body.name)
        )
        if existing is not None:
            raise Conflict(
                f"Deployment '{body.name}' already exists; PATCH it to roll out a version"
            )
        if body.feature_service is not None:
            await self._check_feature_service(body.feature_service)
        version = await self._resolve(body.model)
        now = datetime.now(UTC)
        deployment = Deployment(
            name=body.name,
            model_name=body.model.name,
            strategy=body.strategy.value,
            settings=body.settings.model_dump(mode="json"),
            feature_service=body.feature_service,
            state=DeploymentState.DEPLOYING.value,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        self.session.add(deployment)
        await self.session.flush()
        variant = await self._add_variant(deployment, body.model, version, now)
        deployment.rollout = {"variant": variant.name, "previous": None, "strategy": "direct"}
        self._event(
            deployment,
            "created",
            f"deploy {body.model.name} {body.model.requested_as}",
            actor,
            {},
            {"version": version},
        )
        await self.session.flush()
        return deployment

    async def roll_out(self, name: str, body: DeploymentUpdate, actor: str) -> Deployment:
        deployment = await self.get(name)
        if deployment.rollout is not None:
            raise Conflict(
                f"Deployment '{name}' is already rolling out {deployment.rollout['variant']}; "
                "promote or roll it back first"
            )
        if body.model.name != deployment.model_name:
            raise Conflict(f"Deployment '{name}' serves model '{deployment.model_name}'")
        version = await self._resolve(body.model)
        live = await self.variants(deployment, live_only=True)
        primary = primary_variant(live)
        if primary is not None and primary.model_version == version:
            raise Conflict(f"Deployment '{name}' already serves version {version}")
        if body.settings is not None:
            deployment.settings = body.settings.model_dump(mode="json")
        strategy = body.strategy or Strategy(deployment.strategy)
        now = datetime.now(UTC)
        variant = await self._add_variant(deployment, body.model, version, now)
        deployment.rollout = {
            "variant": variant.name,
            "previous": primary.name if primary else None,
            "strategy": strategy.value,
            "step": -1,
        }
        deployment.state = DeploymentState.ROLLING_OUT.value
        deployment.updated_at = now
        self._event(
            deployment,
            "rollout_started",
            f"roll out version {version} ({body.model.requested_as}) by {strategy.value}",
            actor,
            _weights(live),
            {"variant": variant.name, "version": version, "strategy": strategy.value},
        )
        await self.session.flush()
        return deployment

    async def promote(self, name: str, actor: str, reason: str) -> Deployment:
        deployment = await self.get(name)
        target, previous = await self._rollout_pair(deployment)
        if target.status != VariantStatus.READY:
            raise Conflict(f"Variant {target.name} is {target.status}: it cannot take all traffic")
        await self.finish_rollout(deployment, target, previous, actor, reason or "promoted")
        return deployment

    async def rollback(self, name: str, actor: str, reason: str) -> Deployment:
        deployment = await self.get(name)
        if deployment.rollout is not None and deployment.rollout.get("previous"):
            target, previous = await self._rollout_pair(deployment)
            assert previous is not None
            await self.abort_rollout(
                deployment, target, previous, actor, reason or "rolled back", "manual"
            )
            return deployment
        live = await self.variants(deployment, live_only=True)
        standby = [v for v in live if v.status == VariantStatus.STANDBY]
        current = primary_variant(live)
        if not standby or current is None:
            raise Conflict(f"Deployment '{name}' has nothing to roll back to")
        back = standby[-1]
        now = datetime.now(UTC)
        back.status, back.keep_until, back.weight = VariantStatus.READY.value, None, 100.0
        current.status, current.weight, current.retired_at = VariantStatus.RETIRED.value, 0.0, now
        current.detail = f"rolled back to {back.name}"
        deployment.updated_at = now
        self._event(
            deployment,
            "rolled_back",
            reason or f"back to {back.name}",
            actor,
            _weights(live),
            {"to": back.name, "from": current.name},
        )
        record_rollback(deployment.name, "manual")
        await self.session.flush()
        return deployment

    async def delete(self, name: str) -> None:
        deployment = await self.get(name)
        await self.session.delete(deployment)
        await self.session.flush()

    # ---------------------------------------------------------------- controller transitions

    async def variant_ready(
        self, deployment: Deployment, variant: DeploymentVariant, detail: str
    ) -> None:
        variant.status, variant.detail = VariantStatus.READY.value, detail
        live = await self.variants(deployment, live_only=True)
        if deployment.state == DeploymentState.DEPLOYING:  # the first version: all traffic
            variant.weight = 100.0
            deployment.state, deployment.rollout = DeploymentState.READY.value, None
            self._event(
                deployment,
                "serving",
                f"{variant.name} is ready: {detail}",
                CONTROLLER,
                _weights(live),
                {},
            )
        else:
            self._event(
                deployment,
                "variant_ready",
                f"{variant.name} is ready: {detail}",
                CONTROLLER,
                _weights(live),
                {},
            )
        await self.session.flush()

    async def variant_failed(
        self, deployment: Deployment, variant: DeploymentVariant, reason: str
    ) -> None:
        now = datetime.now(UTC)
        variant.status, variant.detail, variant.weight, variant.retired_at = (
            VariantStatus.FAILED.value,
            reason,
            0.0,
            now,
        )
        live = await self.variants(deployment, live_only=True)
        if deployment.state == DeploymentState.DEPLOYING:
            deployment.state, deployment.error = DeploymentState.FAILED.value, reason
        else:
            deployment.state = DeploymentState.READY.value
        deployment.rollout, deployment.updated_at = None, now
        self._event(
            deployment,
            "variant_failed",
            f"{variant.name} never took traffic: {reason}",
            CONTROLLER,
            _weights(live),
            {},
        )
        record_rollback(deployment.name, "load_failed")
        await self.session.flush()

    async def set_step(
        self,
        deployment: Deployment,
        weights: dict[str, float],
        step: int,
        reason: str,
        detail: dict[str, Any],
    ) -> None:
        live = await self.variants(deployment, live_only=True)
        for variant in live:
            if variant.name in weights:
                variant.weight = weights[variant.name]
        deployment.rollout = {
            **(deployment.rollout or {}),
            "step": step,
            "step_started_at": datetime.now(UTC).isoformat(),
            "inconclusive": 0,
        }
        deployment.updated_at = datetime.now(UTC)
        self._event(deployment, "weight_step", reason, CONTROLLER, _weights(live), detail)
        await self.session.flush()

    async def finish_rollout(
        self,
        deployment: Deployment,
        target: DeploymentVariant,
        previous: DeploymentVariant | None,
        actor: str,
        reason: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        now = datetime.now(UTC)
        strategy = (deployment.rollout or {}).get("strategy", Strategy.DIRECT.value)
        target.weight = 100.0
        if previous is not None:
            previous.weight = 0.0
            if strategy == Strategy.BLUE_GREEN:
                keep = float(deployment.settings["blue_green"]["keep_previous_seconds"])
                previous.status, previous.keep_until = (
                    VariantStatus.STANDBY.value,
                    now + timedelta(seconds=keep),
                )
            else:
                previous.status, previous.retired_at = VariantStatus.RETIRED.value, now
        deployment.state, deployment.rollout, deployment.updated_at = (
            DeploymentState.READY.value,
            None,
            now,
        )
        live = await self.variants(deployment, live_only=True)
        self._event(
            deployment,
            "promoted",
            reason,
            actor,
            _weights(live),
            {"variant": target.name, **(detail or {})},
        )
        await self.session.flush()

    async def abort_rollout(
        self,
        deployment: Deployment,
        target: DeploymentVariant,
        previous: DeploymentVariant,
        actor: str,
        reason: str,
        cause: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        now = datetime.now(UTC)
        target.weight, target.status, target.retired_at = 0.0, VariantStatus.RETIRED.value, now
        target.detail = f"rolled back: {reason}"
        previous.weight, previous.status, previous.keep_until = (
            100.0,
            VariantStatus.READY.value,
            None,
        )
        deployment.state, deployment.rollout, deployment.updated_at = (
            DeploymentState.READY.value,
            None,
            now,
        )
        live = await self.variants(deployment, live_only=True)
        self._event(
            deployment,
            "rolled_back",
            reason,
            actor,
            _weights(live),
            {"variant": target.name, "to": previous.name, **(detail or {})},
        )
        record_rollback(deployment.name, cause)
        await self.session.flush()

    async def note(
        self, deployment: Deployment, kind: str, reason: str, detail: dict[str, Any]
    ) -> None:
        live = await self.variants(deployment, live_only=True)
        self._event(deployment, kind, reason, CONTROLLER, _weights(live), detail)
        await self.session.flush()

    async def retire_expired(self, deployment: Deployment, now: datetime) -> None:
        for variant in await self.variants(deployment, live_only=True):
            if (
                variant.status == VariantStatus.STANDBY
                and variant.keep_until
                and variant.keep_until <= now
            ):
                variant.status, variant.retired_at = VariantStatus.RETIRED.value, now
                await self.note(
                    deployment,
                    "retired",
                    f"{variant.name} unloaded: its rollback window ended",
                    {"variant": variant.name},
                )

    # ---------------------------------------------------------------- helpers

    async def _rollout_pair(
        self, deployment: Deployment
    ) -> tuple[DeploymentVariant, DeploymentVariant | None]:
        if deployment.rollout is None:
            raise Conflict(f"Deployment '{deployment.name}' has no rollout in progress")
        by_name = {v.name: v for v in await self.variants(deployment)}
        target = by_name[deployment.rollout["variant"]]
        previous_name = deployment.rollout.get("previous")
        return target, by_name.get(previous_name) if previous_name else None

    async def _resolve(self, model: ModelRef) -> str:
        if self.resolve is None:
            raise RuntimeError("no model resolver")
        return await asyncio.to_thread(self.resolve, model.name, model.version, model.alias)

    async def _add_variant(
        self, deployment: Deployment, model: ModelRef, version: str, now: datetime
    ) -> DeploymentVariant:
        taken = {v.name for v in await self.variants(deployment)}
        name, n = f"v{version}", 1
        while name in taken:
            n += 1
            name = f"v{version}-{n}"
        variant = DeploymentVariant(
            deployment_id=deployment.id,
            name=name,
            model_name=model.name,
            model_version=version,
            requested_as=model.requested_as,
            weight=0.0,
            status=VariantStatus.LOADING.value,
            created_at=now,
        )
        self.session.add(variant)
        await self.session.flush()
        return variant

    def _event(
        self,
        deployment: Deployment,
        kind: str,
        reason: str,
        actor: str,
        weights: dict[str, float],
        detail: dict[str, Any],
    ) -> None:
        self.session.add(
            DeploymentEvent(
                deployment_id=deployment.id,
                kind=kind,
                reason=reason,
                actor=actor,
                weights=weights,
                detail=detail,
                created_at=datetime.now(UTC),
            )
        )
        record_weights(deployment.name, weights)
        if actor == CONTROLLER:
            self.decisions.append((deployment.name, kind, reason))


def primary_variant(live: list[DeploymentVariant]) -> DeploymentVariant | None:
    """The variant with the most traffic (the stable one during a rollout)."""
    serving = [v for v in live if v.status == VariantStatus.READY and v.weight > 0]
    return max(serving, key=lambda v: v.weight, default=None)


def _weights(live: list[DeploymentVariant]) -> dict[str, float]:
    return {
        v.name: v.weight for v in live if v.status in (VariantStatus.READY, VariantStatus.STANDBY)
    }
