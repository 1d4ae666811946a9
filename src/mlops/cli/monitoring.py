"""``mlops monitoring``: drift reports of a deployment's logged traffic, with an exit status a
CI job or a scheduled check can gate on."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer

from mlops.cli.client import FAILURE, USAGE_ERROR, ApiClient

monitoring_app = typer.Typer(no_args_is_help=True, help="Model monitoring: drift reports.")

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
# (document key, column heading): the figures that decide, by default, for both kinds
FIGURES = (("psi", "PSI"), ("wasserstein", "WASSERSTEIN"), ("js", "JS"), ("p_adjusted", "P (BH)"))


class FailOn(StrEnum):
    ANY = "any"
    DATASET = "dataset"
    NEVER = "never"


@monitoring_app.command("drift")
def drift(
    deployment: Annotated[
        str, typer.Argument(help="The deployment whose logged traffic is checked.")
    ],
    since: Annotated[
        str | None,
        typer.Option(
            help="Start of the window, ISO-8601 (e.g. 2026-11-28T00:00:00Z; without a zone, "
            "UTC). Default: the service's window length before --until.",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="End of the window, ISO-8601. Default: now.", show_default=False),
    ] = None,
    last: Annotated[
        str | None,
        typer.Option(
            help="The window's length instead of --since: 30m, 1h, 2d, 1w (s, m, h, d, w); "
            "it ends at --until, or now.",
            show_default=False,
        ),
    ] = None,
    fail_on: Annotated[
        FailOn,
        typer.Option(
            help="When to exit 1: any = a feature or the prediction drifted; dataset = the "
            "share of drifted features reached the dataset threshold; never = only on errors."
        ),
    ] = FailOn.ANY,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report document as JSON, not the table.")
    ] = False,
) -> None:
    """Compare DEPLOYMENT's traffic in a window with its reference profile, and store the
    report.

    Prints each feature's verdict, figures and reason, then the summary, the report's id and
    where to read it as HTML. Exit status: 0 nothing drifted, 1 drift (see --fail-on) or a
    service error, 2 a usage error.
    """
    client = ApiClient()
    path = f"/api/v1/monitoring/drift/{quote(deployment, safe='')}/reports"
    report = client.request("POST", path, json=window_body(since, until, last))
    code = exit_code(report, fail_on)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for line in table_lines(report):
            typer.echo(line)
        typer.secho(summary_line(report), fg="red" if code else "green")
        if report.get("window_cut"):
            typer.secho("the window held more requests than are read: the newest", fg="yellow")
        typer.echo(f"report {report['id']}: GET {client.base_url}{path}/{report['id']}?format=html")
    raise typer.Exit(code)


def window_body(since: str | None, until: str | None, last: str | None) -> dict[str, str]:
    """The request body: only the bounds given, as UTC ISO-8601."""
    if last is not None and since is not None:
        _usage("--last and --since both set the window's start; give one of them")
    end = parse_time(until, "--until") if until is not None else None
    start = parse_time(since, "--since") if since is not None else None
    if last is not None:
        start = (end or datetime.now(UTC).replace(microsecond=0)) - parse_duration(last)
    if start is not None and end is not None and start >= end:
        _usage(f"the window must start before it ends: {_iso(start)} is not before {_iso(end)}")
    bounds = {"since": start, "until": end}
    return {name: _iso(moment) for name, moment in bounds.items() if moment is not None}


def parse_time(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _usage(f"{option} takes an ISO-8601 time such as 2026-11-28T00:00:00Z, got {text!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    match = DURATION.fullmatch(text.strip())
    seconds = float(match[1]) * SECONDS_PER_UNIT[match[2]] if match else 0.0
    if seconds <= 0:
        _usage(f"--last takes a positive length such as 30m, 1h or 2d, got {text!r}")
    return timedelta(seconds=seconds)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _usage(message: str) -> NoReturn:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(USAGE_ERROR)


def exit_code(report: dict[str, Any], fail_on: FailOn) -> int:
    if fail_on is FailOn.NEVER:
        return 0
    if fail_on is FailOn.DATASET:
        return FAILURE if report.get("dataset_drift") else 0
    drifted = bool(report.get("drifted_count")) or report.get("prediction_drift") is True
    return FAILURE if drifted else 0


def table_lines(report: dict[str, Any]) -> list[str]:
    """One row per feature, the prediction marked, in the report's order; the reason last."""
    lines = [
        f"drift of {report.get('deployment', '?')} from {report.get('since')} to "
        f"{report.get('until')}: {_figure(report.get('reference_rows'))} reference rows, "
        f"{_figure(report.get('current_rows'))} current rows"
    ]
    features = report.get("features") or []
    if not features:
        return [*lines, "no features in the report"]
    rows = [
        [
            f"{feature['name']} (prediction)"
            if feature.get("role") == "prediction"
            else str(feature["name"]),
            str(feature.get("kind", "")),
            "yes" if feature.get("drifted") else "no",
            *(_figure(feature.get(key)) for key, _ in FIGURES),
            str(feature.get("reason", "")),
        ]
        for feature in features
    ]
    heads = ["FEATURE", "KIND", "DRIFTED", *(head for _, head in FIGURES), "REASON"]
    widths = [max(len(row[i]) for row in [heads, *rows]) for i in range(len(heads) - 1)]
    for row in [heads, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return lines


def summary_line(report: dict[str, Any]) -> str:
    share = report.get("drifted_share") or 0.0
    prediction = report.get("prediction_drift")
    predicted = "not monitored" if prediction is None else ("yes" if prediction else "no")
    return (
        f"{report.get('drifted_count', 0)} of {report.get('feature_count', 0)} features drifted "
        f"({100 * share:.0f} %); dataset drift: {'yes' if report.get('dataset_drift') else 'no'}; "
        f"prediction drift: {predicted}"
    )


def _figure(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 1_000:
        return f"{value:,.0f}"
    return f"{value:.1e}" if abs(value) < 0.001 else f"{value:.3g}"
