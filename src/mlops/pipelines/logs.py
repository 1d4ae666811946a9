"""Reading a step attempt's log file: its tail, or followed while the step runs."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from mlops.core.database import Database
from mlops.pipelines.models import StepRun
from mlops.pipelines.states import FINAL_STEP, StepStatus

FOLLOW_POLL_SECONDS = 0.25


def step_log_path(data_dir: Path, run_id: uuid.UUID | str, step: str, attempt: int) -> Path:
    """Where the log of one step attempt is written (by the backend) and read (by the API)."""
    return Path(data_dir) / "logs" / str(run_id) / f"{step}.{attempt}.log"


def read_log(path: Path, tail: int) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=tail))
    except FileNotFoundError:
        return ""


async def follow_log(
    path: Path, tail: int, database: Database, step_id: uuid.UUID, attempt: int
) -> AsyncIterator[str]:
    """The tail, then new lines as they are written, until the attempt is over."""
    yield read_log(path, tail)
    offset = _size(path)
    while True:
        finished = await _attempt_over(database, step_id, attempt)
        chunk = _read_from(path, offset)
        offset += len(chunk)
        if chunk:
            yield chunk.decode("utf-8", errors="replace")
        if finished:
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


async def _attempt_over(database: Database, step_id: uuid.UUID, attempt: int) -> bool:
    async with database.sessionmaker() as session:
        step = await session.get(StepRun, step_id)
    if step is None or step.attempts > attempt:
        return True
    if step.attempts < attempt:  # not started yet: wait, unless the step is already over
        return step.status in FINAL_STEP
    return step.status != StepStatus.RUNNING
