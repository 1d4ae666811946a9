"""The ``vertex`` backend: each run a Vertex AI PipelineJob (Vertex AI Pipelines, REST API v1).

A run's plan is compiled to a KFP v2 ``PipelineSpec`` (``kfp_spec.compile_plan``: one container
component per step, the run's conf the pipeline parameter ``run``) and submitted as a
PipelineJob whose id is derived from the service's run id, so a submit repeated after a crash
finds the first job (409 ALREADY_EXISTS) and adopts it. Vertex AI schedules the tasks and retries
them (each task's ``retryPolicy``); ``observe`` maps the job's state and its
``jobDetail.taskDetails`` back to the steps: state, attempts (the task's CustomJobs), start and
end, outputs (the ``result`` output parameter, which Vertex reports as the execution's
``output:result`` metadata) and error. There is no log capability: task logs are in Cloud
Logging, out of scope here.

The official ``google-cloud-aiplatform`` SDK is used, imported only inside the calls (it costs
seconds and hundreds of MB): ``aiplatform.PipelineJob`` builds and validates the job (runtime
config, parameters, labels, id), and the SDK's GAPIC ``PipelineServiceClient`` (REST transport,
one per backend) sends it and reads it back, each call with this backend's timeout and no SDK
retry. ``PipelineJob.submit()`` is deliberately not called: before creating the job it gets, and
if missing creates, the ``pipeline_root`` bucket with Cloud Storage's default retry, which blocks
for two minutes when Cloud Storage is unreachable and may create buckets and grant IAM roles as a
side effect. ``PipelineJob.get()``/``.state`` retry for minutes too, and ``run()``/``wait()``
poll: none of them is used. The SDK is synchronous: each call runs in a thread.

Credentials: Application Default Credentials (``google.auth.default``) in production; anonymous
when ``api_endpoint`` is plain ``http://`` (a local fake or emulator, never Google).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from mlops.backends.base import (
    BackendHealth,
    BackendUnavailable,
    RunObservation,
    RunPlan,
    StepObservation,
)
from mlops.backends.config import VertexConfig
from mlops.backends.kfp_spec import RESULT, compile_plan, pipeline_arguments, task_names

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
HEALTH_TIMEOUT_SECONDS = 5.0
LABEL_MANAGED_BY = "managed-by"
LABEL_RUN = "mlops-run-id"
LABEL_PIPELINE = "mlops-pipeline"
LABEL_VERSION = "mlops-version"
MANAGER = "mlops"

RUN_STATES = {
    "PIPELINE_STATE_UNSPECIFIED": "queued",
    "PIPELINE_STATE_QUEUED": "queued",
    "PIPELINE_STATE_PENDING": "queued",
    "PIPELINE_STATE_RUNNING": "running",
    "PIPELINE_STATE_CANCELLING": "running",
    "PIPELINE_STATE_PAUSED": "running",  # resumable: not over
    "PIPELINE_STATE_SUCCEEDED": "succeeded",
    "PIPELINE_STATE_FAILED": "failed",
    "PIPELINE_STATE_CANCELLED": "cancelled",
}
TASK_STATES = {
    "STATE_UNSPECIFIED": "pending",
    "PENDING": "pending",
    "RUNNING": "running",
    "CANCEL_PENDING": "running",
    "CANCELLING": "running",
    "SUCCEEDED": "succeeded",
    "SKIPPED": "succeeded",  # a cache hit: done, with the cached outputs
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "NOT_TRIGGERED": "skipped",  # its trigger condition was false
}
# A step with no task detail yet: Vertex creates a task when it schedules it.
ABSENT_STEP = {"queued": "pending", "running": "pending", "cancelled": "cancelled"}
FINAL_RUN = frozenset({"succeeded", "failed", "cancelled"})
FINAL_STEP = frozenset({"succeeded", "failed", "skipped", "cancelled"})
_INVALID_ID = re.compile(r"[^a-z0-9-]+")
_INVALID_LABEL = re.compile(r"[^a-z0-9_-]+")


def job_id_for(plan: RunPlan) -> str:
    """The PipelineJob id of ``plan``'s run: ``mlops-`` and the run id (a UUID as it is; any
    other text made valid, with a digest so that two ids never meet), at most 128 characters
    of ``[a-z0-9-]`` starting with a letter."""
    cleaned = _INVALID_ID.sub("-", plan.run_id.lower()).strip("-")
    if cleaned != plan.run_id or len(cleaned) > 100:
        digest = hashlib.sha256(plan.run_id.encode()).hexdigest()[:12]
        cleaned = f"{cleaned[:100].strip('-')}-{digest}".lstrip("-")
    return f"{MANAGER}-{cleaned}"


def label_value(text: str) -> str:
    """A label value: at most 63 of lowercase letters, digits, ``_`` and ``-``."""
    return _INVALID_LABEL.sub("-", text.lower())[:63]


def job_labels(plan: RunPlan) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_RUN: label_value(plan.run_id),
        LABEL_PIPELINE: label_value(plan.pipeline),
        LABEL_VERSION: str(plan.version),
    }


def display_name(plan: RunPlan) -> str:
    return f"{plan.pipeline} v{plan.version}"[:128]


def endpoint_of(config: VertexConfig) -> str:
    """The Vertex AI API endpoint: ``api_endpoint`` or the region's (as the SDK picks it)."""
    if config.api_endpoint:
        return config.api_endpoint.rstrip("/")
    from google.cloud.aiplatform import initializer

    options = initializer.global_config.get_client_options(location_override=config.region)
    return str(options.api_endpoint)


def credentials_for(config: VertexConfig) -> Any:
    """Anonymous for a plain-http endpoint (a local fake), otherwise Application Default
    Credentials (a service account key, workload identity, gcloud's user login...)."""
    if config.api_endpoint and config.api_endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError as exc:
        raise BackendUnavailable(
            "no Google Cloud credentials for Vertex AI: set GOOGLE_APPLICATION_CREDENTIALS to a "
            f"service account key, or run where Application Default Credentials exist ({exc})",
            transient=False,
        ) from exc
    return credentials


def pipeline_client(config: VertexConfig, credentials: Any) -> Any:
    """The SDK's GAPIC ``PipelineServiceClient`` (v1) over REST, for ``config``'s endpoint."""
    from google.api_core.client_options import ClientOptions
    from google.cloud.aiplatform_v1 import PipelineServiceClient

    return PipelineServiceClient(
        credentials=credentials,
        transport="rest",
        client_options=ClientOptions(api_endpoint=endpoint_of(config)),
    )


def parent_of(config: VertexConfig) -> str:
    return f"projects/{config.project}/locations/{config.region}"


def vertex_error(exc: BaseException, doing: str, where: str) -> BackendUnavailable:
    """What went wrong talking to Vertex AI, as the engine wants it: transient (unreachable,
    5xx, 429, timeouts) or not (refused: permission, invalid, not found...)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.GoogleAPICallError):
        code = int(exc.code or 0)
        status, message = error_payload(exc)
        # 409 ABORTED (a concurrent change) is worth repeating; ALREADY_EXISTS is adopted
        transient = code == 0 or code >= 500 or code in (408, 409, 429)
        hint = ""
        if code == 403:
            hint = (
                " (does the service's Google account have the Vertex AI User role on the "
                "project, and is the Vertex AI API enabled?)"
            )
        return BackendUnavailable(
            f"Vertex AI answered {code} {status} when {doing}: {message}{hint}",
            transient=transient,
        )
    if isinstance(exc, gexc.RetryError | gexc.DeadlineExceeded):
        return BackendUnavailable(
            f"Vertex AI at {where} did not answer in time when {doing}: {exc}", transient=True
        )
    if isinstance(exc, auth_exc.RefreshError | auth_exc.DefaultCredentialsError):
        return BackendUnavailable(
            f"Google credentials for Vertex AI were refused when {doing}: {exc}",
            transient=bool(getattr(exc, "retryable", False)),
        )
    # requests' connection errors and timeouts, google.auth's TransportError, OSError
    if "Timeout" in type(exc).__name__:
        return BackendUnavailable(
            f"Vertex AI at {where} did not answer in time when {doing}: {exc}", transient=True
        )
    return BackendUnavailable(
        f"Vertex AI at {where} is unreachable when {doing}: {type(exc).__name__}: {exc}",
        transient=True,
    )


def error_payload(exc: Any) -> tuple[str, str]:
    """(status, message) of an API error: Google's JSON error body (``{"error": {"code",
    "message", "status"}}``) where there is one; the SDK names REST errors by HTTP status
    only (400 BadRequest for INVALID_ARGUMENT and FAILED_PRECONDITION alike)."""
    status = getattr(getattr(exc, "grpc_status_code", None), "name", None) or type(exc).__name__
    message = str(getattr(exc, "message", None) or exc)
    try:
        error = exc.response.json()["error"]
    except Exception:  # not JSON, no response (gRPC), or another shape
        return status, message
    return str(error.get("status") or status), str(error.get("message") or message)


class VertexBackend:
    name: ClassVar[str] = "vertex"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: Any) -> None:
        config: VertexConfig | None = settings.vertex
        if config is None:
            raise ValueError("the vertex backend is not configured (MLOPS_VERTEX__*)")
        self.config = config
        self._client: Any = None
        self._credentials: Any = None
        self._client_lock = threading.Lock()
        # (job, step, attempt) -> what remote_task recorded for a finished attempt
        self._markers: dict[tuple[str, str, int], dict[str, Any] | None] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def check_health(cls, settings: Any) -> BackendHealth:
        config: VertexConfig = settings.vertex
        return await asyncio.to_thread(cls._health, config)

    @classmethod
    def _health(cls, config: VertexConfig) -> BackendHealth:
        where = config.api_endpoint or f"{config.region}-aiplatform.googleapis.com"
        client = None
        try:
            client = pipeline_client(config, credentials_for(config))
            client.list_pipeline_jobs(
                request={"parent": parent_of(config), "page_size": 1},
                timeout=min(config.request_timeout_seconds, HEALTH_TIMEOUT_SECONDS),
                retry=None,
            )
        except BackendUnavailable as exc:
            return BackendHealth(ok=False, detail=str(exc))
        except Exception as exc:
            return BackendHealth(ok=False, detail=str(vertex_error(exc, "listing jobs", where)))
        finally:
            if client is not None:
                client.transport.close()
        return BackendHealth(
            ok=True, detail=f"Vertex AI Pipelines in {parent_of(config)} at {where}"
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._api)

    async def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.transport.close)
        self._markers.clear()

    # ------------------------------------------------------------------ the protocol

    async def submit(self, plan: RunPlan) -> str:
        return await asyncio.to_thread(self._submit, plan)

    async def observe(self, external_id: str, plan: RunPlan) -> RunObservation:
        return await asyncio.to_thread(self._observe, external_id, plan)

    async def cancel(self, external_id: str) -> None:
        await asyncio.to_thread(self._cancel, external_id)

    async def step_log(self, external_id: str, step: str, attempt: int) -> str:
        raise BackendUnavailable(
            "step logs are not supported by the 'vertex' backend (they are in Cloud Logging)",
            transient=False,
        )

    # ------------------------------------------------------------------ calls (in a thread)

    def _submit(self, plan: RunPlan) -> str:
        from google.api_core import exceptions as gexc
        from google.cloud import aiplatform
        from google.cloud.aiplatform_v1 import PipelineJob

        job_id = job_id_for(plan)
        client = self._api()
        with tempfile.TemporaryDirectory(prefix="mlops-vertex-") as folder:
            template = Path(folder) / "pipeline.json"
            template.write_text(json.dumps(compile_plan(plan, self.config.image)))
            try:
                job = aiplatform.PipelineJob(
                    display_name=display_name(plan),
                    template_path=str(template),
                    job_id=job_id,
                    pipeline_root=self.config.pipeline_root,
                    parameter_values=pipeline_arguments(plan),
                    labels=job_labels(plan),
                    credentials=self._credentials,
                    project=self.config.project,
                    location=self.config.region,
                )
            except ValueError as exc:  # an id, label, parameter or root the SDK refuses
                raise BackendUnavailable(
                    f"Vertex AI PipelineJob for run {plan.run_id} is invalid: {exc}",
                    transient=False,
                ) from exc
        # the job as built, before creation (``gca_resource`` is only readable once created)
        resource = PipelineJob.from_json(json.dumps(job.to_dict()))
        if self.config.service_account:
            resource.service_account = self.config.service_account
        try:
            created = client.create_pipeline_job(
                parent=parent_of(self.config),
                pipeline_job=resource,
                pipeline_job_id=job_id,
                timeout=self.config.request_timeout_seconds,
                retry=None,
            )
        except gexc.Conflict as exc:  # created before: a crash came between create and commit
            return self._adopt(plan, job_id, exc)
        except Exception as exc:
            raise self._error(exc, f"creating PipelineJob {job_id}") from exc
        return str(created.name)

    def _adopt(self, plan: RunPlan, job_id: str, conflict: Exception) -> str:
        from google.api_core import exceptions as gexc

        name = f"{parent_of(self.config)}/pipelineJobs/{job_id}"
        try:
            existing = self._get(name)
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, gexc.NotFound):  # 409 ABORTED, not ALREADY_EXISTS
                raise self._error(conflict, f"creating PipelineJob {job_id}") from conflict
            raise
        run_label = dict(existing.labels).get(LABEL_RUN)
        if run_label != label_value(plan.run_id):
            raise BackendUnavailable(
                f"Vertex AI already has a PipelineJob {job_id} that is not run {plan.run_id}'s "
                f"(its {LABEL_RUN} label is {run_label!r})",
                transient=False,
            )
        return str(existing.name)

    def _get(self, name: str) -> Any:
        try:
            return self._api().get_pipeline_job(
                name=name, timeout=self.config.request_timeout_seconds, retry=None
            )
        except Exception as exc:
            raise self._error(exc, f"reading PipelineJob {name}") from exc

    def _observe(self, external_id: str, plan: RunPlan) -> RunObservation:
        job = self._get(external_id)
        status = RUN_STATES.get(job.state.name, "running")
        names = task_names(plan)
        details: dict[str, Any] = {}
        wanted = set(names.values())
        for detail in job.job_detail.task_details:
            # the root task carries the pipeline's name: a step's task is a child of it
            if detail.task_name in wanted and (
                detail.task_name not in details or detail.parent_task_id
            ):
                details[detail.task_name] = detail
        steps: dict[str, StepObservation] = {}
        for step in plan.steps:
            detail = details.get(names[step.name])
            if detail is None:
                steps[step.name] = StepObservation(status=ABSENT_STEP.get(status, "skipped"))
            else:
                steps[step.name] = self._step(external_id, plan, step.name, detail)
        error = (job.error.message or None) if status in ("failed", "cancelled") else None
        return RunObservation(status=status, steps=steps, error=error)

    def _step(self, external_id: str, plan: RunPlan, step: str, detail: Any) -> StepObservation:
        state = detail.state.name
        status = TASK_STATES.get(state, "pending")
        attempts = attempts_of(detail)
        outputs = error = None
        if status == "succeeded":
            result = result_of(detail)
            if result is None:  # not reported by the API: the attempt's marker has it
                result = self._marker(external_id, plan, step, attempts) or {}
            outputs = result.get("outputs") or {}
        elif status in ("failed", "cancelled"):
            reason = self._reason(external_id, plan, step, attempts)
            error = reason or detail.error.message or f"the task ended {state}"
        elif status == "running" and attempts > 1 and (retried := retry_error(detail)):
            reason = self._reason(external_id, plan, step, attempts - 1)
            error = f"attempt {attempts - 1} failed: {reason or retried}"
        return StepObservation(
            status=status,
            attempts=attempts,
            started_at=utc(detail.start_time),
            finished_at=utc(detail.end_time) if status in FINAL_STEP else None,
            outputs=outputs,
            error=error,
        )

    def _marker(
        self, external_id: str, plan: RunPlan, step: str, attempt: int
    ) -> dict[str, Any] | None:
        """What ``remote_task`` recorded for an attempt that is over, in the artifact store, if
        it can be read from here (None otherwise: the API's own words are used instead)."""
        key = (external_id, step, attempt)
        if key in self._markers:
            return self._markers[key]
        marker = read_marker(plan, step, attempt)
        if marker is None or "finished_at" in marker:  # one being written is read again
            self._markers[key] = marker
        return marker

    def _reason(self, external_id: str, plan: RunPlan, step: str, attempt: int) -> str | None:
        """Why an attempt failed in the step's own words (its error), when readable."""
        marker = self._marker(external_id, plan, step, attempt)
        if marker and marker.get("ok") is False:
            return str(marker.get("error") or marker.get("error_type") or "step failed")
        return None

    def _cancel(self, external_id: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self._api().cancel_pipeline_job(
                name=external_id, timeout=self.config.request_timeout_seconds, retry=None
            )
        except gexc.NotFound:
            return  # gone: nothing to stop
        except gexc.BadRequest as exc:  # FAILED_PRECONDITION: over already?
            if RUN_STATES.get(self._get(external_id).state.name) in FINAL_RUN:
                return
            raise self._error(exc, f"cancelling PipelineJob {external_id}") from exc
        except Exception as exc:
            raise self._error(exc, f"cancelling PipelineJob {external_id}") from exc

    # ------------------------------------------------------------------ plumbing

    def _api(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._credentials = credentials_for(self.config)
                try:
                    self._client = pipeline_client(self.config, self._credentials)
                except Exception as exc:
                    raise self._error(exc, "creating the Vertex AI client") from exc
            return self._client

    def _where(self) -> str:
        return self.config.api_endpoint or f"{self.config.region}-aiplatform.googleapis.com"

    def _error(self, exc: BaseException, doing: str) -> BackendUnavailable:
        if isinstance(exc, BackendUnavailable):
            return exc
        return vertex_error(exc, doing, self._where())


def attempts_of(detail: Any) -> int:
    """How many times the task ran: its CustomJobs (the latest and the earlier failed ones),
    else the RUNNING entries of its status history, else 1 once started."""
    container = detail.executor_detail.container_detail
    custom = detail.executor_detail.custom_job_detail
    jobs = [*container.failed_main_jobs, *custom.failed_jobs]
    for latest in (container.main_job, custom.job):
        if latest and latest not in jobs:
            jobs.append(latest)
    if jobs:
        return len(jobs)
    history = [entry.state.name for entry in detail.pipeline_task_status]
    runs = sum(
        1
        for index, state in enumerate(history)
        if state == "RUNNING" and (index == 0 or history[index - 1] != "RUNNING")
    )
    return runs or (1 if detail.start_time else 0)


def retry_error(detail: Any) -> str | None:
    """The error of the latest failed attempt that Vertex is retrying, if any."""
    for entry in reversed(detail.pipeline_task_status):
        if entry.error.message and entry.state.name in ("RUNNING", "PENDING"):
            return str(entry.error.message)
    return None


def result_of(detail: Any) -> dict[str, Any] | None:
    """The task's ``result`` output parameter (the step's result line), as Vertex reports output
    parameters: the execution's ``output:result`` metadata."""
    value = dict(detail.execution.metadata).get(f"output:{RESULT}")
    if value is None:
        return None
    try:
        message = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def read_marker(plan: RunPlan, step: str, attempt: int) -> dict[str, Any] | None:
    if attempt < 1:
        return None
    try:
        from mlops.backends.remote_task import attempt_marker_name
        from mlops.steps.artifacts import ArtifactStore

        store = ArtifactStore(plan.artifact_root)
        uri = store.uri_for(plan.run_id, step, attempt_marker_name(attempt))
        with store.open(uri, "rb") as handle:
            message = json.loads(handle.read())
    except Exception:  # not readable from here (another file system, no credentials)
        return None
    return message if isinstance(message, dict) else None


def utc(moment: datetime | None) -> datetime | None:
    """A plain ``datetime`` in UTC (proto-plus gives its own subclass, or None when unset)."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return datetime(*moment.timetuple()[:6], moment.microsecond, tzinfo=UTC)
