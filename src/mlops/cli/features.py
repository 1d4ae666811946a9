"""``mlops features``: apply feature definitions from a YAML file, ingest rows, materialize.

The file holds any of three lists, applied in this order so that references resolve::

    entities:
      - name: driver
        join_keys: [{name: driver_id, type: int64}]
    feature_views:
      - name: driver_stats
        entities: [driver]
        features: [{name: conv_rate, type: float64}]
        ttl_seconds: 86400
    feature_services:
      - name: eta_model
        features: [{view: driver_stats}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mlops.cli.client import USAGE_ERROR, ApiClient

features_app = typer.Typer(no_args_is_help=True, help="Feature store definitions and data.")
SECTIONS = (("entities", "entities"), ("feature_views", "views"), ("feature_services", "services"))


def _documents(file: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        loaded = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        typer.secho(f"{file}: not valid YAML: {exc}", fg="red", err=True)
        raise typer.Exit(USAGE_ERROR) from exc
    if not isinstance(loaded, dict) or not set(loaded) <= {section for section, _ in SECTIONS}:
        typer.secho(
            f"{file}: expected a mapping with {', '.join(s for s, _ in SECTIONS)}",
            fg="red",
            err=True,
        )
        raise typer.Exit(USAGE_ERROR)
    for section, items in loaded.items():
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
        ):
            typer.secho(
                f"{file}: {section} must be a list of mappings with a name", fg="red", err=True
            )
            raise typer.Exit(USAGE_ERROR)
    return loaded


@features_app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", exists=True, dir_okay=False, readable=True)],
) -> None:
    """Declare or change entities, feature views and feature services from a YAML file."""
    documents = _documents(file)
    client = ApiClient()
    for section, path in SECTIONS:
        for item in documents.get(section, []):
            body = {key: value for key, value in item.items() if key != "name"}
            applied = client.request("PUT", f"/api/v1/features/{path}/{item['name']}", json=body)
            version = f" version {applied['version']}" if applied.get("version") else ""
            typer.echo(f"{applied['kind']} {applied['name']}{version} ({applied['outcome']})")


@features_app.command("ingest")
def ingest(
    view: str,
    file: Annotated[Path, typer.Option("-f", "--file", exists=True, dir_okay=False, readable=True)],
) -> None:
    """Add a Parquet or CSV file's rows to a feature view's offline store."""
    with file.open("rb") as handle:
        batch = ApiClient().request(
            "POST",
            f"/api/v1/features/views/{view}/ingest/file",
            files={"file": (file.name, handle)},
        )
    typer.echo(f"{batch['rows']} rows into {batch['view']} version {batch['version']}")


@features_app.command("materialize")
def materialize(
    view: str,
    start: Annotated[str | None, typer.Option(help="ISO 8601; with --end, a range.")] = None,
    end: Annotated[str | None, typer.Option(help="ISO 8601; with --start, a range.")] = None,
) -> None:
    """Write each entity's latest values into the online store (incremental by default)."""
    body = {key: value for key, value in (("start", start), ("end", end)) if value}
    run = ApiClient().request("POST", f"/api/v1/features/views/{view}/materialize", json=body)
    typer.echo(
        f"{run['status']}: {run['rows_read']} rows read, {run['entities_written']} entities "
        f"written ({run['mode']})"
    )
    if run["status"] != "succeeded":
        typer.secho(run["error"] or "", fg="red", err=True)
        raise typer.Exit(1)
