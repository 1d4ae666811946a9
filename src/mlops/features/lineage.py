"""A feature view's lineage: its source and versions, the feature services that take its
features, the training jobs that read them through ``features://``, the model versions trained
on them (MLflow tags ``mlops.feature_service`` and ``mlops.feature_views``, written by the
training run), and the deployments serving those versions or completing requests with one of
its services."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlops.deployments.models import Deployment, DeploymentVariant
from mlops.features.dataset import SCHEME
from mlops.features.registry import FeatureRegistry
from mlops.features.schemas import SourceSpec
from mlops.training.models import TrainingJob
from mlops.training.tracking import TAG_FEATURE_SERVICE, TAG_FEATURE_VIEWS

MAX_JOBS = 500


class LineageVersion(BaseModel):
    version: int
    source: SourceSpec | None
    rows: int
    created_at: datetime


class LineageService(BaseModel):
    name: str
    features: list[str] = Field(description="The features it takes from this view.")


class LineageJob(BaseModel):
    id: uuid.UUID
    feature_service: str
    dataset: str
    status: str
    model_name: str | None
    created_at: datetime


class LineageModelVersion(BaseModel):
    name: str
    version: str
    feature_service: str
    view_version: int | None = Field(description="The version of this view it was trained on.")
    run_id: str | None
    created_at: datetime | None


class LineageDeployment(BaseModel):
    name: str
    via: Literal["model_version", "feature_service"]
    model_name: str
    model_versions: list[str] = Field(description="Its variants' versions that use the view.")
    feature_service: str | None


class LineageOut(BaseModel):
    """Where a view's data comes from and everything downstream of it."""

    view: str
    versions: list[LineageVersion]
    feature_services: list[LineageService]
    training_jobs: list[LineageJob]
    model_versions: list[LineageModelVersion]
    deployments: list[LineageDeployment]


async def view_lineage(session: AsyncSession, tracking_uri: str, name: str) -> LineageOut:
    registry = FeatureRegistry(session)
    versions = await registry.view_versions(name)
    services = [
        LineageService(name=record.name, features=features)
        for record in await registry.services()
        for features in [_features_from(record.definition, name, versions[-1].definition)]
        if features
    ]
    service_names = [service.name for service in services]
    models = await asyncio.to_thread(_model_versions, tracking_uri, service_names, name)
    return LineageOut(
        view=name,
        versions=[
            LineageVersion(
                version=v.version,
                source=v.definition.get("source"),
                rows=v.rows,
                created_at=v.created_at,
            )
            for v in versions
        ],
        feature_services=services,
        training_jobs=await _jobs(session, service_names),
        model_versions=models,
        deployments=await _deployments(session, models, service_names),
    )


def _features_from(service: dict[str, Any], view: str, current: dict[str, Any]) -> list[str]:
    taken: list[str] = []
    for ref in service["features"]:
        if ref["view"] == view:
            taken += ref["features"] or [feature["name"] for feature in current["features"]]
    return taken


def _uses(dataset: str, services: list[str]) -> str | None:
    for service in services:
        if dataset.startswith(f"{SCHEME}{service}?"):
            return service
    return None


async def _jobs(session: AsyncSession, services: list[str]) -> list[LineageJob]:
    if not services:
        return []
    text = cast(TrainingJob.spec, String)
    query = (
        select(TrainingJob)
        .where(or_(*(text.contains(f"{SCHEME}{service}?") for service in services)))
        .order_by(TrainingJob.created_at.desc())
        .limit(MAX_JOBS)
    )
    jobs: list[LineageJob] = []
    for job in (await session.scalars(query)).all():
        service = _uses(job.spec.get("dataset", ""), services)
        if service is not None:  # the text search is a prefilter
            jobs.append(
                LineageJob(
                    id=job.id,
                    feature_service=service,
                    dataset=job.spec["dataset"],
                    status=job.run.status,
                    model_name=job.model_name,
                    created_at=job.created_at,
                )
            )
    return jobs


def _model_versions(tracking_uri: str, services: list[str], view: str) -> list[LineageModelVersion]:
    from mlops.training.registry import MAX_LISTED, Registry, _when

    registry = Registry(tracking_uri)
    found: list[LineageModelVersion] = []
    for service in services:
        versions = registry._call(
            lambda service=service: registry.client.search_model_versions(  # type: ignore[misc]
                f"tags.`{TAG_FEATURE_SERVICE}` = '{service}'", max_results=MAX_LISTED
            )
        )
        for version in versions:
            read = dict(
                item.rsplit(":", 1)
                for item in version.tags.get(TAG_FEATURE_VIEWS, "").split(",")
                if item
            )
            found.append(
                LineageModelVersion(
                    name=version.name,
                    version=str(version.version),
                    feature_service=service,
                    view_version=int(read[view]) if view in read else None,
                    run_id=version.run_id,
                    created_at=_when(version.creation_timestamp),
                )
            )
    return sorted(found, key=lambda v: (v.name, int(v.version)))


async def _deployments(
    session: AsyncSession, models: list[LineageModelVersion], services: list[str]
) -> list[LineageDeployment]:
    trained = {(m.name, m.version) for m in models}
    rows = (
        await session.execute(
            select(Deployment, DeploymentVariant)
            .join(DeploymentVariant, DeploymentVariant.deployment_id == Deployment.id)
            .where(DeploymentVariant.retired_at.is_(None))
            .order_by(Deployment.name, DeploymentVariant.name)
        )
    ).all()
    found: dict[str, LineageDeployment] = {}
    for deployment, variant in rows:
        uses_model = (variant.model_name, variant.model_version) in trained
        uses_service = deployment.feature_service in services
        if not (uses_model or uses_service):
            continue
        entry = found.setdefault(
            deployment.name,
            LineageDeployment(
                name=deployment.name,
                via="model_version" if uses_model else "feature_service",
                model_name=deployment.model_name,
                model_versions=[],
                feature_service=deployment.feature_service,
            ),
        )
        if uses_model and variant.model_version not in entry.model_versions:
            entry.model_versions.append(variant.model_version)
    return list(found.values())
