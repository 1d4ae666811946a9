"""``mlops training`` and ``mlops models``: submit and follow hyperparameter searches, read their
trials, and manage the model versions they register."""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mlops.cli.client import FAILURE, USAGE_ERROR, ApiClient
from mlops.pipelines.states import RunStatus

training_app = typer.Typer(no_args_is_help=True, help="Hyperparameter search jobs.")
jobs_app = typer.Typer(no_args_is_help=True, help="Training jobs.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry.")
training_app.add_typer(jobs_app, name="jobs")

JOBS = "/api/v1/training/jobs"
MODELS = "/api/v1/training/models"
FINAL = {"succeeded", "failed", "cancelled"}
POLL_SECONDS = 0.5
BAR_WIDTH = 20
PAGE_SIZE = 200  # the API's largest page


class TrialState(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"


def read_job_file(file: Path) -> dict[str, Any]:
    """The job file as a JSON-ready mapping, or exit 2 naming the file."""
    try:
        document = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        return _bad_file(file, f"not valid YAML: {exc}")
    if not isinstance(document, dict):
        return _bad_file(file, "a training job file is a mapping of fields (dataset, estimator, …)")
    try:
        json.dumps(document)
    except (TypeError, ValueError) as exc:  # e.g. an unquoted date, which YAML reads as a date
        return _bad_file(file, f"holds a value JSON cannot carry ({exc}); quote it")
    return document


def _bad_file(file: Path, message: str) -> dict[str, Any]:
    typer.secho(f"{file}: {message}", fg="red", err=True)
    raise typer.Exit(USAGE_ERROR)


@training_app.command("submit")
def submit(
    file: Annotated[
        Path,
        typer.Option("-f", "--file", exists=True, dir_okay=False, readable=True, help="Job YAML."),
    ],
    wait: Annotated[
        bool, typer.Option(help="Follow the job; exit 0 on success, 1 on failure or cancel.")
    ] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retries with this key return the same job.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most with --wait.")] = 86_400,
) -> None:
    """Submit a training job from a YAML file. With --wait, show trial progress and the result."""
    document = read_job_file(file)
    client = ApiClient()
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = client.request("POST", JOBS, json=document, headers=headers)
    typer.echo(f"job {job['id']} {job['status']}")
    if not wait:
        return
    raise typer.Exit(watch(client, job["id"], timeout))


def watch(client: ApiClient, job_id: str, timeout: float) -> int:
    """Poll the job until it ends; the exit status its outcome calls for."""
    progress = ProgressLine(sys.stderr.isatty())
    deadline = time.monotonic() + timeout
    try:
        while True:
            job = client.request("GET", f"{JOBS}/{job_id}")
            progress.update(job)
            if job["status"] in FINAL:
                progress.close()
                return report(job)
            if time.monotonic() > deadline:
                progress.close()
                typer.secho(
                    f"job {job_id} still {job['status']} after {timeout:g} s", fg="red", err=True
                )
                return FAILURE
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        progress.close()
        typer.secho(
            f"stopped following; job {job_id} goes on "
            f"(stop it with: mlops training jobs cancel {job_id})",
            err=True,
        )
        return 130


class ProgressLine:
    """Trial progress on stderr: one line redrawn in place on a terminal; otherwise (a CI log)
    a new line each time the number of finished trials changes."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.finished: int | None = None
        self.width = 0

    def update(self, job: dict[str, Any]) -> None:
        progress = job["progress"]
        if self.tty:
            # The study does not exist until the job's first step has read the data.
            text = progress_text(progress) if progress else f"{job['status']}: preparing"
            text = text[: shutil.get_terminal_size().columns - 1]
            sys.stderr.write("\r" + text.ljust(self.width))
            sys.stderr.flush()
            self.width = len(text)
        elif progress and progress["trials_finished"] != self.finished:
            text = progress_text(progress)
            self.finished = progress["trials_finished"]
            clock = datetime.now(UTC).strftime("%H:%M:%S")
            typer.echo(f"[{clock}] {text}", err=True)

    def close(self) -> None:
        if self.tty and self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.width = 0


def progress_text(progress: dict[str, Any]) -> str:
    total = max(int(progress["trials_total"]), 1)
    finished = int(progress["trials_finished"])
    filled = min(BAR_WIDTH, BAR_WIDTH * finished // total)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    best = progress["best_value"]
    text = f"[{bar}] {finished}/{progress['trials_total']} trials"
    text += f"  best {best:.4f}" if best is not None else "  best -"
    if progress["trials_running"]:
        text += f"  running {progress['trials_running']}"
    if progress["trials_pruned"] or progress["trials_failed"]:
        text += f"  pruned {progress['trials_pruned']}  failed {progress['trials_failed']}"
    left = progress["estimated_seconds_left"]
    return text + (f"  eta {duration(left)}" if left is not None else "")


def duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def report(job: dict[str, Any]) -> int:
    """Print how the job ended; 0 when it succeeded, 1 when it failed or was cancelled."""
    status = job["status"]
    if status != "succeeded":
        typer.secho(f"job {job['id']} {status}", fg="red")
        if job["error"]:
            typer.secho(f"error: {job['error']}", fg="red", err=True)
        return FAILURE
    typer.secho(f"job {job['id']} succeeded", fg="green")
    for line in result_lines(job):
        typer.echo(line)
    return 0


def result_lines(job: dict[str, Any]) -> list[str]:
    result = job["result"]
    lines = []
    if result["best_value"] is not None:
        trial = f" (trial {result['best_trial']})" if result["best_trial"] is not None else ""
        lines.append(
            f"best {job['metric']} ({job['direction']}): {result['best_value']:.6g}{trial}"
        )
    if result["best_params"]:
        lines.append("best params:")
        lines.extend(f"  {name}: {value}" for name, value in result["best_params"].items())
    if result["model_version"]:
        name, version = job["model_name"], result["model_version"]
        lines.append(f"model: {name} version {version} (models:/{name}/{version})")
        if result["model_uri"]:
            lines.append(f"logged model: {result['model_uri']}")
    else:
        lines.append("model: not registered (the job names no model_name)")
    lines.append(
        f"mlflow: experiment {result['mlflow_experiment_id'] or '-'}"
        f"  parent run {result['mlflow_parent_run_id'] or '-'}"
    )
    if result["dataset_digest"]:
        lines.append(f"dataset digest: {result['dataset_digest']}")
    return lines


def _show_more(shown: int, total: int, hint: str) -> None:
    if total > shown:
        typer.echo(f"({shown} of {total} shown; {hint})", err=True)


@jobs_app.command("list")
def list_jobs(
    status: Annotated[RunStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Only jobs registering this model.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=PAGE_SIZE)] = 50,
) -> None:
    """List training jobs, newest first: id, status, estimator, model, created."""
    query: dict[str, Any] = {"limit": limit}
    if status:
        query["status"] = status.value
    if model_name:
        query["model_name"] = model_name
    page = ApiClient().request("GET", JOBS, params=query)
    for job in page["items"]:
        typer.echo(
            f"{job['id']}\t{job['status']}\t{job['estimator']}\t"
            f"{job['model_name'] or '-'}\t{job['created_at']}"
        )
    _show_more(len(page["items"]), page["total"], "raise --limit")


@jobs_app.command("get")
def get_job(job_id: str) -> None:
    """Show a job as JSON: status, progress, result."""
    typer.echo(json.dumps(ApiClient().request("GET", f"{JOBS}/{job_id}"), indent=2))


@jobs_app.command("cancel")
def cancel_job(job_id: str) -> None:
    """Cancel a job: its workers stop and nothing is registered."""
    job = ApiClient().request("POST", f"{JOBS}/{job_id}/cancel")
    typer.echo(f"job {job['id']} {job['status']}")


@training_app.command("trials")
def trials(
    job_id: str,
    state: Annotated[TrialState | None, typer.Option(help="Only trials in this state.")] = None,
) -> None:
    """A job's trials in the order they started: number, state, value, seconds, params."""
    client = ApiClient()
    query: dict[str, Any] = {"limit": PAGE_SIZE, "offset": 0}
    if state:
        query["state"] = state.value
    while True:
        page = client.request("GET", f"{JOBS}/{job_id}/trials", params=query)
        for trial in page["items"]:
            value = f"{trial['value']:.6g}" if trial["value"] is not None else "-"
            seconds = trial["duration_seconds"]
            took = f"{seconds:.1f}s" if seconds is not None else "-"
            line = f"{trial['number']}\t{trial['state']}\t{value}\t{took}\t"
            line += json.dumps(trial["params"], sort_keys=True)
            if trial["error"]:
                line += f"\t{trial['error']}"
            typer.echo(line)
        query["offset"] += len(page["items"])
        if not page["items"] or query["offset"] >= page["total"]:
            return


@models_app.command("list")
def list_models() -> None:
    """Registered models: name, latest version, aliases (alias=version)."""
    page = ApiClient().request("GET", MODELS, params={"limit": PAGE_SIZE})
    for model in page["items"]:
        aliases = ",".join(f"{a}={v}" for a, v in sorted(model["aliases"].items())) or "-"
        typer.echo(f"{model['name']}\tv{model['latest_version'] or '-'}\t{aliases}")
    _show_more(len(page["items"]), page["total"], "the first by name")


@models_app.command("versions")
def list_versions(name: str) -> None:
    """A model's versions, newest first: version, aliases, status, MLflow run, created."""
    page = ApiClient().request("GET", f"{MODELS}/{name}/versions", params={"limit": PAGE_SIZE})
    for version in page["items"]:
        aliases = ",".join(version["aliases"]) or "-"
        typer.echo(
            f"{version['version']}\t{aliases}\t{version['status'] or '-'}\t"
            f"{version['run_id'] or '-'}\t{version['created_at'] or '-'}"
        )
    _show_more(len(page["items"]), page["total"], "the newest")


@models_app.command("alias")
def set_alias(name: str, alias: str, version: str) -> None:
    """Point ALIAS (e.g. champion) at VERSION of model NAME, moving it if it is set."""
    body = {"alias": alias, "version": version}
    updated = ApiClient().request("POST", f"{MODELS}/{name}/aliases", json=body)
    typer.echo(f"{updated['name']} version {updated['version']}: {', '.join(updated['aliases'])}")
