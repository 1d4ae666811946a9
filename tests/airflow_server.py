"""A real Apache Airflow 3.3.2 for integration tests, on loopback.

Airflow lives in a venv of its own, ``<repo>/.airflow/venv`` (gitignored), made on first use
(``pip install apache-airflow==3.3.2``, about 40 s; guarded by a file lock so parallel sessions
wait for each other). :class:`AirflowServer` runs ``airflow db migrate`` on a fresh SQLite
database, then the api-server, the scheduler (LocalExecutor) and the dag-processor under a small
supervisor that leads a new session and process group. It is a child subreaper, so task
processes (which Airflow puts in process groups and sessions of their own) stay its descendants
and are reaped: ``stop()`` leaves neither processes nor zombies behind, on a host whose init
does not reap orphans either.

A test asks for the session fixture ``airflow`` (``tests/conftest.py``): the DAGs of
``<repo>/airflow_dags``, with ``MLOPS_AIRFLOW_SPECS`` (``airflow.specs_dir``) and
``MLOPS_STEP_PYTHON`` (this interpreter) set for every Airflow process. With CI=true an
Airflow that cannot be installed or started fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port, unavailable

AIRFLOW_VERSION = "3.3.2"
AIRFLOW_DIR = ROOT / ".airflow"
VENV = AIRFLOW_DIR / "venv"
READY_MARKER = ".mlops-airflow-ready"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 120.0
STOP_GRACE = 10.0
API_SERVER_GRACE = 2.0
COMPONENTS = ("api-server", "scheduler", "dag-processor")
HEALTHY = ("metadatabase", "scheduler", "dag_processor")
# base64url of 32 fixed bytes; a test database only
FERNET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
# HS512 wants 64+ bytes, else InsecureKeyLengthWarning
JWT_SECRET = "mlops-test-airflow-jwt-secret-0123456789abcdef0123456789abcdef0123456789"
API_SECRET = "mlops-test-airflow-api-secret-0123456789"


# --------------------------------------------------------------------------- the venv


def _noise(line: str) -> bool:
    return "is ignored: it is neither a file nor a directory" in line


def _tail_text(text: str, lines: int = 30) -> str:
    kept = [line for line in text.splitlines() if line.strip() and not _noise(line)]
    return "\n".join(kept[-lines:])


def _base_python() -> str:
    return shutil.which("python3.11") or sys.executable


def _install(venv: Path) -> str | None:
    """Make the venv from scratch; the pip error tail on failure, else None."""
    if venv.exists():
        shutil.rmtree(venv)  # half-installed (no marker): start over
    steps = [
        [_base_python(), "-m", "venv", str(venv)],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"apache-airflow=={AIRFLOW_VERSION}",
        ],
    ]
    for command in steps:
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{' '.join(command[:4])}: {error}"
        if result.returncode != 0:
            return f"{' '.join(command[:4])} exited {result.returncode}:\n" + _tail_text(
                result.stdout + result.stderr
            )
    if not (venv / "bin" / "airflow").exists():
        return "pip succeeded but there is no bin/airflow"
    return None


def airflow_python(venv: Path = VENV) -> Path:
    """The interpreter of the Airflow venv, installed on first use (under a file lock)."""
    marker = venv / READY_MARKER
    wanted = f"apache-airflow=={AIRFLOW_VERSION}\n"

    def ready() -> bool:
        try:
            return marker.read_text() == wanted and (venv / "bin" / "airflow").exists()
        except OSError:
            return False

    if not ready():
        venv.parent.mkdir(parents=True, exist_ok=True)
        with (venv.parent / f"{venv.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing: wait for it
            if not ready():
                error = _install(venv)
                if error is not None:
                    shutil.rmtree(venv, ignore_errors=True)
                    unavailable(f"cannot install apache-airflow=={AIRFLOW_VERSION}: {error}")
                marker.write_text(wanted)
    return venv / "bin" / "python"


# --------------------------------------------------------------------------- the supervisor

# Run as ``python supervisor.py SPEC_JSON`` with the Airflow environment. Leads a new session
# (Popen(start_new_session=True)); spawns the components; as a child subreaper it inherits every
# orphaned descendant. On SIGTERM/SIGINT, on its parent's death, or when a component exits, it
# terminates every descendant, kills what is left after the grace period, reaps everything and
# exits (3 if a component exited on its own, else 0).
SUPERVISOR = r"""
import ctypes, json, os, signal, sys, time

spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: the test process died
if os.getppid() != spec["parent"]:
    sys.exit(1)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append("signal"))
signal.signal(signal.SIGINT, lambda *_: stopping.append("signal"))


def say(message):
    print(time.strftime("%H:%M:%S"), message, flush=True)


def descendants():
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def reap():
    reaped = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped, True
        if pid == 0:
            return reaped, False
        reaped[pid] = os.waitstatus_to_exitcode(status)


def pgid(pid):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def signal_all(sig, pids):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


devnull = os.open(os.devnull, os.O_RDONLY)
components = {}
for name, command in spec["commands"].items():
    out = os.open(spec["logs"][name], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out, 1),
               (os.POSIX_SPAWN_DUP2, out, 2)]
    pid = os.posix_spawn(command[0], command, os.environ, file_actions=actions)
    os.close(out)
    components[pid] = name
    say(f"started {name} pid={pid}")

code = 0
while not stopping:
    reaped, _ = reap()
    for pid, status in reaped.items():
        if pid in components:
            say(f"{components[pid]} exited on its own ({status})")
            stopping.append("exit")
            code = 3
    time.sleep(0.1)

say(f"stopping ({stopping[0]})")
began = time.monotonic()
deadline = began + spec["grace"]
group = os.getpgrp()
signalled = {pid for pid in descendants() if pgid(pid) == group}  # get killpg's SIGTERM
os.killpg(group, signal.SIGTERM)  # (this process only notes it)
while True:
    alive = descendants()
    # descendants outside the group (tasks), or forked since, get a SIGTERM of their own
    signal_all(signal.SIGTERM, [pid for pid in alive if pid not in signalled])
    signalled.update(alive)
    _, none_left = reap()
    if none_left:
        break
    # The api-server spends ~5 s in interpreter finalization (GC of a huge heap) after
    # uvicorn's "Finished server process": nothing of value is lost by not waiting for that.
    waited = time.monotonic() - began
    late = [p for p, n in components.items() if waited > spec["graces"].get(n, waited)]
    signal_all(signal.SIGKILL, [p for p in late if p in alive])
    if time.monotonic() > deadline:
        say(f"killing {len(alive)} left after {spec['grace']} s")
        signal_all(signal.SIGKILL, alive)
    time.sleep(0.05)
say(f"stopped in {time.monotonic() - began:.1f} s")
sys.exit(code)
"""


# --------------------------------------------------------------------------- the server


class AirflowStartError(RuntimeError):
    pass


class AirflowServer:
    """api-server + scheduler (LocalExecutor, 2 slots) + dag-processor on ``127.0.0.1:port``.

    ``extra_env`` reaches every Airflow process (and so the tasks); it may also override any
    ``AIRFLOW__*`` setting, e.g. ``AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION``.
    """

    specs_dir: Path | None = None

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: dict[str, str] | None = None,
        *,
        port: int | None = None,
        username: str = "admin",
        password: str = "admin",
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.extra_env = dict(extra_env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = username
        self.password = password
        self.start_timeout = start_timeout
        self.log_dir = self.home / "logs"  # task logs below it, component logs in it
        self.pgid: int | None = None
        self.timings: dict[str, float] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._python: Path | None = None

    # -- configuration

    def component_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def env(self) -> dict[str, str]:
        dropped = ("AIRFLOW", "MLOPS_")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(dropped) and k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        }
        if self._python is None:
            self._python = airflow_python()
        bin_dir = str(self._python.parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ next to the DAG files
        home = str(self.home)
        settings = {
            "CORE__DAGS_FOLDER": str(self.dags_folder),
            "CORE__EXECUTOR": "LocalExecutor",
            "CORE__PARALLELISM": "2",
            "CORE__LOAD_EXAMPLES": "False",
            "CORE__FERNET_KEY": FERNET_KEY,
            "CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
            "CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": f"{home}/passwords.json",
            # SQLite's default 5 s busy timeout ran out under CI load ("database is locked",
            # a 500 from the API); three components write to the one file
            "DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db?timeout=60",
            "API__EXPOSE_STACKTRACE": "True",  # a database error's cause in the answer
            "API__HOST": "127.0.0.1",
            "API__PORT": str(self.port),
            "API__BASE_URL": self.url,
            "API__SECRET_KEY": API_SECRET,
            "API__WORKERS": "1",
            "API_AUTH__JWT_SECRET": JWT_SECRET,
            "DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "2",
            "DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
            "DAG_PROCESSOR__STALE_DAG_THRESHOLD": "10",
            "DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "SCHEDULER__PARSING_CLEANUP_INTERVAL": "5",
            "SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
            "WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "LOGGING__BASE_LOG_FOLDER": str(self.log_dir),
            # the default 8793 would clash between instances (the scheduler skips it anyway)
            "LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        env["AIRFLOW_HOME"] = home
        env.update({f"AIRFLOW__{key}": value for key, value in settings.items()})
        env.update(self.extra_env)
        return env

    # -- lifecycle

    def start(self) -> AirflowServer:
        if self._process is not None:
            raise RuntimeError("already started")
        started = time.monotonic()
        python = self._python = airflow_python()
        self.timings["venv"] = time.monotonic() - started
        airflow = str(python.parent / "airflow")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({self.username: self.password}))
        env = self.env()

        began = time.monotonic()
        migrate = subprocess.run(
            [airflow, "db", "migrate"],
            env=env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=self.start_timeout,
            check=False,
        )
        (self.log_dir / "migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            raise AirflowStartError(
                f"airflow db migrate exited {migrate.returncode}:\n"
                + _tail_text(migrate.stdout + migrate.stderr)
            )
        self.timings["migrate"] = time.monotonic() - began

        spec = {
            "parent": os.getpid(),
            "grace": STOP_GRACE,
            "graces": {"api-server": API_SERVER_GRACE},
            "commands": {
                "api-server": [airflow, "api-server", "-H", "127.0.0.1", "-p", str(self.port)],
                "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
                "dag-processor": [airflow, "dag-processor"],
            },
            "logs": {name: str(self.component_log(name)) for name in COMPONENTS},
        }
        script = self.home / "supervisor.py"
        script.write_text(SUPERVISOR)
        began = time.monotonic()
        with self.component_log("supervisor").open("ab") as out:
            self._process = subprocess.Popen(
                [str(python), str(script), json.dumps(spec)],
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # pgid == sid == the supervisor's pid
            )
        self.pgid = self._process.pid
        try:
            self._wait_healthy()
            self.timings["healthy"] = time.monotonic() - began
            began = time.monotonic()
            # The first /execution request builds the execution API lazily and blocks the
            # api-server for 5-9 s: pay it now, not in the first task.
            try:
                httpx.get(f"{self.url}/execution/health", timeout=60)
            except httpx.HTTPError as error:
                raise AirflowStartError(f"GET /execution/health: {error!r}") from error
            self.timings["warmup"] = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started
        return self

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        health: Any = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AirflowStartError(
                    f"Airflow exited ({self._process.returncode}):\n{self.logs_tail()}"
                )
            try:
                response = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2)
                if response.status_code == 200:
                    health = response.json()
                    if all(health.get(k, {}).get("status") == "healthy" for k in HEALTHY):
                        return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise AirflowStartError(
            f"Airflow was not healthy in {self.start_timeout:.0f} s (last: {health}):\n"
            + self.logs_tail()
        )

    def stop(self) -> None:
        """Stop every process; raise if any process of the group or its home is left."""
        process, pgid = self._process, self.pgid
        if process is None or pgid is None:
            return
        self._process = None
        # The supervisor sends the group (and the tasks outside it) one SIGTERM each, kills
        # what is left after STOP_GRACE, reaps everything and exits.
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE + 10)
        except subprocess.TimeoutExpired:  # the supervisor hangs: kill the group ourselves
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            process.wait()
        for pid in self.processes():  # outlived a dead supervisor: the last resort
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while True:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"process group {pgid} outlived stop():\n{self.logs_tail()}")
            time.sleep(0.1)
        left = self.processes()
        if left:
            raise RuntimeError(f"Airflow processes outlived stop(): {left}")

    def processes(self) -> list[int]:
        """Live processes (not zombies) of this server: in its group or with its AIRFLOW_HOME."""
        found = []
        needle = f"AIRFLOW_HOME={self.home}\0".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] == "Z":
                    continue
                if (
                    int(fields[2]) == self.pgid
                    or needle in Path(f"/proc/{entry}/environ").read_bytes()
                ):
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
        return found

    def __enter__(self) -> AirflowServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers for tests

    def token(self) -> str:
        response = httpx.post(
            f"{self.url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /auth/token: {response.status_code} {response.text}")
        return str(response.json()["access_token"])

    def expired_token(self) -> str:
        """A token Airflow issued, re-signed as expired an hour ago: Airflow answers 401."""
        import jwt

        claims = jwt.decode(self.token(), options={"verify_signature": False})
        claims["exp"] = int(time.time()) - 3600
        return jwt.encode(
            claims, JWT_SECRET, algorithm=jwt.get_unverified_header(self.token())["alg"]
        )

    def logs_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of each component's log, for assertion messages."""
        parts = []
        for name in ("supervisor", *COMPONENTS):
            try:
                lines = self.component_log(name).read_text(errors="replace").splitlines()
            except OSError:
                lines = ["(no log)"]
            parts.append(f"--- {name} (last {n} lines)\n" + "\n".join(lines[-n:]))
        return "\n".join(parts)


def serve_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    """The session fixture ``airflow`` (``tests/conftest.py``): a running Airflow on
    ``<repo>/airflow_dags``, with ``MLOPS_AIRFLOW_SPECS`` set to
    ``airflow.specs_dir`` (empty at first) and ``MLOPS_STEP_PYTHON`` to this interpreter."""
    root = tmp_path_factory.mktemp("airflow")
    specs = root / "specs"
    specs.mkdir()
    server = AirflowServer(
        root / "home",
        ROOT / "airflow_dags",
        extra_env={"MLOPS_AIRFLOW_SPECS": str(specs), "MLOPS_STEP_PYTHON": sys.executable},
    )
    server.specs_dir = specs
    try:
        server.start()
    except AirflowStartError as error:
        unavailable(str(error))
    try:
        yield server
    finally:
        pgid = server.pgid
        server.stop()
    # The harness's own check, once per session: nothing of Airflow outlives stop()
    assert server.processes() == [], server.processes()
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, 0)
            raise AssertionError(f"Airflow's process group {pgid} outlived stop()")
