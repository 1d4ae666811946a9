"""A fake of the Kubeflow Pipelines REST API v2beta1, for the real ``kfp.Client``.

Real: HTTP on 127.0.0.1 (a threaded stdlib server), the endpoints and JSON shapes
``kfp.Client`` and ``kfp_server_api`` 2.17 use, and the runs themselves: a run created with an
inline ``pipeline_spec`` is checked against kfp's own ``PipelineSpec`` proto (an invalid spec is
a 400, as the API server answers) and executed for real by ``tests/kfp_executor.py``, each task
a local subprocess. Runs are reported as the KFP 2.x API server does: ``state``,
``created_at``/``scheduled_at``/``finished_at`` (second precision, the epoch for "not yet"),
``error``, ``state_history`` and ``run_details.task_details``: one entry for the root DAG and
one per task that has started, with its display name (the task's name), state, create, start
and end times, ``child_tasks`` (one ``pod_name`` per attempt), an ``error`` when it failed, and
``inputs``/``outputs`` that list artifacts only (the v2beta1 API returns no parameter values).

Endpoints: ``GET /apis/v2beta1/healthz``; ``POST/GET /apis/v2beta1/experiments``,
``GET /apis/v2beta1/experiments/{id}``; ``POST/GET /apis/v2beta1/runs``,
``GET /apis/v2beta1/runs/{id}``, ``POST /apis/v2beta1/runs/{id}:terminate``. Lists take
``filter`` (``EQUALS`` on ``display_name``), ``page_size``, ``page_token``, ``sort_by``,
``namespace`` and, for runs, ``experiment_id``.

Test hooks: ``fail_next(status, count)`` answers the next requests with that status;
``token`` requires ``Authorization: Bearer <token>``; ``requests`` records what was asked.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.kfp_executor import SpecExecution, TaskState

EPOCH = "1970-01-01T00:00:00Z"
PREFIX = "/apis/v2beta1"


def stamp(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else EPOCH


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 500: 13, 503: 14}


@dataclass
class FakeRun:
    run_id: str
    experiment_id: str
    display_name: str
    description: str
    pipeline_spec: dict[str, Any]
    parameters: dict[str, Any]
    created_at: datetime
    execution: SpecExecution
    root_task_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class KfpFake:
    """Start with ``with KfpFake(tmp_path) as fake:``; ``fake.url`` is the KFP host."""

    def __init__(self, work_dir: Path, *, token: str | None = None, multi_user: bool = False):
        self.work_dir = work_dir
        self.token = token
        self.multi_user = multi_user
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, FakeRun] = {}
        self.requests: list[tuple[str, str]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KfpFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for run in list(self.runs.values()):
            run.execution.cancel()
        for run in list(self.runs.values()):
            run.execution.wait(15)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> KfpFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test hooks

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def wait_run(self, run_id: str, timeout: float = 120) -> str:
        return self.runs[run_id].execution.wait(timeout)

    # ------------------------------------------------------------------ HTTP

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append((method, parts.path))
            failure = self._failures.pop(0) if self._failures else None
        try:
            if failure is not None:
                raise ApiError(failure, f"injected failure {failure}")
            if self.token is not None and handler.headers.get("Authorization") != (
                f"Bearer {self.token}"
            ):
                raise ApiError(401, "missing or wrong bearer token")
            body = json.loads(raw) if raw else {}
            status, answer = self._route(method, parts.path, query, body)
        except ApiError as exc:
            status, answer = exc.status, _error(exc.status, str(exc))
        except ValueError as exc:
            status, answer = 400, _error(400, f"invalid request: {exc}")
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _route(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        if not path.startswith(PREFIX):
            raise ApiError(404, f"no such path: {path}")
        path = path[len(PREFIX) :]
        if (method, path) == ("GET", "/healthz"):
            return 200, {"multi_user": self.multi_user, "pipeline_store": "fake"}
        if path == "/experiments":
            if method == "POST":
                return 200, self._create_experiment(body)
            if method == "GET":
                return 200, self._list_experiments(query)
        if path.startswith("/experiments/") and method == "GET":
            experiment = self.experiments.get(path.split("/")[2])
            if experiment is None:
                raise ApiError(404, "experiment not found")
            return 200, experiment
        if path == "/runs":
            if method == "POST":
                return 200, self._create_run(body)
            if method == "GET":
                return 200, self._list_runs(query)
        if path.startswith("/runs/"):
            name = path[len("/runs/") :]
            if name.endswith(":terminate") and method == "POST":
                run = self._run(name[: -len(":terminate")])
                run.execution.cancel()
                return 200, {}
            if method == "GET":
                return 200, self._render(self._run(name))
        raise ApiError(404, f"no route for {method} {PREFIX}{path}")

    # ------------------------------------------------------------------ experiments

    def _create_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("display_name")
        if not name:
            raise ApiError(400, "Experiment must have a non-empty name")
        namespace = body.get("namespace") or ""
        if self.multi_user and not namespace:
            raise ApiError(400, "In multi-user mode, an experiment needs a namespace")
        for experiment in self.experiments.values():
            if experiment["display_name"] == name and experiment["namespace"] == namespace:
                raise ApiError(409, f"experiment {name!r} already exists")
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": name,
            "description": body.get("description") or "",
            "created_at": stamp(datetime.now(UTC)),
            "namespace": namespace,
            "storage_state": "AVAILABLE",
            "last_run_created_at": EPOCH,
        }
        with self._lock:
            self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _list_experiments(self, query: dict[str, str]) -> dict[str, Any]:
        items = list(self.experiments.values())
        namespace = query.get("namespace")
        if namespace:
            items = [e for e in items if e["namespace"] == namespace]
        items = _filtered(items, query.get("filter"))
        page, token, total = _page(items, query)
        return {"experiments": page, "total_size": total, "next_page_token": token}

    # ------------------------------------------------------------------ runs

    def _run(self, run_id: str) -> FakeRun:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(404, f"run {run_id} not found")
        return run

    def _create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        experiment_id = body.get("experiment_id") or ""
        if experiment_id not in self.experiments:
            raise ApiError(404, f"experiment {experiment_id!r} not found")
        spec = body.get("pipeline_spec")
        if not isinstance(spec, dict):
            raise ApiError(400, "a run needs a pipeline_spec or a pipeline version")
        _check_spec(spec)
        display_name = body.get("display_name") or ""
        if not display_name:
            raise ApiError(400, "a run needs a display name")
        parameters = (body.get("runtime_config") or {}).get("parameters") or {}
        run_id = str(uuid.uuid4())
        try:
            execution = SpecExecution(
                spec, parameters, work_dir=self.work_dir / "runs" / run_id, job_name=display_name
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        run = FakeRun(
            run_id=run_id,
            experiment_id=experiment_id,
            display_name=display_name,
            description=body.get("description") or "",
            pipeline_spec=spec,
            parameters=parameters,
            created_at=datetime.now(UTC),
            execution=execution,
        )
        with self._lock:
            self.runs[run_id] = run
            self.experiments[experiment_id]["last_run_created_at"] = stamp(run.created_at)
        execution.start()
        return self._render(run)

    def _list_runs(self, query: dict[str, str]) -> dict[str, Any]:
        runs = list(self.runs.values())
        if query.get("experiment_id"):
            runs = [run for run in runs if run.experiment_id == query["experiment_id"]]
        items = _filtered([self._render(run, details=False) for run in runs], query.get("filter"))
        sort_by = (query.get("sort_by") or "").split()
        if sort_by:
            items.sort(key=lambda item: item.get(sort_by[0], ""), reverse=sort_by[-1] == "desc")
        page, token, total = _page(items, query)
        return {"runs": page, "total_size": total, "next_page_token": token}

    def _render(self, run: FakeRun, *, details: bool = True) -> dict[str, Any]:
        execution = run.execution
        state = execution.state
        answer: dict[str, Any] = {
            "experiment_id": run.experiment_id,
            "run_id": run.run_id,
            "display_name": run.display_name,
            "storage_state": "AVAILABLE",
            "description": run.description,
            "pipeline_spec": run.pipeline_spec,
            "runtime_config": {"parameters": run.parameters},
            "service_account": "pipeline-runner",
            "created_at": stamp(run.created_at),
            "scheduled_at": stamp(run.created_at),
            "finished_at": stamp(execution.finished_at),
            "state": state,
            "state_history": [{"update_time": stamp(run.created_at), "state": "PENDING"}]
            + (
                [{"update_time": stamp(execution.started_at), "state": "RUNNING"}]
                if execution.started_at
                else []
            )
            + (
                [{"update_time": stamp(execution.finished_at), "state": state}]
                if execution.finished_at
                else []
            ),
        }
        if state == "FAILED":
            answer["error"] = {"code": 2, "message": execution.error or "the run failed"}
        if details:
            tasks = execution.snapshot()
            answer["run_details"] = {
                "pipeline_context_id": "1",
                "pipeline_run_context_id": "2",
                "task_details": [self._root_detail(run)]
                + [
                    self._task_detail(run, task)
                    for task in tasks.values()
                    if task.state != "PENDING" or task.attempts
                ],
            }
        return answer

    def _root_detail(self, run: FakeRun) -> dict[str, Any]:
        execution = run.execution
        return {
            "run_id": run.run_id,
            "task_id": run.root_task_id,
            "display_name": "root",
            "create_time": stamp(run.created_at),
            "start_time": stamp(execution.started_at),
            "end_time": stamp(execution.finished_at),
            "state": execution.state,
            "child_tasks": [{"pod_name": f"{run.display_name}-root-driver"}],
        }

    def _task_detail(self, run: FakeRun, task: TaskState) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "run_id": run.run_id,
            "task_id": task.task_uuid,
            "display_name": task.display_name,
            "create_time": stamp(task.created_at),
            "start_time": stamp(task.started_at),
            "end_time": stamp(task.finished_at),
            "state": task.state,
            "execution_id": str(abs(hash(task.task_uuid)) % 10**6),
            "inputs": {},
            "outputs": {},  # artifacts only: parameter values are not in this API
            "parent_task_id": run.root_task_id,
            "state_history": [],
            "child_tasks": [
                {"pod_name": f"{run.display_name}-{task.name}-{attempt.number}"}
                for attempt in task.attempts
            ],
        }
        if task.state == "FAILED":
            detail["error"] = {"code": 2, "message": task.error or "failed"}
        return detail


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": message, "code": GRPC_CODES.get(status, 2), "message": message, "details": []}


def _check_spec(spec: dict[str, Any]) -> None:
    """Reject what the real API server cannot parse as a PipelineSpec."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as exc:
        raise ApiError(400, f"invalid pipeline spec: {exc}") from None
    if not spec.get("root", {}).get("dag", {}).get("tasks"):
        raise ApiError(400, "invalid pipeline spec: no tasks")


def _filtered(items: list[dict[str, Any]], raw: str | None) -> list[dict[str, Any]]:
    if not raw:
        return items
    for predicate in json.loads(raw).get("predicates", []):
        operation = predicate.get("operation")
        key = predicate.get("key")
        value = predicate.get("stringValue", predicate.get("string_value"))
        if operation not in ("EQUALS", 1) or key not in ("display_name", "name"):
            raise ApiError(400, f"unsupported filter predicate {predicate}")
        items = [item for item in items if item.get("display_name") == value]
    return items


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> tuple[list[Any], str, int]:
    size = int(query.get("page_size") or 20)
    start = int(query.get("page_token") or 0)
    page = items[start : start + size]
    token = str(start + size) if start + size < len(items) else ""
    return page, token, len(items)
