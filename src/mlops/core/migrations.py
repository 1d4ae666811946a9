"""Alembic migrations run programmatically, unchanged on SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from mlops.core.database import Database

# A fixed key for pg_advisory_lock: replicas starting together migrate one at a time.
_MIGRATION_LOCK_KEY = 0x6D6C6F7073_01


def migrations_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    source_tree = Path(__file__).resolve().parents[3] / "migrations"
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError("the Alembic migrations folder is missing from this installation")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", migrations_dir().as_posix())
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_database(database: Database, revision: str = "head") -> None:
    async with database.engine.connect() as connection:
        if database.dialect == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        try:
            await connection.run_sync(_upgrade, revision)
            await connection.commit()
        finally:
            if database.dialect == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
                await connection.commit()


async def current_revision(database: Database) -> str | None:
    async with database.engine.connect() as connection:
        return await connection.run_sync(_current)
