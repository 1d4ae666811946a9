"""The ``kubeflow`` backend: each run a run of a Kubeflow Pipelines deployment (API v2beta1).

A run's plan is compiled to a KFP v2 ``PipelineSpec`` (``kfp_spec``) and created inline, in the
configured experiment, as a run whose display name is derived from the service's run id: a
second submit after a crash between submit and commit finds that run and adopts it. KFP
schedules the tasks and retries them (``retryPolicy``); ``remote_task`` enforces each step's
timeout, numbers its attempts and records each attempt's result in the artifact store, because
the v2beta1 run API reports task states and times but no output parameters (a task's
``outputs`` lists artifacts only). ``observe`` therefore reads the run from KFP and each step's
result from the artifact store. KFP has no logs API: no ``LOGS`` capability.

The official ``kfp.Client`` is synchronous: every call runs in a thread. It is used for its
configuration (host, bearer token, namespace, the user's KFP context) and through its service
APIs, with a request timeout on every call: its convenience methods take none, print links on
stdout and retry ``healthz`` five times five seconds apart. ``kfp`` is imported only here,
when the backend is used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import httpx

from mlops.backends.base import (
    BackendHealth,
    BackendUnavailable,
    PlanStep,
    RunObservation,
    RunPlan,
    StepObservation,
)
from mlops.backends.config import KubeflowConfig
from mlops.backends.kfp_spec import compile_plan, pipeline_arguments, task_names
from mlops.backends.remote_task import recorded_attempts

logger = logging.getLogger("mlops.backends.kubeflow")
T = TypeVar("T")
HEALTHZ = "/apis/v2beta1/healthz"
RUN_STATES = {
    "PENDING": "queued",
    "RUNNING": "running",
    "PAUSED": "running",
    "CANCELING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    # Stopped in Kubeflow, not by the service (a run the service cancels is not observed
    # again): the run ends as cancelled, with that reason.
    "CANCELED": "cancelled",
    "SKIPPED": "failed",
}
TASK_STATES = {
    "PENDING": "pending",
    "RUNNING": "running",
    "PAUSED": "running",
    "CANCELING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "SKIPPED": "skipped",
    "CANCELED": "cancelled",
}
FINAL_TASK = frozenset({"succeeded", "failed", "skipped", "cancelled"})
TRANSIENT_STATUS = frozenset({408, 425, 429})


def run_display_name(plan: RunPlan) -> str:
    """The KFP run's display name: how a re-submitted plan finds its run."""
    return f"mlops-{plan.run_id}"


def _name_filter(display_name: str) -> str:
    return json.dumps(
        {
            "predicates": [
                {"operation": "EQUALS", "key": "display_name", "stringValue": display_name}
            ]
        }
    )


def _when(value: Any) -> datetime | None:
    """A KFP timestamp; KFP sends the epoch for "not yet"."""
    if not isinstance(value, datetime) or value.year <= 1970:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _state(value: Any) -> str:
    return str(value or "RUNTIME_STATE_UNSPECIFIED").upper()


def _error_message(error: Any) -> str | None:
    message = getattr(error, "message", None) if error is not None else None
    return str(message) if message else None


class KubeflowBackend:
    name: ClassVar[str] = "kubeflow"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: Any) -> None:
        config: KubeflowConfig | None = settings.kubeflow
        if config is None:
            raise ValueError("the kubeflow backend is not configured (MLOPS_KUBEFLOW__*)")
        self.config = config
        self.host = str(config.host).rstrip("/")
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._experiment_id: str | None = None
        # (external id, step) -> its observation once it succeeded or was skipped: the
        # artifact store is read once for it
        self._final: dict[tuple[str, str], StepObservation] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def check_health(cls, settings: Any) -> BackendHealth:
        config: KubeflowConfig = settings.kubeflow
        url = str(config.host).rstrip("/") + HEALTHZ
        headers = {}
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        try:
            async with httpx.AsyncClient(
                timeout=min(config.request_timeout_seconds, 5.0)
            ) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            return BackendHealth(
                False, f"Kubeflow Pipelines at {config.host} is unreachable: {exc}"
            )
        if response.status_code != 200:
            return BackendHealth(
                False, f"Kubeflow Pipelines answered {response.status_code} on {HEALTHZ}"
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        mode = "multi-user" if body.get("multi_user") else "single-user"
        return BackendHealth(True, f"Kubeflow Pipelines at {config.host} is up ({mode})")

    async def start(self) -> None:
        """Nothing to do: the client is built on first use (building it calls KFP)."""

    async def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        api_client = getattr(getattr(client, "_run_api", None), "api_client", None)
        close = getattr(api_client, "close", None)
        if callable(close):
            await asyncio.to_thread(close)

    # ------------------------------------------------------------------ the protocol

    async def submit(self, plan: RunPlan) -> str:
        spec = compile_plan(plan, self.config.image)
        return await self._call("submit the run", self._submit, plan, spec)

    async def observe(self, external_id: str, plan: RunPlan) -> RunObservation:
        return await self._call("read the run", self._observe, external_id, plan)

    async def cancel(self, external_id: str) -> None:
        await self._call("terminate the run", self._cancel, external_id)

    async def step_log(self, external_id: str, step: str, attempt: int) -> str:
        raise BackendUnavailable(
            "step logs are not supported by the 'kubeflow' backend (KFP has no logs API)",
            transient=False,
        )

    # ------------------------------------------------------------------ calls (in a thread)

    async def _call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._translated, what, function, *args)

    def _translated(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """Run ``function``, turning the client's failures into ``BackendUnavailable``."""
        import urllib3
        from kfp_server_api.exceptions import ApiException

        try:
            return function(*args)
        except ApiException as exc:
            status = int(exc.status or 0)
            detail = _api_detail(exc)
            if status == 0:
                raise BackendUnavailable(
                    f"Kubeflow Pipelines at {self.host} is unreachable ({what}): {detail}",
                    transient=True,
                ) from None
            transient = status >= 500 or status in TRANSIENT_STATUS
            raise BackendUnavailable(
                f"Kubeflow Pipelines answered {status} when asked to {what}: {detail}",
                transient=transient,
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendUnavailable(
                f"Kubeflow Pipelines at {self.host} is unreachable ({what}): {exc}",
                transient=True,
            ) from None

    @property
    def _timeout(self) -> tuple[float, float]:
        seconds = self.config.request_timeout_seconds
        return (min(seconds, 10.0), seconds)  # connect, read

    def _kfp(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = _make_client(self.config, self._timeout)
            return self._client

    def _namespace(self, client: Any) -> str | None:
        return self.config.namespace or client.get_user_namespace() or None

    def _experiment(self, client: Any) -> str:
        """The configured experiment's id, created on first use."""
        if self._experiment_id is not None:
            return self._experiment_id
        from kfp_server_api import V2beta1Experiment

        namespace = self._namespace(client)
        extra = {"namespace": namespace} if namespace else {}
        found = client._experiment_api.experiment_service_list_experiments(
            filter=_name_filter(self.config.experiment),
            page_size=2,
            _request_timeout=self._timeout,
            **extra,
        )
        experiments = list(found.experiments or [])
        if experiments:
            experiment = experiments[0]
        else:
            from kfp_server_api.exceptions import ApiException

            logger.info("creating the Kubeflow experiment %r", self.config.experiment)
            try:
                experiment = client._experiment_api.experiment_service_create_experiment(
                    experiment=V2beta1Experiment(
                        display_name=self.config.experiment,
                        description="Runs of the MLOps service's pipelines.",
                        namespace=namespace,
                    ),
                    _request_timeout=self._timeout,
                )
            except ApiException as exc:
                if exc.status != 409:  # another replica created it meanwhile: use that one
                    raise
                return self._experiment(client)
        self._experiment_id = str(experiment.experiment_id)
        return self._experiment_id

    def _submit(self, plan: RunPlan, spec: dict[str, Any]) -> str:
        from kfp_server_api import V2beta1Run, V2beta1RuntimeConfig

        client = self._kfp()
        experiment_id = self._experiment(client)
        display_name = run_display_name(plan)
        existing = client._run_api.run_service_list_runs(
            experiment_id=experiment_id,
            filter=_name_filter(display_name),
            page_size=10,
            sort_by="created_at",
            _request_timeout=self._timeout,
        )
        runs = [run for run in existing.runs or [] if run.display_name == display_name]
        if runs:
            logger.info("run %s: adopting Kubeflow run %s", plan.run_id, runs[0].run_id)
            return str(runs[0].run_id)
        created = client._run_api.run_service_create_run(
            run=V2beta1Run(
                experiment_id=experiment_id,
                display_name=display_name,
                description=plan.description,
                pipeline_spec=spec,
                runtime_config=V2beta1RuntimeConfig(parameters=pipeline_arguments(plan)),
            ),
            _request_timeout=self._timeout,
        )
        return str(created.run_id)

    def _observe(self, external_id: str, plan: RunPlan) -> RunObservation:
        client = self._kfp()
        run = client._run_api.run_service_get_run(
            run_id=external_id, _request_timeout=self._timeout
        )
        details = _details_by_step(plan, run)
        state = _state(run.state)
        status = RUN_STATES.get(state, "queued")
        run_over = status in ("succeeded", "failed", "cancelled")
        steps = {
            step.name: self._step(external_id, plan, step, details.get(step.name), run_over)
            for step in plan.steps
        }
        if run_over:  # not observed again: forget its steps
            for step in plan.steps:
                self._final.pop((external_id, step.name), None)
        error = _error_message(run.error)
        if state == "CANCELED":
            error = "the run was cancelled in Kubeflow Pipelines"
        elif status == "failed" and not error:
            failed = sorted(name for name, seen in steps.items() if seen.status == "failed")
            error = f"failed steps: {', '.join(failed)}" if failed else "the run failed"
        return RunObservation(status=status, steps=steps, error=error)

    def _step(
        self, external_id: str, plan: RunPlan, plan_step: PlanStep, detail: Any, run_over: bool
    ) -> StepObservation:
        step = plan_step.name
        key = (external_id, step)
        if key in self._final:
            return self._final[key]
        if detail is None:
            return StepObservation(status="pending")
        status = TASK_STATES.get(_state(detail.state), "pending")
        attempts = recorded_attempts(plan.artifact_root, plan.run_id, step)
        last = attempts[-1] if attempts else {}
        if status == "failed" and not run_over and len(attempts) <= plan_step.retries:
            # KFP may show a failed attempt before its retry starts: the step is not over
            # (the service would never revisit a step it saw fail)
            status = "running"
        outputs = last.get("outputs") if status == "succeeded" and last.get("ok") else None
        error = None
        if status == "failed":
            error = last.get("error") or _error_message(detail.error) or "failed in Kubeflow"
        elif status == "skipped":
            error = "an upstream step did not succeed"
        started = _when(detail.start_time) or _parse(last.get("started_at") if attempts else None)
        observation = StepObservation(
            status=status,
            attempts=max(len(attempts), 1 if status in ("running", "succeeded", "failed") else 0),
            started_at=started,
            finished_at=_when(detail.end_time) if status in FINAL_TASK else None,
            outputs=outputs if status == "succeeded" else None,
            error=error,
        )
        if status in ("succeeded", "skipped"):  # a failed task may still be retried
            self._final[key] = observation
        return observation

    def _cancel(self, external_id: str) -> None:
        from kfp_server_api.exceptions import ApiException

        client = self._kfp()
        try:
            run = client._run_api.run_service_get_run(
                run_id=external_id, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                logger.info("Kubeflow run %s is gone: nothing to cancel", external_id)
                return
            raise
        if _state(run.state) in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
            return
        client._run_api.run_service_terminate_run(
            run_id=external_id, _request_timeout=self._timeout
        )


def _details_by_step(plan: RunPlan, run: Any) -> dict[str, Any]:
    """Each step's task detail, by display name (the task's name); entries that are not steps
    (the root DAG, drivers) are left out. Where KFP lists a task more than once (one node per
    retry), the one that started last stands for it."""
    by_task = {task: step for step, task in task_names(plan).items()}
    details: dict[str, Any] = {}
    for detail in getattr(run.run_details, "task_details", None) or []:
        step = by_task.get(str(detail.display_name or ""))
        if step is None:
            continue
        seen = details.get(step)
        if seen is None or _order(detail) >= _order(seen):
            details[step] = detail
    return details


def _order(detail: Any) -> datetime:
    return _when(detail.start_time) or _when(detail.create_time) or datetime.min.replace(tzinfo=UTC)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _api_detail(exc: Any) -> str:
    """The message of a KFP error body (``{"code", "message", ...}``), else the reason."""
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    reason = getattr(exc, "reason", None) or "error"
    return str(message or reason)


def _make_client(config: KubeflowConfig, timeout: tuple[float, float]) -> Any:
    """A ``kfp.Client`` for ``config``; its start-up ``healthz`` call (made when no namespace is
    known) is one attempt with a timeout, not five attempts five seconds apart."""
    import kfp

    class Client(kfp.Client):  # type: ignore[misc]
        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            return self._healthz_api.healthz_service_get_healthz(_request_timeout=timeout)

    token = config.token.get_secret_value() if config.token is not None else None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2+"
        return Client(
            host=str(config.host).rstrip("/"),
            existing_token=token,
            namespace=config.namespace or "kubeflow",  # kfp's default: no namespace of ours
        )
