"""Electing the one process that runs background loops.

On Postgres a session-level advisory lock, held on a dedicated connection for as long as the
process leads; if that process dies, the connection closes and another replica takes over.
The embedded default (SQLite) is one process, which always leads.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mlops.core.database import Database

BACKGROUND_LOOPS_LOCK = 0x6D6C6F7073_10


class Leadership:
    def __init__(self, database: Database, key: int = BACKGROUND_LOOPS_LOCK) -> None:
        self.database = database
        self.key = key
        self._connection: AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        if self.database.dialect != "postgresql":
            return True
        if self._connection is not None:
            return True
        connection = await self.database.engine.connect()
        try:
            acquired = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            )
            await connection.commit()
        except BaseException:
            # Cancelled (or failed) after the server may have granted the lock: end the session,
            # which drops the lock, rather than leaving it held by a connection nobody owns.
            await asyncio.shield(_discard(connection))
            raise
        if acquired:
            self._connection = connection
            return True
        await connection.close()
        return False

    async def wait(self, retry_seconds: float = 5.0) -> None:
        while not await self.try_acquire():  # noqa: ASYNC110 - polling a lock held elsewhere
            await asyncio.sleep(retry_seconds)

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            await connection.commit()
            await connection.close()
        except Exception:
            # Closing the DBAPI connection for good ends the session, and its locks with it.
            await _discard(connection)


async def _discard(connection: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()
