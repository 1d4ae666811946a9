"""Stopping a task that loses its cancellation (as ``asyncio.wait_for`` can on Python 3.11)."""

from __future__ import annotations

import asyncio

from mlops.core.tasks import stop_tasks


async def test_a_task_that_swallows_one_cancellation_is_cancelled_again() -> None:
    swallowed = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # lost, as wait_for loses one on 3.11

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await stop_tasks(task, None)
    assert task.cancelled() and swallowed == [True]


async def test_ended_tasks_and_their_errors_are_fine() -> None:
    async def boom() -> None:
        raise RuntimeError("ended badly")

    failed = asyncio.create_task(boom())
    await asyncio.sleep(0)
    await stop_tasks(failed)  # no exception, none left unretrieved
    assert failed.done()
