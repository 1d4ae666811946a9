"""What the pipeline engine adds to each step, whether a burst of runs all comes out the end, and
the same chains on the local backend and on a real Apache Airflow (the ``airflow`` backend).

The service runs for real: ``python -m mlops serve`` in a subprocess on a free loopback port,
with its own data directory, a bootstrap admin key, rate limits too high to refuse anything,
and ``MLOPS_LOCAL_WORKERS`` worker processes; its log goes to a file. Everything is driven over
HTTP with httpx, and every duration comes from the timestamps the service itself records on the
run and on its steps (``created_at``, ``started_at``, ``finished_at``), so how often this script
polls does not change the figures.

The Airflow comparison starts Apache Airflow 3.3.2 with the test suite's own harness,
``tests.airflow_server.AirflowServer`` (imported from ``tests``, not copied: the benchmark runs
the very Airflow the integration tests run). Airflow that cannot be installed or started fails
the benchmark; it is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from bench.api_apps import free_port, port_open
from bench.api_overhead import (
    BOOTSTRAP_KEY,
    CREDENTIALS,
    PG_HOST,
    PG_PORT,
    Store,
    postgres_redis_store,
)
from bench.common import (
    ROOT,
    Record,
    machine_info,
    median,
    stop_process,
    utc_now,
    write_results,
)
from mlops.pipelines.engine import FULL_SCAN_SECONDS

LOCAL_WORKERS = 2
CHAIN_STEPS = 10
FAN_WIDTH = 10
ROUNDS = 7  # measured runs of each shape, after one warm-up run each
BURST_RUNS = 1000
BURST_CONCURRENCY = 32
MEMORY_SAMPLE_SECONDS = 0.1
POLL_SECONDS = 0.1
RUN_TIMEOUT_SECONDS = 30.0  # one chain or fan-out run
BURST_SUBMIT_TIMEOUT_SECONDS = 60.0
BURST_SETTLE_TIMEOUT_SECONDS = 90.0
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
TARGET_OVERHEAD_MS = 50.0
NOOP = "mlops.steps.library.testing:noop"
FINAL = frozenset({"succeeded", "failed", "cancelled"})
KEEP_LOGS_ENV = "BENCH_KEEP_LOGS"  # a folder: copy each service log there

# Local backend against the airflow backend: the same chains, one service, one real Airflow.
VERSUS_CHAINS = (3, 10)  # steps of each chain
VERSUS_BACKENDS = ("local", "airflow")
VERSUS_ROUNDS = 5  # measured runs of each chain on each backend, after one warm-up run each
AIRFLOW_POLL_SECONDS = 0.5  # MLOPS_AIRFLOW__POLL_SECONDS of the service
AIRFLOW_DAG_PREFIX = "bench"
AIRFLOW_RUN_TIMEOUT_SECONDS = 180.0  # one run, the warm-up's wait for the first parse included
AIRFLOW_MEMORY_SAMPLE_SECONDS = 0.25
# The Airflow settings tests/airflow_server.py sets that bear on these figures; their values are
# read from the running server's environment and listed under the table.
AIRFLOW_SETTINGS_SHOWN = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL",
    "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES",
    "AIRFLOW__SCHEDULER__PARSING_CLEANUP_INTERVAL",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL",
    "AIRFLOW__API__WORKERS",
)

CHAIN_NAME = f"{CHAIN_STEPS}-step chain of no-ops"
FAN_NAME = f"{FAN_WIDTH}-wide fan-out of no-ops + join"
COLUMNS = ("local backend", "baseline", "ratio / added")

DESCRIPTION = f"""\
The pipeline engine on the local backend, with the service running for real:
`python -m mlops serve` in a subprocess on a loopback port, a fresh data directory, a bootstrap
admin key, a rate limit of 10,000,000/minute, **`MLOPS_LOCAL_WORKERS={LOCAL_WORKERS}`** worker
processes, JSON logs at INFO written to a file. The benchmark drives it over HTTP with httpx
(`POST /api/v1/pipelines/{{name}}/runs`, then `GET /api/v1/pipelines/runs/{{id}}` every
{POLL_SECONDS * 1000:.0f} ms until the run is final). Every step is the `python` step type
calling `{NOOP}`, whose own work is nil, so whatever time a step takes is the engine's (on the
Airflow backend: Airflow's and the engine's).

- **{CHAIN_STEPS}-step chain**: each step depends on the one before.
  **{FAN_WIDTH}-wide fan-out**: {FAN_WIDTH} independent steps and one join step after all of
  them ({FAN_WIDTH + 1} steps; {LOCAL_WORKERS} workers run them {LOCAL_WORKERS} at a time).
- **overhead per step** = (run `finished_at` - run `created_at`) / steps, all from the run's
  own timestamps; the median of {ROUNDS} runs after one warm-up run per shape (workers import
  lazily). Target: at most {TARGET_OVERHEAD_MS:g} ms on the embedded default (SQLite +
  in-process). These rows have no baseline: the comparison with Apache Airflow is the
  *local vs airflow backend* rows at the end, measured in the same run.
- **scheduling gap**: from a step's `finished_at` to the `started_at` of the step that depends
  on it (in the fan-out: from the last of the {FAN_WIDTH} to the join), median per run, then
  the median of the runs.
- **no-op step round trip**: a step's `started_at` to its `finished_at`: the engine's commit,
  the backend's queue, the pipe to the worker and back, the result's record. In the fan-out
  all {FAN_WIDTH} steps are marked started at once, so it includes waiting for a worker.
- **POST → run finished**: from just before the client sends the POST to the run's
  `finished_at` (same machine, same clock).
- **{BURST_RUNS:,} runs at once**: a one-step no-op pipeline, {BURST_RUNS:,} POSTs with
  {BURST_CONCURRENCY} in flight, then wait (at most {BURST_SETTLE_TIMEOUT_SECONDS:g} s) until
  no run is queued or running. *succeeded* counts by status; *listed* is the number of
  distinct run ids paged out of `GET /api/v1/pipelines/runs?pipeline=…&limit=200` (every id a
  POST returned must be among them: none lost); *queued or running* is what is left at the end
  (none stuck). The baseline of these rows is the number submitted. **POST latency** is the
  client's time for each accepted POST under that load, **POSTs accepted per second** the
  submission rate, **total time** runs from the first POST to the last run's `finished_at`
  and **throughput** is {BURST_RUNS:,} runs over that time. **peak RSS** is the largest sum
  of `VmRSS` over the service process and all its descendants (the workers), sampled every
  {MEMORY_SAMPLE_SECONDS * 1000:.0f} ms from `/proc`; its baseline is that sum just before the
  burst.
- **local vs airflow backend**: a {VERSUS_CHAINS[0]}-step and a {VERSUS_CHAINS[1]}-step chain
  of the same no-op steps, each applied twice: on the local backend and with
  `backend: airflow` (no step sets `cache`). Both run in one more service process (SQLite +
  in-process, as above, plus `MLOPS_AIRFLOW__URL`, `__USERNAME`, `__PASSWORD`, `__SPECS_DIR`,
  **`MLOPS_AIRFLOW__POLL_SECONDS={AIRFLOW_POLL_SECONDS:g}`** and
  `MLOPS_AIRFLOW__DAG_PREFIX={AIRFLOW_DAG_PREFIX}`), started after the measurements above, next
  to a real **Apache Airflow 3.3.2** that the benchmark starts for this run with the test
  suite's harness `tests/airflow_server.py`: a fresh home and SQLite metadata database,
  api-server + scheduler (LocalExecutor) + dag-processor, the DAG file
  `airflow_dags/ml_training_dag.py`; the Airflow settings that matter here are listed under the
  table. On that backend the service writes the run's plan into the specs folder, triggers a
  DAG run over Airflow's REST API, and copies the task instances' states and times into the
  run's steps each time it polls; each task is a `BashOperator` that starts this venv's
  interpreter on `mlops.backends.airflow_task`, which runs the step. One warm-up run of each
  of the four pipelines (on Airflow the first POST of a new pipeline waits until the
  dag-processor has parsed its plan: that wait is the warm-up's), then {VERSUS_ROUNDS} rounds
  of local {VERSUS_CHAINS[0]}, Airflow {VERSUS_CHAINS[0]}, local {VERSUS_CHAINS[1]}, Airflow
  {VERSUS_CHAINS[1]}, one run at a time. *local backend* is the local figure, *baseline* the
  Airflow-backend figure, *ratio* local / Airflow; each is the median of the {VERSUS_ROUNDS}
  runs (for gaps and round trips: the median per run, then of the runs). Every time comes from
  the service's records of the run and its steps, as above; on the Airflow backend a step's
  `started_at` and `finished_at` are Airflow's task instance `start_date` and `end_date`, and
  the run's `finished_at` is when the service saw the DAG run succeed, so **POST → run
  finished** and **per step** ((run `finished_at` - `created_at`) / steps) include the
  service's polling: every {AIRFLOW_POLL_SECONDS:g} s (the engine scans that often when a
  whole-run backend polls more often than its {FULL_SCAN_SECONDS:g} s full scan).
  **run created → first step started** is the start of it (the service's submission: plan file
  and trigger; then Airflow queueing and starting the first task), **last step finished → run
  finished** the end (Airflow marking the DAG run succeeded, then the service's next poll). A
  no-op step's round trip on Airflow is a task instance from start to end: Airflow's task
  runner, the `BashOperator` starting a fresh interpreter that imports the step library and runs
  the step, the result pushed to XCom. **peak RSS** compares the service process tree
  (service + local workers) with Airflow's (the harness's supervisor and every descendant:
  api-server, scheduler, dag-processor, LocalExecutor workers, the task processes and the step
  interpreters they start), each sampled from `/proc` during the measured rounds; **RSS before
  the first run** is each tree idle.
"""


# ---------------------------------------------------------------------- memory of a tree


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/<pid>/task/*/children``, else a scan of /proc)."""
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return []
    if (tasks[0] / "children").exists():
        found: list[int] = []
        for task in tasks:
            try:
                found += [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
        return found
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def process_tree(root: int) -> list[int]:
    tree: list[int] = []
    todo = [root]
    while todo and len(tree) < 1000:
        pid = todo.pop()
        tree.append(pid)
        todo += _children(pid)
    return tree


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class MemorySampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread."""

    def __init__(self, root: int, interval: float = MEMORY_SAMPLE_SECONDS) -> None:
        self.root = root
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (monotonic time, MiB)
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = process_tree(self.root)
            self.seen.update(pids)
            total = sum(rss_kib(pid) for pid in pids)
            if total:
                self.samples.append((time.monotonic(), total / 1024))
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def last_before(self, moment: float) -> float:
        before = [mib for t, mib in self.samples if t <= moment]
        return before[-1] if before else 0.0

    def peak_between(self, start: float, end: float) -> float:
        return max((mib for t, mib in self.samples if start <= t <= end), default=0.0)


# ---------------------------------------------------------------------- the service


class Service:
    """``python -m mlops serve`` in a subprocess, its output appended to ``log_path``."""

    def __init__(self, store: Store, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.store = store
        self.tmp = tmp
        self.extra_env = dict(extra_env or {})
        self.log_path = tmp / "service.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.sampler: MemorySampler | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        env.update(
            MLOPS_DATA_DIR=str(self.tmp / "data"),
            MLOPS_BOOTSTRAP_ADMIN_KEY=BOOTSTRAP_KEY,
            MLOPS_RATE_LIMIT="10000000/minute",
            MLOPS_RATE_LIMIT_ANONYMOUS="10000000/minute",
            MLOPS_LOCAL_WORKERS=str(LOCAL_WORKERS),
            MLOPS_LOG_LEVEL="INFO",
            MLOPS_LOG_JSON="true",
        )
        if self.store.database_url:
            env["MLOPS_DATABASE_URL"] = self.store.database_url
        if self.store.redis_url:
            env["MLOPS_REDIS_URL"] = self.store.redis_url
        env.update(self.extra_env)
        return env

    def __enter__(self) -> Service:
        self.port = free_port()
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "mlops", "serve", "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            cwd=self.tmp,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        self.sampler = MemorySampler(self.process.pid)
        self.sampler.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the service did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        try:
            return httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT_SECONDS)
        if self.sampler is not None:
            self.sampler.stop()
            self._reap_workers(self.sampler.seen - {self.process.pid if self.process else -1})
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _reap_workers(pids: set[int]) -> None:
        """Kill workers the stopped service left behind (only ``mlops.steps`` processes)."""

        def alive() -> list[int]:
            found = []
            for pid in pids:
                try:
                    if b"mlops.steps" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        found.append(pid)
                except OSError:
                    continue
            return found

        deadline = time.monotonic() + 3
        while (left := alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def log_problems(self) -> list[str]:
        """ERROR/CRITICAL records and tracebacks in the service log (first lines of each)."""
        problems = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line or "Traceback" in line:
                problems.append(line[:300])
        return problems


# ---------------------------------------------------------------------- pipelines and runs


def _step(name: str, depends_on: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "python",
        "depends_on": depends_on,
        "params": {"callable": NOOP, "kwargs": {}},
    }


def chain_spec(
    length: int = CHAIN_STEPS, name: str = "bench-chain", backend: str | None = None
) -> dict[str, Any]:
    """``length`` no-op steps, each after the one before; on ``backend`` if given."""
    names = [f"s{i:02d}" for i in range(length)]
    steps = [_step(step, names[i - 1 : i]) for i, step in enumerate(names)]
    spec: dict[str, Any] = {"name": name, "steps": steps}
    if backend is not None:
        spec["backend"] = backend
    return spec


def versus_name(backend: str, length: int) -> str:
    return f"bench-{backend}-chain-{length}"


def fan_spec() -> dict[str, Any]:
    names = [f"s{i:02d}" for i in range(FAN_WIDTH)]
    return {"name": "bench-fan", "steps": [*(_step(n, []) for n in names), _step("join", names)]}


def burst_spec() -> dict[str, Any]:
    return {"name": "bench-burst", "steps": [_step("only", [])]}


def _ts(value: str | None) -> float:
    if value is None:
        raise RuntimeError("a final run or step has no timestamp")
    return datetime.fromisoformat(value).timestamp()


@dataclass
class RunFigures:
    """One run's figures, in milliseconds."""

    steps: int
    total: float  # created_at -> finished_at
    post_to_finished: float
    gaps: list[float]
    round_trips: list[float]
    queued: float  # created_at -> started_at
    first_start: float  # created_at -> the first step's started_at
    tail: float  # the last step's finished_at -> the run's finished_at

    @property
    def per_step(self) -> float:
        return self.total / self.steps


def figures_of(run: dict[str, Any], posted_at: float) -> RunFigures:
    steps = {step["name"]: step for step in run["steps"]}
    if run["status"] != "succeeded" or any(s["status"] != "succeeded" for s in steps.values()):
        raise RuntimeError(f"run {run['id']} did not succeed: {run}")
    ordered = list(steps.values())
    created, finished = _ts(run["created_at"]), _ts(run["finished_at"])
    gaps = []
    for step in steps.values():
        if step["depends_on"]:
            ready = max(_ts(steps[d]["finished_at"]) for d in step["depends_on"])
            gaps.append(1000 * (_ts(step["started_at"]) - ready))
    return RunFigures(
        steps=len(steps),
        total=1000 * (finished - created),
        post_to_finished=1000 * (finished - posted_at),
        gaps=gaps,
        round_trips=[1000 * (_ts(s["finished_at"]) - _ts(s["started_at"])) for s in ordered],
        queued=1000 * (_ts(run["started_at"]) - created),
        first_start=1000 * (min(_ts(s["started_at"]) for s in ordered) - created),
        tail=1000 * (finished - max(_ts(s["finished_at"]) for s in ordered)),
    )


async def apply(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    response = await client.post("/api/v1/pipelines", json=spec)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"could not apply {spec['name']}: {response.text}")


async def submit(client: httpx.AsyncClient, name: str) -> str:
    response = await client.post(f"/api/v1/pipelines/{name}/runs", json={"params": {}})
    if response.status_code != 202:
        raise RuntimeError(f"POST run of {name}: {response.status_code} {response.text[:500]}")
    return str(response.json()["id"])


async def wait_final(
    client: httpx.AsyncClient, run_id: str, limit_seconds: float = RUN_TIMEOUT_SECONDS
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_seconds
    while True:
        response = await client.get(f"/api/v1/pipelines/runs/{run_id}")
        response.raise_for_status()
        run: dict[str, Any] = response.json()
        if run["status"] in FINAL:
            return run
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} not final after {limit_seconds:g} s: {run}")
        await asyncio.sleep(POLL_SECONDS)


async def one_run(
    client: httpx.AsyncClient, name: str, limit_seconds: float = RUN_TIMEOUT_SECONDS
) -> RunFigures:
    posted_at = time.time()
    run = await wait_final(client, await submit(client, name), limit_seconds)
    return figures_of(run, posted_at)


@dataclass
class BurstFigures:
    submitted: int = 0
    submit_errors: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    listed: int = 0
    lost: int = 0
    stuck: int = 0
    total_seconds: float = 0.0
    submit_seconds: float = 0.0
    settle_seconds: float = 0.0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    post_ms: list[float] = field(default_factory=list)  # latency of each accepted POST


async def _count(client: httpx.AsyncClient, name: str, status: str) -> int:
    response = await client.get(
        "/api/v1/pipelines/runs", params={"pipeline": name, "status": status, "limit": 1}
    )
    response.raise_for_status()
    return int(response.json()["total"])


async def _list_all(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in range(math.ceil(BURST_RUNS / 200) + 5):  # bounded: a few pages past the end
        response = await client.get(
            "/api/v1/pipelines/runs",
            params={"pipeline": name, "limit": 200, "offset": page * 200},
        )
        response.raise_for_status()
        batch = response.json()["items"]
        items += batch
        if len(batch) < 200:
            break
    return items


async def burst(client: httpx.AsyncClient, sampler: MemorySampler) -> BurstFigures:
    name = burst_spec()["name"]
    figures = BurstFigures()
    ids: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(BURST_RUNS):
        queue.put_nowait(i)
    submit_deadline = time.monotonic() + BURST_SUBMIT_TIMEOUT_SECONDS

    async def submitter() -> None:
        while not queue.empty() and time.monotonic() < submit_deadline:
            queue.get_nowait()
            sent = time.perf_counter()
            try:
                ids.append(await submit(client, name))
                figures.post_ms.append(1000 * (time.perf_counter() - sent))
            except (RuntimeError, httpx.HTTPError) as exc:
                figures.submit_errors.append(str(exc)[:300])

    started_mono, started_wall = time.monotonic(), time.time()
    figures.rss_before_mib = sampler.last_before(started_mono)
    await asyncio.gather(*(submitter() for _ in range(BURST_CONCURRENCY)))
    figures.submit_seconds = time.monotonic() - started_mono
    figures.submitted = len(ids)
    settle_deadline = time.monotonic() + BURST_SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < settle_deadline:
        if await _count(client, name, "queued") + await _count(client, name, "running") == 0:
            break
        await asyncio.sleep(0.25)
    figures.settle_seconds = time.monotonic() - started_mono
    figures.rss_peak_mib = sampler.peak_between(started_mono, time.monotonic())
    runs = await _list_all(client, name)
    distinct = {run["id"] for run in runs}
    figures.listed = len(distinct)
    figures.lost = len(set(ids) - distinct)
    for run in runs:
        figures.by_status[run["status"]] = figures.by_status.get(run["status"], 0) + 1
    figures.stuck = figures.by_status.get("queued", 0) + figures.by_status.get("running", 0)
    finished = [_ts(run["finished_at"]) for run in runs if run["finished_at"]]
    figures.total_seconds = (max(finished) - started_wall) if finished else float("nan")
    return figures


@dataclass
class StoreFigures:
    chain: list[RunFigures]
    fan: list[RunFigures]
    burst: BurstFigures
    log_problems: list[str]


async def drive(service: Service) -> tuple[list[RunFigures], list[RunFigures], BurstFigures]:
    assert service.sampler is not None
    limits = httpx.Limits(max_connections=BURST_CONCURRENCY + 8)
    async with httpx.AsyncClient(
        base_url=service.base_url, headers=CREDENTIALS, limits=limits, timeout=30
    ) as client:
        for spec in (chain_spec(), fan_spec(), burst_spec()):
            await apply(client, spec)
        await one_run(client, "bench-chain")  # warm-up: workers import the step library lazily
        await one_run(client, "bench-fan")
        chain, fan = [], []
        for round_no in range(ROUNDS):
            chain.append(await one_run(client, "bench-chain"))
            fan.append(await one_run(client, "bench-fan"))
            print(
                f"  round {round_no + 1}: chain {chain[-1].per_step:.1f} ms/step "
                f"(gap p50 {median(chain[-1].gaps):.1f} ms), "
                f"fan-out {fan[-1].per_step:.1f} ms/step",
                flush=True,
            )
        figures = await burst(client, service.sampler)
        print(
            f"  burst: {figures.submitted} submitted in {figures.submit_seconds:.1f} s, "
            f"statuses {figures.by_status}, listed {figures.listed}, stuck {figures.stuck}, "
            f"{figures.total_seconds:.1f} s to the last finish, "
            f"peak RSS {figures.rss_peak_mib:.0f} MiB",
            flush=True,
        )
        return chain, fan, figures


def measure_store(store: Store) -> StoreFigures:
    print(f"pipeline_overhead: {store.label}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp, Service(store, Path(tmp)) as s:
        chain, fan, burst_figures = asyncio.run(drive(s))
        problems = s.log_problems()
        keep = os.environ.get(KEEP_LOGS_ENV)
        if keep:
            slug = "sqlite" if store.embedded else "postgres"
            shutil.copyfile(s.log_path, Path(keep) / f"pipeline_overhead-{slug}.log")
    for line in problems[:10]:
        print(f"  service log: {line}", flush=True)
    return StoreFigures(chain, fan, burst_figures, problems)


# ---------------------------------------------------------------------- local vs airflow backend

Versus = tuple[str, int]  # (backend, chain length)


@dataclass
class VersusFigures:
    """The local and the airflow backend: one service, next to one real Airflow."""

    runs: dict[Versus, list[RunFigures]]
    warmup_seconds: dict[Versus, float]
    service_rss_idle_mib: float
    service_rss_peak_mib: float
    airflow_rss_idle_mib: float
    airflow_rss_peak_mib: float
    airflow_processes_seen: int
    airflow_settings: dict[str, str]
    airflow_start_seconds: dict[str, float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seconds: float
    log_problems: list[str]


@dataclass
class _Drive:
    runs: dict[Versus, list[RunFigures]]
    warmup_seconds: dict[Versus, float]
    idle: float  # monotonic: before the first run
    measured: float  # monotonic: the first measured round begins
    ended: float  # monotonic: the last measured round has ended


async def drive_versus(service: Service) -> _Drive:
    pipelines = [(backend, length) for length in VERSUS_CHAINS for backend in VERSUS_BACKENDS]
    async with httpx.AsyncClient(
        base_url=service.base_url, headers=CREDENTIALS, timeout=30
    ) as client:
        for backend, length in pipelines:
            await apply(client, chain_spec(length, versus_name(backend, length), backend))
        idle = time.monotonic()
        warmup: dict[Versus, float] = {}
        for key in pipelines:  # local: workers import lazily; airflow: the plan's first parse
            began = time.monotonic()
            await one_run(client, versus_name(*key), AIRFLOW_RUN_TIMEOUT_SECONDS)
            warmup[key] = time.monotonic() - began
            print(f"  warm-up {key[0]} {key[1]}-step chain: {warmup[key]:.1f} s", flush=True)
        runs: dict[Versus, list[RunFigures]] = {key: [] for key in pipelines}
        measured = time.monotonic()
        for round_no in range(VERSUS_ROUNDS):
            for key in pipelines:
                runs[key].append(
                    await one_run(client, versus_name(*key), AIRFLOW_RUN_TIMEOUT_SECONDS)
                )
            print(
                f"  round {round_no + 1}: "
                + ", ".join(
                    f"{backend} {length} {runs[backend, length][-1].post_to_finished:.0f} ms"
                    for backend, length in pipelines
                ),
                flush=True,
            )
        return _Drive(runs, warmup, idle, measured, time.monotonic())


# Airflow comes from the test suite's harness, imported rather than copied
# (tests/airflow_server.py). An Airflow it cannot install or start comes out as pytest's skip or
# fail exception, or AirflowStartError: here each of them fails the benchmark.


def _airflow_failures() -> tuple[type[BaseException], ...]:
    import pytest

    from tests.airflow_server import AirflowStartError

    return (AirflowStartError, pytest.skip.Exception, pytest.fail.Exception)


def require_airflow() -> None:
    """Install Airflow's venv now if it is missing: fail before minutes of other measurements."""
    from tests.airflow_server import airflow_python

    try:
        airflow_python()
    except _airflow_failures() as exc:
        raise RuntimeError(f"pipeline_overhead: cannot install Apache Airflow: {exc}") from exc


def measure_versus() -> VersusFigures:
    """Start Airflow (fail if it cannot be), one service with both backends, drive it."""
    from tests.airflow_server import AirflowServer

    print("pipeline_overhead: local vs airflow backend (SQLite + in-process)", flush=True)
    began = time.monotonic()
    load_before = os.getloadavg()
    store = Store("SQLite + in-process", embedded=True)
    with tempfile.TemporaryDirectory(prefix="mlops-bench-airflow-") as tmp_name:
        tmp = Path(tmp_name)
        specs, service_dir = tmp / "specs", tmp / "service"
        specs.mkdir()
        service_dir.mkdir()
        server = AirflowServer(
            tmp / "airflow",
            ROOT / "airflow_dags",
            extra_env={"MLOPS_AIRFLOW_SPECS": str(specs), "MLOPS_STEP_PYTHON": sys.executable},
        )
        try:
            server.start()
        except _airflow_failures() as exc:
            raise RuntimeError(f"pipeline_overhead: Apache Airflow did not start: {exc}") from exc
        print(f"  Airflow up at {server.url} in {server.timings['start']:.0f} s", flush=True)
        assert server.pgid is not None
        airflow_memory = MemorySampler(server.pgid, AIRFLOW_MEMORY_SAMPLE_SECONDS)
        airflow_memory.start()
        env = {
            "MLOPS_AIRFLOW__URL": server.url,
            "MLOPS_AIRFLOW__USERNAME": server.username,
            "MLOPS_AIRFLOW__PASSWORD": server.password,
            "MLOPS_AIRFLOW__SPECS_DIR": str(specs),
            "MLOPS_AIRFLOW__POLL_SECONDS": f"{AIRFLOW_POLL_SECONDS:g}",
            "MLOPS_AIRFLOW__DAG_PREFIX": AIRFLOW_DAG_PREFIX,
        }
        try:
            airflow_env = server.env()
            with Service(store, service_dir, env) as service:
                assert service.sampler is not None
                drove = asyncio.run(drive_versus(service))
                problems = service.log_problems()
                service_idle = service.sampler.last_before(drove.idle)
                service_peak = service.sampler.peak_between(drove.measured, drove.ended)
        finally:
            airflow_memory.stop()
            server.stop()
        keep = os.environ.get(KEEP_LOGS_ENV)
        if keep:
            shutil.copyfile(service.log_path, Path(keep) / "pipeline_overhead-airflow-service.log")
            for component in ("supervisor", "api-server", "scheduler", "dag-processor"):
                with contextlib.suppress(OSError):
                    shutil.copyfile(
                        server.component_log(component),
                        Path(keep) / f"pipeline_overhead-airflow-{component}.log",
                    )
    for line in problems[:10]:
        print(f"  service log: {line}", flush=True)
    return VersusFigures(
        runs=drove.runs,
        warmup_seconds=drove.warmup_seconds,
        service_rss_idle_mib=service_idle,
        service_rss_peak_mib=service_peak,
        airflow_rss_idle_mib=airflow_memory.last_before(drove.idle),
        airflow_rss_peak_mib=airflow_memory.peak_between(drove.measured, drove.ended),
        airflow_processes_seen=len(airflow_memory.seen),
        airflow_settings={
            key.removeprefix("AIRFLOW__"): airflow_env[key]
            for key in AIRFLOW_SETTINGS_SHOWN
            if key in airflow_env
        },
        airflow_start_seconds={k: round(v, 1) for k, v in server.timings.items()},
        load_before=load_before,
        load_after=os.getloadavg(),
        seconds=time.monotonic() - began,
        log_problems=problems,
    )


# ---------------------------------------------------------------------- records


def _record(
    store: Store,
    name: str,
    figure: str,
    unit: str,
    value: float,
    baseline: float | None = None,
    *,
    compare: str | None = None,
    target: str | None = None,
    met: bool | None = None,
    runs: Any = None,
) -> Record:
    ratio = value / baseline if baseline else None
    added = value - baseline if compare == "added" and baseline is not None else None
    return {
        "name": name,
        "store": store.label,
        "figure": figure,
        "unit": unit,
        "value": round(value, 4),
        "baseline": None if baseline is None else round(baseline, 4),
        "ratio": None if ratio is None or compare is None else round(ratio, 4),
        "added": None if added is None else round(added, 4),
        "target": target,
        "met": met,
        "runs": runs,
    }


def _shape_records(store: Store, name: str, runs: list[RunFigures]) -> list[Record]:
    per_step = [r.per_step for r in runs]
    value = median(per_step)
    targeted = store.embedded
    rounded = {"per_step_ms": [round(x, 3) for x in per_step]}
    return [
        _record(
            store,
            name,
            "overhead per step (p50 of runs)",
            "ms",
            value,
            target=f"≤ {TARGET_OVERHEAD_MS:g} ms" if targeted else None,
            met=value <= TARGET_OVERHEAD_MS if targeted else None,
            runs={
                **rounded,
                "total_ms": [round(r.total, 3) for r in runs],
                "queued_ms": [round(r.queued, 3) for r in runs],
            },
        ),
        _record(
            store,
            name,
            "scheduling gap p50",
            "ms",
            median([median(r.gaps) for r in runs]),
            runs={"gap_ms": [[round(g, 3) for g in r.gaps] for r in runs]},
        ),
        _record(
            store,
            name,
            "no-op step round trip p50",
            "ms",
            median([median(r.round_trips) for r in runs]),
            runs={"round_trip_ms": [[round(x, 3) for x in r.round_trips] for r in runs]},
        ),
        _record(
            store,
            name,
            "POST → run finished (p50)",
            "ms",
            median([r.post_to_finished for r in runs]),
            runs={"post_to_finished_ms": [round(r.post_to_finished, 3) for r in runs]},
        ),
    ]


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _burst_records(store: Store, b: BurstFigures) -> list[Record]:
    name = f"{BURST_RUNS:,} one-step runs at once"
    succeeded = b.by_status.get("succeeded", 0)
    detail = {
        "by_status": b.by_status,
        "submit_errors": b.submit_errors[:20],
        "submit_seconds": round(b.submit_seconds, 3),
        "settle_seconds": round(b.settle_seconds, 3),
        "lost": b.lost,
    }
    return [
        _record(
            store,
            name,
            "succeeded",
            "runs",
            succeeded,
            BURST_RUNS,
            target=f"{BURST_RUNS:,}",
            met=succeeded == BURST_RUNS,
            runs=detail,
        ),
        _record(
            store,
            name,
            "listed (distinct ids)",
            "runs",
            b.listed,
            BURST_RUNS,
            target=f"{BURST_RUNS:,} (none lost)",
            met=b.listed == BURST_RUNS and b.lost == 0,
        ),
        _record(
            store,
            name,
            "queued or running at the end",
            "runs",
            b.stuck,
            target="0 (none stuck)",
            met=b.stuck == 0,
        ),
        _record(
            store,
            name,
            f"POST latency p50 ({BURST_CONCURRENCY} in flight)",
            "ms",
            median(b.post_ms) if b.post_ms else math.nan,
            runs={"post_ms_p99": round(_percentile(b.post_ms, 99), 3)},
        ),
        _record(store, name, "POSTs accepted per second", "runs/s", b.submitted / b.submit_seconds),
        _record(store, name, "total time (first POST → last finish)", "s", b.total_seconds),
        _record(store, name, "throughput", "runs/s", BURST_RUNS / b.total_seconds),
        _record(
            store,
            name,
            "peak RSS, service + workers",
            "MiB",
            b.rss_peak_mib,
            b.rss_before_mib,
            compare="added",
        ),
    ]


VERSUS_FIGURES: tuple[tuple[str, Callable[[RunFigures], float]], ...] = (
    ("POST → run finished (p50)", lambda r: r.post_to_finished),
    ("per step: (finished - created) / steps, p50", lambda r: r.per_step),
    ("scheduling gap p50", lambda r: median(r.gaps)),
    ("no-op step round trip p50", lambda r: median(r.round_trips)),
    ("run created → first step started (p50)", lambda r: r.first_start),
    ("last step finished → run finished (p50)", lambda r: r.tail),
)


def versus_title(length: int) -> str:
    return f"{length}-step chain of no-ops: local vs airflow backend"


def _versus_records(store: Store, v: VersusFigures) -> list[Record]:
    records = []
    for length in VERSUS_CHAINS:
        local, airflow = v.runs["local", length], v.runs["airflow", length]
        for figure, of in VERSUS_FIGURES:
            records.append(
                _record(
                    store,
                    versus_title(length),
                    figure,
                    "ms",
                    median([of(r) for r in local]),
                    median([of(r) for r in airflow]),
                    compare="ratio",
                    runs={
                        "local_ms": [round(of(r), 3) for r in local],
                        "airflow_ms": [round(of(r), 3) for r in airflow],
                    },
                )
            )
    name = "local vs airflow backend"
    records += [
        _record(
            store,
            name,
            "peak RSS in the rounds: service + workers (baseline: Airflow)",
            "MiB",
            v.service_rss_peak_mib,
            v.airflow_rss_peak_mib,
            compare="ratio",
        ),
        _record(
            store,
            name,
            "RSS before the first run: service + workers (baseline: Airflow)",
            "MiB",
            v.service_rss_idle_mib,
            v.airflow_rss_idle_mib,
            compare="ratio",
        ),
    ]
    return records


def _versus_notes(v: VersusFigures) -> list[str]:
    settings = ", ".join(f"`{key.lower()}={value}`" for key, value in v.airflow_settings.items())
    timings = v.airflow_start_seconds
    warmups = ", ".join(
        f"{backend} {length}-step {seconds:.1f} s"
        for (backend, length), seconds in v.warmup_seconds.items()
    )
    spreads = "; ".join(
        f"{backend} {length}-step {min(r.post_to_finished for r in runs):,.0f} to "
        f"{max(r.post_to_finished for r in runs):,.0f} ms"
        for (backend, length), runs in v.runs.items()
    )

    def post_to_finished(backend: str, length: int) -> float:
        return median([r.post_to_finished for r in v.runs[backend, length]])

    times = ", ".join(
        f"{post_to_finished('airflow', n) / post_to_finished('local', n):,.0f} times ({n} steps)"
        for n in VERSUS_CHAINS
    )
    return [
        "Local vs airflow backend: Apache Airflow 3.3.2 as `tests/airflow_server.py` starts it: "
        f"SQLite metadata database, {settings} (`[section]__key` as environment variables); "
        "every other setting at Airflow's default. The service: "
        f"`MLOPS_AIRFLOW__POLL_SECONDS={AIRFLOW_POLL_SECONDS:g}`: its engine visits a running "
        f"whole-run run every {min(FULL_SCAN_SECONDS, AIRFLOW_POLL_SECONDS):g} s.",
        f"Airflow started in {timings.get('start', math.nan):.0f} s (db migrate "
        f"{timings.get('migrate', math.nan):.0f} s, healthy "
        f"{timings.get('healthy', math.nan):.0f} s after launch, first /execution call "
        f"{timings.get('warmup', math.nan):.0f} s). Warm-up runs, POST to final (on Airflow "
        f"including the dag-processor's first parse of the plan): {warmups}.",
        f"POST → run finished per run: {spreads}. From POST to finished, the Airflow backend "
        f"takes {times} as long as the local backend.",
        f"Process trees: Airflow {v.airflow_rss_idle_mib:,.0f} MiB before the first run, peak "
        f"{v.airflow_rss_peak_mib:,.0f} MiB in the rounds ({v.airflow_processes_seen} processes "
        f"seen, sampled every {AIRFLOW_MEMORY_SAMPLE_SECONDS * 1000:.0f} ms); the service with "
        f"both backends {v.service_rss_idle_mib:,.0f} and {v.service_rss_peak_mib:,.0f} MiB "
        f"(every {MEMORY_SAMPLE_SECONDS * 1000:.0f} ms).",
        f"The comparison took {v.seconds:.0f} s, Airflow's start included; 1-minute load "
        f"average {v.load_before[0]:.2f} when it began and {v.load_after[0]:.2f} at its end, "
        f"on {os.cpu_count()} cores. Service log: {len(v.log_problems)} ERROR/traceback lines.",
    ]


def _notes(store: Store, figures: StoreFigures) -> list[str]:
    notes = []
    chain_runs = [round(r.per_step, 1) for r in figures.chain]
    fan_runs = [round(r.per_step, 1) for r in figures.fan]
    notes.append(
        f"{store.label}: overhead per step per run, chain {min(chain_runs)} to "
        f"{max(chain_runs)} ms, fan-out {min(fan_runs)} to {max(fan_runs)} ms; run created → "
        f"started p50 {median([r.queued for r in figures.chain]):.1f} ms (chain)."
    )
    b = figures.burst
    notes.append(
        f"{store.label}: {b.submitted:,} of {BURST_RUNS:,} POSTs accepted in "
        f"{b.submit_seconds:.1f} s (POST latency p99 {_percentile(b.post_ms, 99):.0f} ms, "
        f"{len(b.submit_errors)} refused); all final {b.settle_seconds:.1f} s after the "
        "first POST (client's view); statuses at the end "
        f"{', '.join(f'{k} {v}' for k, v in sorted(b.by_status.items()))}; "
        f"{b.lost} lost. Service log: {len(figures.log_problems)} ERROR/traceback lines."
    )
    return notes


def main() -> None:
    setup = {
        "local_workers": LOCAL_WORKERS,
        "chain_steps": CHAIN_STEPS,
        "fan_width": FAN_WIDTH,
        "rounds": ROUNDS,
        "burst_runs": BURST_RUNS,
        "burst_concurrency": BURST_CONCURRENCY,
        "memory_sample_seconds": MEMORY_SAMPLE_SECONDS,
        "versus_chains": list(VERSUS_CHAINS),
        "versus_rounds": VERSUS_ROUNDS,
        "airflow_poll_seconds": AIRFLOW_POLL_SECONDS,
        "airflow_memory_sample_seconds": AIRFLOW_MEMORY_SAMPLE_SECONDS,
    }
    notes = [
        f"`MLOPS_LOCAL_WORKERS={LOCAL_WORKERS}`; nothing pinned: the service, its workers, the "
        "client (and PostgreSQL and Redis, and for the comparison, Airflow) share every core.",
    ]
    require_airflow()
    stores: list[tuple[Store, StoreFigures]] = []
    embedded = Store("SQLite + in-process", embedded=True)
    stores.append((embedded, measure_store(embedded)))
    if port_open(PG_HOST, PG_PORT) and port_open("127.0.0.1", 6379):
        with postgres_redis_store() as store:
            stores.append((store, measure_store(store)))
    else:
        print("pipeline_overhead: Postgres or Redis unreachable, skipping that store")
        notes.append("Postgres + Redis skipped: not reachable on this machine.")
    records: list[Record] = []
    for store, figures in stores:
        records += _shape_records(store, CHAIN_NAME, figures.chain)
        records += _shape_records(store, FAN_NAME, figures.fan)
        records += _burst_records(store, figures.burst)
        notes += _notes(store, figures)
    versus = measure_versus()
    records += _versus_records(embedded, versus)
    notes += _versus_notes(versus)
    stamp, machine = utc_now(), machine_info()
    for record in records:
        record.update(machine=machine, date=stamp, setup=setup, notes=notes)
    path = write_results("pipeline_overhead", records)
    print(f"pipeline_overhead: wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
