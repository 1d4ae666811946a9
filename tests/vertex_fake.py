"""A fake of Vertex AI Pipelines' REST API (v1) for tests of the Vertex AI backend: real HTTP.

Real: the HTTP boundary (aiohttp on 127.0.0.1, in a thread of its own with its own event loop,
so sync and async callers alike can use it), the ``google-cloud-aiplatform`` SDK talking to it
with ``api_transport="rest"``, and each submitted pipeline, which runs for real through
``tests.kfp_executor.SpecExecution`` (every task a local subprocess of its container command;
this venv stands in for the image).

What it serves (what the SDK's REST transport calls), under ``/v1/projects/P/locations/L``:

- ``POST   .../pipelineJobs?pipelineJobId=ID``  create: the body is kept as submitted
  (``FakeJob.body``); 409 ALREADY_EXISTS for a taken id; 400 INVALID_ARGUMENT for a bad id,
  spec, pipeline root (not ``gs://``) or parameter.
- ``GET    .../pipelineJobs/ID``                 get
- ``GET    .../pipelineJobs?pageSize=&pageToken=`` list, newest first
- ``POST   .../pipelineJobs/ID:cancel``          cancel (400 FAILED_PRECONDITION once over)
- the Cloud Storage JSON API's bucket get (``/storage/v1/b/B``: 200 for ``buckets``, else 404;
  creating one is refused, 403): the check ``PipelineJob.submit()`` makes of the pipeline
  root's bucket, with ``STORAGE_EMULATOR_HOST`` pointing here (the backend does not call it).

Jobs are reported in the REST JSON shape: camelCase, enums by name (``PIPELINE_STATE_*``),
int64 as strings, RFC 3339 times, ``jobDetail.taskDetails`` with the root task (the pipeline's
name) and one task per started step task: ``taskName``, ``state``, ``createTime``,
``startTime``, ``endTime``, ``executorDetail.containerDetail`` (``mainJob`` the CustomJob of the
latest attempt, ``failedMainJobs`` those of the earlier, failed ones), ``execution.metadata``
(output parameters as ``output:<key>``, as Vertex reports them; ``outputs`` holds artifacts
only), ``error`` and the ``pipelineTaskStatus`` history (an attempt that is retried leaves a
RUNNING entry with its error, as Vertex reports errors it retries). Tasks not started yet are
absent, as are tasks the executor skipped because an upstream one failed (Vertex never creates
them).
Resource names carry the project *number* (``PROJECT_NUMBER``), as Vertex returns them;
requests may name the project by id or number. Another project answers 403 PERMISSION_DENIED.

The SDK asks for ``$alt=json;enum-encoding=int``; enums are sent by name all the same (its
parser accepts both). Errors use Google's JSON error format (``{"error": {"code": HTTP status,
"message", "status": google.rpc.Code name}}``); ``inject()`` makes the next requests fail (5xx,
429, 403...). Not modelled: authentication
(any or no bearer token is accepted), long-running operations, ``filter``/``orderBy`` of list,
pipeline caching, Cloud Logging, artifacts, schedules.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import free_port
from tests.kfp_executor import (
    CANCELED,
    CANCELING,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    SpecExecution,
    TaskState,
)

PROJECT = "mlops-test"
PROJECT_NUMBER = "123456789012"
LOCATION = "us-central1"
BUCKET = "mlops-test-pipelines"
_JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
_LABEL_KEY = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
_LABEL_VALUE = re.compile(r"^[-_a-z0-9]{0,63}$")
_COLLECTION = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/pipelineJobs$")
_JOB = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/pipelineJobs/([^/:]+)(:cancel)?$")

JOB_STATES = {
    PENDING: "PIPELINE_STATE_PENDING",
    RUNNING: "PIPELINE_STATE_RUNNING",
    SUCCEEDED: "PIPELINE_STATE_SUCCEEDED",
    FAILED: "PIPELINE_STATE_FAILED",
    CANCELING: "PIPELINE_STATE_CANCELLING",
    CANCELED: "PIPELINE_STATE_CANCELLED",
}
TASK_STATES = {
    PENDING: "PENDING",
    RUNNING: "RUNNING",
    SUCCEEDED: "SUCCEEDED",
    FAILED: "FAILED",
    CANCELING: "CANCELLING",
    CANCELED: "CANCELLED",
}
EXECUTION_STATES = {
    "PENDING": "NEW",
    "RUNNING": "RUNNING",
    "SUCCEEDED": "COMPLETE",
    "FAILED": "FAILED",
    "CANCELLING": "RUNNING",
    "CANCELLED": "CANCELLED",
}
# the HTTP status of each google.rpc.Code name used here
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
}


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_body(status: str, message: str) -> tuple[int, dict[str, Any]]:
    http = HTTP_STATUS[status]
    return http, {"error": {"code": http, "message": message, "status": status}}


class ApiError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Injected:
    status: str
    message: str
    remaining: int | None  # None: until cleared
    path_contains: str = ""


@dataclass
class FakeJob:
    name: str  # projects/NUMBER/locations/L/pipelineJobs/ID
    job_id: str
    body: dict[str, Any]  # exactly as submitted
    execution: SpecExecution
    created_at: datetime
    task_ids: dict[str, int] = field(default_factory=dict)


class VertexFake:
    """``with VertexFake(tmp_path) as fake:`` (or ``start()``/``stop()``); ``fake.url`` is the
    ``api_endpoint`` and the ``STORAGE_EMULATOR_HOST``. ``env`` goes to every task process."""

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        project: str = PROJECT,
        location: str = LOCATION,
        buckets: tuple[str, ...] = (BUCKET,),
        env: dict[str, str] | None = None,
    ) -> None:
        self.project = project
        self.location = location
        self.buckets = set(buckets)
        self.env = env or {}
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="vertex-fake-"))
        self.jobs: dict[str, FakeJob] = {}  # job id -> job
        self.requests: list[tuple[str, str]] = []  # (method, path and query)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._injected: list[Injected] = []
        self._lock = threading.Lock()
        self._task_ids = itertools.count(1001)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> VertexFake:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_site())
            loop.close()

        self._thread = threading.Thread(target=serve, name="vertex-fake", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        for job in self.jobs.values():
            job.execution.cancel()
        for job in self.jobs.values():
            job.execution.wait(10)
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> VertexFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop_site(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ test controls

    @property
    def parent(self) -> str:
        return f"projects/{PROJECT_NUMBER}/locations/{self.location}"

    def inject(
        self, status: str, message: str = "", *, times: int | None = 1, path_contains: str = ""
    ) -> None:
        """The next ``times`` requests (all while ``times`` is None) whose path contains
        ``path_contains`` answer with error ``status`` (a google.rpc.Code name)."""
        with self._lock:
            self._injected.append(
                Injected(status, message or f"injected {status}", times, path_contains)
            )

    def clear_injected(self) -> None:
        with self._lock:
            self._injected.clear()

    def job(self, job_id: str) -> FakeJob:
        return self.jobs[job_id]

    def wait(self, job_id: str, timeout: float = 60) -> str:
        """The job's final executor state (``SUCCEEDED``, ``FAILED``, ``CANCELED``)."""
        return self.jobs[job_id].execution.wait(timeout)

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        try:
            self._raise_injected(request.path)
            response: web.StreamResponse = await handler(request)
            return response
        except ApiError as exc:
            http, body = error_body(exc.status, exc.message)
            return web.json_response(body, status=http)

    def _raise_injected(self, path: str) -> None:
        with self._lock:
            for injected in self._injected:
                if injected.path_contains not in path:
                    continue
                if injected.remaining is not None:
                    injected.remaining -= 1
                    if injected.remaining <= 0:
                        self._injected.remove(injected)
                raise ApiError(injected.status, injected.message)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/storage/v1/"):
            return self._storage(request)
        if match := _COLLECTION.match(path):
            project, location = match.groups()
            self._check_parent(project, location, "list" if request.method == "GET" else "create")
            if request.method == "POST":
                body = await request.json()
                return _json(await asyncio.to_thread(self._create, request.query, body))
            if request.method == "GET":
                return _json(self._list(request.query))
        elif match := _JOB.match(path):
            project, location, job_id, cancel = match.groups()
            self._check_parent(project, location, "cancel" if cancel else "get")
            if cancel and request.method == "POST":
                return _json(self._cancel(job_id))
            if not cancel and request.method == "GET":
                return _json(self._render(self._find(job_id)))
        raise ApiError("NOT_FOUND", f"The requested URL {path} was not found on this server.")

    def _storage(self, request: web.Request) -> web.Response:
        """Buckets only: get (200 or 404) and insert (the SDK creates a missing one)."""
        parts = request.path.rstrip("/").split("/")  # "", storage, v1, b, [bucket]
        if len(parts) == 5 and parts[3] == "b" and request.method == "GET":
            if parts[4] in self.buckets:
                return _json(_bucket(parts[4]))
            raise ApiError("NOT_FOUND", "The specified bucket does not exist.")
        if len(parts) == 4 and parts[3] == "b" and request.method == "POST":
            raise ApiError("PERMISSION_DENIED", "storage.buckets.create denied (fake)")
        raise ApiError("NOT_FOUND", f"Not Found: {request.path}")

    def _check_parent(self, project: str, location: str, verb: str) -> None:
        if project not in (self.project, PROJECT_NUMBER):
            raise ApiError(
                "PERMISSION_DENIED",
                f"Permission 'aiplatform.pipelineJobs.{verb}' denied on resource "
                f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}' "
                "(or it may not exist).",
            )
        if location != self.location:
            raise ApiError("INVALID_ARGUMENT", f"Location {location} is not supported here.")

    def _find(self, job_id: str) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(
                "NOT_FOUND",
                f'The PipelineJob "{self.parent}/pipelineJobs/{job_id}" does not exist.',
            )
        return job

    # ------------------------------------------------------------------ pipeline jobs

    def _create(self, query: Any, body: dict[str, Any]) -> dict[str, Any]:
        job_id = query.get("pipelineJobId") or f"job-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
        if not _JOB_ID.match(job_id):
            raise ApiError("INVALID_ARGUMENT", f"Invalid pipeline job id: {job_id}")
        spec = body.get("pipelineSpec")
        if not isinstance(spec, dict) or "root" not in spec:
            raise ApiError("INVALID_ARGUMENT", "pipelineSpec is required")
        runtime = body.get("runtimeConfig") or {}
        root = runtime.get("gcsOutputDirectory", "")
        if not root.startswith("gs://"):
            raise ApiError(
                "INVALID_ARGUMENT",
                f"gcsOutputDirectory must be a Cloud Storage path (gs://...), got {root!r}",
            )
        for key, value in (body.get("labels") or {}).items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise ApiError("INVALID_ARGUMENT", f"Invalid label {key}={value}")
        parameters = dict(runtime.get("parameterValues") or {})
        with self._lock:
            if job_id in self.jobs:
                raise ApiError(
                    "ALREADY_EXISTS",
                    f"PipelineJob {self.parent}/pipelineJobs/{job_id} already exists.",
                )
            try:
                execution = SpecExecution(
                    spec,
                    parameters,
                    work_dir=self.work_dir / job_id,
                    env=self.env,
                    job_name=job_id,
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise ApiError("INVALID_ARGUMENT", f"Invalid pipelineSpec: {exc}") from exc
            job = FakeJob(
                name=f"{self.parent}/pipelineJobs/{job_id}",
                job_id=job_id,
                body=body,
                execution=execution,
                created_at=datetime.now(UTC),
            )
            self.jobs[job_id] = job
        execution.start()
        return self._render(job)

    def _list(self, query: Any) -> dict[str, Any]:
        size = int(query.get("pageSize") or 100)
        start = int(query.get("pageToken") or 0)
        jobs = sorted(self.jobs.values(), key=lambda job: job.created_at, reverse=True)
        page = jobs[start : start + size]
        body: dict[str, Any] = {"pipelineJobs": [self._render(job) for job in page]}
        if start + size < len(jobs):
            body["nextPageToken"] = str(start + size)
        return body

    def _cancel(self, job_id: str) -> dict[str, Any]:
        job = self._find(job_id)
        state = job.execution.state
        if state in (SUCCEEDED, FAILED, CANCELED):
            raise ApiError(
                "FAILED_PRECONDITION",
                f"Cannot cancel pipeline job {job.name} in state {JOB_STATES[state]}.",
            )
        job.execution.cancel()
        return {}

    # ------------------------------------------------------------------ rendering

    def _render(self, job: FakeJob) -> dict[str, Any]:
        execution = job.execution
        tasks = execution.snapshot()
        state = execution.state
        spec = job.body["pipelineSpec"]
        pipeline_name = spec.get("pipelineInfo", {}).get("name", "pipeline")
        finished = execution.finished_at if state in (SUCCEEDED, FAILED, CANCELED) else None
        root_task: dict[str, Any] = {
            "taskId": "1",
            "taskName": pipeline_name,
            "createTime": rfc3339(execution.created_at),
            "state": TASK_STATES.get(state, "RUNNING"),
            "execution": {"state": EXECUTION_STATES[TASK_STATES.get(state, "RUNNING")]},
            "taskUniqueName": pipeline_name,
        }
        if execution.started_at:
            root_task["startTime"] = rfc3339(execution.started_at)
        if finished:
            root_task["endTime"] = rfc3339(finished)
        details = [root_task]
        with self._lock:
            for name, task in tasks.items():
                if task.attempts:
                    task_id = job.task_ids.setdefault(name, next(self._task_ids))
                    details.append(self._task(job, task, task_id))
        body: dict[str, Any] = {
            "name": job.name,
            "displayName": job.body.get("displayName", ""),
            "createTime": rfc3339(job.created_at),
            "updateTime": rfc3339(datetime.now(UTC)),
            "pipelineSpec": spec,
            "state": JOB_STATES[state],
            "jobDetail": {
                "pipelineContext": {
                    "name": f"{self.parent}/metadataStores/default/contexts/{pipeline_name}"
                },
                "pipelineRunContext": {
                    "name": f"{self.parent}/metadataStores/default/contexts/{job.job_id}"
                },
                "taskDetails": details,
            },
            "labels": job.body.get("labels") or {},
            "runtimeConfig": job.body.get("runtimeConfig") or {},
        }
        if execution.started_at:
            body["startTime"] = rfc3339(execution.started_at)
        if finished:
            body["endTime"] = rfc3339(finished)
        if job.body.get("serviceAccount"):
            body["serviceAccount"] = job.body["serviceAccount"]
        if state == FAILED:
            failed = sorted(t.display_name for t in tasks.values() if t.state == FAILED)
            body["error"] = {
                "code": 9,
                "message": "The DAG failed because some tasks failed. The failed tasks are: "
                f"[{', '.join(failed)}].",
            }
        elif state == CANCELED:
            body["error"] = {"code": 1, "message": "CANCELED"}
        return body

    def _task(self, job: FakeJob, task: TaskState, task_id: int) -> dict[str, Any]:
        state = task.state  # never SKIPPED: a task that never ran is not rendered
        custom_jobs = [
            f"projects/{PROJECT_NUMBER}/locations/{self.location}/customJobs/"
            f"{task_id}{attempt.number:03d}"
            for attempt in task.attempts
        ]
        history: list[dict[str, Any]] = [
            {"updateTime": rfc3339(task.created_at), "state": "PENDING"}
        ]
        for attempt in task.attempts:
            history.append({"updateTime": rfc3339(attempt.started_at), "state": "RUNNING"})
            retried = attempt is not task.attempts[-1] and attempt.exit_code not in (None, 0)
            if retried:
                history.append(
                    {
                        "updateTime": rfc3339(attempt.finished_at),
                        "state": "RUNNING",
                        "error": _container_error(attempt.exit_code),
                    }
                )
        detail: dict[str, Any] = {
            "taskId": str(task_id),
            "parentTaskId": "1",
            "taskName": task.display_name,
            "taskUniqueName": task.display_name,
            "createTime": rfc3339(task.created_at),
            "startTime": rfc3339(task.started_at),
            "state": TASK_STATES.get(state, "RUNNING"),
            "executorDetail": {
                "containerDetail": {"mainJob": custom_jobs[-1], "failedMainJobs": custom_jobs[:-1]}
            },
            "pipelineTaskStatus": history,
        }
        metadata: dict[str, Any] = {}
        for key, value in task.outputs.items():
            metadata[f"output:{key}"] = value
        detail["execution"] = {
            "name": f"{self.parent}/metadataStores/default/executions/{task.task_uuid}",
            "displayName": task.display_name,
            "state": EXECUTION_STATES[detail["state"]],
            "metadata": metadata,
        }
        if task.state in (SUCCEEDED, FAILED, CANCELED):
            detail["endTime"] = rfc3339(task.finished_at)
            final: dict[str, Any] = {
                "updateTime": rfc3339(task.finished_at),
                "state": detail["state"],
            }
            if task.state == FAILED:
                detail["error"] = final["error"] = _container_error(task.attempts[-1].exit_code)
            elif task.state == CANCELED:
                detail["error"] = final["error"] = {"code": 1, "message": "Task was cancelled."}
            history.append(final)
        return detail


def _container_error(exit_code: int | None) -> dict[str, Any]:
    return {
        "code": 9,
        "message": f"The replica workerpool0-0 exited with a non-zero status of {exit_code}. "
        "To find out more about why your job exited please check the logs.",
    }


def _json(body: dict[str, Any]) -> web.Response:
    return web.json_response(body)


# ---------------------------------------------------------------------- Cloud Storage


def _bucket(name: str) -> dict[str, Any]:
    return {
        "kind": "storage#bucket",
        "id": name,
        "name": name,
        "projectNumber": PROJECT_NUMBER,
        "location": "US-CENTRAL1",
        "storageClass": "STANDARD",
        "timeCreated": "2024-01-01T00:00:00.000Z",
        "metageneration": "1",
        "etag": "CAE=",
    }
