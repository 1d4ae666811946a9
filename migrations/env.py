"""Alembic environment: runs on the connection the service hands over, or its own engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from mlops.core.database import Base, create_database
from mlops.core.settings import get_settings
from mlops.domains import import_all_models

import_all_models()
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    database = create_database(get_settings())
    try:
        async with database.engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await database.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `mlops db upgrade`")

shared_connection = context.config.attributes.get("connection")
if shared_connection is not None:
    _run(shared_connection)
else:
    asyncio.run(_run_with_own_engine())
