"""The Kubernetes backend: each step attempt a ``batch/v1`` Job in one namespace.

The service's engine decides what runs when (dependencies, retries, caching); this backend
creates one Job per attempt, learns its end by watching the Jobs it labelled, and reads the
result from its pod's log: ``python -m mlops.steps run`` prints one JSON line last. Retries are
the engine's, one Job per attempt (``backoffLimit: 0``), so every attempt keeps its own log and
duration; the step's timeout is the Job's ``activeDeadlineSeconds``. The official client is
synchronous: each call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import urllib3
from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from mlops.backends.base import BackendHealth, ResultSink, StepResult, StepTask
from mlops.backends.config import KubernetesConfig
from mlops.core.tasks import stop_tasks

logger = logging.getLogger("mlops.backends.kubernetes")

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "mlops"
INSTANCE = "app.kubernetes.io/instance"
LABEL_RUN = "mlops.io/run-id"
LABEL_STEP = "mlops.io/step"
LABEL_ATTEMPT = "mlops.io/attempt"
ANNOTATION_TASK = "mlops.io/task-id"
CONTAINER = "step"
WATCH_SECONDS = 10  # a watch is renewed this often (and the Jobs listed again)
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds)
RECONCILE_SECONDS = 30.0  # how often attempts are checked against the Jobs that exist


class LowercaseBoolApiClient(client.ApiClient):  # type: ignore[misc]
    """Query booleans as ``true``/``false``, as kubectl sends them: the client's ``True`` is
    read as false by some API servers and fakes (a watch then silently lists once)."""

    def parameters_to_tuples(self, params: Any, collection_formats: Any) -> list[Any]:
        return [
            (key, ("true" if value else "false") if isinstance(value, bool) else value)
            for key, value in super().parameters_to_tuples(params, collection_formats)
        ]


def api_client(config: KubernetesConfig) -> client.ApiClient:
    """Credentials from the named kubeconfig, in-cluster inside a pod, else ~/.kube/config;
    never the client's global configuration."""
    configuration = client.Configuration()
    if config.kubeconfig is not None and not config.kubeconfig.is_file():
        raise FileNotFoundError(f"no kubeconfig file at {config.kubeconfig}")
    if config.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
    else:
        kube_config.load_kube_config(
            config_file=str(config.kubeconfig) if config.kubeconfig else None,
            context=config.context,
            client_configuration=configuration,
            persist_config=False,
        )
    return LowercaseBoolApiClient(configuration)


def job_name(task: StepTask) -> str:
    step_id, _, attempt = task.task_id.partition(":")
    return f"mlops-{step_id.replace('-', '')}-{attempt}"


def _label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:63]
    return cleaned.strip("-_.") or "x"


def selector(config: KubernetesConfig) -> str:
    """The label selector of this service's Jobs."""
    return f"{MANAGED_BY}={MANAGER},{INSTANCE}={config.instance}"


def job_manifest(task: StepTask, config: KubernetesConfig) -> dict[str, Any]:
    labels = {
        MANAGED_BY: MANAGER,
        INSTANCE: config.instance,
        LABEL_RUN: task.run_id,
        LABEL_STEP: _label_value(task.step),
        LABEL_ATTEMPT: str(task.attempt),
    }
    requests = {"cpu": config.cpu_request, "memory": config.memory_request}
    limits = {
        key: value
        for key, value in (("cpu", config.cpu_limit), ("memory", config.memory_limit))
        if value
    }
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "mlops.steps", "run"],
        "args": [
            *("--type", task.type),
            *("--params", json.dumps(task.params, sort_keys=True)),
            *("--run-id", task.run_id),
            *("--step", task.step),
            *("--artifact-root", task.artifact_root),
            *("--attempt", str(task.attempt)),
        ],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": {"requests": requests, **({"limits": limits} if limits else {})},
    }
    if config.env_from_secret:
        container["envFrom"] = [{"secretRef": {"name": config.env_from_secret}}]
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(task),
            "namespace": config.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_TASK: task.task_id, LABEL_STEP: task.step},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(task.timeout_seconds)),
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def split_result(log: str) -> tuple[dict[str, Any] | None, str]:
    """The step's result line (the last JSON object with ``ok``) and the log without it."""
    lines = log.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        if not (line.startswith("{") and '"ok"' in line):
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and "ok" in message:
            rest = lines[:index] + lines[index + 1 :]
            return message, "\n".join(rest) + ("\n" if rest else "")
    return None, log


def job_outcome(job: Any) -> tuple[str, str | None]:
    """("running" | "succeeded" | "failed", the failure's reason and message)."""
    status = job.status
    for condition in (status.conditions if status else None) or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return "succeeded", None
        if condition.type == "Failed":
            return "failed", f"{condition.reason}: {condition.message}"
    if status and status.succeeded:
        return "succeeded", None
    if status and status.failed:
        return "failed", "the Job's pod failed"
    return "running", None


@dataclass
class _Attempt:
    task: StepTask
    launched: float  # monotonic
    finishing: bool = False


class KubernetesBackend:
    name: ClassVar[str] = "kubernetes"

    def __init__(self, *, sink: ResultSink, settings: Any) -> None:
        config = settings.kubernetes
        if config is None:
            raise ValueError("the kubernetes backend is not configured (MLOPS_KUBERNETES__*)")
        self.sink = sink
        self.config: KubernetesConfig = config
        self.attempts: dict[str, _Attempt] = {}  # Job name -> attempt
        self.api: client.ApiClient | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.finishers: set[asyncio.Task[None]] = set()
        self.stopping = threading.Event()

    @classmethod
    async def check_health(cls, settings: Any) -> BackendHealth:
        config: KubernetesConfig = settings.kubernetes
        api = await asyncio.to_thread(api_client, config)
        try:
            await asyncio.to_thread(
                client.BatchV1Api(api).list_namespaced_job,
                config.namespace,
                limit=1,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            return BackendHealth(False, f"{api.configuration.host}: {exc.status} {exc.reason}")
        except urllib3.exceptions.HTTPError as exc:
            return BackendHealth(False, f"{api.configuration.host} unreachable: {exc}")
        finally:
            api.close()
        return BackendHealth(True, f"namespace {config.namespace} at {api.configuration.host}")

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    async def start(self) -> None:
        self.api = await asyncio.to_thread(api_client, self.config)
        await self._stop_orphans()
        self.watcher = asyncio.create_task(self._watch(), name="kubernetes-watch")

    async def _list_jobs(self) -> list[Any] | None:
        """This service's Jobs in the namespace, or None (logged) when they cannot be listed."""
        try:
            jobs = await asyncio.to_thread(
                self.batch.list_namespaced_job,
                self.config.namespace,
                label_selector=selector(self.config),
                _request_timeout=REQUEST_TIMEOUT,
            )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            logger.warning("could not list Jobs in %s: %s", self.config.namespace, exc)
            return None
        return list(jobs.items)

    async def _stop_orphans(self) -> None:
        """Jobs a previous service process left running: the engine counts their attempts as
        interrupted and runs them again, so they must not go on (as local workers die with
        the service). Finished ones are left to their time-to-live."""
        if (jobs := await self._list_jobs()) is None:
            return
        for job in jobs:
            if job_outcome(job)[0] == "running":
                logger.info(
                    "stopping Job %s, left running by an earlier process", job.metadata.name
                )
                await self._delete(job.metadata.name)

    async def close(self) -> None:
        self.stopping.set()
        await stop_tasks(self.watcher)
        for name in list(self.attempts):
            await self._delete(name)
        self.attempts.clear()
        for finisher in list(self.finishers):
            finisher.cancel()
        if self.api is not None:
            self.api.close()

    async def launch(self, task: StepTask) -> None:
        manifest = job_manifest(task, self.config)
        name = manifest["metadata"]["name"]
        self.attempts[name] = _Attempt(task, time.monotonic())
        try:
            await asyncio.to_thread(
                self.batch.create_namespaced_job,
                self.config.namespace,
                manifest,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 409:  # this very attempt, created before a restart: adopt it
                return
            await self._fail(name, f"Kubernetes refused the Job: {_api_error(exc)}", "backend")
        except urllib3.exceptions.HTTPError as exc:
            await self._fail(name, f"the cluster is unreachable: {exc}", "backend")

    async def cancel(self, task_id: str) -> None:
        for name, attempt in list(self.attempts.items()):
            if attempt.task.task_id == task_id:
                del self.attempts[name]
                await self._delete(name)

    def queue_depth(self) -> int:
        return 0  # the cluster's scheduler queues pods; the backend holds nothing back

    def free_slots(self) -> int:
        return max(0, self.config.max_parallel_jobs - len(self.attempts))

    async def _delete(self, name: str) -> None:
        try:
            await asyncio.to_thread(
                self.batch.delete_namespaced_job,
                name,
                self.config.namespace,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("could not delete Job %s: %s", name, _api_error(exc))
        except urllib3.exceptions.HTTPError as exc:
            logger.warning("could not delete Job %s: %s", name, exc)

    async def _watch(self) -> None:
        """Follow the service's Jobs from a thread of its own (the client blocks); each
        renewal of the watch lists them again, so an event lost while it was down is seen."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def follow() -> None:
            while not self.stopping.is_set():
                stream = watch.Watch()
                try:
                    for event in stream.stream(
                        self.batch.list_namespaced_job,
                        self.config.namespace,
                        label_selector=selector(self.config),
                        timeout_seconds=WATCH_SECONDS,
                        _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + 5),
                    ):
                        if self.stopping.is_set():
                            stream.stop()
                            break
                        loop.call_soon_threadsafe(
                            events.put_nowait, (event["type"], event["object"])
                        )
                except Exception as exc:  # the thread must outlive any failure of one watch
                    if not self.stopping.is_set():
                        logger.warning("watching Jobs in %s failed: %s", self.config.namespace, exc)
                        time.sleep(1)

        threading.Thread(target=follow, name="kubernetes-watch", daemon=True).start()
        reconciled = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONCILE_SECONDS):
                    event = await events.get()
                self._on_job(*event)
            if time.monotonic() - reconciled >= RECONCILE_SECONDS:
                await self._reconcile()
                reconciled = time.monotonic()

    async def _reconcile(self) -> None:
        """An attempt whose Job is gone without a word (deleted while the watch was down, so
        no relist shows it) would hold its slot and its run for ever: it ends here."""
        if (jobs := await self._list_jobs()) is None:
            return
        present = {job.metadata.name for job in jobs}
        settled = time.monotonic() - RECONCILE_SECONDS  # younger ones may not be listed yet
        for name, attempt in list(self.attempts.items()):
            if name not in present and not attempt.finishing and attempt.launched < settled:
                self._finish_soon(name, None, "the Job was deleted outside the service")

    def _on_job(self, event_type: str, job: Any) -> None:
        name = job.metadata.name
        attempt = self.attempts.get(name)
        if attempt is None or attempt.finishing:
            return
        if event_type == "DELETED":
            self._finish_soon(name, None, "the Job was deleted outside the service")
            return
        state, why = job_outcome(job)
        if state != "running":
            self._finish_soon(name, state, why)

    def _finish_soon(self, name: str, state: str | None, why: str | None) -> None:
        self.attempts[name].finishing = True
        finisher = asyncio.create_task(self._finish(name, state, why))
        self.finishers.add(finisher)
        finisher.add_done_callback(self.finishers.discard)

    async def _finish(self, name: str, state: str | None, why: str | None) -> None:
        attempt = self.attempts.get(name)
        if attempt is None:
            return
        log = "" if state is None else await self._pod_log(name)
        message, rest = split_result(log)
        await asyncio.to_thread(_write_log, Path(attempt.task.log_path), rest)
        if self.attempts.pop(name, None) is None:  # cancelled while the log was read
            return
        elapsed = time.monotonic() - attempt.launched
        task_id = attempt.task.task_id
        if message is not None and (state == "succeeded" or not message.get("ok")):
            await self._report(
                StepResult(
                    task_id=task_id,
                    ok=bool(message.get("ok")),
                    outputs=message.get("outputs") or {},
                    digests=message.get("digests") or {},
                    error=message.get("error"),
                    reason=None if message.get("ok") else message.get("error_type") or "step_error",
                    duration_seconds=elapsed,
                )
            )
            return
        if why and "DeadlineExceeded" in why:
            error = (
                f"timed out after {attempt.task.timeout_seconds:g} s; Kubernetes stopped the Job"
            )
            reason = "timeout"
        else:
            error, reason = f"the step's pod ended without a result ({why or state})", "crashed"
        await self._report(
            StepResult(task_id, ok=False, error=error, reason=reason, duration_seconds=elapsed)
        )

    async def _pod_log(self, name: str) -> str:
        core = client.CoreV1Api(self.api)
        try:
            pods = await asyncio.to_thread(
                core.list_namespaced_pod,
                self.config.namespace,
                label_selector=f"job-name={name}",
                _request_timeout=REQUEST_TIMEOUT,
            )
            if not pods.items:
                return ""
            pod = pods.items[-1].metadata.name
            response = await asyncio.to_thread(
                core.read_namespaced_pod_log,
                pod,
                self.config.namespace,
                container=CONTAINER,
                _preload_content=False,  # the client would parse a JSON-looking log
                _request_timeout=REQUEST_TIMEOUT,
            )
            return str(response.data.decode(errors="replace"))
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            logger.warning("could not read the log of Job %s: %s", name, exc)
            return f"(the pod's log could not be read: {exc})\n"

    async def _fail(self, name: str, error: str, reason: str) -> None:
        attempt = self.attempts.pop(name, None)
        if attempt is not None:
            await self._report(
                StepResult(attempt.task.task_id, ok=False, error=error, reason=reason)
            )

    async def _report(self, result: StepResult) -> None:
        try:
            await self.sink(result)
        except Exception:
            logger.exception("could not record the result of %s", result.task_id)


def _write_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _api_error(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
