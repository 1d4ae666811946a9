"""Commands that work straight on the service database (no running service needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mlops.core.database import Database, create_database
from mlops.core.migrations import upgrade_database
from mlops.core.settings import Settings
from mlops.security.service import IdentityService

T = TypeVar("T")


def on_database(work: Callable[[Database, Settings], Awaitable[T]], *, migrate: bool = True) -> T:
    """Run ``work`` against the configured database, migrated first unless told otherwise."""

    async def run() -> T:
        from mlops.cli.main import checked_settings

        settings = checked_settings()
        database = create_database(settings)
        try:
            if migrate and settings.auto_migrate:
                await upgrade_database(database)
            return await work(database, settings)
        finally:
            await database.dispose()

    return asyncio.run(run())


def in_identity_transaction(work: Callable[[IdentityService], Awaitable[T]]) -> T:
    """Run ``work`` with an identity service inside one committed transaction."""

    async def run(database: Database, settings: Settings) -> T:
        async with database.sessionmaker() as session, session.begin():
            return await work(IdentityService(session, settings))

    return on_database(run)
