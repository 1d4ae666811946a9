"""The two apps the API-overhead benchmark serves, and the uvicorn launcher it starts them with.

``full``: ``mlops.app.create_app`` exactly as production builds it (auth, rate limits, audit,
metrics and JSON access logs). ``bare``: the same routers' endpoint functions on a plain
``FastAPI()`` with no middleware, the principal injected by a dependency override, no rate
limiter and no audit log.

Run as ``python -m bench.api_apps {full,bare} PORT CPU`` with the settings as JSON in
``BENCH_APP_SETTINGS``; the server pins itself to CPU (``-1``: no pinning).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from mlops.app import create_app
from mlops.core.database import create_database
from mlops.core.migrations import upgrade_database
from mlops.core.settings import Settings
from mlops.security.api import auth_router
from mlops.security.auth import Authenticator, get_principal
from mlops.security.permissions import Role
from mlops.security.principal import Principal

SETTINGS_ENV = "BENCH_APP_SETTINGS"
ADMIN = Principal.of("bench-admin", "api_key", Role.ADMIN)


def bench_settings() -> Settings:
    values: dict[str, Any] = json.loads(os.environ[SETTINGS_ENV])
    return Settings(**values)


def full_app() -> FastAPI:
    return create_app(bench_settings())


@asynccontextmanager
async def _bare_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    database = create_database(settings)
    await upgrade_database(database)
    app.state.database = database  # SessionDep
    app.state.rate_limiter = None
    app.state.authenticator = Authenticator(database, settings)
    app.state.audit_log = None
    try:
        yield
    finally:
        await database.dispose()


def bare_app() -> FastAPI:
    app = FastAPI(lifespan=_bare_lifespan)
    app.state.settings = bench_settings()  # SettingsDep
    app.include_router(auth_router)
    app.dependency_overrides[get_principal] = lambda: ADMIN
    return app


FACTORIES = {"full": full_app, "bare": bare_app}


def serve(variant: str, port: int, cpu: int) -> None:
    """Serve one app the way ``mlops serve`` does: one worker, no uvicorn access log."""
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    uvicorn.run(
        f"bench.api_apps:{FACTORIES[variant].__name__}",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
