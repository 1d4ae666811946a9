"""The application factory: wiring only. Domains come from `mlops.domains`."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import IntegrityError

from mlops import __version__
from mlops.core.database import Database, create_database
from mlops.core.errors import install_error_handlers
from mlops.core.migrations import upgrade_database
from mlops.core.openapi import build_openapi
from mlops.core.settings import Settings, get_settings
from mlops.deployments.manager import DeploymentManager
from mlops.deployments.targets import InProcessTarget
from mlops.domains import attach_to_engine, domain_routers, domain_tags, hot_routers
from mlops.features.schedule import FeatureSchedule
from mlops.features.service import open_stores, resolve_feature_service
from mlops.features.serving import OnlineFeatures
from mlops.monitoring.alerting.evaluator import AlertEvaluator
from mlops.monitoring.drift_schedule import DriftScheduler
from mlops.monitoring.prediction_log import PredictionLog
from mlops.monitoring.quality_export import QualityExport
from mlops.observability.health import router as health_router
from mlops.observability.logging import configure_logging
from mlops.observability.middleware import ObservabilityMiddleware
from mlops.pipelines.engine import PipelineEngine
from mlops.retraining.controller import RetrainingController
from mlops.security.audit import AuditLog, AuditMiddleware
from mlops.security.auth import Authenticator
from mlops.security.ratelimit import RateLimiter
from mlops.security.service import IdentityService

logger = logging.getLogger("mlops")

DESCRIPTION = """
A self-hosted control plane for the machine-learning lifecycle.

Authenticate with an `X-API-Key` header or an OAuth2 bearer token from
`POST /api/v1/auth/token`. Every error is `application/problem+json` (RFC 9457).
"""

HEALTH_TAGS = [{"name": "health", "description": "Liveness and readiness probes."}]


async def _sync_bootstrap_key(database: Database, settings: Settings) -> None:
    key = settings.bootstrap_admin_key.get_secret_value() if settings.bootstrap_admin_key else None
    for attempt in range(2):  # replicas starting together may race to insert the row
        try:
            async with database.sessionmaker() as session, session.begin():
                await IdentityService(session, settings).sync_bootstrap_key(key)
            return
        except IntegrityError:
            if attempt:
                raise


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with _mlflow_client_environment(app.state.settings):
        async with _services(app):
            yield


@contextmanager
def _mlflow_client_environment(settings: Settings) -> Iterator[None]:
    """MLflow's client reads its timeout and retries from the environment: the settings' for
    the app's lifetime (tests run apps with different settings in one process)."""
    wanted = settings.mlflow_client_environment()
    before = {variable: os.environ.get(variable) for variable in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for variable, value in before.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


@asynccontextmanager
async def _services(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    database = create_database(settings)
    if settings.auto_migrate:
        await upgrade_database(database)
    await _sync_bootstrap_key(database, settings)
    limiter = RateLimiter.from_settings(settings) if settings.rate_limit_enabled else None
    app.state.database = database
    app.state.rate_limiter = limiter
    app.state.authenticator = Authenticator(database, settings)
    app.state.audit_log = AuditLog(database)
    engine = PipelineEngine(database, settings)
    app.state.pipeline_engine = engine
    attach_to_engine(engine, settings)
    await engine.start()
    deployments = DeploymentManager(
        database, InProcessTarget(settings.effective_mlflow_uri), app.state.audit_log
    )
    app.state.deployments = deployments
    prediction_log = None
    if settings.prediction_log_enabled:
        prediction_log = PredictionLog(database, settings.prediction_log_retention_days)
        deployments.runtime.on_served = prediction_log.record
        await prediction_log.start()
    app.state.prediction_log = prediction_log
    drift_checks = DriftScheduler(database, settings.drift_max_window_rows)
    app.state.drift_checks = drift_checks
    alert_evaluator = AlertEvaluator(database, settings.alert_evaluation_seconds)
    app.state.alert_evaluator = alert_evaluator
    quality_export = QualityExport(database, settings.quality_refresh_seconds)
    app.state.quality_export = quality_export
    feature_stores = open_stores(settings)
    app.state.feature_stores = feature_stores
    app.state.online_features = OnlineFeatures(
        feature_stores.online,
        partial(resolve_feature_service, database),
        settings.feature_definitions_cache_seconds,
    )
    deployments.runtime.enrich = app.state.online_features.enrich
    feature_schedule = FeatureSchedule(database, feature_stores, settings.feature_schedule_seconds)
    app.state.feature_schedule = feature_schedule
    retraining = RetrainingController(
        database, settings, app.state.audit_log, engine=engine, deployments=deployments
    )
    app.state.retraining = retraining
    alert_evaluator.on_firing = retraining.wake
    await deployments.start()
    await drift_checks.start()
    await alert_evaluator.start()
    await quality_export.start()
    await feature_schedule.start()
    await retraining.start()
    logger.info(
        "service started",
        extra={
            "env": settings.env.value,
            "database": database.dialect,
            "rate_limits": "redis" if limiter and limiter.shared else "in-process",
        },
    )
    try:
        yield
    finally:
        await retraining.stop()
        await feature_schedule.stop()
        await quality_export.stop()
        await alert_evaluator.stop()
        await drift_checks.stop()
        await deployments.stop()
        if prediction_log is not None:
            await prediction_log.stop()  # writes what is buffered
        await engine.stop()
        await feature_stores.online.close()
        await database.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, json_format=settings.log_json)
    app = FastAPIOffline(
        title="MLOps control plane",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=domain_tags() + HEALTH_TAGS,
        lifespan=lifespan,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    app.state.settings = settings
    install_error_handlers(app)
    for router in [*hot_routers(), health_router, *domain_routers()]:
        app.include_router(router)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(ObservabilityMiddleware, max_request_bytes=settings.max_request_bytes)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app
