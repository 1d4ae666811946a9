"""``mlops pipelines`` and ``mlops runs``: what a CI job needs to apply, run and watch pipelines."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mlops.cli.client import FAILURE, USAGE_ERROR, ApiClient

pipelines_app = typer.Typer(no_args_is_help=True, help="Pipeline definitions and runs.")
runs_app = typer.Typer(no_args_is_help=True, help="Pipeline runs.")
FINAL = {"succeeded", "failed", "cancelled"}
POLL_SECONDS = 0.5


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; each value read as a YAML scalar, so ``n=3`` is a number."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            typer.secho(f"--param takes KEY=VALUE, got {pair!r}", fg="red", err=True)
            raise typer.Exit(USAGE_ERROR)
        params[key] = yaml.safe_load(value) if value else ""
    return params


@pipelines_app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", exists=True, dir_okay=False, readable=True)],
) -> None:
    """Create a pipeline from a YAML file, or a new version of it."""
    try:
        spec = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        typer.secho(f"{file}: not valid YAML: {exc}", fg="red", err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    result = ApiClient().request("POST", "/api/v1/pipelines", json=spec)
    state = "created" if result["created"] else "unchanged"
    typer.echo(f"pipeline {result['name']} version {result['version']} ({state})")


@pipelines_app.command("list")
def list_pipelines() -> None:
    """List pipelines."""
    page = ApiClient().request("GET", "/api/v1/pipelines", params={"limit": 200})
    for item in page["items"]:
        typer.echo(f"{item['name']}\tv{item['latest_version']}\t{item['next_fire_at'] or '-'}")


@pipelines_app.command("run")
def run(
    name: str,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run; exit 0 on success, 1 else.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retries return the same run.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most with --wait.")] = 3600,
) -> None:
    """Start a run. With --wait, show each step's progress and exit with the run's outcome."""
    client = ApiClient()
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    body = {"params": parse_params(param or [])}
    started = client.request("POST", f"/api/v1/pipelines/{name}/runs", json=body, headers=headers)
    typer.echo(f"run {started['id']} queued")
    if not wait:
        return
    raise typer.Exit(watch(client, started["id"], timeout))


def watch(client: ApiClient, run_id: str, timeout: float) -> int:
    seen: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + timeout
    while True:
        run = client.request("GET", f"/api/v1/pipelines/runs/{run_id}")
        for step in run["steps"]:
            state = (step["status"], step["attempts"])
            if seen.get(step["name"]) != state:
                seen[step["name"]] = state
                typer.echo(_progress_line(step))
        if run["status"] in FINAL:
            colour = "green" if run["status"] == "succeeded" else "red"
            typer.secho(f"run {run_id} {run['status']}", fg=colour)
            return 0 if run["status"] == "succeeded" else FAILURE
        if time.monotonic() > deadline:
            typer.secho(
                f"run {run_id} still {run['status']} after {timeout:g} s", fg="red", err=True
            )
            return FAILURE
        time.sleep(POLL_SECONDS)


def _progress_line(step: dict[str, Any]) -> str:
    clock = datetime.now(UTC).strftime("%H:%M:%S")
    line = f"[{clock}] {step['name']:<20} {step['status']}"
    if step["status"] == "running":
        line += f" (attempt {step['attempts']} of {step['max_attempts']})"
    if step["error"] and step["status"] in {"failed", "pending", "skipped"}:
        line += f": {step['error']}"
    return line


@runs_app.command("get")
def get_run(run_id: str) -> None:
    """Show a run and its steps as JSON."""
    typer.echo(json.dumps(ApiClient().request("GET", f"/api/v1/pipelines/runs/{run_id}"), indent=2))


@runs_app.command("logs")
def logs(
    run_id: str,
    step: Annotated[str, typer.Option("--step", "-s")],
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    tail: Annotated[int, typer.Option(min=1)] = 200,
    attempt: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Print a step's log; with --follow, until the step ends."""
    query: dict[str, Any] = {"tail": tail, "follow": follow}
    if attempt:
        query["attempt"] = attempt
    path = f"/api/v1/pipelines/runs/{run_id}/steps/{step}/logs"
    for chunk in ApiClient().stream_text(path, params=query):
        sys.stdout.write(chunk)
        sys.stdout.flush()


@runs_app.command("cancel")
def cancel(run_id: str) -> None:
    """Cancel a run."""
    run = ApiClient().request("POST", f"/api/v1/pipelines/runs/{run_id}/cancel")
    typer.echo(f"run {run['id']} {run['status']}")
