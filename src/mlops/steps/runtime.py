"""What the entrypoint and the worker share: output redirection, failure reports, one attempt."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import (
    StepContext,
    StepError,
    UnknownStepType,
    artifact_digests,
    execute_step,
    format_validation_error,
)


@contextmanager
def redirected_output(target_fd: int) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``target_fd`` (prints, logging, C libraries and child
    processes all follow), flushing Python's buffers on the way in and out; restore after."""
    _flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    try:
        os.dup2(target_fd, 1)
        os.dup2(target_fd, 2)
        yield
    finally:
        _flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a broken stream must not stop us
            stream.flush()


@contextmanager
def preserved_process_state() -> Iterator[None]:
    """Undo a step's ``os.chdir`` and environment changes, so the next task starts clean."""
    cwd = os.getcwd()
    environ = dict(os.environ)
    try:
        yield
    finally:
        os.chdir(cwd)
        if dict(os.environ) != environ:
            os.environ.clear()
            os.environ.update(environ)


def describe_failure(exc: BaseException, type_name: str | None = None) -> tuple[str, str]:
    """``(error, error_type)``: a readable message and the exception class name."""
    if isinstance(exc, ValidationError):
        return format_validation_error(exc, type_name), "ValidationError"
    if isinstance(exc, StepError | UnknownStepType):
        return str(exc), type(exc).__name__
    if isinstance(exc, SystemExit):
        return f"the step called sys.exit({exc.code!r})", "SystemExit"
    lines = traceback.format_exception_only(type(exc), exc)
    return (lines[0].strip() if lines else type(exc).__name__), type(exc).__name__


@dataclass
class Outcome:
    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    duration_seconds: float = 0.0


def log_line(fd: int, text: str) -> None:
    _flush()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.write(fd, f"{stamp} {text}\n".encode())


def run_attempt(
    *,
    type_name: str,
    params: dict[str, Any],
    run_id: str,
    step: str,
    attempt: int,
    artifacts: ArtifactStore,
    work_dir: Path | None,
    log_fd: int,
) -> Outcome:
    """Run one attempt with fds 1 and 2 on ``log_fd``; never raises (but KeyboardInterrupt).

    Writes ``step S attempt N started`` first and the outcome last; a failure's full traceback
    goes to the log between them.
    """
    started = time.perf_counter()
    scratch = None
    outcome = Outcome(ok=False)
    with redirected_output(log_fd), preserved_process_state():
        log_line(log_fd, f"step {step} attempt {attempt} started (type {type_name}, run {run_id})")
        try:
            if work_dir is None:
                scratch = tempfile.TemporaryDirectory(prefix=f"mlops-step-{step}-")
                work_dir = Path(scratch.name)
            context = StepContext(run_id, step, attempt, artifacts, work_dir)
            outputs = execute_step(type_name, params, context)
            outcome = Outcome(
                ok=True, outputs=outputs, digests=artifact_digests(outputs, artifacts)
            )
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            traceback.print_exc()
            error, error_type = describe_failure(exc, type_name)
            outcome = Outcome(ok=False, error=error, error_type=error_type)
        finally:
            if scratch is not None:
                scratch.cleanup()
        outcome.duration_seconds = round(time.perf_counter() - started, 6)
        if outcome.ok:
            log_line(
                log_fd,
                f"step {step} attempt {attempt} succeeded in {outcome.duration_seconds:.3f} s",
            )
        else:
            log_line(
                log_fd,
                f"step {step} attempt {attempt} failed in {outcome.duration_seconds:.3f} s: "
                f"{outcome.error_type}: {outcome.error}",
            )
    return outcome
