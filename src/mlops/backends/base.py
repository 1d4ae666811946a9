"""The orchestrator interface every backend implements.

The service's DAG engine decides which step is ready, resolves its parameters and checks the
cache; a backend only runs one step attempt somewhere (a local worker process, a Kubernetes
Job, an Airflow task, a KFP or Vertex AI component) and reports its result. Every backend
runs the same entrypoint, ``python -m mlops.steps``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class StepTask:
    """One attempt of one step, with everything needed to run it anywhere."""

    task_id: str
    run_id: str
    step: str
    type: str
    attempt: int
    params: dict[str, Any]
    timeout_seconds: float
    artifact_root: str
    work_dir: str
    log_path: str

    def worker_message(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "type": self.type,
            "params": self.params,
            "run_id": self.run_id,
            "step": self.step,
            "attempt": self.attempt,
            "artifact_root": self.artifact_root,
            "work_dir": self.work_dir,
            "log_path": self.log_path,
        }


@dataclass(frozen=True)
class StepResult:
    task_id: str
    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None  # "timeout", "crashed", "step_error", ...
    duration_seconds: float = 0.0


ResultSink = Callable[[StepResult], Awaitable[None]]


@dataclass(frozen=True)
class BackendHealth:
    ok: bool
    detail: str


class OrchestratorBackend(Protocol):
    """Runs step attempts and reports each one's result to the sink it was built with."""

    name: ClassVar[str]

    @classmethod
    async def check_health(cls, settings: Any) -> BackendHealth:
        """Whether steps can run on this backend now, from its configuration alone."""

    async def start(self) -> None:
        """Acquire what the backend needs (worker processes, clients, credentials)."""

    async def close(self) -> None:
        """Stop running attempts and release everything; results of stopped attempts are
        not reported (the engine treats them as interrupted on the next start)."""

    async def launch(self, task: StepTask) -> None:
        """Accept ``task`` and return at once; its ``StepResult`` goes to the sink later."""

    async def cancel(self, task_id: str) -> None:
        """Stop ``task_id`` if queued or running; its result is never reported."""

    def queue_depth(self) -> int:
        """Accepted attempts that have not started yet."""

    def free_slots(self) -> int | None:
        """How many more attempts would start at once; None when the backend has no limit.

        The engine launches no more than this, so a step is only marked running when it
        really starts, and what waits for capacity stays pending in the database."""
