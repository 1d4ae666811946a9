"""Stopping asyncio tasks for certain.

On Python 3.11 a cancellation can be lost: ``asyncio.wait_for`` returns its inner result when
that result arrives at the same moment as the cancellation (fixed in 3.12). A loop that loses
one goes on, and whoever awaits it after cancelling waits for ever. Loops here wait with
``asyncio.timeout`` instead, and whoever stops them cancels until they have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_SECONDS = 1.0


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again any that is
    still running after a second. Their exceptions are consumed (the caller is stopping)."""
    given = [task for task in tasks if task is not None]
    pending = {task for task in given if not task.done()}
    while pending:
        for running in pending:
            running.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
    for ended in given:
        if not ended.cancelled():
            with contextlib.suppress(Exception):
                ended.exception()
