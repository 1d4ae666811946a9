"""Run and step statuses, which of them are final, and what cancelling a run does to steps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops.pipelines.models import StepRun


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    CACHED = "cached"


FINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
FINAL_STEP = frozenset(
    {
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.CANCELLED,
        StepStatus.SKIPPED,
        StepStatus.CACHED,
    }
)
DONE_STEP = frozenset({StepStatus.SUCCEEDED, StepStatus.CACHED})


def settle_cancelled(steps: list[StepRun], now: datetime) -> None:
    """A cancelled run's running steps are cancelled and its pending steps skipped."""
    for step in steps:
        if step.status == StepStatus.RUNNING:
            step.status = StepStatus.CANCELLED
        elif step.status == StepStatus.PENDING:
            step.status = StepStatus.SKIPPED
        else:
            continue
        step.finished_at, step.error = now, "run cancelled"
