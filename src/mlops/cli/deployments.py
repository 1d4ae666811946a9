"""``mlops deploy``: roll a model version out as a CI job does, and follow it to its end."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from mlops.cli.client import FAILURE, USAGE_ERROR, ApiClient

POLL_SECONDS = 0.5
STRATEGIES = ("direct", "blue_green", "canary", "rolling", "ab_test")


def parse_model(text: str) -> dict[str, str]:
    """``NAME@ALIAS`` or ``NAME:VERSION``."""
    name, at, alias = text.partition("@")
    if at and name and alias:
        return {"name": name, "alias": alias}
    name, colon, version = text.partition(":")
    if colon and name and version.isdigit():
        return {"name": name, "version": version}
    typer.secho(f"--model takes NAME@ALIAS or NAME:VERSION, got {text!r}", fg="red", err=True)
    raise typer.Exit(USAGE_ERROR)


def deploy(
    name: Annotated[str, typer.Argument(help="The deployment (created if it does not exist).")],
    model: Annotated[str, typer.Option("--model", "-m", help="NAME@ALIAS or NAME:VERSION")],
    strategy: Annotated[
        str | None, typer.Option(help=f"One of {', '.join(STRATEGIES)}; default: the deployment's.")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow the rollout; exit 0 when the version serves, 1 if not.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most with --wait.")] = 3600,
    canary_steps: Annotated[
        str | None, typer.Option(help="Canary weights in %, e.g. 10,25,50,100.")
    ] = None,
    analysis_seconds: Annotated[
        float | None, typer.Option(help="How long each canary step is analysed.")
    ] = None,
    min_requests: Annotated[
        int | None, typer.Option(help="Canary requests a step needs before it can pass.")
    ] = None,
) -> None:
    """Deploy a model version: create the deployment, or roll the version out on it."""
    if strategy is not None and strategy not in STRATEGIES:
        typer.secho(f"--strategy must be one of {', '.join(STRATEGIES)}", fg="red", err=True)
        raise typer.Exit(USAGE_ERROR)
    client = ApiClient()
    body: dict[str, Any] = {"model": parse_model(model)}
    if strategy is not None:
        body["strategy"] = strategy
    canary = _canary_settings(canary_steps, analysis_seconds, min_requests)
    if canary:
        body["settings"] = {"canary": canary}
    path = f"/api/v1/deployments/{name}"
    seen = len(_events(client, name)) if client.request("GET", path, missing_ok=True) else 0
    if seen:
        deployment = client.request("PATCH", path, json=body)
    else:
        deployment = client.request("POST", "/api/v1/deployments", json={"name": name, **body})
    target = _newest_variant(deployment)
    typer.echo(f"deployment {name}: {target['name']} (version {target['model_version']}) loading")
    if not wait:
        return
    raise typer.Exit(follow(client, name, target["name"], seen, timeout))


def follow(client: ApiClient, name: str, variant: str, seen: int, timeout: float) -> int:
    """Print each event as it happens; the outcome once the rollout is over."""
    deadline = time.monotonic() + timeout
    while True:
        events = _events(client, name)
        for event in events[seen:]:
            typer.echo(_event_line(event))
        seen = len(events)
        deployment = client.request("GET", f"/api/v1/deployments/{name}")
        rollout = deployment["rollout"] or {}
        if rollout.get("strategy") == "ab_test" and rollout.get("step", -1) >= 0:
            typer.secho(f"deployment {name}: A/B test of {variant} running", fg="green")
            return 0  # it runs until someone promotes or rolls back
        if deployment["rollout"] is None and deployment["state"] != "deploying":
            serving = next(v for v in deployment["variants"] if v["name"] == variant)
            if serving["weight"] == 100 and serving["status"] == "ready":
                typer.secho(f"deployment {name}: {variant} serves all traffic", fg="green")
                return 0
            typer.secho(
                f"deployment {name}: {variant} is {serving['status']}: {serving['detail']}",
                fg="red",
            )
            return FAILURE
        if time.monotonic() > deadline:
            typer.secho(
                f"deployment {name} still rolling out after {timeout:g} s", fg="red", err=True
            )
            return FAILURE
        time.sleep(POLL_SECONDS)


def _canary_settings(
    steps: str | None, analysis_seconds: float | None, min_requests: int | None
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if steps is not None:
        try:
            settings["steps"] = [float(step) for step in steps.split(",")]
        except ValueError:
            typer.secho(
                f"--canary-steps takes numbers like 10,50,100, got {steps!r}", fg="red", err=True
            )
            raise typer.Exit(USAGE_ERROR) from None
    if analysis_seconds is not None:
        settings["analysis_seconds"] = analysis_seconds
    if min_requests is not None:
        settings["min_requests"] = min_requests
    return settings


def _events(client: ApiClient, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = client.request(
            "GET",
            f"/api/v1/deployments/{name}/history",
            params={"limit": 200, "offset": len(events)},
        )
        events += page["items"]
        if len(events) >= page["total"] or not page["items"]:
            return events


def _newest_variant(deployment: dict[str, Any]) -> dict[str, Any]:
    return max(deployment["variants"], key=lambda v: v["created_at"])


def _event_line(event: dict[str, Any]) -> str:
    clock = datetime.now(UTC).strftime("%H:%M:%S")
    split = ", ".join(f"{name} {weight:g} %" for name, weight in event["weights"].items())
    line = f"[{clock}] {event['kind']:<16} {split or '-'}: {event['reason']}"
    figures = (event.get("detail") or {}).get("figures")
    if figures:
        line += "\n" + " " * 11 + ", ".join(f"{k}={v}" for k, v in figures.items() if v is not None)
    return line
