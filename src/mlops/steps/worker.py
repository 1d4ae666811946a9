"""The long-lived worker of the local backend: ``python -m mlops.steps worker``.

Protocol: one task per JSON line on stdin, one result per task as a JSON line on the protocol
channel (the process's original stdout, kept as a private descriptor), in order, until stdin
closes; then exit 0. Blank input lines are ignored. Task:

    {"task_id", "type", "params", "run_id", "step", "attempt", "artifact_root", "work_dir",
     "log_path"}

Result:

    {"task_id", "ok", "outputs", "digests", "error", "error_type", "duration_seconds"}

While a task runs, descriptors 1 and 2 point at ``log_path`` (appended), so whatever the step
prints, logs or has a child process print lands there and never on the protocol channel.
Between tasks they point at the worker's stderr; stdin is /dev/null for steps. A line that is not
a valid task gets an ``ok: false`` result with ``error_type`` ``ProtocolError``. A step that kills
the process (``os._exit``, a signal) leaves no result: the parent sees EOF.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import format_validation_error
from mlops.steps.runtime import Outcome, run_attempt

PRELOAD = ("pandas", "pyarrow.parquet", "joblib", "sklearn.compose", "sklearn.preprocessing")


class Task(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    run_id: str
    step: str
    attempt: int = Field(default=1, ge=1)
    artifact_root: str
    work_dir: str | None = None
    log_path: str | None = None


class Worker:
    def __init__(self, protocol: TextIO) -> None:
        self.protocol = protocol
        self._stores: dict[str, ArtifactStore] = {}

    def store(self, root: str) -> ArtifactStore:
        if root not in self._stores:
            self._stores[root] = ArtifactStore(root)
        return self._stores[root]

    def handle(self, line: str) -> dict[str, Any]:
        try:
            raw = json.loads(line)
        except ValueError as exc:
            return _result(
                None, Outcome(False, error=f"not JSON: {exc}", error_type="ProtocolError")
            )
        task_id = raw.get("task_id") if isinstance(raw, dict) else None
        try:
            task = Task.model_validate(raw)
        except ValidationError as exc:
            message = format_validation_error(exc).replace("invalid params", "invalid task", 1)
            return _result(task_id, Outcome(False, error=message, error_type="ProtocolError"))
        try:
            artifacts = self.store(task.artifact_root)
            log_fd = _open_log(task.log_path)
        except (OSError, ValueError) as exc:
            return _result(
                task.task_id, Outcome(False, error=str(exc), error_type=type(exc).__name__)
            )
        try:
            outcome = run_attempt(
                type_name=task.type,
                params=task.params,
                run_id=task.run_id,
                step=task.step,
                attempt=task.attempt,
                artifacts=artifacts,
                work_dir=Path(task.work_dir) if task.work_dir else None,
                log_fd=log_fd,
            )
        finally:
            if log_fd != 2:
                os.close(log_fd)
        return _result(task.task_id, outcome)

    def serve(self, tasks: TextIO) -> int:
        for line in tasks:
            if not line.strip():
                continue
            result = self.handle(line)
            try:
                self.protocol.write(json.dumps(result) + "\n")
                self.protocol.flush()
            except BrokenPipeError:  # the parent stopped listening
                _discard(self.protocol)
                return 0
        return 0


def _discard(stream: TextIO) -> None:
    """Point a dead pipe's descriptor at /dev/null, so closing it does not retry the flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the process that started it dies (a service killed
    with -9 must not leave workers finishing steps, or hung ones running for ever). Elsewhere,
    end of file on stdin still stops the worker after its current task."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _open_log(log_path: str | None) -> int:
    if not log_path:
        return 2  # no log file: the worker's own stderr
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _result(task_id: Any, outcome: Outcome) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "ok": outcome.ok,
        "outputs": outcome.outputs,
        "digests": outcome.digests,
        "error": outcome.error,
        "error_type": outcome.error_type,
        "duration_seconds": outcome.duration_seconds,
    }


def main(preload: bool = False) -> int:
    """Take over stdin/stdout as the protocol channel and serve tasks until stdin closes."""
    sys.stdout.flush()
    _die_with_parent()
    # Private, non-inheritable copies: neither steps nor their child processes can reach them.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    tasks = os.fdopen(os.dup(0), "r", encoding="utf-8")
    os.dup2(2, 1)  # stray output between tasks goes to stderr, never to the protocol channel
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # a step reading stdin must not swallow the next tasks
    os.close(devnull)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if preload:
        import importlib

        for module in PRELOAD:
            importlib.import_module(module)
    with protocol, tasks:
        try:
            return Worker(protocol).serve(tasks)
        except KeyboardInterrupt:
            return 130
