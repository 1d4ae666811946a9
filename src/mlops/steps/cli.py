"""``python -m mlops.steps``: run one step, serve as a worker, or list the step types.

``run`` prints exactly one JSON line on stdout (everything the step prints goes to stderr):
``{"ok": true, "outputs": {...}, "digests": {...}}`` and exit 0, or ``{"ok": false, "error":
"...", "error_type": "..."}`` and exit 1 when the step fails, 2 on a usage error (unknown step
type, params that are not a JSON object or do not validate).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import (
    STEP_LIBRARY_VERSION,
    UnknownStepType,
    describe_step_types,
    validate_params,
)
from mlops.steps.runtime import describe_failure, run_attempt

EXIT_OK, EXIT_STEP_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlops.steps",
        description=f"The MLOps step library (version {STEP_LIBRARY_VERSION}).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one step in this process")
    run.add_argument("--type", required=True, help="step type, e.g. data_validation")
    params = run.add_mutually_exclusive_group()
    params.add_argument("--params", default="{}", help="params as a JSON object")
    params.add_argument("--params-file", type=Path, help="read the params JSON from a file")
    run.add_argument("--run-id", required=True)
    run.add_argument("--step", required=True, help="the step's name in its pipeline")
    run.add_argument("--artifact-root", required=True, help="folder or fsspec URI")
    run.add_argument("--attempt", type=int, default=1)
    run.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one)")
    worker = commands.add_parser("worker", help="serve tasks from stdin (local backend)")
    worker.add_argument(
        "--preload", action="store_true", help="import pandas and scikit-learn up front"
    )
    commands.add_parser("types", help="print the step types as JSON")
    return parser


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _usage_error(error: str, error_type: str) -> int:
    print(f"error: {error}", file=sys.stderr)
    _emit({"ok": False, "error": error, "error_type": error_type})
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    try:
        text = args.params_file.read_text() if args.params_file else args.params
        params = json.loads(text)
    except (OSError, ValueError) as exc:
        return _usage_error(f"params are not valid JSON: {exc}", "InvalidParams")
    if not isinstance(params, dict):
        return _usage_error("params must be a JSON object", "InvalidParams")
    if args.attempt < 1:
        return _usage_error("--attempt must be at least 1", "InvalidParams")
    try:
        validate_params(args.type, params)
        artifacts = ArtifactStore(args.artifact_root)
    except (UnknownStepType, ValidationError, ValueError) as exc:
        error, error_type = describe_failure(exc, args.type)
        return _usage_error(error, error_type)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    outcome = run_attempt(
        type_name=args.type,
        params=params,
        run_id=args.run_id,
        step=args.step,
        attempt=args.attempt,
        artifacts=artifacts,
        work_dir=args.work_dir,
        log_fd=2,
    )
    if outcome.ok:
        _emit({"ok": True, "outputs": outcome.outputs, "digests": outcome.digests})
        return EXIT_OK
    _emit({"ok": False, "error": outcome.error, "error_type": outcome.error_type})
    return EXIT_STEP_FAILED


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "worker":
        from mlops.steps.worker import main as worker_main

        return worker_main(preload=args.preload)
    _emit({"version": STEP_LIBRARY_VERSION, "types": describe_step_types()})
    return EXIT_OK
