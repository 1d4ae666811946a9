"""The remote task entrypoint shared by Airflow, Kubeflow and Vertex AI tasks."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlops.backends import remote_task

TESTING = "mlops.steps.library.testing"


def b64(step: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(step).encode()).decode()


def python_step(name: str, function: str, **kwargs: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "python",
        "params": {"callable": f"{TESTING}:{function}", "kwargs": kwargs},
    }


def conf(tmp_path: Path, run_id: str = "r-1") -> dict[str, Any]:
    return {"run_id": run_id, "params": {"n": 3}, "artifact_root": str(tmp_path / "artifacts")}


def last_line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return result


def test_templates_resolve_and_the_result_goes_last_and_to_the_result_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = python_step("b", "echo", n="{{ params.n }}", v="{{ steps.a.outputs.v }}")
    result_file = tmp_path / "outputs" / "deep" / "result"  # parents are ours to create
    code = remote_task.main(
        [
            *("--step", b64(step)),
            *("--run", json.dumps(conf(tmp_path))),
            *("--upstream-result", 'a={"ok": true, "outputs": {"v": [1, 2]}}'),
            *("--result-file", str(result_file)),
        ]
    )
    assert code == 0
    line = last_line(capsys)
    assert line["ok"] is True
    assert line["outputs"] == {"n": 3, "v": [1, 2]}
    assert json.loads(result_file.read_text()) == line


def test_upstream_json_and_failed_upstream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = python_step("b", "echo", v="{{ steps.a.outputs.v }}")
    upstream = {"a": {"ok": False, "error": "boom"}}
    code = remote_task.run_task(step, conf(tmp_path), upstream, 1, timeout_seconds=10)
    assert code == 2
    assert last_line(capsys) == {
        "ok": False,
        "error": "upstream step 'a' left no result (XCom: {'ok': False, 'error': 'boom'})",
        "error_type": "InvalidInputs",
    }


def test_the_steps_timeout_stops_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    step = {**python_step("slow", "sleep", seconds=30), "timeout_seconds": 0.5}
    started = time.monotonic()
    code = remote_task.main(["--step", b64(step), "--run", json.dumps(conf(tmp_path))])
    assert time.monotonic() - started < 10
    assert code == remote_task.EXIT_TIMEOUT
    line = last_line(capsys)
    assert line["ok"] is False
    assert line["reason"] == "timeout"
    assert "0.5 s" in line["error"]


def test_a_failing_step_and_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = remote_task.run_task(
        python_step("f", "fail", message="nope"), conf(tmp_path), {}, 1, timeout_seconds=60
    )
    assert code == 1
    assert last_line(capsys)["error"] == "nope"
    code = remote_task.run_task(
        python_step("c", "crash"), conf(tmp_path), {}, 1, timeout_seconds=60
    )
    assert code == 3
    line = last_line(capsys)
    assert line["reason"] == "crashed"
    assert "status 3" in line["error"]


def test_auto_attempts_are_numbered_and_recorded_in_the_artifact_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = python_step("flaky", "fail_until", attempt=2)
    run = conf(tmp_path)
    assert remote_task.run_task(step, run, {}, "auto", timeout_seconds=60) == 1
    assert "fails on purpose" in last_line(capsys)["error"]
    assert remote_task.run_task(step, run, {}, "auto", timeout_seconds=60) == 0
    assert last_line(capsys)["outputs"] == {"attempt": 2}
    first, second = remote_task.recorded_attempts(run["artifact_root"], "r-1", "flaky")
    assert (tmp_path / "artifacts" / "r-1" / "flaky" / ".mlops" / "attempt-2.json").is_file()
    assert (first["ok"], first["attempt"], second["ok"], second["attempt"]) == (False, 1, True, 2)
    assert {"started_at", "finished_at"} <= set(second)


def test_unusable_arguments_give_a_result_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert remote_task.main(["--step", "not base64!", "--run", "{}"]) == 2
    assert last_line(capsys)["error_type"] == "InvalidInputs"
    assert remote_task.main(["--step", b64({"name": "x"}), "--run", "{}", "--no-timeout"]) == 2


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_terminating_the_task_stops_the_step(tmp_path: Path) -> None:
    token = "31.4159"
    step = {**python_step("slow", "sleep", seconds=float(token)), "timeout_seconds": 600}
    task = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlops.backends.remote_task"),
            *("--step", b64(step), "--run", json.dumps(conf(tmp_path))),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while len(_processes_with(token)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    # the step's child: its params (with the token) are on its command line
    assert [pid for pid in _processes_with(token) if pid != task.pid], "the step never started"
    os.kill(task.pid, signal.SIGTERM)
    assert task.wait(timeout=30) == 128 + signal.SIGTERM
    assert task.stdout is not None
    task.stdout.close()
    deadline = time.monotonic() + 10
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(token) == []
