"""``python -m mlops.steps run`` and ``worker`` as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

TESTING = "mlops.steps.library.testing"


def steps_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlops.steps", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def run_step(tmp_path: Path, type_name: str, params: dict[str, Any] | str) -> Any:
    text = params if isinstance(params, str) else json.dumps(params)
    return steps_command(
        "run", "--type", type_name, "--params", text, "--run-id", "run-1", "--step", "s1",
        "--artifact-root", str(tmp_path / "art"), "--attempt", "2", cwd=tmp_path,
    )  # fmt: skip


def only_line(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    result: dict[str, Any] = json.loads(lines[0])
    return result


def test_run_prints_one_json_line_and_sends_step_output_to_stderr(tmp_path: Path) -> None:
    done = run_step(
        tmp_path, "python", {"callable": f"{TESTING}:chatter", "kwargs": {"message": "hi"}}
    )
    assert done.returncode == 0, done.stderr
    assert only_line(done.stdout) == {"ok": True, "outputs": {"message": "hi"}, "digests": {}}
    for expected in ("stdout: hi", "stderr: hi", "logging: hi", "subprocess: hi"):
        assert expected in done.stderr
    assert "step s1 attempt 2 started" in done.stderr


def test_run_reports_digests_and_step_failures(tmp_path: Path) -> None:
    done = run_step(tmp_path, "data_validation", {"dataset": "sklearn://iris", "min_rows": 100})
    assert done.returncode == 0, done.stderr
    result = only_line(done.stdout)
    report = result["outputs"]["report"]
    assert report == f"file://{tmp_path}/art/run-1/s1/report.json"
    assert len(result["digests"]["report"]) == 64

    failed = run_step(tmp_path, "data_validation", {"dataset": "sklearn://iris", "min_rows": 1000})
    assert failed.returncode == 1
    result = only_line(failed.stdout)
    assert result["ok"] is False and result["error_type"] == "StepError"
    assert "min_rows" in result["error"] and report in result["error"]
    assert "Traceback" in failed.stderr
    assert json.loads((tmp_path / "art/run-1/s1/report.json").read_text())["passed"] is False


@pytest.mark.parametrize(
    ("type_name", "params", "error_type", "fragment"),
    [
        ("no_such_type", {}, "UnknownStepType", "data_validation"),
        (
            "data_validation",
            {"dataset": "x.csv", "min_rows": "many"},
            "ValidationError",
            "min_rows",
        ),
        ("python", {"callable": f"{TESTING}:noop", "extra": 1}, "ValidationError", "extra"),
        ("python", "{not json", "InvalidParams", "not valid JSON"),
        ("python", "[1, 2]", "InvalidParams", "JSON object"),
    ],
)
def test_run_usage_errors_exit_2(
    tmp_path: Path, type_name: str, params: Any, error_type: str, fragment: str
) -> None:
    done = run_step(tmp_path, type_name, params)
    assert done.returncode == 2
    result = only_line(done.stdout)
    assert result["ok"] is False
    assert result["error_type"] == error_type
    assert fragment in result["error"]
    assert fragment in done.stderr


def _task(tmp_path: Path, task_id: str, step: str, target: str, **kwargs: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "type": "python",
        "params": {"callable": target, "kwargs": kwargs},
        "run_id": "run-w",
        "step": step,
        "attempt": 1,
        "artifact_root": str(tmp_path / "art"),
        "work_dir": str(tmp_path / "work" / step),
        "log_path": str(tmp_path / "logs" / f"{step}.log"),
    }


def _start_worker(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlops.steps", "worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def test_worker_serves_tasks_in_order_and_keeps_step_output_in_the_logs(tmp_path: Path) -> None:
    worker = _start_worker(tmp_path)
    assert worker.stdin is not None and worker.stdout is not None
    tasks = [
        _task(tmp_path, "t1", "talk", f"{TESTING}:chatter", message="hello"),
        _task(tmp_path, "t2", "broken", f"{TESTING}:fail", message="it broke"),
        _task(tmp_path, "t3", "store", f"{TESTING}:write_artifact", text="payload"),
    ]
    try:
        # One task, one answer: the worker answers before stdin closes.
        worker.stdin.write(json.dumps(tasks[0]) + "\n")
        worker.stdin.flush()
        first = json.loads(worker.stdout.readline())
        rest, stderr = worker.communicate(
            "".join(json.dumps(task) + "\n" for task in tasks[1:]), timeout=60
        )
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    results = [first, *(json.loads(line) for line in rest.splitlines())]  # nothing but results
    assert [r["task_id"] for r in results] == ["t1", "t2", "t3"]
    for result in results:
        assert set(result) == {
            "task_id", "ok", "outputs", "digests", "error", "error_type", "duration_seconds"
        }  # fmt: skip
        assert result["duration_seconds"] >= 0

    assert first["ok"] is True and first["outputs"] == {"message": "hello"}
    assert results[1]["ok"] is False
    assert results[1]["error_type"] == "StepError" and results[1]["error"] == "it broke"
    assert results[1]["outputs"] == {} and results[1]["digests"] == {}
    stored = results[2]
    assert stored["ok"] is True
    assert stored["outputs"]["artifact"] == f"file://{tmp_path}/art/run-w/store/out.txt"
    assert len(stored["digests"]["artifact"]) == 64

    talk = (tmp_path / "logs" / "talk.log").read_text().splitlines()
    assert "step talk attempt 1 started" in talk[0]
    assert "step talk attempt 1 succeeded" in talk[-1]
    body = "\n".join(talk)
    for expected in ("stdout: hello", "stderr: hello", "logging: hello", "subprocess: hello"):
        assert expected in body
    broken = (tmp_path / "logs" / "broken.log").read_text()
    assert "Traceback (most recent call last)" in broken
    assert "step broken attempt 1 failed in" in broken.splitlines()[-1]
    assert broken.splitlines()[-1].endswith("StepError: it broke")
    assert "hello" not in stderr and "hello" not in rest


def test_worker_survives_bad_lines_and_stdin_readers_and_dies_with_a_crash(tmp_path: Path) -> None:
    worker = _start_worker(tmp_path)
    lines = [
        "this is not json",
        json.dumps({"task_id": "no-type", "run_id": "r"}),
        json.dumps(_task(tmp_path, "reader", "reader", "builtins:input")),
        "",
        json.dumps(_task(tmp_path, "exits", "exits", "sys:exit")),
        json.dumps(_task(tmp_path, "after", "after", f"{TESTING}:echo", x=1)),
        json.dumps(_task(tmp_path, "crash", "crash", f"{TESTING}:crash")),
        json.dumps(_task(tmp_path, "never", "never", f"{TESTING}:noop")),
    ]
    stdout, _ = worker.communicate("\n".join(lines) + "\n", timeout=60)
    results = [json.loads(line) for line in stdout.splitlines()]
    assert [r["task_id"] for r in results] == [None, "no-type", "reader", "exits", "after"]
    assert [r["error_type"] for r in results] == [
        "ProtocolError",
        "ProtocolError",
        "EOFError",
        "SystemExit",
        None,
    ]
    assert "type" in results[1]["error"]
    assert results[3]["error"] == "the step called sys.exit(None)"
    assert results[4]["outputs"] == {"x": 1}
    assert worker.returncode == 3  # the crash killed it: no result, the parent sees EOF
