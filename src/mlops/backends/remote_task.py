"""One step of a whole-run backend's pipeline, as its task runs it (Airflow, Kubeflow, Vertex AI).

A whole-run orchestrator hands each task the same four things: the step (name, type, params
still templated, timeout), the run's ``conf`` (``run_id``, ``params`` resolved by the service,
``artifact_root``), the results of the steps it depends on and its attempt number. The step's
templates are resolved against the run's params and the upstream outputs, the step runs as
``python -m mlops.steps run`` runs it, and its JSON result line is printed last (Airflow keeps a
task's last line as its XCom) and, on request, written to a file (KFP reads an output parameter
from a file).

Container form::

    python -m mlops.backends.remote_task --step B64JSON --run JSON \\
        [--upstream JSON] [--upstream-result NAME=RESULT ...] [--attempt N|auto] \\
        [--timeout-seconds S] [--result-file PATH]

``--attempt auto`` is for orchestrators that retry a task without telling it which attempt it
is (KFP, Vertex AI): the attempt is numbered from the markers earlier attempts left in the
artifact store, ``<root>/<run_id>/<step>/.mlops/attempt-<N>.json``, each marker holding that
attempt's result once it is over. It is also how the service reads a step's result where the
orchestrator's API does not return output parameters (Kubeflow's v2beta1 run API lists only
artifacts).

KFP has no per-task timeout, so the step's ``timeout_seconds`` is enforced here: with a timeout
the step runs in a child process (its own process group, killed whole when time is up) and the
result is ``{"ok": false, "reason": "timeout", ...}``. Without one (Airflow enforces its own)
the step runs in this process, as it always has.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from mlops.pipelines.spec import resolve_templates
from mlops.steps.cli import EXIT_STEP_FAILED, EXIT_USAGE
from mlops.steps.cli import main as steps_main

EXIT_TIMEOUT = 124  # as coreutils' timeout(1)
AUTO = "auto"
MARKERS = ".mlops"  # where attempt markers live inside a step's artifact folder
KILL_GRACE_SECONDS = 5.0


def attempt_marker_name(attempt: int) -> str:
    """The artifact name (under the step's folder) of attempt ``attempt``'s marker."""
    return f"{MARKERS}/attempt-{attempt}.json"


def upstream_outputs(upstream: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{step: outputs}`` from ``{step: result line or dict}``; an upstream step without a
    successful result is an error (the orchestrator should not have started this task)."""
    outputs: dict[str, dict[str, Any]] = {}
    for name, result in upstream.items():
        try:
            message = json.loads(result) if isinstance(result, str) else result
        except ValueError:
            message = None
        if not isinstance(message, dict) or not message.get("ok"):
            raise ValueError(f"upstream step {name!r} left no result (XCom: {result!r})")
        outputs[name] = message.get("outputs") or {}
    return outputs


def emit(result: dict[str, Any], result_file: str | None) -> None:
    """Print the result line last on stdout and, if asked, write it to ``result_file``."""
    line = json.dumps(result)
    if result_file:
        path = Path(result_file)
        path.parent.mkdir(parents=True, exist_ok=True)  # KFP leaves that to the container
        path.write_text(line)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _store(run: Mapping[str, Any]) -> Any:
    from mlops.steps.artifacts import ArtifactStore

    return ArtifactStore(str(run.get("artifact_root") or "artifacts"))


def claim_attempt(run: Mapping[str, Any], step_name: str) -> tuple[int, str]:
    """The next attempt number of ``step_name`` in this run, marked as started in the store.

    One attempt of a task runs at a time, so counting the markers is enough. Returns the
    attempt and when it started."""
    store = _store(run)
    run_id = str(run.get("run_id"))
    attempt = 1
    while store.exists(store.uri_for(run_id, step_name, attempt_marker_name(attempt))):
        attempt += 1
    started_at = datetime.now(UTC).isoformat()
    store.put_bytes(
        store.uri_for(run_id, step_name, attempt_marker_name(attempt)),
        json.dumps({"attempt": attempt, "started_at": started_at}).encode(),
    )
    return attempt, started_at


def recorded_attempts(artifact_root: str, run_id: str, step_name: str) -> list[dict[str, Any]]:
    """The markers ``--attempt auto`` left for ``step_name``, attempt 1 first: each holds
    ``attempt`` and ``started_at``, plus the result line's fields and ``finished_at`` once that
    attempt is over. For the service, where the orchestrator's API returns no outputs."""
    from mlops.steps.artifacts import ArtifactStore

    store = ArtifactStore(artifact_root)
    found: list[dict[str, Any]] = []
    while True:
        uri = store.uri_for(run_id, step_name, attempt_marker_name(len(found) + 1))
        if not store.exists(uri):
            return found
        try:
            with store.open(uri, "rb") as handle:
                marker = json.loads(handle.read())
        except (OSError, ValueError):
            marker = {}
        found.append(marker if isinstance(marker, dict) else {})


def _record_result(
    run: Mapping[str, Any], step_name: str, attempt: int, started_at: str, result: dict[str, Any]
) -> None:
    store = _store(run)
    finished = {
        **result,
        "attempt": attempt,
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(),
    }
    store.put_bytes(
        store.uri_for(str(run.get("run_id")), step_name, attempt_marker_name(attempt)),
        json.dumps(finished).encode(),
    )


def _steps_argv(
    step: Mapping[str, Any], run: Mapping[str, Any], params: Any, attempt: int
) -> list[str]:
    return [
        "run",
        *("--type", str(step["type"])),
        *("--params", json.dumps(params)),
        *("--run-id", str(run.get("run_id") or "remote")),
        *("--step", str(step["name"])),
        *("--artifact-root", str(run.get("artifact_root") or "artifacts")),
        *("--attempt", str(attempt)),
    ]


@contextlib.contextmanager
def _forwarding_termination(process: subprocess.Popen[str]) -> Iterator[None]:
    """While the step runs, SIGTERM/SIGINT to this process (a pod or run being stopped) stop
    the step's whole process group first, so no step outlives its task."""

    def stop(signum: int, frame: FrameType | None) -> None:
        _kill_group(process)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        if wait is None:
            break
        try:
            process.wait(timeout=wait)
            # the leader is gone; children of the step may still be in its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_SECONDS)


def _run_child(argv: list[str], timeout_seconds: float | None) -> tuple[int, dict[str, Any]]:
    """Run the step in a child interpreter; its stdout is exactly the result line."""
    process = subprocess.Popen(  # noqa: S603 - this interpreter running the step library
        [sys.executable, "-m", "mlops.steps", *argv],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        process_group=0,
    )
    with _forwarding_termination(process):
        try:
            out, _ = process.communicate(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            if process.stdout is not None:
                process.stdout.close()
            limit = f"{timeout_seconds:g}"
            return EXIT_TIMEOUT, {
                "ok": False,
                "error": f"timed out: the step did not finish within its timeout of {limit} s",
                "error_type": "Timeout",
                "reason": "timeout",
            }
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        code = process.returncode
        return code or EXIT_STEP_FAILED, {
            "ok": False,
            "error": f"the step process exited with status {code} without a result",
            "error_type": "Crashed",
            "reason": "crashed",
        }
    return process.returncode, result


def run_task(
    step: Mapping[str, Any],
    run: Mapping[str, Any],
    upstream: Mapping[str, Any],
    attempt: int | str = 1,
    *,
    timeout_seconds: float | None = None,
    result_file: str | None = None,
) -> int:
    """Resolve ``step``'s templates and run it; print its result line last; return the exit
    code (0 ok, 1 step failed, 2 unusable inputs, 124 timed out).

    ``attempt`` is a number or ``"auto"`` (numbered and recorded in the artifact store).
    ``timeout_seconds``: run the step in a child process and stop it after that long."""
    try:
        outputs = upstream_outputs(upstream)
        params = resolve_templates(step.get("params", {}), run.get("params", {}), outputs)
        name, _ = str(step["name"]), str(step["type"])
        if attempt == AUTO:
            number, started_at = claim_attempt(run, name)
        else:
            number, started_at = int(attempt), ""
    except (KeyError, ValueError, TypeError, OSError) as exc:
        print(f"error: the task's inputs are not usable: {exc}", file=sys.stderr)
        emit({"ok": False, "error": str(exc), "error_type": "InvalidInputs"}, result_file)
        return EXIT_USAGE
    argv = _steps_argv(step, run, params, number)
    if timeout_seconds is None and result_file is None and attempt != AUTO:
        return steps_main(argv)  # prints the result line itself
    started = time.monotonic()
    code, result = _run_child(argv, timeout_seconds)
    result.setdefault("duration_seconds", round(time.monotonic() - started, 6))
    if attempt == AUTO:
        _record_result(run, name, number, started_at, result)
    emit(result, result_file)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlops.backends.remote_task",
        description="Run one step of a pipeline as a whole-run orchestrator's task.",
    )
    parser.add_argument("--step", required=True, help="the step as base64-encoded JSON")
    parser.add_argument("--run", required=True, help="run_id, params, artifact_root as JSON")
    parser.add_argument("--upstream", default="{}", help="{step: result line} as JSON")
    parser.add_argument(
        "--upstream-result",
        action="append",
        default=[],
        metavar="NAME=RESULT",
        help="one upstream step's result line (repeatable; added to --upstream)",
    )
    parser.add_argument("--attempt", default="1", help="the attempt number, or 'auto'")
    parser.add_argument(
        "--timeout-seconds",
        type=float,
        help="stop the step after this long (default: the step's timeout_seconds)",
    )
    parser.add_argument("--no-timeout", action="store_true", help="never stop the step")
    parser.add_argument("--result-file", help="also write the result line to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        step = json.loads(base64.b64decode(args.step))
        run = json.loads(args.run or "{}") or {}
        upstream = json.loads(args.upstream or "{}") or {}
        for item in args.upstream_result:
            name, separator, result = item.partition("=")
            if not separator:
                raise ValueError(f"--upstream-result {item!r} is not NAME=RESULT")
            upstream[name] = result
        if not isinstance(step, dict) or not isinstance(run, dict):
            raise ValueError("--step and --run must be JSON objects")
        if not isinstance(upstream, dict):
            raise ValueError("--upstream must be a JSON object")
        if args.attempt != AUTO and int(args.attempt) < 1:
            raise ValueError("--attempt must be at least 1 or 'auto'")
    except (ValueError, TypeError) as exc:
        print(f"error: the task's inputs are not usable: {exc}", file=sys.stderr)
        emit({"ok": False, "error": str(exc), "error_type": "InvalidInputs"}, args.result_file)
        return EXIT_USAGE
    timeout = args.timeout_seconds
    if timeout is None and not args.no_timeout and step.get("timeout_seconds"):
        timeout = float(step["timeout_seconds"])
    return run_task(
        step,
        run,
        upstream,
        args.attempt if args.attempt == AUTO else int(args.attempt),
        timeout_seconds=None if args.no_timeout else timeout,
        result_file=args.result_file,
    )


if __name__ == "__main__":
    raise SystemExit(main())
