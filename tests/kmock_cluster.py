"""A fake Kubernetes cluster for tests of the Kubernetes backend: real HTTP, real processes.

Real: the HTTP API (kmock's in-memory emulator, served by aiohttp on 127.0.0.1 inside the
test's event loop), the official ``kubernetes`` client talking to it, and each Job's container
command, which a fake kubelet runs here as a subprocess (``python`` is this venv's interpreter:
the venv stands in for the image; stdout and stderr, merged, are the pod's log).

Faked: the rest of a cluster. One pod per Job, Running at once until its command exits (no
scheduler, image, resources, ``envFrom``/``valueFrom``, retries, ``ttlSecondsAfterFinished``).
Past ``activeDeadlineSeconds`` the process is SIGKILLed but its pod is kept (exit code 137); a
deleted Job's pod is deleted whatever the propagation policy. The kubelet writes through the API
(User-Agent ``fake-kubelet``), so watchers see its changes. A PATCH is a plain JSON merge (lists
are replaced); list and watch filter by ``labelSelector`` only (no ``fieldSelector``); a watch
replays every object as ADDED whatever ``resourceVersion`` it asks from; ``uid``,
``resourceVersion`` and ``creationTimestamp`` are stamped on create.

The server shares the test's loop: call the synchronous client from threads only
(``asyncio.to_thread``). kubernetes 30 sends ``watch=True``, which kmock reads as a plain list:
build clients with :func:`lowercase_bool_client` (or :meth:`FakeCluster.api_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import random
import re
import shutil
import signal
import string
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml
from kubernetes import client

from mlops.backends.kubernetes import LowercaseBoolApiClient

KUBELET_AGENT = "fake-kubelet"  # the User-Agent of the kubelet's own requests to the emulator
JOBS = kmock.resource("batch/v1/jobs")
_WRITES = (kmock.action.CREATE, kmock.action.UPDATE)
_END = object()
_SPAWN: dict[str, Any] = dict(stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, start_new_session=True)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lowercase_bool_client(configuration: client.Configuration) -> client.ApiClient:
    """A client sending query booleans as kmock reads them (the backend's own class)."""
    return LowercaseBoolApiClient(configuration)


_TERM = re.compile(r"^(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s*\(([^)]*)\))?$")


def selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """A label selector (``a=b,c!=d,e in (f,g),h,!i``) against an object's labels."""
    for term in re.findall(r"(?:[^,(]|\([^)]*\))+", selector or ""):
        match = _TERM.match(term.strip())
        if match is None:
            raise ValueError(f"unsupported label selector {selector!r}")
        negated, key, op, value, set_op, values = match.groups()
        if op:
            ok = (labels.get(key) == value) == (op != "!=")
        elif set_op:
            ok = (labels.get(key) in {v.strip() for v in values.split(",")}) == (set_op == "in")
        else:
            ok = (key in labels) != bool(negated)
        if not ok:
            return False
    return True


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _finished(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what clients of a real API server rely on: ``labelSelector`` on
    lists and watches, watches that end after ``timeoutSeconds`` (or when ``closing`` is set),
    and ``uid``, ``resourceVersion``, ``creationTimestamp`` on the objects."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.revisions = itertools.count(1)
        self.closing = asyncio.Event()

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        data, action = request.data, request.action
        if request.resource and isinstance(data, dict) and action in _WRITES:
            meta: dict[str, Any] = {"resourceVersion": str(next(self.revisions))}
            if action == kmock.action.CREATE:
                meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": now(), "generation": 1}
                if request.namespace:
                    meta["namespace"] = request.namespace
            data["metadata"] = (data.get("metadata") or {}) | meta  # seen in kmock's records too
        return await super()._handle(request)

    async def _serve_list(self, request: kmock.Request) -> Any:
        result: Any = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        result["items"] = [o for o in result["items"] if selector_matches(selector, _labels(o))]
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """kmock's watch, but subscribed to changes before it lists what exists (kmock 0.8 does it
        after: a change in between is lost), filtered by ``labelSelector``, and ended after
        ``timeoutSeconds`` or when the cluster closes."""
        yield b""  # the headers, at once
        assert request.resource is not None
        selector = request.params.get("labelSelector")
        seconds = float(request.params.get("timeoutSeconds") or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds if seconds > 0 else None
        bus = self._buses[request.resource]
        async with self._lock:  # the lock under which kmock changes objects and emits events
            mark = await bus.mark()
            existing = [
                (namespace, obj.raw)
                for (resource, namespace, _), obj in self.objects.items()
                if resource == request.resource and not obj.deleted
            ]

        async def source() -> AsyncGenerator[tuple[str | None, dict[str, Any]], None]:
            for namespace, obj in existing:
                yield namespace, {"type": "ADDED", "object": obj}
            async for event in bus.stream(since=mark):
                yield (event["object"].get("metadata") or {}).get("namespace"), event

        events = source()
        step: asyncio.Future[Any] | None = None
        closing = asyncio.create_task(self.closing.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(events, _END))
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                await asyncio.wait({step, closing}, timeout=timeout, return_when="FIRST_COMPLETED")
                if not step.done() or (item := step.result()) is _END:
                    return  # timeoutSeconds passed, or the cluster is closing
                namespace, event = item
                labels = _labels(event["object"])
                if request.namespace in (None, namespace) and selector_matches(selector, labels):
                    yield event
        finally:  # also when the client goes away
            tasks: list[asyncio.Future[Any]] = [task for task in (step, closing) if task]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await events.aclose()
            await bus.unmark(mark)


@dataclass
class _Job:
    """One Job the kubelet has seen, and its pod."""

    name: str
    pod: str
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None


class FakeCluster:
    """The emulator on a random port plus a fake kubelet (a task polling the store every
    ``poll`` seconds) that runs every new Job of ``namespace``. On exit it kills what it started
    and raises its own failures and any unexpected (non-API) error of the emulator::

        @pytest.fixture
        async def cluster() -> AsyncIterator[FakeCluster]:
            async with FakeCluster("mlops") as cluster:
                yield cluster
    """

    def __init__(
        self, namespace: str = "mlops", *, env: Mapping[str, str] | None = None, poll: float = 0.05
    ) -> None:
        self.namespace = namespace
        self.env = dict(env or {})  # added to every container's environment
        self.poll = poll
        self.emulator = ClusterEmulator()
        self.url = ""
        self.workdir = Path()
        self.started: list[str] = []  # Job names, in the order the kubelet started them
        self.killed: set[str] = set()  # Jobs whose process it killed (deadline, deletion, exit)
        self.manifests: dict[str, dict[str, Any]] = {}  # Job name -> the Job as first seen
        self.pids: dict[str, int] = {}  # Job name -> its process id
        self.pods: dict[str, str] = {}  # Job name -> its pod's name
        self.logs: dict[str, bytearray] = {}  # pod name -> its output (stdout + stderr) so far
        self.errors: list[BaseException] = []  # the kubelet's own failures
        self._jobs: dict[str, _Job] = {}  # by uid (or name, for Jobs put into the store directly)
        self._kubelet: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> FakeCluster:
        k = self.emulator
        try:
            await self._stack.enter_async_context(k)
            await self._stack.enter_async_context(kmock.Server(k))
        except BaseException:
            await self._stack.aclose()
            raise
        info = kmock.ResourceInfo
        k.resources["batch/v1/jobs"] = info(kind="Job", namespaced=True, subresources={"status"})
        k.resources["v1/pods"] = info(kind="Pod", namespaced=True, subresources={"status", "log"})
        k[kmock.resource("v1/pods"), kmock.subresource("log")] << self._serve_log
        self.url = str(k.url).rstrip("/")
        self.workdir = Path(tempfile.mkdtemp(prefix="fake-kubelet-"))
        self._kubelet = asyncio.create_task(self._watch_jobs(), name="fake-kubelet")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        tasks = [t for t in (self._kubelet, *(j.task for j in self._jobs.values())) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.emulator.closing.set()
        expected = (kmock.KubernetesError, ConnectionError)  # API errors, clients gone mid-stream
        unexpected = [e for e in self.emulator.errors if not isinstance(e, expected)]
        await self._stack.__aexit__(*exc_info)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if exc_info[1] is None and (problems := [*self.errors, *unexpected]):
            raise BaseExceptionGroup("the fake cluster failed", problems)

    def kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        """Write a kubeconfig for this cluster (token ``test-token``) to ``path`` (a file, or
        ``kubeconfig`` in it if it is a directory); returns the file."""
        path = Path(path)
        path = path / "kubeconfig" if path.is_dir() else path
        context = {"cluster": "fake", "user": "fake", "namespace": self.namespace}
        config: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "current-context": "fake"}
        config["clusters"] = [{"name": "fake", "cluster": {"server": self.url}}]
        config["users"] = [{"name": "fake", "user": {"token": "test-token"}}]
        config["contexts"] = [{"name": "fake", "context": context}]
        path.write_text(yaml.safe_dump(config))
        return path

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        return lowercase_bool_client(configuration)

    async def wait_finished(self, name: str, timeout: float = 10) -> dict[str, Any]:
        """The Job as stored once it has a Complete or Failed condition."""
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(KeyError):
                    job = self.emulator.objects["batch/v1/jobs", self.namespace, name]
                    if not job.deleted and _finished(job.raw):
                        return job.raw
                await asyncio.sleep(self.poll)

    # The kubelet. It reads the store, not the API: no requests of its own to see in assertions.
    async def _watch_jobs(self) -> None:
        while True:
            present: dict[str, tuple[str, dict[str, Any]]] = {}
            for (resource, namespace, name), obj in list(self.emulator.objects.items()):
                if resource == JOBS and namespace == self.namespace and not obj.deleted:
                    present[obj.raw.get("metadata", {}).get("uid") or name] = (name, obj.raw)
            for key, (name, job) in present.items():
                if key not in self._jobs and not _finished(job):
                    self._start(key, name, job)
            for key in [key for key in self._jobs if key not in present]:
                await self._job_deleted(self._jobs.pop(key))
            await asyncio.sleep(self.poll)

    def _start(self, key: str, name: str, job: dict[str, Any]) -> None:
        suffix = "".join(random.choices(string.ascii_lowercase, k=5))
        entry = self._jobs[key] = _Job(name, f"{name}-{suffix}")
        self.started.append(name)
        self.manifests[name] = copy.deepcopy(job)
        entry.task = asyncio.create_task(self._run(entry, self.manifests[name]))
        entry.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.errors.append(exc)

    async def _run(self, entry: _Job, job: dict[str, Any]) -> None:
        uid, spec = job["metadata"].get("uid", ""), job.get("spec") or {}
        template = spec.get("template") or {}
        container = template["spec"]["containers"][0]
        labels = {"job-name": entry.name, "controller-uid": uid}
        labels |= {f"batch.kubernetes.io/{key}": value for key, value in labels.items()}
        labels |= (template.get("metadata") or {}).get("labels") or {}
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": entry.name, "uid": uid}
        meta = {"name": entry.pod, "labels": labels, "ownerReferences": [owner]}
        ns, started, clock = self.namespace, now(), time.monotonic()
        pod_path, job_path = f"/api/v1/namespaces/{ns}/pods", f"/apis/batch/v1/namespaces/{ns}/jobs"
        self.pods[entry.name] = entry.pod
        self.logs[entry.pod] = log = bytearray()
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
        pod["status"] = {"phase": "Running", "startTime": started}
        await self._call("POST", pod_path, pod)
        running = {"status": {"active": 1, "startTime": started}}
        await self._call("PATCH", f"{job_path}/{entry.name}/status", running)
        deadline = spec.get("activeDeadlineSeconds")
        timeout = None if deadline is None else max(0.0, deadline - (time.monotonic() - clock))
        code, timed_out = await self._execute(entry, container, timeout, log)
        finished, failed = now(), timed_out or code != 0
        reason = "Error" if failed else "Completed"
        ended = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}
        container_status = {"name": container["name"], "image": container.get("image", "")}
        container_status |= {"imageID": "", "ready": False, "restartCount": 0}
        container_status["state"] = {"terminated": ended}
        phase = "Failed" if failed else "Succeeded"
        pod_status = {"phase": phase, "containerStatuses": [container_status]}
        await self._call("PATCH", f"{pod_path}/{entry.pod}/status", {"status": pod_status})
        if timed_out:
            status = _failed("DeadlineExceeded", "Job was active longer than specified deadline")
        elif code:
            status = _failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        else:
            complete = {"type": "Complete", "status": "True", "lastTransitionTime": finished}
            status = {"active": 0, "succeeded": 1, "completionTime": finished}
            status["conditions"] = [complete]
        await self._call("PATCH", f"{job_path}/{entry.name}/status", {"status": status})

    async def _execute(
        self, entry: _Job, container: dict[str, Any], timeout: float | None, log: bytearray
    ) -> tuple[int, bool]:
        """Run the container's command: (its exit code, whether its deadline killed it)."""
        argv = [*container.get("command", []), *container.get("args", [])]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = {**os.environ, **self.env}
        env.update((e["name"], e["value"]) for e in container.get("env", []) if "value" in e)
        cwd = Path(container.get("workingDir") or self.workdir / entry.pod)
        if not cwd.is_dir():  # no workingDir, or one that exists only in the image
            cwd = self.workdir / entry.pod
            cwd.mkdir()
        try:
            process = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, **_SPAWN)
        except OSError as exc:  # what a container runtime reports as a StartError
            log.extend(f"cannot start {argv!r}: {exc}\n".encode())
            return 128, False
        entry.process, self.pids[entry.name] = process, process.pid
        try:
            try:
                return await asyncio.wait_for(_collect(process, log), timeout), False
            except TimeoutError:
                self._kill(entry)
                return await _collect(process, log), True
        finally:
            if process.returncode is None:  # cancelled: the Job was deleted, or the cluster closes
                self._kill(entry)
                await _collect(process, log)

    def _kill(self, entry: _Job) -> None:
        self.killed.add(entry.name)
        if entry.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(entry.process.pid, signal.SIGKILL)  # its session: children too

    async def _job_deleted(self, entry: _Job) -> None:
        """Kill the Job's process if it still runs and delete its pod (as the garbage collector
        does, whatever the propagation policy)."""
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)
        await self._call("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{entry.pod}")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """An API request, so that watchers see the change; 404 (deleted meanwhile) is fine."""
        headers = {"User-Agent": KUBELET_AGENT}
        async with self.emulator.request(method, path, json=body, headers=headers) as response:
            if response.status != 404:
                response.raise_for_status()

    def _serve_log(self, request: kmock.Request) -> bytes | Exception:
        """``GET .../pods/{name}/log``: the output so far, as bytes; ``tailLines`` honoured."""
        try:
            gone = self.emulator.objects["v1/pods", request.namespace, request.name or ""].deleted
        except KeyError:
            gone = True
        log = self.logs.get(request.name or "")
        if gone or log is None:
            return kmock.KubernetesObjectNotFoundError()
        lines = bytes(log).splitlines(keepends=True)
        if "tailLines" in request.params:
            lines = lines[max(0, len(lines) - int(request.params["tailLines"])) :]
        return b"".join(lines)


def _failed(reason: str, message: str) -> dict[str, Any]:
    condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
    condition["lastTransitionTime"] = now()
    return {"active": 0, "failed": 1, "conditions": [condition]}


async def _collect(process: asyncio.subprocess.Process, log: bytearray) -> int:
    """Read the output to its end; the exit code as a container reports it."""
    assert process.stdout is not None
    while chunk := await process.stdout.read(65536):
        log.extend(chunk)
    code = await process.wait()
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N
