"""The two apps the API-overhead benchmark serves, and the uvicorn launcher it starts them with.

``full``: ``mlops.app.create_app`` exactly as production builds it (auth, rate limits, audit,
metrics and JSON access logs). ``bare``: the same router and endpoint functions on a plain
``FastAPI()`` with no middleware, no rate limiter, no audit log, and an admin principal in place
of ``get_principal``.

The principal is swapped into each route's dependency tree once, at start-up, rather than
through ``app.dependency_overrides``: with any override registered, FastAPI rebuilds every
route's whole dependency tree on every request (signatures, pydantic fields), which would make
the baseline slower than the real endpoint and flatter the full stack.

``Server`` starts one of them as ``python -m bench.api_apps {full,bare} PORT CPU`` with the
settings as JSON in ``BENCH_APP_SETTINGS``; the server pins itself to CPU (``-1``: no pinning).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import uvicorn
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute

from bench.common import ROOT, stop_process
from bench.http_load import build_request
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


async def admin_principal() -> Principal:
    return ADMIN


def _inject_admin(dependant: Dependant) -> None:
    """Replace every ``get_principal`` in the tree by ``admin_principal``, in place."""
    for index, sub in enumerate(dependant.dependencies):
        if sub.call is get_principal:
            dependant.dependencies[index] = get_dependant(
                path=sub.path or "", call=admin_principal, name=sub.name, scope=sub.scope
            )
        else:
            _inject_admin(sub)


def bare_app() -> FastAPI:
    app = FastAPI(lifespan=_bare_lifespan)
    app.state.settings = bench_settings()  # SettingsDep
    # Added route by route (not include_router) so that each APIRoute owns the dependency tree
    # its request handler runs, which _inject_admin then edits.
    for route in auth_router.routes:
        if isinstance(route, APIRoute):
            app.add_api_route(
                route.path,
                route.endpoint,
                methods=sorted(route.methods or ()),
                response_model=route.response_model,
                status_code=route.status_code,
                name=route.name,
            )
    for route in app.routes:
        if isinstance(route, APIRoute):
            _inject_admin(route.dependant)
    return app


FACTORIES = {"full": full_app, "bare": bare_app}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Server:
    """One app under uvicorn in a subprocess, its output appended to ``log_path``."""

    def __init__(self, variant: str, settings: dict[str, Any], log_path: Path, cpu: int) -> None:
        self.variant = variant
        self.settings = settings
        self.log_path = log_path
        self.cpu = cpu
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> Server:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        env[SETTINGS_ENV] = json.dumps(self.settings)
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "bench.api_apps", self.variant, str(self.port)]
        self._process = subprocess.Popen(
            [*command, str(self.cpu)], cwd=ROOT, env=env, stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {self.variant} server did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def request(self, path: str, headers: dict[str, str]) -> bytes:
        return build_request(path, port=self.port, headers=headers)


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
