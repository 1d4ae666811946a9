"""Tiny callables for the ``python`` step type, used by tests and benchmarks.

Example: ``{"type": "python", "params": {"callable": "mlops.steps.library.testing:sleep",
"kwargs": {"seconds": 0.1}}}``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlops.steps.framework import StepContext, StepError

logger = logging.getLogger(__name__)


def noop() -> None:
    """Do nothing: no outputs."""


def sleep(seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {"slept": seconds}


def fail(message: str = "failed on purpose") -> None:
    """Fail as a step fails: a StepError with ``message``."""
    raise StepError(message)


def crash() -> None:
    """Kill the process at once (no cleanup, no result): exit status 3."""
    os._exit(3)


def echo(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments as the outputs."""
    return dict(kwargs)


def count_calls(path: str) -> dict[str, Any]:
    """Append one line to ``path``; the number of lines is the number of executions."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    with open(path, encoding="utf-8") as handle:
        return {"calls": sum(1 for _ in handle)}


def chatter(message: str = "hello") -> dict[str, Any]:
    """Write ``message`` every way a step can: print, stderr, logging and a child process."""
    print(f"stdout: {message}")
    print(f"stderr: {message}", file=sys.stderr)
    logger.warning("logging: %s", message)
    subprocess.run(  # noqa: S603 - fixed command: this interpreter printing a line
        [sys.executable, "-c", f"print('subprocess: ' + {message!r})"], check=True
    )
    return {"message": message}


def write_artifact(context: StepContext, text: str, name: str = "out.txt") -> dict[str, Any]:
    """Store ``text`` as an artifact of this step; output ``artifact`` is its URI."""
    uri = context.artifacts.put_bytes(context.output_uri(name), text.encode())
    return {"artifact": uri, "attempt": context.attempt}


def read_artifact(uri: str, context: StepContext) -> dict[str, Any]:
    """Read an artifact of the store back as text."""
    with context.artifacts.open(uri, "rb") as handle:
        return {"text": handle.read().decode()}


def fail_until(attempt: int, context: StepContext) -> dict[str, Any]:
    """Fail every attempt before ``attempt``, then succeed (for retry tests)."""
    if context.attempt < attempt:
        raise StepError(f"attempt {context.attempt} fails on purpose (succeeds at {attempt})")
    return {"attempt": context.attempt}


def touch(path: str) -> dict[str, Any]:
    Path(path).touch()
    return {"path": path}
