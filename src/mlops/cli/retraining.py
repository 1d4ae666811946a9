"""``mlops retraining``: start a policy's retraining and follow it to its outcome, with an exit
status a CI job can act on, and a policy's history."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

import typer

from mlops.cli.client import FAILURE, ApiClient

retraining_app = typer.Typer(
    no_args_is_help=True, help="Automated retraining: trigger a policy, read its history."
)

KEPT_CHAMPION = 3
# outcome -> exit status: 0 promoted, 1 failed or rolled back, 3 the champion stays
EXIT_STATUS = {
    "promoted": 0,
    "failed": FAILURE,
    "rolled_back": FAILURE,
    "kept_champion": KEPT_CHAMPION,
    "rejected": KEPT_CHAMPION,
}
POLL_SECONDS = 1.0


@retraining_app.command("trigger")
def trigger(
    policy: Annotated[str, typer.Argument(help="The retraining policy's name.")],
    reason: Annotated[str, typer.Option(help="Why, for the history.")] = "",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the retraining to its outcome; exit 0 promoted, 1 failed or rolled "
            "back, 3 kept the champion (or rejected).",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most with --wait.")] = 3600,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="A CI job's retry with the same key follows the same retraining."),
    ] = None,
) -> None:
    """Start a retraining of POLICY now (a manual trigger)."""
    client = ApiClient()
    path = f"/api/v1/retraining/policies/{quote(policy, safe='')}/trigger"
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    event = client.request("POST", path, json={"reason": reason}, headers=headers)
    typer.echo(f"retraining {event['id']} of {policy} started ({event['status']})")
    if not wait:
        return
    raise typer.Exit(follow(client, event["id"], timeout))


def follow(client: ApiClient, event_id: str, timeout: float) -> int:
    """Print each new link of the lineage as it comes; the outcome's exit status."""
    shown = 0
    deadline = time.monotonic() + timeout
    while True:
        event = client.request("GET", f"/api/v1/retraining/events/{event_id}")
        for link in event["chain"][shown:]:
            typer.echo(_link_line(link))
        shown = len(event["chain"])
        if event["status"] in EXIT_STATUS:
            return EXIT_STATUS[event["status"]]
        if event["status"] == "awaiting_approval" and shown and _waiting_noted(event):
            typer.echo(f"awaiting approval: POST /api/v1/retraining/events/{event_id}/approve")
        if time.monotonic() > deadline:
            typer.secho(
                f"retraining {event_id} is still {event['status']} after {timeout:g} s",
                fg="red",
                err=True,
            )
            return FAILURE
        time.sleep(POLL_SECONDS)


def _waiting_noted(event: dict[str, Any]) -> bool:
    """Say "awaiting approval" once: right after the comparison link."""
    return bool(event["chain"]) and event["chain"][-1]["stage"] == "comparison"


@retraining_app.command("history")
def history(
    policy: Annotated[str, typer.Argument(help="The retraining policy's name.")],
    limit: Annotated[int, typer.Option(help="How many retrainings, newest first.")] = 20,
    chain: Annotated[bool, typer.Option("--chain", help="Each one's whole lineage.")] = False,
) -> None:
    """POLICY's retrainings, newest first: trigger, status, versions and outcome."""
    client = ApiClient()
    page = client.request(
        "GET", "/api/v1/retraining/events", params={"policy": policy, "limit": limit}
    )
    if not page["items"]:
        typer.echo(f"no retraining of {policy} yet")
        return
    typer.echo(f"{'STARTED (UTC)':<20} {'TRIGGER':<24} {'STATUS':<18} {'VERSIONS':<10} OUTCOME")
    for event in page["items"]:
        versions = f"{event['champion_version'] or '-'}→{event['challenger_version'] or '-'}"
        typer.echo(
            f"{event['created_at'][:19]:<20} {event['trigger']:<24} {event['status']:<18} "
            f"{versions:<10} {event['outcome_reason'] or event['reason']}"
        )
        if chain:
            detail = client.request("GET", f"/api/v1/retraining/events/{event['id']}")
            for link in detail["chain"]:
                typer.echo(f"    {_link_line(link)}")


def _link_line(link: dict[str, Any]) -> str:
    ref = f" [{link['ref']}]" if link.get("ref") else ""
    return f"{link['created_at'][11:19]} {link['stage']:<14} {link['summary']}{ref}"
