"""The ``deploy`` step type: a model version (or alias) onto a deployment under a strategy.

The step writes the rollout into the service's database as an API call would (creating the
deployment if it does not exist), then, with ``wait``, follows it: the service's deployment
controller loads, smoke-tests and rolls the version out, and the step succeeds once the version
serves all traffic (an A/B test: once its split is live) and fails if it was rolled back. It
reaches the database through the step environment (``MLOPS_DATA_DIR``, ``MLOPS_DATABASE_URL``),
never through its parameters.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.deployments.schemas import (
    DEPLOYMENT_NAME_PATTERN,
    DeploymentCreate,
    DeploymentUpdate,
    ModelRef,
    Strategy,
    StrategySettings,
)
from mlops.features.schemas import NAME_PATTERN
from mlops.steps.framework import StepContext, StepError, StepType, register_step_type
from mlops.training.spec import MODEL_NAME_PATTERN

POLL_SECONDS = 0.5


class DeployParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(pattern=DEPLOYMENT_NAME_PATTERN, max_length=63)
    model_name: str = Field(pattern=MODEL_NAME_PATTERN, max_length=128)
    version: str | None = Field(default=None, description="e.g. {{ steps.register.outputs...}}")
    alias: str | None = None
    strategy: Strategy | None = Field(
        default=None, description="Default: the deployment's (direct for a new one)."
    )
    settings: StrategySettings | None = None
    feature_service: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="For a deployment the step creates: complete each request's rows from "
        "this feature service's online values.",
    )
    wait: bool = Field(default=True, description="Succeed only once the version serves.")
    wait_seconds: float = Field(default=1800, gt=0)

    @model_validator(mode="after")
    def _one_of_version_and_alias(self) -> DeployParams:
        if (self.version is None) == (self.alias is None):
            raise ValueError("give exactly one of version and alias")
        return self

    @property
    def model(self) -> ModelRef:
        return ModelRef(name=self.model_name, version=self.version, alias=self.alias)


@register_step_type
class Deploy(StepType):
    name: ClassVar[str] = "deploy"
    Params: ClassVar[type[BaseModel]] = DeployParams
    outputs: ClassVar[tuple[str, ...]] = ("deployment", "variant", "model_version", "state")
    description: ClassVar[str] = (
        "Roll a registered model version or alias out on a deployment (created if missing) under "
        "its strategy, and wait until it serves (or fail when it is rolled back)."
    )

    def run(self, context: StepContext, params: DeployParams) -> dict[str, Any]:
        return asyncio.run(_deploy(f"pipeline-run:{context.run_id}", params))


async def _deploy(actor: str, params: DeployParams) -> dict[str, Any]:
    from sqlalchemy import select

    from mlops.core.database import create_database
    from mlops.core.errors import DomainError
    from mlops.core.settings import Settings
    from mlops.deployments.models import Deployment
    from mlops.deployments.service import DeploymentService
    from mlops.deployments.serving import resolve_version

    settings = Settings()
    database = create_database(settings)
    uri = settings.effective_mlflow_uri
    try:
        async with database.sessionmaker() as session, session.begin():
            service = DeploymentService(
                session, lambda name, version, alias: resolve_version(uri, name, version, alias)
            )
            exists = await session.scalar(
                select(Deployment.id).where(Deployment.name == params.deployment)
            )
            try:
                if exists is None:
                    create = DeploymentCreate(
                        name=params.deployment,
                        model=params.model,
                        strategy=params.strategy or Strategy.DIRECT,
                        settings=params.settings or StrategySettings(),
                        feature_service=params.feature_service,
                    )
                    deployment = await service.create(create, actor)
                else:
                    await _check_same_feature_service(session, params)
                    update = DeploymentUpdate(
                        model=params.model, strategy=params.strategy, settings=params.settings
                    )
                    deployment = await service.roll_out(params.deployment, update, actor)
            except DomainError as exc:
                raise StepError(exc.detail) from None
            variant = max(await service.variants(deployment), key=lambda v: v.created_at)
            variant_name, version = variant.name, variant.model_version
        state = await _follow(database, params, variant_name) if params.wait else "rolling_out"
    finally:
        await database.dispose()
    return {
        "deployment": params.deployment,
        "variant": variant_name,
        "model_version": version,
        "state": state,
    }


async def _check_same_feature_service(session: Any, params: DeployParams) -> None:
    from sqlalchemy import select

    from mlops.deployments.models import Deployment

    current = await session.scalar(
        select(Deployment.feature_service).where(Deployment.name == params.deployment)
    )
    if params.feature_service is not None and current != params.feature_service:
        raise StepError(
            f"deployment {params.deployment!r} exists with feature service {current!r}; "
            f"it cannot change to {params.feature_service!r} in a roll-out"
        )


async def _follow(database: Any, params: DeployParams, variant_name: str) -> str:
    from mlops.deployments.service import DeploymentService

    deadline = time.monotonic() + params.wait_seconds
    while True:
        async with database.sessionmaker() as session:
            service = DeploymentService(session)
            deployment = await service.get(params.deployment)
            variants = {v.name: v for v in await service.variants(deployment)}
        variant = variants[variant_name]
        rollout = deployment.rollout or {}
        if rollout.get("strategy") == Strategy.AB_TEST and int(rollout.get("step", -1)) >= 0:
            return "ab_test"
        if deployment.rollout is None and deployment.state != "deploying":
            if variant.status == "ready" and variant.weight == 100:
                return str(deployment.state)
            raise StepError(f"{variant_name} was not deployed ({variant.status}): {variant.detail}")
        if time.monotonic() > deadline:
            raise StepError(f"{params.deployment} still rolling out after {params.wait_seconds} s")
        await asyncio.sleep(POLL_SECONDS)
