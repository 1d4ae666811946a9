"""``mlops training`` and ``mlops models`` against a running service: a small search submitted
with --wait registers version 1, a bad job file is exit 2 naming what is wrong, and the
registry's aliases are set and read back through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import BOOTSTRAP_KEY, ROOT, free_port
from tests.processes import service_env, start_service, stop_service

SMALL_JOB = {
    "dataset": "sklearn://breast_cancer",
    "target": "target",
    "task": "classification",
    "estimator": "logistic_regression",
    "search_space": {"C": {"type": "log-float", "low": 0.01, "high": 10.0}},
    "n_trials": 3,
    "timeout_seconds": 120,
    "metric": "accuracy",
    "direction": "maximize",
    "cv_folds": 3,
    "sampler": {"type": "tpe", "seed": 42},
    "pruner": {"type": "median"},
    "parallelism": 1,
    "model_name": "cli-model",
}


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("training-cli")
    port = free_port()
    process = start_service(service_env(home / "data"), port, home / "service.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)


def mlops(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"MLOPS_URL": url, "MLOPS_API_KEY": BOOTSTRAP_KEY, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "mlops", *args], env=env, capture_output=True, text=True, timeout=120
    )


def many(url: str, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands at once: each CLI process spends most of its second starting."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: mlops(url, *args), commands))


def job_file(tmp_path: Path, name: str, **changes: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**SMALL_JOB, **changes}))
    return path


def job_id_of(output: str) -> str:
    return output.split("job ", 1)[1].split()[0]


def test_submit_wait_registers_a_version_and_the_registry_follows(
    service_url: str, tmp_path: Path
) -> None:
    job = job_file(tmp_path, "job.yaml")
    submitted = mlops(
        service_url, "training", "submit", "-f", str(job), "--wait", "--idempotency-key", "cli-1"
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    out = submitted.stdout
    job_id = job_id_of(out)
    assert f"job {job_id} succeeded" in out
    assert "model: cli-model version 1 (models:/cli-model/1)" in out
    assert "best accuracy (maximize): 0.9" in out and "  C: " in out
    assert "mlflow: experiment " in out and "parent run -" not in out
    # Not a terminal: a progress line each time a trial finished, ending at 3 of 3.
    assert "3/3 trials" in submitted.stderr and "[####################]" in submitted.stderr

    # The job is done: what follows only reads it, so the commands run side by side.
    replayed, listed, none_failed, shown, trials, finished = many(
        service_url,
        ["training", "submit", "-f", str(job), "--idempotency-key", "cli-1"],
        ["training", "jobs", "list", "--status", "succeeded"],
        ["training", "jobs", "list", "--status", "failed"],
        ["training", "jobs", "get", job_id],
        ["training", "trials", job_id],
        ["training", "jobs", "cancel", job_id],
    )
    assert replayed.returncode == 0 and job_id_of(replayed.stdout) == job_id

    assert listed.returncode == 0, listed.stderr
    assert f"{job_id}\tsucceeded\tlogistic_regression\tcli-model\t" in listed.stdout
    assert none_failed.returncode == 0 and job_id not in none_failed.stdout

    assert shown.returncode == 0, shown.stderr
    described = json.loads(shown.stdout)
    assert described["result"]["model_version"] == "1"
    assert described["progress"]["trials_finished"] == 3

    assert trials.returncode == 0, trials.stderr
    rows = [line.split("\t") for line in trials.stdout.splitlines()]
    assert [row[0] for row in rows] == ["0", "1", "2"] and all(r[1] == "complete" for r in rows)

    assert finished.returncode == 1 and "409" in finished.stderr

    aliased = mlops(service_url, "models", "alias", "cli-model", "champion", "1")
    assert aliased.returncode == 0, aliased.stderr
    assert "cli-model version 1: champion" in aliased.stdout
    versions, models, no_version = many(
        service_url,
        ["models", "versions", "cli-model"],
        ["models", "list"],
        ["models", "alias", "cli-model", "champion", "9"],
    )
    assert versions.returncode == 0, versions.stderr
    assert versions.stdout.startswith("1\tchampion\t"), versions.stdout
    assert models.returncode == 0 and "cli-model\tv1\tchampion=1" in models.stdout, models
    assert no_version.returncode == 1 and "no version 9" in no_version.stderr


def test_invalid_job_is_a_usage_error_naming_the_field(service_url: str, tmp_path: Path) -> None:
    bad = job_file(tmp_path, "bad.yaml", estimator="no_such_estimator")
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("dataset: [unclosed\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- dataset\n")
    refused, broken, wrong_shape, unknown = many(
        service_url,
        ["training", "submit", "-f", str(bad), "--wait"],
        ["training", "submit", "-f", str(not_yaml)],
        ["training", "submit", "-f", str(a_list)],
        ["training", "jobs", "get", "00000000-0000-0000-0000-000000000000"],
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "422" in refused.stderr
    assert "  estimator: unknown estimator 'no_such_estimator'" in refused.stderr
    assert broken.returncode == 2 and f"{not_yaml}: not valid YAML" in broken.stderr
    assert wrong_shape.returncode == 2 and str(a_list) in wrong_shape.stderr
    assert unknown.returncode == 1 and "404" in unknown.stderr


def test_example_job_file_is_a_valid_job() -> None:
    from mlops.training.spec import TrainingJobSpec

    spec = TrainingJobSpec.model_validate(
        yaml.safe_load((ROOT / "examples" / "training-job.yaml").read_text())
    )
    estimator, space = spec.resolved()
    assert estimator.name == "random_forest" and spec.model_name == "breast-cancer-rf"
    assert set(space.parameters) == {"n_estimators", "max_depth", "max_features"}


def test_progress_on_a_terminal_is_one_line_redrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from mlops.cli.training import ProgressLine

    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    line = ProgressLine(tty=True)
    line.update({"status": "queued", "progress": None})
    progress = {
        "trials_total": 30,
        "trials_finished": 12,
        "trials_pruned": 0,
        "trials_failed": 0,
        "trials_running": 0,
        "best_value": 0.97361,
        "estimated_seconds_left": 40.2,
    }
    line.update({"status": "running", "progress": progress})
    line.close()
    assert stderr.getvalue() == (
        "\rqueued: preparing\r[########............] 12/30 trials  best 0.9736  eta 40s\n"
    )
