"""Electing the one process that runs background loops.

On Postgres a session-level advisory lock, held on a dedicated connection for as long as the
process leads; if that process dies, the connection closes and another replica takes over.
The embedded default (SQLite) is one process, which always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mlops.core.database import Database
from mlops.core.tasks import stop_tasks

logger = logging.getLogger("mlops")

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


class ElectedLoop:
    """Runs ``work`` every ``interval_seconds`` in the one process holding the advisory lock
    ``key`` (every process on SQLite). A pass that fails is logged and tried again next time;
    the lock's database being unreachable only skips the pass."""

    def __init__(
        self,
        database: Database,
        key: int,
        interval_seconds: float,
        work: Callable[[], Awaitable[object]],
        name: str,
    ) -> None:
        self.leadership = Leadership(database, key)
        self.interval_seconds = interval_seconds
        self.work = work
        self.name = name
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Run the next pass now rather than after the interval."""
        self._wake.set()

    async def stop(self) -> None:
        try:
            await stop_tasks(self.task)
        finally:
            await self.leadership.release()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                if await self.leadership.try_acquire():
                    try:
                        await self.work()
                    except Exception:
                        logger.exception("%s failed; retrying", self.name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_seconds):
                    await self._wake.wait()
            self._wake.clear()
