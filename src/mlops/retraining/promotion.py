"""How a retraining's rollout ends: rolled back by the deployment's analysis (or a person), or
promoted — ``champion`` moves to the challenger, ``previous-champion`` keeps the old version for
a rollback, and a deployment with a drift reference gets a new one from the window the champion
learned (else the old reference keeps reporting the drift this retraining answered)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from mlops.core.errors import DomainError
from mlops.deployments.models import Deployment, DeploymentEvent, DeploymentVariant
from mlops.deployments.schemas import VariantStatus
from mlops.monitoring.drift_service import DriftService
from mlops.monitoring.models import DriftReference
from mlops.monitoring.schemas import ReferenceIn
from mlops.retraining.models import RetrainingEvent
from mlops.retraining.policies import actor_of
from mlops.retraining.schemas import EventStatus
from mlops.retraining.service import RetrainingService
from mlops.training.registry import Registry

CHALLENGER, CHAMPION, PREVIOUS_CHAMPION = "challenger", "champion", "previous-champion"


async def settle_rollout(
    service: RetrainingService, registry: Registry, event: RetrainingEvent
) -> None:
    """The event's outcome once its rollout has ended; nothing while it goes on."""
    session = service.session
    deployment = await session.scalar(select(Deployment).where(Deployment.name == event.deployment))
    variant = (
        await session.scalar(
            select(DeploymentVariant).where(
                DeploymentVariant.deployment_id == deployment.id,
                DeploymentVariant.name == event.rollout_variant,
            )
        )
        if deployment is not None
        else None
    )
    if deployment is None or variant is None:
        await service.finish(event, EventStatus.FAILED, "the deployment is gone")
    elif variant.status in (VariantStatus.RETIRED, VariantStatus.FAILED):
        why = await _last_rollback_reason(session, deployment)
        await service.finish(event, EventStatus.ROLLED_BACK, f"the rollout was rolled back: {why}")
    elif deployment.rollout is None and variant.weight >= 100.0:
        await _promote(service, registry, event, deployment)


async def _promote(
    service: RetrainingService, registry: Registry, event: RetrainingEvent, deployment: Deployment
) -> None:
    model, version = event.model_name, str(event.challenger_version)
    previous = await run_in_threadpool(registry.model, model)
    before = previous.aliases.get(CHAMPION) or event.champion_version
    if before and before != version:
        await run_in_threadpool(registry.set_alias, model, PREVIOUS_CHAMPION, before)
    await run_in_threadpool(registry.set_alias, model, CHAMPION, version)
    note = await _new_drift_reference(service, event, deployment)
    reason = (
        f"version {version} is the champion ('{CHAMPION}' moved from {before}; "
        f"'{PREVIOUS_CHAMPION}' keeps {before} for a rollback){note}"
    )
    await service.finish(event, EventStatus.PROMOTED, reason)


async def _new_drift_reference(
    service: RetrainingService, event: RetrainingEvent, deployment: Deployment
) -> str:
    session = service.session
    current = await session.scalar(
        select(DriftReference)
        .where(DriftReference.deployment_id == deployment.id)
        .order_by(DriftReference.created_at.desc())
        .limit(1)
    )
    if current is None:
        return ""
    body = ReferenceIn.model_validate(
        {
            "source": {"window": {"since": event.data_since, "until": event.data_until}},
            "settings": current.settings,
        }
    )
    drift = DriftService(session, service.settings.drift_max_window_rows)
    try:
        async with session.begin_nested():
            await drift.set_reference(deployment, body, actor_of(event.policy_name))
    except DomainError as exc:
        return f"; the drift reference stays: {exc}"
    return "; drift is now measured against the data window it learned"


async def _last_rollback_reason(session: AsyncSession, deployment: Deployment) -> str:
    reason = await session.scalar(
        select(DeploymentEvent.reason)
        .where(
            DeploymentEvent.deployment_id == deployment.id,
            DeploymentEvent.kind.in_(("rolled_back", "variant_failed")),
        )
        .order_by(DeploymentEvent.created_at.desc())
        .limit(1)
    )
    return str(reason or "no reason recorded")
