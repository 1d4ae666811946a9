"""Model serving: deploy time, single-row latency and throughput, and the CPU each request costs
beyond the model's own ``predict``, for the service and for MLflow's own scoring server
(``mlflow models serve``) in the same run, on the same registered model.

The model is a 100-tree random forest on breast_cancer, registered twice (versions 1 and 2, two
seeds) with a signature and an input example in the service's own MLflow store (SQLite under its
data directory). The service runs for real (``python -m mlops serve``, see
``bench.pipeline_overhead.Service``) and MLflow's server is started from the same store; both are
pinned to one core and the load generator (``bench.http_load``) to the other, as in
``api_overhead``. CPU comes from ``/proc/<pid>/stat`` (and ``/proc/<pid>/task/*/stat`` per
thread) of each server's process tree.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from bench.api_apps import free_port, port_open
from bench.api_overhead import CREDENTIALS, Store
from bench.common import ROOT, Record, machine_info, median, record, utc_now, write_results
from bench.http_load import LoadResult, percentile, run_load
from bench.pipeline_overhead import KEEP_LOGS_ENV, MemorySampler, Service, process_tree

MODEL = "bench-rf"
DEPLOYMENT = "bench-rf"
TREES = 100
SEEDS = (0, 1)  # version 1, version 2
CLIENTS = 8
ROUNDS = 3
LOAD_SECONDS = 8.0  # each 8-client run
SEQUENTIAL_SECONDS = 3.0  # each 1-client run
WARMUP_SECONDS = 2.0
IDLE_SECONDS = 3.0
PREDICT_SIZES = (1, 8, 100)  # rows per in-process predict call
PREDICT_CALLS = {1: 50, 8: 50, 100: 30, 0: 500}  # per sample (0: batch building, any size)
PREDICT_SAMPLES_BEFORE = 3  # samples before the servers start; one more after each round
PREDICT_SLICES = 5  # each sample's calls of each kind, in this many interleaved slices
PREDICT_WARMUP_CALLS = 5  # of each kind, before each sample
POLL_SECONDS = 0.025  # deploy: how often the client tries a prediction
DEPLOY_TIMEOUT_SECONDS = 120.0
MLFLOW_START_TIMEOUT_SECONDS = 180.0
TARGET_DEPLOY_SECONDS = 2.0
TARGET_BEYOND_MS = 1.0
TARGET_RATIO = 3.0
STORE = Store("SQLite + in-process", embedded=True)
MODEL_ONLY = "in-process"  # the store column of the model-only rows
COLUMNS = ("service", "MLflow's server", "ratio / added")
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}

DESCRIPTION = f"""\
One model served two ways in the same run: a **{TREES}-tree random forest** on breast_cancer
(`RandomForestClassifier(n_estimators={TREES})`, 30 float features), logged with
`mlflow.sklearn.log_model` (signature, input example, `serialization_format="cloudpickle"`) and
registered twice (versions 1 and 2, seeds {SEEDS[0]} and {SEEDS[1]}) in the service's own MLflow
store (SQLite under its data directory). **service** is `python -m mlops serve` with its full
middleware (API-key auth, a rate limit of 10,000,000/minute so the limiter runs but never
refuses, the audit middleware, which writes a hash-chained audit entry to the database for every
`POST` that changes something before answering it (predictions change nothing and are counted in
metrics instead); Prometheus metrics; one INFO JSON access-log
line per request, written to a file), serving the deployment through
`POST /api/v1/deployments/{{name}}/predict` (micro-batching at its defaults) with the prediction
log on: every request's rows, answer and latency written to the database in batches;
**MLflow's server** is `mlflow models serve -m models:/{MODEL}/2 --env-manager local --workers 1`
on the same store, answering `POST /invocations`. Both get the same body, one breast_cancer row
as `{{"instances": [{{...30 columns...}}]}}`, and must answer the same prediction. Both servers
are pinned to one core and the load generator (`bench/http_load.py`, closed loop, keep-alive) to
the other; MLflow telemetry is off (`MLFLOW_DISABLE_TELEMETRY`) for every process.

- **deploy**: from just before the client sends `POST /api/v1/deployments`
  (`{{"model": {{"name": "{MODEL}", "version": "1"}}, "strategy": "direct"}}`) to the first
  `200` from version 1, the client trying a prediction every {POLL_SECONDS * 1000:.0f} ms; the
  service was started just before, has served nothing and is ready (`/ready` answers 200 once it
  has imported MLflow, pandas and scikit-learn and opened the registry; how long that took after
  start is in the notes). **roll out**: the same from `PATCH /api/v1/deployments/{{name}}`
  to version 2 (`strategy: direct`) to the first answer from version 2, in the now warm process
  (version 1 answers the polls meanwhile). The baseline of both is MLflow's way to serve a
  version: `mlflow models serve` launched → its first `200` (started after the roll-out, so the
  two never overlap).
- **8 clients**: {CLIENTS} keep-alive connections, one request in flight on each, for
  {LOAD_SECONDS:g} s; **1 client**: one connection for {SEQUENTIAL_SECONDS:g} s. {ROUNDS} rounds
  after a {WARMUP_SECONDS:g}-second warm-up of each server; the service and MLflow's server
  alternate within a round (service first in odd rounds). Throughput and latency p50 / p99 are
  the medians of the rounds; *ratio* is service / MLflow.
- **CPU per request**: the CPU time (user + system) of the server's whole process tree over the
  runs, minus what the same tree burns idle over as long (measured for {IDLE_SECONDS:g} s before
  the rounds), over the requests answered; summed over the rounds.
- **model predict**: the estimator's own `predict` as the service calls it
  (`PyFuncModel._model_impl.predict` on a DataFrame, skipping MLflow's schema enforcement),
  timed with `time.process_time` in the benchmark's own process (pinned to the servers' core):
  {PREDICT_CALLS[1]} calls of 1 row, {PREDICT_CALLS[8]} of 8 and {PREDICT_CALLS[100]} of 100 per
  sample, in {PREDICT_SLICES} interleaved slices after {PREDICT_WARMUP_CALLS} warm-up calls of
  each, {PREDICT_SAMPLES_BEFORE} samples before the servers start and one after each round
  (while they idle), so that they share the machine's load with the rounds; the median of the
  samples. **batch building** is what the service's model thread does around `predict` for a
  batch of n one-row requests: one DataFrame from the checked rows, and the predictions cut back
  per request (`InputSchema.frame`, `split_predictions`). **MLflow's predict** is
  `PyFuncModel.predict` of 1 row, with its schema enforcement: what MLflow's server calls per
  request.
- **The model's predict in the service** is measured per thread: the service coalesces
  concurrent requests into micro-batches run in one model thread (a `ThreadPoolExecutor` of one
  worker), and everything else (HTTP, middleware, validation, JSON) runs on the
  event-loop thread. The busiest thread other than the event loop (`/proc/<pid>/task/<tid>/stat`)
  is the model thread. How many `predict` calls it made is inferred, not counted: *B* = its CPU /
  (model predict + batch building of *b* rows), with *b* = requests / *B* (solved together,
  interpolating between the 1- and 8-row figures). Then **the model's predict per request** =
  (model thread CPU - *B* * batch building) / requests, and **beyond the model's predict** =
  CPU per request - that: everything the service spends that is not the estimator's own work
  (what the model thread loses to handing the GIL back and forth counts as the model's).
  Only the small batch-building term depends on the in-process figures. For MLflow's server,
  which predicts each request on its own inside its event loop, the model's predict per request
  is the in-process 1-row figure, so its *beyond* row carries that figure's noise.
- **peak RSS**: the largest sum of `VmRSS` over each server's process tree during the rounds.
- Targets: deploy and roll out ≤ {TARGET_DEPLOY_SECONDS:g} s; at most {TARGET_BEYOND_MS:g} ms of
  CPU per request beyond the model's `predict` ({CLIENTS} clients); throughput with {CLIENTS}
  clients ≥ {TARGET_RATIO:g} times MLflow's server's.
"""


# ---------------------------------------------------------------------- the model


def _cpus() -> tuple[int, int]:
    """(load generator, servers) cores, or (-1, -1) when there are not two to pin to."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (available[0], available[1]) if len(available) >= 2 else (-1, -1)


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This thread on ``cpu`` (what processes started meanwhile inherit), then back."""
    if cpu < 0:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def features() -> Any:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    return frame.drop(columns="target"), frame["target"]


def register_versions(tracking_uri: str, workdir: Path) -> list[str]:
    """Versions 1 and 2 of ``MODEL``: the forest fitted with each seed, with a signature and an
    input example. In ``workdir`` (MLflow puts a default experiment's artifacts under the working
    directory) and with the tracking URI restored after (``tests.model_registry.tracking_at``)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier

    from tests.model_registry import tracking_at

    x, y = features()
    example = x.head(3)
    versions = []
    with contextlib.chdir(workdir), tracking_at(tracking_uri):
        experiment = mlflow.create_experiment(
            "bench-serving", artifact_location=(workdir / "artifacts").as_uri()
        )
        for seed in SEEDS:
            forest = RandomForestClassifier(n_estimators=TREES, random_state=seed).fit(x, y)
            with mlflow.start_run(experiment_id=experiment):
                info = mlflow.sklearn.log_model(
                    forest,
                    name="model",
                    signature=infer_signature(example, forest.predict(example)),
                    input_example=example,
                    serialization_format="cloudpickle",
                    pip_requirements=[],
                )
            versions.append(str(mlflow.register_model(info.model_uri, MODEL).version))
    return versions


@dataclass
class PredictCosts:
    """CPU milliseconds per call, by rows per call."""

    model: dict[int, float]  # the estimator's predict, as the service calls it
    prep: dict[int, float]  # building a batch's DataFrame and cutting its predictions back
    pyfunc_one_row: float  # PyFuncModel.predict of 1 row (MLflow's schema enforcement included)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def model_at(self, rows: float) -> float:
        return _interpolate(self.model, rows)

    def prep_at(self, rows: float) -> float:
        return _interpolate(self.prep, rows)

    def batch_at(self, rows: float) -> float:
        """What the service's model thread spends on one batch of ``rows`` one-row requests."""
        return self.model_at(rows) + self.prep_at(rows)


def _interpolate(costs: dict[int, float], rows: float) -> float:
    sizes = sorted(costs)
    rows = min(max(rows, sizes[0]), sizes[-1])
    for low, high in itertools.pairwise(sizes):
        if rows <= high:
            return costs[low] + (costs[high] - costs[low]) * (rows - low) / (high - low)
    return costs[sizes[-1]]


def _cpu_seconds(call: Callable[[], Any], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        call()
    return time.process_time() - started


class ModelTimer:
    """The model's own CPU per call, timed in this process: ``sample()`` once before the servers
    start and once after each round (the servers idle meanwhile), so that the figures share
    the load the machine had during the rounds."""

    def __init__(self, tracking_uri: str, version: str, record: dict[str, float]) -> None:
        import mlflow.pyfunc

        from mlops.deployments.batching import split_predictions
        from mlops.deployments.inputs import InputSchema
        from tests.model_registry import tracking_at

        with tracking_at(tracking_uri):
            pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
        schema = InputSchema(pyfunc.metadata.get_input_schema())
        impl = pyfunc._model_impl
        x, _ = features()
        one = schema.parse({"instances": [record]})
        self.calls: list[tuple[str, int, Callable[[], Any]]] = []
        for rows in PREDICT_SIZES:
            frame = schema.frame([schema.parse({"instances": x.head(rows).to_dict("records")})])
            inputs, sizes, output = [one] * rows, [1] * rows, impl.predict(frame)

            def model_only(frame: Any = frame) -> Any:
                return impl.predict(frame)

            def prep(
                inputs: list[Any] = inputs, sizes: list[int] = sizes, out: Any = output
            ) -> Any:
                schema.frame(inputs)
                return split_predictions(out, sizes)

            self.calls += [(f"model_{rows}", rows, model_only), (f"prep_{rows}", 0, prep)]
        frame_one = schema.frame([one])
        self.calls.append(("pyfunc_1", 1, lambda: pyfunc.predict(frame_one)))
        self.samples: dict[str, list[float]] = {label: [] for label, _, _ in self.calls}

    def sample(self) -> None:
        """One figure per call kind, timed in interleaved slices after a warm-up, so that each
        kind sees the same conditions (the first calls after a pause run slower)."""
        for _ in range(PREDICT_WARMUP_CALLS):
            for _label, _rows, call in self.calls:
                call()
        used = {label: 0.0 for label, _, _ in self.calls}
        for _ in range(PREDICT_SLICES):
            for label, rows, call in self.calls:
                used[label] += _cpu_seconds(call, PREDICT_CALLS[rows] // PREDICT_SLICES)
        for label, rows, _call in self.calls:
            calls = PREDICT_CALLS[rows] // PREDICT_SLICES * PREDICT_SLICES
            self.samples[label].append(round(1000 * used[label] / calls, 4))

    def costs(self) -> PredictCosts:
        of = {label: median(values) for label, values in self.samples.items()}
        return PredictCosts(
            model={n: of[f"model_{n}"] for n in PREDICT_SIZES},
            prep={n: of[f"prep_{n}"] for n in PREDICT_SIZES},
            pyfunc_one_row=of["pyfunc_1"],
            samples=self.samples,
        )


# ---------------------------------------------------------------------- CPU from /proc

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(path: Path) -> float:
    """utime + stime of one /proc stat file, in seconds (0 if it is gone)."""
    try:
        fields = path.read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu(root: int) -> float:
    return sum(_stat_cpu(Path(f"/proc/{pid}/stat")) for pid in process_tree(root))


def thread_cpu(pid: int) -> dict[int, float]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    return {int(task.name): _stat_cpu(task / "stat") for task in tasks}


# ---------------------------------------------------------------------- MLflow's server


class MlflowServer:
    """``mlflow models serve`` in its own session (the CLI starts uvicorn as a child)."""

    def __init__(self, model_uri: str, tracking_uri: str, workdir: Path) -> None:
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.workdir = workdir
        self.log_path = workdir / "mlflow-serve.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.launched = 0.0  # perf_counter
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MlflowServer:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        env.pop("MLFLOW_REGISTRY_URI", None)  # the registry is the tracking store
        env.update(QUIET, MLFLOW_TRACKING_URI=self.tracking_uri)
        bin_dir = str(Path(sys.executable).parent)  # it runs `uvicorn` from PATH
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        self._log = self.log_path.open("ab")
        self.launched = time.perf_counter()
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri),
                *("--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)),
                *("--workers", "1"),
            ],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        return self

    def wait_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT_SECONDS
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mlflow models serve did not start:\n{tail}")
            time.sleep(0.01)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # the session this class started
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------------- requests


def post_request(path: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Accept: application/json",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Target:
    """One server under load: where to send, what to send, whose CPU to read."""

    label: str
    port: int
    pid: int
    request: bytes
    sampler: MemorySampler
    idle_cpu_per_second: float = 0.0
    runs: dict[str, list[LoadResult]] = field(default_factory=lambda: {"8": [], "1": []})
    cpu_seconds: dict[str, float] = field(default_factory=lambda: {"8": 0.0, "1": 0.0})
    threads: dict[str, dict[int, float]] = field(default_factory=lambda: {"8": {}, "1": {}})
    requests: dict[str, int] = field(default_factory=lambda: {"8": 0, "1": 0})

    def load(self, kind: str) -> LoadResult:
        clients, seconds = (CLIENTS, LOAD_SECONDS) if kind == "8" else (1, SEQUENTIAL_SECONDS)
        cpu_before, threads_before = tree_cpu(self.pid), thread_cpu(self.pid)
        result = run_load(
            self.port,
            self.request,
            concurrency=clients,
            max_requests=10**7,
            max_seconds=seconds,
        )
        cpu = tree_cpu(self.pid) - cpu_before
        if result.failures or not result.requests:
            raise RuntimeError(f"{self.label}: {result.requests} answers, {dict(result.statuses)}")
        self.runs[kind].append(result)
        self.cpu_seconds[kind] += cpu - self.idle_cpu_per_second * result.elapsed_s
        self.requests[kind] += result.requests
        threads = self.threads[kind]
        for tid, used in thread_cpu(self.pid).items():
            threads[tid] = threads.get(tid, 0.0) + used - threads_before.get(tid, 0.0)
        return result

    def cpu_ms_per_request(self, kind: str) -> float:
        return 1000 * self.cpu_seconds[kind] / self.requests[kind]

    def throughput(self) -> float:
        return median([r.throughput for r in self.runs["8"]])

    def latency(self, kind: str, q: float) -> float:
        return median([r.latency_ms(q) for r in self.runs[kind]])


# ---------------------------------------------------------------------- deploy


def _wait_for_version(
    client: httpx.Client,
    path: str,
    body: dict[str, Any],
    version: str,
    began: float,
    refused: Counter[str],
) -> float:
    """Seconds from ``began`` (perf_counter) to the first 200 answered by ``version``; every
    other answer is counted in ``refused`` by status and reason (404 and 409 are expected
    before the deployment's first variant serves; anything else is the service's failure)."""
    deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
    while True:
        response = client.post(path, json=body)
        if response.status_code == 200 and response.json().get("model_version") == version:
            return time.perf_counter() - began
        if response.status_code != 200:
            detail = response.json().get("detail", "") if response.content else ""
            refused[f"{response.status_code} {detail}"] += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"version {version} did not answer in {DEPLOY_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)


@dataclass
class Deploys:
    first: float
    roll_out: float
    ready_seconds: float  # from /health answering 200 to /ready answering 200
    post_seconds: float  # until the POST was answered
    patch_seconds: float
    details: list[str]
    refused_first: Counter[str]
    refused_roll_out: Counter[str]


def wait_until_ready(client: httpx.Client) -> float:
    began = time.perf_counter()
    deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
    while client.get("/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"/ready did not answer 200 in {DEPLOY_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - began


def deploy(service: Service, body: dict[str, Any]) -> Deploys:
    predict = f"/api/v1/deployments/{DEPLOYMENT}/predict"
    refused_first: Counter[str] = Counter()
    refused_roll_out: Counter[str] = Counter()
    with httpx.Client(base_url=service.base_url, headers=CREDENTIALS, timeout=60) as client:
        ready_seconds = wait_until_ready(client)
        print(f"  ready {ready_seconds:.2f} s after /health", flush=True)
        began = time.perf_counter()
        created = client.post(
            "/api/v1/deployments",
            json={
                "name": DEPLOYMENT,
                "model": {"name": MODEL, "version": "1"},
                "strategy": "direct",
            },
        )
        post_seconds = time.perf_counter() - began
        if created.status_code != 202:
            raise RuntimeError(f"POST /api/v1/deployments: {created.status_code} {created.text}")
        first = _wait_for_version(client, predict, body, "1", began, refused_first)
        print(f"  deploy v1: {first:.2f} s to the first prediction", flush=True)
        time.sleep(1.0)  # let the manager settle before the roll-out
        began = time.perf_counter()
        patched = client.patch(
            f"/api/v1/deployments/{DEPLOYMENT}",
            json={"model": {"name": MODEL, "version": "2"}, "strategy": "direct"},
        )
        patch_seconds = time.perf_counter() - began
        if patched.status_code != 202:
            raise RuntimeError(f"PATCH deployment: {patched.status_code} {patched.text}")
        roll_out = _wait_for_version(client, predict, body, "2", began, refused_roll_out)
        print(f"  roll out v2: {roll_out:.2f} s to the first prediction", flush=True)
        deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
        while True:  # wait until version 1 is retired: nothing else moves during the rounds
            found = client.get(f"/api/v1/deployments/{DEPLOYMENT}").json()
            if found["state"] == "ready" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        details = [f"{v['name']} ({v['status']}): {v['detail']}" for v in found["variants"]]
    return Deploys(
        first,
        roll_out,
        ready_seconds,
        post_seconds,
        patch_seconds,
        details,
        refused_first,
        refused_roll_out,
    )


def mlflow_first_answer(server: MlflowServer, body: dict[str, Any]) -> float:
    """Seconds from launching ``mlflow models serve`` to its first 200."""
    server.wait_listening()
    deadline = time.monotonic() + MLFLOW_START_TIMEOUT_SECONDS
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        while True:
            try:
                if client.post("/invocations", json=body).status_code == 200:
                    return time.perf_counter() - server.launched
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow models serve never answered a prediction")
            time.sleep(POLL_SECONDS)


def check_answers(service: Service, server: MlflowServer, body: dict[str, Any]) -> Any:
    """Both answer the same prediction for the body the load sends; the service with v2."""
    with httpx.Client(timeout=60) as client:
        ours = client.post(
            f"{service.base_url}/api/v1/deployments/{DEPLOYMENT}/predict",
            json=body,
            headers=CREDENTIALS,
        )
        ours.raise_for_status()
        theirs = client.post(f"{server.base_url}/invocations", json=body)
        theirs.raise_for_status()
        wrong = client.post(
            f"{service.base_url}/api/v1/deployments/{DEPLOYMENT}/predict",
            json=body,
            headers={"X-API-Key": "wrong"},
        )
    answer = ours.json()
    if answer["model_version"] != "2" or "ratelimit-limit" not in ours.headers:
        raise RuntimeError(f"the service answered {answer} with headers {dict(ours.headers)}")
    if wrong.status_code != 401:
        raise RuntimeError(f"a wrong API key got {wrong.status_code}: auth is off")
    if theirs.json()["predictions"] != answer["predictions"]:
        raise RuntimeError(f"MLflow answered {theirs.json()}, the service {answer}")
    return answer["predictions"]


# ---------------------------------------------------------------------- the run


@dataclass
class Figures:
    deploys: Deploys
    mlflow_start: float
    predict: PredictCosts
    service: Target
    mlflow: Target
    service_rss: float
    mlflow_rss: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    log_problems: list[str]
    access_lines: int
    audited_predictions: int
    pinning: str | None


def measure() -> Figures:
    client_cpu, server_cpu = _cpus()
    load_before = os.getloadavg()
    x, _ = features()
    record = {k: float(v) for k, v in x.iloc[0].items()}
    body = {"instances": [record]}
    payload = json.dumps(body, separators=(",", ":")).encode()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        from mlops.core.settings import Settings

        tracking_uri = Settings(data_dir=tmp / "data").effective_mlflow_uri
        (tmp / "data" / "mlflow").mkdir(parents=True)
        print("serving: registering two versions of the forest", flush=True)
        versions = register_versions(tracking_uri, tmp)
        if versions != ["1", "2"]:
            raise RuntimeError(f"registered versions {versions}, expected 1 and 2")
        print("serving: the model's own predict, in-process", flush=True)
        with pinned(server_cpu), contextlib.chdir(tmp):
            timer = ModelTimer(tracking_uri, "2", record)
            for _ in range(PREDICT_SAMPLES_BEFORE):
                timer.sample()
        _print_costs(timer.costs())
        with pinned(client_cpu):
            figures = _serve_and_load(tmp, tracking_uri, timer, body, payload, server_cpu)
        _print_costs(figures.predict)
    figures.load_before = load_before
    if server_cpu >= 0:
        figures.pinning = f"Servers pinned to CPU {server_cpu}, load generator to CPU {client_cpu}"
    return figures


def _print_costs(costs: PredictCosts) -> None:
    print(
        "  model predict "
        + ", ".join(f"{n} rows {ms:.2f} ms" for n, ms in costs.model.items())
        + f"; pyfunc 1 row {costs.pyfunc_one_row:.2f} ms",
        flush=True,
    )


def _keep_logs(*paths: Path) -> None:
    keep = os.environ.get(KEEP_LOGS_ENV)
    if not keep:
        return
    for path in paths:
        with contextlib.suppress(OSError):
            shutil.copyfile(path, Path(keep) / f"serving-{path.name}")


def _serve_and_load(
    tmp: Path,
    tracking_uri: str,
    timer: ModelTimer,
    body: dict[str, Any],
    payload: bytes,
    server_cpu: int,
) -> Figures:
    print("serving: the service", flush=True)
    with pinned(server_cpu):
        service = Service(STORE, tmp, dict(QUIET)).__enter__()  # its data dir: tmp / "data"
    try:
        deploys = deploy(service, body)
        print("serving: mlflow models serve", flush=True)
        with pinned(server_cpu):
            mlflow = MlflowServer(f"models:/{MODEL}/2", tracking_uri, tmp).__enter__()
        try:
            mlflow_start = mlflow_first_answer(mlflow, body)
            print(f"  mlflow models serve: {mlflow_start:.2f} s to the first prediction")
            check_answers(service, mlflow, body)
            assert service.process is not None and service.sampler is not None
            assert mlflow.process is not None
            mlflow_sampler = MemorySampler(mlflow.process.pid)
            mlflow_sampler.start()
            try:
                targets = _rounds(service, mlflow, payload, mlflow_sampler, timer, server_cpu)
                ended = time.monotonic()
            finally:
                mlflow_sampler.stop()
        finally:
            mlflow.__exit__(None, None, None)
    finally:
        service.__exit__(None, None, None)
        _keep_logs(service.log_path, tmp / "mlflow-serve.log")
    ours, theirs, started = targets
    log = service.log_path.read_text(errors="replace")
    return Figures(
        deploys=deploys,
        mlflow_start=mlflow_start,
        predict=timer.costs(),
        service=ours,
        mlflow=theirs,
        service_rss=ours.sampler.peak_between(started, ended),
        mlflow_rss=theirs.sampler.peak_between(started, ended),
        load_before=(0.0, 0.0, 0.0),
        load_after=os.getloadavg(),
        log_problems=service.log_problems(),
        access_lines=log.count('"logger": "mlops.access"'),
        audited_predictions=_audited_predictions(tmp / "data" / "mlops.db"),
        pinning=None,
    )


def _audited_predictions(database: Path) -> int:
    """Audit-log entries of predict requests in the service's (stopped) SQLite database."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
        query = "SELECT count(*) FROM audit_log WHERE action LIKE 'POST %/predict'"
        return int(db.execute(query).fetchone()[0])


def _rounds(
    service: Service,
    mlflow: MlflowServer,
    payload: bytes,
    mlflow_sampler: MemorySampler,
    timer: ModelTimer,
    server_cpu: int,
) -> tuple[Target, Target, float]:
    assert service.process is not None and service.sampler is not None
    assert mlflow.process is not None
    ours = Target(
        "service",
        service.port,
        service.process.pid,
        post_request(
            f"/api/v1/deployments/{DEPLOYMENT}/predict", service.port, payload, CREDENTIALS
        ),
        service.sampler,
    )
    theirs = Target(
        "MLflow's server",
        mlflow.port,
        mlflow.process.pid,
        post_request("/invocations", mlflow.port, payload, {}),
        mlflow_sampler,
    )
    for target in (ours, theirs):
        run_load(target.port, target.request, concurrency=CLIENTS, max_seconds=WARMUP_SECONDS)
    idle = {t.label: tree_cpu(t.pid) for t in (ours, theirs)}
    time.sleep(IDLE_SECONDS)
    for target in (ours, theirs):
        target.idle_cpu_per_second = (tree_cpu(target.pid) - idle[target.label]) / IDLE_SECONDS
    started = time.monotonic()
    for round_no in range(ROUNDS):
        order = (ours, theirs) if round_no % 2 == 0 else (theirs, ours)
        for target in order:
            load = target.load("8")
            one = target.load("1")
            print(
                f"  round {round_no + 1} {target.label}: 8 clients {load.throughput:,.0f} req/s "
                f"p50 {load.latency_ms(50):.2f} ms p99 {load.latency_ms(99):.2f} ms; "
                f"1 client p50 {one.latency_ms(50):.2f} ms",
                flush=True,
            )
        with pinned(server_cpu):  # the servers idle meanwhile
            timer.sample()
    return ours, theirs, started


# ---------------------------------------------------------------------- records


def _record(
    store: str, name: str, figure: str, unit: str, value: float, *args: Any, **more: Any
) -> Record:
    return record(name, store, figure, unit, value, *args, **more)


@dataclass
class Split:
    """Where the service's CPU went in the runs of one kind, per request (ms)."""

    total: float
    event_loop: float
    model_thread: float
    other: float  # other threads and processes, less the idle rate
    batches: float
    mean_batch: float
    model_predict: float

    @property
    def beyond(self) -> float:
        return self.total - self.model_predict


def split_service_cpu(target: Target, costs: PredictCosts, kind: str) -> Split:
    """The model thread is the busiest thread but the event loop's; the batches it ran are its
    CPU over what one batch costs (at the mean batch size, which follows from the batches)."""
    requests = target.requests[kind]
    threads = dict(target.threads[kind])
    event_loop = threads.pop(target.pid, 0.0)
    model_tid = max(threads, key=lambda tid: threads[tid]) if threads else None
    model_thread = 1000 * threads.pop(model_tid, 0.0) if model_tid is not None else 0.0
    total = target.cpu_ms_per_request(kind)
    mean_batch, batches = 1.0, 0.0
    for _ in range(50):
        batches = model_thread / costs.batch_at(mean_batch)
        mean_batch = min(max(requests / batches, 1.0), float(CLIENTS)) if batches else 1.0
    model_predict = (model_thread - batches * costs.prep_at(mean_batch)) / requests
    return Split(
        total=total,
        event_loop=1000 * event_loop / requests,
        model_thread=model_thread / requests,
        other=total - 1000 * event_loop / requests - model_thread / requests,
        batches=batches,
        mean_batch=mean_batch,
        model_predict=model_predict,
    )


def records_of(f: Figures) -> tuple[list[Record], dict[str, Split]]:
    store = STORE.label
    ours, theirs, costs = f.service, f.mlflow, f.predict
    splits = {kind: split_service_cpu(ours, costs, kind) for kind in ("8", "1")}
    ratio = ours.throughput() / theirs.throughput()
    deploy_target = f"≤ {TARGET_DEPLOY_SECONDS:g} s"
    records = [
        _record(
            store,
            "deploy version 1 (POST /api/v1/deployments)",
            "request → first prediction",
            "s",
            f.deploys.first,
            f.mlflow_start,
            compare="ratio",
            target=deploy_target,
            met=f.deploys.first <= TARGET_DEPLOY_SECONDS,
        ),
        _record(
            store,
            "roll out version 2 (PATCH, direct)",
            "request → first prediction from v2",
            "s",
            f.deploys.roll_out,
            f.mlflow_start,
            compare="ratio",
            target=deploy_target,
            met=f.deploys.roll_out <= TARGET_DEPLOY_SECONDS,
        ),
    ]
    for kind, clients in (("8", CLIENTS), ("1", 1)):
        name = f"single-row predict, {clients} client{'s' if clients > 1 else ''}"
        targeted = kind == "8"
        records.append(
            _record(
                store,
                name,
                "throughput",
                "req/s",
                median([r.throughput for r in ours.runs[kind]]),
                median([r.throughput for r in theirs.runs[kind]]),
                compare="ratio",
                target=f"ratio ≥ {TARGET_RATIO:g}" if targeted else None,
                met=ratio >= TARGET_RATIO if targeted else None,
                runs={
                    "service": [round(r.throughput, 2) for r in ours.runs[kind]],
                    "mlflow": [round(r.throughput, 2) for r in theirs.runs[kind]],
                },
            )
        )
        for q in (50, 99):
            records.append(
                _record(
                    store,
                    name,
                    f"latency p{q}",
                    "ms",
                    ours.latency(kind, q),
                    theirs.latency(kind, q),
                    compare="ratio",
                    runs={
                        "service": [round(r.latency_ms(q), 3) for r in ours.runs[kind]],
                        "mlflow": [round(r.latency_ms(q), 3) for r in theirs.runs[kind]],
                    },
                )
            )
    for kind, clients in (("8", CLIENTS), ("1", 1)):
        name = f"CPU per request, {clients} client{'s' if clients > 1 else ''}"
        targeted = kind == "8"
        mine, mlflow_total = splits[kind], theirs.cpu_ms_per_request(kind)
        records += [
            _record(
                store, name, "server process tree", "ms", mine.total, mlflow_total, compare="ratio"
            ),
            _record(
                store,
                name,
                "the model's predict (service: its model thread less batch building)",
                "ms",
                mine.model_predict,
                costs.model[1],
                compare="ratio",
            ),
            _record(
                store,
                name,
                "beyond the model's predict",
                "ms",
                mine.beyond,
                mlflow_total - costs.model[1],
                compare="ratio",
                target=f"≤ {TARGET_BEYOND_MS:g} ms (service)" if targeted else None,
                met=mine.beyond <= TARGET_BEYOND_MS if targeted else None,
            ),
            _record(
                store,
                name,
                "service's event-loop thread (HTTP, middleware, checks, JSON)",
                "ms",
                mine.event_loop,
            ),
        ]
        if targeted:
            records.append(
                _record(
                    store,
                    name,
                    "requests per predict call (service: inferred)",
                    "rows",
                    mine.mean_batch,
                    1.0,
                    compare="ratio",
                )
            )
    records.append(
        _record(
            store,
            "peak RSS in the rounds",
            "server process tree",
            "MiB",
            f.service_rss,
            f.mlflow_rss,
            compare="ratio",
        )
    )
    model = f"{TREES}-tree forest, CPU per call"
    records += [
        _record(MODEL_ONLY, model, "model predict, 1 row", "ms", costs.model[1]),
        _record(
            MODEL_ONLY,
            model,
            "model predict, 8 rows (baseline: 1 row)",
            "ms",
            costs.model[8],
            costs.model[1],
            compare="ratio",
        ),
        _record(
            MODEL_ONLY,
            model,
            "model predict, 100 rows (baseline: 1 row)",
            "ms",
            costs.model[100],
            costs.model[1],
            compare="ratio",
        ),
        _record(
            MODEL_ONLY,
            model,
            "service's batch building, 8 one-row requests",
            "ms",
            costs.prep[8],
        ),
        _record(
            MODEL_ONLY,
            model,
            "MLflow's PyFuncModel.predict, 1 row (baseline: model predict)",
            "ms",
            costs.pyfunc_one_row,
            costs.model[1],
            compare="added",
            runs=costs.samples,
        ),
    ]
    return records, splits


def notes_of(f: Figures, splits: dict[str, Split]) -> list[str]:
    ours, theirs, costs = f.service, f.mlflow, f.predict
    split, one = splits["8"], splits["1"]
    latencies = [x for r in ours.runs["8"] for x in r.latencies_us]
    spread = {
        label: f"{min(values):.1f} to {max(values):.1f}"
        for label, values in costs.samples.items()
        if label.startswith(("model", "pyfunc"))
    }
    return [
        (f"{f.pinning}." if f.pinning else "Fewer than two CPUs: nothing pinned.")
        + f" 1-minute load average {f.load_before[0]:.2f} when the benchmark began and "
        f"{f.load_after[0]:.2f} at its end, on {os.cpu_count()} cores shared with whatever else "
        "the machine ran.",
        f"Service, {CLIENTS} clients: {ours.requests['8']:,} requests; CPU per request "
        f"{split.total:.2f} ms = event loop {split.event_loop:.2f} + model thread "
        f"{split.model_thread:.2f} + other threads and processes {split.other:.2f} (idle "
        f"{1000 * ours.idle_cpu_per_second:.0f} ms/s subtracted). The model thread's "
        f"{split.model_thread * ours.requests['8'] / 1000:.2f} s over a batch's "
        f"{costs.batch_at(split.mean_batch):.2f} ms (predict {costs.model_at(split.mean_batch):.2f}"
        f" + building {costs.prep_at(split.mean_batch):.2f}) ≈ {split.batches:,.0f} predict "
        f"calls of {split.mean_batch:.2f} requests each; the model's predict is the model thread "
        f"less {split.batches:,.0f} batch buildings = {split.model_predict:.2f} ms per request, "
        f"and {split.beyond:.2f} ms is beyond it.",
        f"Service, 1 client (batches of one): CPU per request {one.total:.2f} ms = event loop "
        f"{one.event_loop:.2f} + model thread {one.model_thread:.2f} + other {one.other:.2f}; "
        f"{one.beyond:.2f} ms beyond the model's predict.",
        f"MLflow's server: {theirs.cpu_ms_per_request('8'):.2f} ms of CPU per request with "
        f"{CLIENTS} clients, {theirs.cpu_ms_per_request('1'):.2f} with 1 (idle "
        f"{1000 * theirs.idle_cpu_per_second:.0f} ms/s subtracted); one `PyFuncModel.predict` "
        f"per request ({costs.pyfunc_one_row:.2f} ms in-process, the estimator's "
        f"{costs.model[1]:.2f} ms of it; its *beyond* row subtracts the latter).",
        "The model's CPU per call varies with the machine's load; per sample (ms): "
        + "; ".join(f"{label} {values}" for label, values in spread.items())
        + ". The service's split of its own CPU does not depend on these figures except for "
        "batch building, a small share.",
        f"Service latency over all {len(latencies):,} {CLIENTS}-client requests: p50 "
        f"{percentile(latencies, 50) / 1000:.2f} ms, p99 {percentile(latencies, 99) / 1000:.2f} "
        f"ms, max {max(latencies) / 1000:.1f} ms. Throughput per round: service "
        f"{', '.join(f'{r.throughput:,.0f}' for r in ours.runs['8'])}; MLflow "
        f"{', '.join(f'{r.throughput:,.0f}' for r in theirs.runs['8'])} req/s.",
        f"Both servers are CPU-bound on their core with {CLIENTS} clients: throughput times CPU "
        f"per request is {ours.throughput() * split.total / 10:.0f} % of a core for the service "
        f"and {theirs.throughput() * theirs.cpu_ms_per_request('8') / 10:.0f} % for MLflow's "
        "server (median throughput of the rounds, mean CPU per request).",
        f"Deploy: `/ready` answered 200 {f.deploys.ready_seconds:.2f} s after `/health` did; "
        f"the `POST` was answered in {f.deploys.post_seconds:.2f} s and the `PATCH` in "
        f"{f.deploys.patch_seconds:.2f} s; "
        + "; ".join(f.deploys.details)
        + f". `mlflow models serve` launch → first prediction {f.mlflow_start:.2f} s.",
        "Predictions tried while deploying that were not answered: "
        + _refused(f.deploys.refused_first)
        + "; while rolling out (a version should answer throughout): "
        + _refused(f.deploys.refused_roll_out)
        + ".",
        f"Service log: {f.access_lines:,} access-log lines, {len(f.log_problems)} "
        f"ERROR/traceback lines; {f.audited_predictions:,} audit-log entries of predict "
        "requests (predictions are not audited; the count shows none slipped in).",
    ]


def _refused(counts: Counter[str]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{n} times {answer}" for answer, n in counts.most_common())


def main() -> None:
    os.environ.update(QUIET)  # MLflow telemetry off here and in every process started
    figures = measure()
    records, splits = records_of(figures)
    notes = notes_of(figures, splits)
    for line in figures.log_problems[:10]:
        print(f"  service log: {line}", flush=True)
    setup = {
        "trees": TREES,
        "clients": CLIENTS,
        "rounds": ROUNDS,
        "load_seconds": LOAD_SECONDS,
        "sequential_seconds": SEQUENTIAL_SECONDS,
        "warmup_seconds": WARMUP_SECONDS,
        "idle_seconds": IDLE_SECONDS,
        "poll_seconds": POLL_SECONDS,
        "pinning": figures.pinning,
        "load_average": [round(x, 2) for x in (*figures.load_before, *figures.load_after)],
    }
    stamp, machine = utc_now(), machine_info()
    for entry in records:
        entry.update(machine=machine, date=stamp, setup=setup, notes=notes)
    path = write_results("serving", records)
    print(f"serving: wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
