"""Liveness, readiness and the Prometheus endpoint: the routes that need no credentials."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from mlops import __version__
from mlops.core.database import Database
from mlops.observability.metrics import metrics_endpoint
from mlops.security.ratelimit import RateLimiter

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class ComponentState(BaseModel):
    status: Literal["ok", "down", "degraded"]
    required: bool
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    components: dict[str, ComponentState]


@router.get("/health", summary="Liveness: the process answers", response_model=Health)
async def health() -> Health:
    return Health(status="ok", version=__version__)


async def _check_database(database: Database) -> ComponentState:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return ComponentState(status="down", required=True, detail=type(exc).__name__)
    return ComponentState(status="ok", required=True, detail=database.dialect)


async def _check_rate_limit_store(limiter: RateLimiter) -> ComponentState:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            healthy = await limiter.check_storage()
    except TimeoutError:
        healthy = False
    if healthy:
        return ComponentState(status="ok", required=not limiter.fail_open, detail="redis")
    if limiter.fail_open:
        return ComponentState(
            status="degraded",
            required=False,
            detail="Redis unreachable; rate limits are not enforced (fail open)",
        )
    return ComponentState(
        status="down", required=True, detail="Redis unreachable; requests are refused (fail closed)"
    )


def _check_deployments(loaded: bool, warm: bool) -> ComponentState:
    if not loaded:
        detail = "loading the models of existing deployments"
    elif not warm:
        detail = "importing the serving stack (MLflow, scikit-learn) and opening the registry"
    else:
        return ComponentState(status="ok", required=True, detail="deployed models loaded")
    return ComponentState(status="down", required=True, detail=detail)


@router.get(
    "/ready",
    summary="Readiness: the database (and Redis) answer, deployed models are loaded",
    description=(
        "503 until the database (and Redis, where rate limits are shared) answer, the models of "
        "existing deployments are loaded and the serving stack is imported (seconds at start-up)."
    ),
    response_model=Readiness,
    responses={503: {"description": "A required component is down", "model": Readiness}},
)
async def ready(request: Request) -> Any:
    state = request.app.state
    components = {"database": await _check_database(state.database)}
    limiter: RateLimiter | None = state.rate_limiter
    if limiter is not None and limiter.shared:
        components["redis"] = await _check_rate_limit_store(limiter)
    deployments = getattr(state, "deployments", None)
    if deployments is not None:
        components["deployments"] = _check_deployments(
            deployments.ready.is_set(), deployments.warm.is_set()
        )
    if any(c.status == "down" and c.required for c in components.values()):
        overall: Literal["ready", "degraded", "unavailable"] = "unavailable"
    elif any(c.status != "ok" for c in components.values()):
        overall = "degraded"
    else:
        overall = "ready"
    body = Readiness(status=overall, components=components)
    return JSONResponse(body.model_dump(), status_code=503 if overall == "unavailable" else 200)


router.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
