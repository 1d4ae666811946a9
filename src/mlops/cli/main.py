"""The ``mlops`` command: run the service, manage its database and keys, talk to its API."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mlops.cli.client import ApiClient
from mlops.cli.deployments import deploy
from mlops.cli.features import features_app
from mlops.cli.monitoring import monitoring_app
from mlops.cli.pipelines import pipelines_app, runs_app
from mlops.cli.retraining import retraining_app
from mlops.cli.training import models_app, training_app
from mlops.security.credentials import MIN_PASSWORD_LENGTH
from mlops.security.permissions import Role

if TYPE_CHECKING:
    from mlops.core.database import Database
    from mlops.core.settings import Settings
    from mlops.security.service import IdentityService

app = typer.Typer(no_args_is_help=True, help="MLOps control plane.", pretty_exceptions_enable=False)
db_app = typer.Typer(no_args_is_help=True, help="The service database.")
admin_app = typer.Typer(no_args_is_help=True, help="Administration straight on the database.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit log.")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(runs_app, name="runs")
app.add_typer(training_app, name="training")
app.add_typer(models_app, name="models")
app.add_typer(monitoring_app, name="monitoring")
app.add_typer(features_app, name="features")
app.add_typer(retraining_app, name="retraining")
app.command("deploy")(deploy)


def checked_settings() -> Settings:
    """The settings, or a clear message (no values echoed) and exit status 2."""
    from pydantic import ValidationError

    from mlops.core.settings import describe_settings_error, get_settings

    try:
        return get_settings()
    except ValidationError as error:
        typer.secho(describe_settings_error(error), fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default MLOPS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MLOPS_PORT).")] = None,
) -> None:
    """Start the service (embedded default: SQLite under ./data, no external service)."""
    import uvicorn

    settings = checked_settings()
    uvicorn.run(
        "mlops.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        access_log=False,
        log_config=None,
        proxy_headers=False,
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the migrations up to REVISION (default: the newest)."""
    from mlops.cli.database import on_database
    from mlops.core.migrations import current_revision, upgrade_database

    async def upgrade(database: Database, _settings: Settings) -> str | None:
        await upgrade_database(database, revision)
        return await current_revision(database)

    typer.echo(f"database at revision {on_database(upgrade, migrate=False)}")


@admin_app.command("create-api-key")
def create_api_key(
    role: Annotated[Role, typer.Option(help="The key's role.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    expires_in_days: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Create an API key and print it (it is shown once)."""
    from mlops.cli.database import in_identity_transaction

    async def create(identity: IdentityService) -> str:
        _, key = await identity.create_api_key(name, role, "cli", expires_in_days)
        return key

    typer.echo(in_identity_transaction(create))


@admin_app.command("create-user")
def create_user(
    username: Annotated[str, typer.Option()],
    role: Annotated[Role, typer.Option()],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user who signs in with a password (prompted, or read from stdin)."""
    from mlops.cli.database import in_identity_transaction

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        typer.secho(
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters", fg="red", err=True
        )
        raise typer.Exit(2)

    async def create(identity: IdentityService) -> None:
        await identity.create_user(username, password, role)

    in_identity_transaction(create)
    typer.echo(f"user {username} created with role {role.value}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 1 naming the first broken entry."""
    from mlops.cli.database import on_database
    from mlops.security.audit import ChainVerdict, verify_chain

    async def verify(database: Database, _settings: Settings) -> ChainVerdict:
        async with database.sessionmaker() as session:
            return await verify_chain(session)

    verdict = on_database(verify, migrate=False)
    if verdict.intact:
        typer.echo(f"audit chain intact: {verdict.checked} entries verified")
        return
    typer.secho(
        f"audit chain broken at entry {verdict.broken_seq}: {verdict.reason} "
        f"({verdict.checked} entries before it verified)",
        fg="red",
        err=True,
    )
    raise typer.Exit(1)


@app.command()
def whoami() -> None:
    """Show who the configured credentials (MLOPS_URL, MLOPS_API_KEY) are on the service."""
    typer.echo(json.dumps(ApiClient().request("GET", "/api/v1/auth/me"), indent=2))


@app.command()
def status() -> None:
    """Show the service's readiness (no credentials needed)."""
    typer.echo(json.dumps(ApiClient().request("GET", "/ready"), indent=2))
