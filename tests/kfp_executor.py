"""Runs a compiled KFP v2 ``PipelineSpec`` for real, as a KFP or Vertex AI backend would.

The fakes of the Kubeflow Pipelines API (``tests/kfp_fake.py``) and of Vertex AI Pipelines
(``tests/vertex_fake.py``) hand every run they accept to a ``SpecExecution`` and report what it
says. Usage::

    execution = SpecExecution(spec, {"run": "{...}"}).start()   # returns at once
    execution.state                    # PENDING RUNNING SUCCEEDED FAILED CANCELING CANCELED
    execution.snapshot()               # {task name: TaskState copy}, safe to read any time
    execution.log("train", 1)          # the text attempt 1 of task "train" wrote (so far)
    execution.cancel()                 # kills running containers; the rest is CANCELED
    execution.wait(timeout=60)         # the final state

What it does: every task of ``root.dag.tasks`` whose ``dependentTasks`` and producer tasks have
SUCCEEDED runs its executor's container ``command + args`` as a local subprocess (the image is
ignored; a leading ``python``/``python3`` becomes ``python``, by default this interpreter),
independent tasks in parallel, with KFP's placeholders substituted:
``{{$.inputs.parameters['x']}}`` (also inside a longer string),
``{{$.outputs.parameters['x'].output_file}}``, ``{{$.outputs.output_file}}``, ``{{$}}`` (the
executor input as JSON), ``{{$.pipeline_job_name}}``, ``{{$.pipeline_job_uuid}}``,
``{{$.pipeline_task_name}}``, ``{{$.pipeline_task_uuid}}``. Inputs come from pipeline
parameters (or their ``defaultValue``), producer tasks' output parameters and constants. A
task's output parameters are read from their files when it exits 0 (a missing one fails it).
``retryPolicy`` is honoured (``maxRetryCount``, ``backoffDuration`` times ``backoffFactor`` per
retry, at most ``backoffMaxDuration``). A task whose upstream failed or was skipped is SKIPPED;
the others go on; the run FAILS if any task failed. Times are UTC.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PENDING, RUNNING, SUCCEEDED, FAILED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED"
CANCELING, CANCELED, SKIPPED = "CANCELING", "CANCELED", "SKIPPED"
FINAL = frozenset({SUCCEEDED, FAILED, CANCELED, SKIPPED})
KILL_GRACE_SECONDS = 3.0
_INPUT = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
_OUTPUT_FILE = re.compile(r"\{\{\$\.outputs\.parameters\['([^']+)'\]\.output_file\}\}")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Attempt:
    number: int  # 1-based
    started_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    log_path: str = ""


@dataclass
class TaskState:
    name: str  # the task's key in root.dag.tasks
    display_name: str  # its taskInfo.name
    state: str = PENDING
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: list[Attempt] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # output parameter values
    error: str | None = None
    task_uuid: str = field(default_factory=lambda: uuid.uuid4().hex)


def _seconds(duration: Any) -> float:
    """A protobuf Duration in JSON (``"3s"``, ``"1.500s"``) or a number, in seconds."""
    if duration in (None, ""):
        return 0.0
    if isinstance(duration, int | float):
        return float(duration)
    return float(str(duration).rstrip("s") or 0)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class SpecExecution:
    """One run of a compiled ``PipelineSpec`` (a dict), executed by local subprocesses."""

    def __init__(
        self,
        spec: dict[str, Any],
        parameters: dict[str, Any] | None = None,
        *,
        python: str = sys.executable,
        work_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
        max_parallel: int = 8,
        job_name: str | None = None,
    ) -> None:
        self.spec = spec
        self.python = python
        self.env = env or {}
        self.max_parallel = max_parallel
        self.job_uuid = uuid.uuid4().hex
        self.job_name = job_name or f"{spec.get('pipelineInfo', {}).get('name', 'pipeline')}"
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="kfp-exec-"))
        self.parameters = self._pipeline_parameters(parameters or {})
        self.state = PENDING
        self.created_at = now()
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.error: str | None = None
        self._lock = threading.Condition()
        self._cancelled = threading.Event()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._thread: threading.Thread | None = None
        dag = spec["root"]["dag"]["tasks"]
        self.tasks: dict[str, TaskState] = {
            name: TaskState(name, task.get("taskInfo", {}).get("name", name))
            for name, task in dag.items()
        }

    # ------------------------------------------------------------------ public API

    def start(self) -> SpecExecution:
        self._thread = threading.Thread(target=self._schedule, name="kfp-exec", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop the run: running tasks' process groups are killed, nothing new starts."""
        with self._lock:
            if self.state in FINAL | {CANCELED}:
                return
            self.state = CANCELING
            self._cancelled.set()
            processes = list(self._processes.values())
            self._lock.notify_all()
        for process in processes:  # in the background: cancel() answers at once
            threading.Thread(target=_kill, args=(process,), daemon=True).start()

    def wait(self, timeout: float | None = None) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    def snapshot(self) -> dict[str, TaskState]:
        with self._lock:
            return copy.deepcopy(self.tasks)

    def log(self, task: str, attempt: int) -> str:
        with self._lock:
            attempts = self.tasks[task].attempts
            path = attempts[attempt - 1].log_path if 0 < attempt <= len(attempts) else ""
        if not path:
            return ""
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # ------------------------------------------------------------------ scheduling

    def _pipeline_parameters(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = self.spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        values = {}
        for name, definition in declared.items():
            if name in given:
                values[name] = given[name]
            elif "defaultValue" in definition:
                values[name] = definition["defaultValue"]
            elif not definition.get("isOptional"):
                raise ValueError(f"pipeline parameter {name!r} is required")
        unknown = set(given) - set(declared)
        if unknown:
            raise ValueError(f"unknown pipeline parameters: {sorted(unknown)}")
        return values

    def _upstream(self, name: str) -> set[str]:
        task = self.spec["root"]["dag"]["tasks"][name]
        upstream = set(task.get("dependentTasks", []))
        for source in task.get("inputs", {}).get("parameters", {}).values():
            producer = source.get("taskOutputParameter", {}).get("producerTask")
            if producer:
                upstream.add(producer)
        return upstream

    def _schedule(self) -> None:
        with self._lock:
            if self._cancelled.is_set():
                for task in self.tasks.values():
                    task.state, task.finished_at = CANCELED, now()
                self._finish()
                return
            self.state, self.started_at = RUNNING, now()
            for task in self.tasks.values():
                task.created_at = self.started_at
        running: set[str] = set()
        threads: list[threading.Thread] = []
        with self._lock:
            while True:
                for name, task in self.tasks.items():
                    if task.state != PENDING or name in running:
                        continue
                    upstream = [self.tasks[u].state for u in self._upstream(name)]
                    if self._cancelled.is_set():
                        task.state, task.finished_at = CANCELED, now()
                    elif any(state in (FAILED, SKIPPED, CANCELED) for state in upstream):
                        task.state, task.finished_at = SKIPPED, now()
                        task.error = "an upstream task did not succeed"
                    elif all(state == SUCCEEDED for state in upstream) and (
                        len(running) < self.max_parallel
                    ):
                        running.add(name)
                        thread = threading.Thread(
                            target=self._run_task, args=(name, running), daemon=True
                        )
                        threads.append(thread)
                        thread.start()
                if all(task.state in FINAL for task in self.tasks.values()) and not running:
                    break
                self._lock.wait(0.5)
            self._finish()
        for thread in threads:
            thread.join()

    def _finish(self) -> None:
        states = {task.state for task in self.tasks.values()}
        if self._cancelled.is_set():
            self.state = CANCELED
        elif FAILED in states:
            self.state = FAILED
            failed = sorted(t.name for t in self.tasks.values() if t.state == FAILED)
            self.error = f"tasks failed: {', '.join(failed)}"
        else:
            self.state = SUCCEEDED
        self.finished_at = now()
        self._lock.notify_all()

    # ------------------------------------------------------------------ one task

    def _run_task(self, name: str, running: set[str]) -> None:
        spec_task = self.spec["root"]["dag"]["tasks"][name]
        policy = spec_task.get("retryPolicy", {})
        retries = int(policy.get("maxRetryCount", 0))
        backoff = _seconds(policy.get("backoffDuration"))
        factor = float(policy.get("backoffFactor") or 2.0)
        ceiling = _seconds(policy.get("backoffMaxDuration")) or float("inf")
        try:
            for number in range(1, retries + 2):
                ok, error = self._attempt(name, number)
                with self._lock:
                    task = self.tasks[name]
                    if ok:
                        task.state, task.finished_at, task.error = SUCCEEDED, now(), None
                        return
                    task.error = error
                    if self._cancelled.is_set():
                        task.state, task.finished_at = CANCELED, now()
                        return
                    if number > retries:
                        task.state, task.finished_at = FAILED, now()
                        return
                delay = min(backoff * factor ** (number - 1), ceiling)
                if self._cancelled.wait(delay):
                    with self._lock:
                        task.state, task.finished_at = CANCELED, now()
                    return
        except Exception as exc:  # a bug here must not hang the run
            with self._lock:
                task = self.tasks[name]
                task.state, task.finished_at, task.error = FAILED, now(), repr(exc)
        finally:
            with self._lock:
                running.discard(name)
                self._lock.notify_all()

    def _inputs(self, name: str) -> dict[str, Any]:
        spec_task = self.spec["root"]["dag"]["tasks"][name]
        values: dict[str, Any] = {}
        for key, source in spec_task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                values[key] = self.parameters.get(source["componentInputParameter"])
            elif "taskOutputParameter" in source:
                ref = source["taskOutputParameter"]
                values[key] = self.tasks[ref["producerTask"]].outputs.get(ref["outputParameterKey"])
            elif "runtimeValue" in source:
                values[key] = source["runtimeValue"].get("constant")
        component = self.spec["components"][spec_task["componentRef"]["name"]]
        declared = component.get("inputDefinitions", {}).get("parameters", {})
        for key, definition in declared.items():
            if key not in values and "defaultValue" in definition:
                values[key] = definition["defaultValue"]
        return values

    def _attempt(self, name: str, number: int) -> tuple[bool, str | None]:
        spec_task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][spec_task["componentRef"]["name"]]
        container = self.spec["deploymentSpec"]["executors"][component["executorLabel"]][
            "container"
        ]
        folder = self.work_dir / name / f"attempt-{number}"
        outputs_dir = folder / "outputs"
        outputs_dir.mkdir(parents=True, exist_ok=True)
        declared_outputs = component.get("outputDefinitions", {}).get("parameters", {})
        output_files = {key: str(outputs_dir / key) for key in declared_outputs}
        inputs = self._inputs(name)
        task_uuid = self.tasks[name].task_uuid
        executor_input = {
            "inputs": {"parameterValues": inputs},
            "outputs": {
                "parameters": {key: {"outputFile": path} for key, path in output_files.items()},
                "outputFile": str(folder / "executor_output.json"),
            },
        }

        def substitute(text: str) -> str:
            if text == "{{$}}":
                return json.dumps(executor_input)
            text = _INPUT.sub(lambda m: _as_text(inputs.get(m.group(1), "")), text)
            text = _OUTPUT_FILE.sub(lambda m: output_files[m.group(1)], text)
            for placeholder, value in (
                ("{{$.outputs.output_file}}", executor_input["outputs"]["outputFile"]),
                ("{{$.pipeline_job_name}}", self.job_name),
                ("{{$.pipeline_job_uuid}}", self.job_uuid),
                ("{{$.pipeline_task_name}}", name),
                ("{{$.pipeline_task_uuid}}", task_uuid),
            ):
                text = text.replace(placeholder, value)
            return text

        argv = [
            substitute(part) for part in [*container.get("command", []), *container.get("args", [])]
        ]
        if argv and os.path.basename(argv[0]) in ("python", "python3"):
            argv[0] = self.python
        env = {**os.environ, **self.env}
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", "")
        log_path = folder / "log.txt"
        with self._lock:
            if self._cancelled.is_set():
                return False, "cancelled"
            task = self.tasks[name]
            attempt = Attempt(number, now(), log_path=str(log_path))
            task.attempts.append(attempt)
            task.state = RUNNING
            task.started_at = task.started_at or attempt.started_at
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=folder,
                    process_group=0,
                )
            self._processes[name] = process
        code = process.wait()
        with self._lock:
            self._processes.pop(name, None)
            attempt.finished_at, attempt.exit_code = now(), code
        if code != 0:
            return False, f"the container exited with status {code}"
        outputs: dict[str, Any] = {}
        executor_output = _read_json(folder / "executor_output.json")
        for key, value in (executor_output or {}).get("parameterValues", {}).items():
            outputs[key] = value
        for key, path in output_files.items():
            if key in outputs:
                continue
            try:
                text = Path(path).read_text()
            except FileNotFoundError:
                return False, f"the container wrote no output parameter {key!r}"
            kind = declared_outputs[key].get("parameterType", "STRING")
            outputs[key] = text if kind == "STRING" else json.loads(text)
        with self._lock:
            self.tasks[name].outputs = outputs
        return True, None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the task's process group, SIGKILL it if still there after a grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
