"""The local backend: a bounded pool of long-lived worker processes on this machine.

Each worker runs ``python -m mlops.steps worker``: it imports the step library once and takes
step after step over a JSON-lines pipe. A timed-out or cancelled attempt kills its worker; a
crashed one is noticed at end of file. Either way a fresh worker takes the slot, so the
service never goes down with a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any, ClassVar

from mlops.backends.base import BackendHealth, ResultSink, StepResult, StepTask
from mlops.core.tasks import stop_tasks

logger = logging.getLogger("mlops.backends.local")
_LINE_LIMIT = 64 * 1024 * 1024  # one result line may carry large outputs


class _Slot:
    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.task_id: str | None = None


class LocalBackend:
    name: ClassVar[str] = "local"

    def __init__(self, *, sink: ResultSink, settings: Any) -> None:
        self.sink = sink
        self.size = int(settings.local_workers)
        self.environment = {**os.environ, **settings.step_environment()}
        self.queue: asyncio.Queue[StepTask] = asyncio.Queue()
        self.slots = [_Slot() for _ in range(self.size)]
        self.cancelled: set[str] = set()
        self.runners: list[asyncio.Task[None]] = []

    @classmethod
    async def check_health(cls, settings: Any) -> BackendHealth:
        return BackendHealth(
            ok=True, detail=f"{settings.local_workers} worker processes on the service's machine"
        )

    async def start(self) -> None:
        for slot in self.slots:
            slot.process = await self._spawn()
        self.runners = [asyncio.create_task(self._serve(slot)) for slot in self.slots]

    async def close(self) -> None:
        await stop_tasks(*self.runners)
        for slot in self.slots:
            await self._stop(slot)

    async def launch(self, task: StepTask) -> None:
        self.queue.put_nowait(task)

    async def cancel(self, task_id: str) -> None:
        self.cancelled.add(task_id)
        for slot in self.slots:
            if slot.task_id == task_id:
                await self._kill(slot)

    def queue_depth(self) -> int:
        return self.queue.qsize()

    def free_slots(self) -> int:
        busy = sum(1 for slot in self.slots if slot.task_id is not None)
        return max(0, self.size - busy - self.queue.qsize())

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mlops.steps",
            "worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
            env=self.environment,
        )

    async def _kill(self, slot: _Slot) -> None:
        process = slot.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _stop(self, slot: _Slot) -> None:
        process = slot.process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(2):
                await process.wait()
        except TimeoutError:
            await self._kill(slot)

    async def _serve(self, slot: _Slot) -> None:
        while True:
            task = await self.queue.get()
            if task.task_id in self.cancelled:
                self.cancelled.discard(task.task_id)
                continue
            slot.task_id = task.task_id  # busy from the moment it leaves the queue
            try:
                result = await self._run(slot, task)
            except Exception as exc:  # never lose a slot: report the attempt as failed
                logger.exception("local worker failed on %s", task.task_id)
                await self._kill(slot)
                result = StepResult(task.task_id, ok=False, error=repr(exc), reason="backend")
            if task.task_id in self.cancelled:
                self.cancelled.discard(task.task_id)
                continue
            try:
                await self.sink(result)
            except Exception:
                logger.exception("could not record the result of %s", task.task_id)

    async def _run(self, slot: _Slot, task: StepTask) -> StepResult:
        if slot.process is None or slot.process.returncode is not None:
            slot.process = await self._spawn()
        process = slot.process
        assert process.stdin is not None and process.stdout is not None
        slot.task_id = task.task_id
        started = time.monotonic()
        try:
            process.stdin.write(json.dumps(task.worker_message()).encode() + b"\n")
            await process.stdin.drain()
            async with asyncio.timeout(task.timeout_seconds):
                line = await process.stdout.readline()
        except TimeoutError:
            await self._kill(slot)
            return StepResult(
                task.task_id,
                ok=False,
                error=f"timed out after {task.timeout_seconds:g} s; the step's process was killed",
                reason="timeout",
                duration_seconds=time.monotonic() - started,
            )
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        finally:
            slot.task_id = None
        if not line:
            code = await process.wait()
            return StepResult(
                task.task_id,
                ok=False,
                error=f"the step's process died (exit code {code})",
                reason="crashed",
                duration_seconds=time.monotonic() - started,
            )
        message = json.loads(line)
        return StepResult(
            task_id=task.task_id,
            ok=bool(message.get("ok")),
            outputs=message.get("outputs") or {},
            digests=message.get("digests") or {},
            error=message.get("error"),
            reason=None if message.get("ok") else message.get("error_type") or "step_error",
            duration_seconds=float(message.get("duration_seconds") or 0.0),
        )
