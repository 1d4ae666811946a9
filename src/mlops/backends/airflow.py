"""The ``airflow`` backend: each run a DAG run of an Apache Airflow 3 deployment (REST API v2).

A pipeline version becomes a DAG through its plan: the backend writes the plan (JSON, atomically)
into the folder ``airflow_dags/ml_training_dag.py`` reads (``MLOPS_AIRFLOW_SPECS``), then
triggers a DAG run whose id is derived from the service's run id and whose ``conf`` carries the
run's resolved parameters. Airflow schedules the tasks, retries them and enforces their
timeouts; the engine reconciles task instances back into step runs (state, try number, times),
reads each successful task's result from XCom and each attempt's log from the logs endpoint.

Calls go through the official ``apache-airflow-client`` (synchronous: run in a thread) with a JWT
from ``POST /auth/token``, fetched again when Airflow answers 401 (expired).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from mlops.backends.base import (
    LOGS,
    BackendHealth,
    BackendUnavailable,
    RunObservation,
    RunPlan,
    StepObservation,
)
from mlops.backends.config import AirflowConfig

T = TypeVar("T")
PAGE = 100  # Airflow's default maximum page size
RUN_STATES = {"queued": "queued", "running": "running", "success": "succeeded", "failed": "failed"}
TASK_STATES = {
    "success": "succeeded",
    "failed": "failed",
    "upstream_failed": "skipped",
    "skipped": "skipped",
    "removed": "skipped",
    "queued": "running",  # handed to the executor
    "running": "running",
    "restarting": "running",
    "deferred": "running",
    "up_for_reschedule": "running",
    "up_for_retry": "pending",
    "scheduled": "pending",
}
HEALTHY_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")


def dag_id_for(plan: RunPlan, prefix: str) -> str:
    return f"{prefix}__{plan.pipeline}__v{plan.version}"


def dag_run_id_for(plan: RunPlan) -> str:
    return f"mlops-{plan.run_id}"


def plan_document(plan: RunPlan, dag_id: str) -> dict[str, Any]:
    """What ``ml_training_dag.py`` builds a DAG from."""
    return {
        "dag_id": dag_id,
        "description": plan.description,
        "steps": [step.as_json() for step in plan.steps],
    }


def write_plan(specs_dir: Path, document: dict[str, Any]) -> None:
    """Write the plan unless the same one is there: a half-written file is never visible."""
    specs_dir.mkdir(parents=True, exist_ok=True)
    path = specs_dir / f"{document['dag_id']}.json"
    text = json.dumps(document, indent=1, sort_keys=True)
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    partial = specs_dir / f".{path.name}.{os.getpid()}.tmp"
    partial.write_text(text)
    os.replace(partial, path)


def result_of(value: Any) -> dict[str, Any]:
    """A task's XCom return value: the step's JSON result line."""
    message = json.loads(value) if isinstance(value, str) else value
    return message if isinstance(message, dict) else {}


def failure_reason(log: str) -> str | None:
    """Why an attempt failed, from its log: the step's own error, else Airflow's last word."""
    last = None
    for line in reversed(log.splitlines()):
        text = line.split("] ", 1)[-1].strip() if line.startswith("[") else line.strip()
        if not text or text.startswith("::"):  # empty, or a ::group:: marker
            continue
        start = text.find('{"')
        if start >= 0:
            try:
                message = json.loads(text[start:])
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("ok") is False:
                return str(message.get("error") or message.get("error_type") or "step failed")
        if text in ("Process timed out", "AirflowTaskTimeout"):
            return "timed out: Airflow stopped the task at its execution_timeout"
        last = last or text
    return last


class AirflowBackend:
    name: ClassVar[str] = "airflow"
    capabilities: ClassVar[frozenset[str]] = frozenset({LOGS})

    def __init__(self, settings: Any) -> None:
        config: AirflowConfig | None = settings.airflow
        if config is None:
            raise ValueError("the airflow backend is not configured (MLOPS_AIRFLOW__*)")
        self.config = config
        self.url = str(config.url).rstrip("/")
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._results: dict[tuple[str, str], dict[str, Any]] = {}  # (run, task) -> result
        self._reasons: dict[tuple[str, str, int], str | None] = {}  # (run, task, try) -> why

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def check_health(cls, settings: Any) -> BackendHealth:
        config: AirflowConfig = settings.airflow
        url = str(config.url).rstrip("/")
        async with httpx.AsyncClient(
            timeout=min(config.request_timeout_seconds, 5.0), verify=config.verify_tls
        ) as client:
            try:
                health = (await client.get(f"{url}/api/v2/monitor/health")).json()
                token = await client.post(
                    f"{url}/auth/token",
                    json={
                        "username": config.username,
                        "password": config.password.get_secret_value(),
                    },
                )
            except (httpx.HTTPError, ValueError) as exc:
                return BackendHealth(ok=False, detail=f"Airflow at {url} is unreachable: {exc}")
        unhealthy = [
            name
            for name in HEALTHY_COMPONENTS
            if (health.get(name) or {}).get("status") != "healthy"
        ]
        if unhealthy:
            return BackendHealth(
                ok=False, detail=f"Airflow reports unhealthy: {', '.join(unhealthy)}"
            )
        if token.status_code not in (200, 201):
            return BackendHealth(
                ok=False,
                detail=f"Airflow refused the credentials of {config.username!r} "
                f"({token.status_code})",
            )
        return BackendHealth(
            ok=True, detail=f"Airflow at {url}: {', '.join(HEALTHY_COMPONENTS)} healthy"
        )

    async def start(self) -> None:
        self.config.specs_dir.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        self._results.clear()
        self._reasons.clear()

    # ------------------------------------------------------------------ the protocol

    async def submit(self, plan: RunPlan) -> str:
        return await asyncio.to_thread(self._submit, plan)

    async def observe(self, external_id: str, plan: RunPlan) -> RunObservation:
        return await asyncio.to_thread(self._observe, external_id)

    async def cancel(self, external_id: str) -> None:
        await asyncio.to_thread(self._cancel, external_id)

    async def step_log(self, external_id: str, step: str, attempt: int) -> str:
        return await asyncio.to_thread(self._log, external_id, step, attempt)

    # ------------------------------------------------------------------ calls (in a thread)

    def _submit(self, plan: RunPlan) -> str:
        from airflow_client import client as af

        dag_id = dag_id_for(plan, self.config.dag_prefix)
        write_plan(self.config.specs_dir, plan_document(plan, dag_id))
        dag_run_id = dag_run_id_for(plan)
        body = af.TriggerDAGRunPostBody(dag_run_id=dag_run_id, conf=plan.conf())
        try:
            self._call(
                "triggering the DAG run",
                lambda api: af.DagRunApi(api).trigger_dag_run(dag_id, body, **self._timeout()),
            )
        except BackendUnavailable as exc:
            status = getattr(exc.__cause__, "status", None)
            if status == 409:  # triggered before a crash: adopt it
                return f"{dag_id}/{dag_run_id}"
            if status == 404:
                raise BackendUnavailable(
                    f"Airflow does not know DAG {dag_id} yet: its dag-processor has not parsed "
                    f"{self.config.specs_dir / (dag_id + '.json')} (is MLOPS_AIRFLOW_SPECS that "
                    "folder, and [dag_processor] refresh_interval short?)",
                    transient=True,
                ) from exc
            raise
        return f"{dag_id}/{dag_run_id}"

    def _observe(self, external_id: str) -> RunObservation:
        from airflow_client import client as af

        dag_id, dag_run_id = external_id.split("/", 1)
        dag_run = self._call(
            "reading the DAG run",
            lambda api: af.DagRunApi(api).get_dag_run(dag_id, dag_run_id, **self._timeout()),
        )
        instances: list[Any] = []
        while True:
            page = self._call(
                "listing task instances",
                partial(
                    self._task_page, dag_id=dag_id, dag_run_id=dag_run_id, offset=len(instances)
                ),
            )
            instances.extend(page.task_instances)
            if not page.task_instances or len(instances) >= (page.total_entries or 0):
                break
        steps = {ti.task_id: self._step(external_id, ti) for ti in instances}
        state = _value(dag_run.state)
        return RunObservation(status=RUN_STATES.get(state, "running"), steps=steps)

    def _task_page(self, api: Any, *, dag_id: str, dag_run_id: str, offset: int) -> Any:
        from airflow_client import client as af

        return af.TaskInstanceApi(api).get_task_instances(
            dag_id, dag_run_id, limit=PAGE, offset=offset, **self._timeout()
        )

    def _step(self, external_id: str, ti: Any) -> StepObservation:
        state = _value(ti.state)
        status = TASK_STATES.get(state, "pending")
        attempts = int(ti.try_number or 0)
        outputs = error = None
        if status == "succeeded":
            outputs = self._result(external_id, ti.task_id).get("outputs") or {}
        elif status == "failed" or state == "up_for_retry":
            reason = self._reason(external_id, ti.task_id, attempts)
            error = f"attempt {attempts} failed: {reason}" if status == "pending" else reason
        return StepObservation(
            status=status,
            attempts=attempts,
            started_at=_utc(ti.start_date),
            finished_at=_utc(ti.end_date) if status in ("succeeded", "failed", "skipped") else None,
            outputs=outputs,
            error=error,
        )

    def _result(self, external_id: str, task_id: str) -> dict[str, Any]:
        from airflow_client import client as af

        key = (external_id, task_id)
        if key not in self._results:
            dag_id, dag_run_id = external_id.split("/", 1)
            entry = self._call(
                f"reading the result of task {task_id}",
                lambda api: af.XComApi(api).get_xcom_entry(
                    dag_id=dag_id,
                    task_id=task_id,
                    dag_run_id=dag_run_id,
                    xcom_key="return_value",
                    **self._timeout(),
                ),
            )
            value = entry.actual_instance.value if entry.actual_instance is not None else None
            self._results[key] = result_of(value)
        return self._results[key]

    def _reason(self, external_id: str, task_id: str, attempt: int) -> str | None:
        key = (external_id, task_id, attempt)
        if key not in self._reasons:
            self._reasons[key] = failure_reason(self._log(external_id, task_id, attempt))
        return self._reasons[key]

    def _log(self, external_id: str, task_id: str, attempt: int) -> str:
        from airflow_client import client as af

        dag_id, dag_run_id = external_id.split("/", 1)
        log = self._call(
            f"reading the log of task {task_id}",
            lambda api: af.TaskInstanceApi(api).get_log(
                dag_id, dag_run_id, task_id, attempt, full_content=True, **self._timeout()
            ),
        )
        content = log.content.actual_instance if log.content is not None else None
        if isinstance(content, str):
            return content if content.endswith("\n") or not content else content + "\n"
        return "".join(_log_line(message) for message in content or [])

    def _cancel(self, external_id: str) -> None:
        from airflow_client import client as af

        dag_id, dag_run_id = external_id.split("/", 1)
        dag_run = self._call(
            "reading the DAG run",
            lambda api: af.DagRunApi(api).get_dag_run(dag_id, dag_run_id, **self._timeout()),
        )
        if _value(dag_run.state) not in ("queued", "running"):
            return
        body = af.DAGRunPatchBody(state=af.DagRunMutableStates.FAILED)
        self._call(
            "marking the DAG run failed",
            lambda api: af.DagRunApi(api).patch_dag_run(
                dag_id, dag_run_id, body, update_mask=["state"], **self._timeout()
            ),
        )

    # ------------------------------------------------------------------ plumbing

    def _timeout(self) -> dict[str, Any]:
        return {"_request_timeout": self.config.request_timeout_seconds}

    def _call(self, doing: str, call: Callable[[Any], T]) -> T:
        """``call(api)`` with a valid token; an expired one (401) is renewed once."""
        from airflow_client import client as af

        for renewed in (False, True):
            try:
                return call(self._api(renew=renewed))
            except af.ApiException as exc:
                if exc.status == 401 and not renewed:
                    continue
                raise _api_error(exc, doing) from exc
            except BackendUnavailable:
                raise
            except Exception as exc:  # urllib3's connection and protocol errors
                raise BackendUnavailable(
                    f"Airflow at {self.url} is unreachable ({doing}): {exc}", transient=True
                ) from exc
        raise AssertionError("unreachable")

    def _api(self, renew: bool) -> Any:
        from airflow_client import client as af

        with self._token_lock:
            if self._token is None or renew:
                self._token = self._fetch_token()
            configuration = af.Configuration(host=self.url, access_token=self._token)
        configuration.verify_ssl = self.config.verify_tls
        configuration.retries = 1
        return af.ApiClient(configuration)

    def _fetch_token(self) -> str:
        try:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={
                    "username": self.config.username,
                    "password": self.config.password.get_secret_value(),
                },
                timeout=self.config.request_timeout_seconds,
                verify=self.config.verify_tls,
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"Airflow at {self.url} is unreachable (getting a token): {exc}", transient=True
            ) from exc
        if response.status_code in (200, 201):
            return str(response.json()["access_token"])
        transient = response.status_code >= 500 or response.status_code == 429
        raise BackendUnavailable(
            f"Airflow refused a token for user {self.config.username!r}: "
            f"{response.status_code} {_detail(response.text)}",
            transient=transient,
        )


def _api_error(exc: Any, doing: str) -> BackendUnavailable:
    status = int(exc.status or 0)
    transient = status == 0 or status >= 500 or status in (408, 429)
    return BackendUnavailable(
        f"Airflow answered {status} when {doing}: {_detail(exc.body)}", transient=transient
    )


def _detail(body: Any) -> str:
    try:
        detail = json.loads(body).get("detail", body)
    except (TypeError, ValueError, AttributeError):
        detail = body
    return str(detail)[:500]


def _value(state: Any) -> str:
    return str(getattr(state, "value", state) or "")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _log_line(message: Any) -> str:
    event = getattr(message, "event", message)
    extra = getattr(message, "additional_properties", None) or {}
    stamp = getattr(message, "timestamp", None)
    prefix = " ".join(
        part for part in (stamp.isoformat() if stamp else None, extra.get("level")) if part
    )
    lines = [f"[{prefix}] {event}" if prefix else str(event)]
    for detail in extra.get("error_detail") or []:  # an exception: its type and message
        if isinstance(detail, dict):
            lines.append(f"    {detail.get('exc_type')}: {detail.get('exc_value')}")
    return "\n".join(lines) + "\n"
