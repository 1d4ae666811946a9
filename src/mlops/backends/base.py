"""The orchestrator interfaces backends implement: one per step attempt, or one per run.

Step-level backends (``OrchestratorBackend``: local worker processes, Kubernetes Jobs): the
service's DAG engine decides which step is ready, resolves its parameters and checks the cache;
the backend runs one step attempt somewhere and reports its result.

Whole-run backends (``RunOrchestrator``: Airflow, Kubeflow Pipelines, Vertex AI) schedule the
steps themselves: the engine submits the run's plan and copies back what they report.

Every backend runs the same step code, ``python -m mlops.steps`` or a thin adapter over it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

# Optional capabilities of a backend.
LOGS = "logs"  # each step attempt's log can be read
CACHE = "cache"  # steps can be completed from the cache (only where the engine launches steps)


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


# --------------------------------------------------------------------------- whole-run backends
#
# Airflow, Kubeflow Pipelines and Vertex AI schedule a pipeline's steps themselves: the service
# hands them the whole run (its plan) and reconciles what they report. The engine still owns the
# run's record: states, attempts, durations, outputs and logs are copied back into it.


@dataclass(frozen=True)
class PlanStep:
    name: str
    type: str
    params: dict[str, Any]  # still templated: the backend's task resolves them
    depends_on: list[str]
    retries: int
    backoff_seconds: float
    max_backoff_seconds: float
    timeout_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "params": self.params,
            "depends_on": self.depends_on,
            "retries": self.retries,
            "retry_delay_seconds": self.backoff_seconds,
            "max_retry_delay_seconds": self.max_backoff_seconds,
            "timeout_seconds": self.timeout_seconds,
        }


@dataclass(frozen=True)
class RunPlan:
    """One run of one pipeline version, as a whole-run backend receives it."""

    run_id: str
    pipeline: str
    version: int
    description: str
    params: dict[str, Any]  # the run's, resolved by the service
    steps: list[PlanStep]
    artifact_root: str

    def conf(self) -> dict[str, Any]:
        """What every task of the run needs besides its own step."""
        return {"run_id": self.run_id, "params": self.params, "artifact_root": self.artifact_root}


@dataclass(frozen=True)
class StepObservation:
    """A step as the backend sees it. ``status`` is one of the service's step statuses
    (``pending``, ``running``, ``succeeded``, ``failed``, ``skipped``, ``cancelled``)."""

    status: str
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class RunObservation:
    """``status`` is one of ``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``."""

    status: str
    steps: dict[str, StepObservation]
    error: str | None = None


class BackendUnavailable(Exception):
    """The backend could not be asked. ``transient``: worth asking again (unreachable, 5xx,
    the DAG not parsed yet); otherwise the run fails with this message as its reason."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class RunOrchestrator(Protocol):
    """A backend that runs whole pipeline runs. Every call may raise ``BackendUnavailable``."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]  # optional capabilities: LOGS

    @classmethod
    async def check_health(cls, settings: Any) -> BackendHealth:
        """Whether runs can be submitted now, from the configuration alone."""

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Release clients; runs submitted go on remotely and are reconciled after a restart."""

    async def submit(self, plan: RunPlan) -> str:
        """Start ``plan`` and return the backend's id for it. Idempotent per ``plan.run_id``:
        submitting again (after a crash between submit and commit) adopts the first one."""

    async def observe(self, external_id: str, plan: RunPlan) -> RunObservation: ...

    async def cancel(self, external_id: str) -> None:
        """Stop the run and its running tasks; a run already over is left alone."""

    async def step_log(self, external_id: str, step: str, attempt: int) -> str:
        """The log of one attempt (only with the ``LOGS`` capability)."""
