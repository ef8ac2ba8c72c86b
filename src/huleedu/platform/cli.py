"""The `huleedu` command: run services, migrate, print a development token, export the contracts,
run the demo, the CJ tools (`huleedu cj ...`) and the operators' commands (`huleedu ops ...`,
`huleedu ras ...`).

Services are looked up in `runner.SERVICES`. A bad `HULEEDU_*` setting is reported as the variable,
its value and what is wrong, with exit code 2, never as a traceback (`cli_settings.py`).
"""

from pathlib import Path
from typing import Annotated

import typer

from huleedu.cj_assessment.cli import app as cj_app
from huleedu.contracts.export import export_contracts
from huleedu.contracts.topics import DEFAULT_PREFIX, Topics
from huleedu.operations.cli import app as ops_app
from huleedu.platform import runner
from huleedu.platform.cli_settings import USAGE_ERROR, load_settings, redacted
from huleedu.platform.demo import demo
from huleedu.platform.logging import configure_logging
from huleedu.platform.security import DEFAULT_TTL_SECONDS, encode_token
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.cli import app as ras_app
from huleedu.storage.engine import is_sqlite
from huleedu.storage.migrations import upgrade


def _migrate(settings: Settings) -> None:
    upgrade(settings.database_url)
    typer.echo(f"database {redacted(settings.database_url)} is migrated to the newest schema", err=True)


def _run(names: list[str], settings: Settings, http: bool) -> None:
    try:
        runner.run_in_event_loop(runner.run_services(names, settings, http=http))
    except OSError as exc:
        typer.echo(f"cannot serve on {settings.http_host}:{settings.http_port}: {exc}", err=True)
        raise typer.Exit(1) from None


def serve(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(runner.SERVICES)}")],
    migrate: Annotated[
        bool | None,
        typer.Option(help="upgrade the schema first (default: yes on SQLite, no on PostgreSQL)"),
    ] = None,
    http: Annotated[bool, typer.Option(help="serve the HTTP routes, /healthz and /metrics")] = True,
) -> None:
    """Run one service: its consumers, its outbox relay, its HTTP routes on HULEEDU_HTTP_PORT."""
    settings = load_settings()
    configure_logging(settings)
    try:
        runner.service_builder(name)
    except runner.UnknownService as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(USAGE_ERROR) from None
    if migrate if migrate is not None else is_sqlite(settings.database_url):
        _migrate(settings)
    _run([name], settings, http)


def up(
    migrate: Annotated[bool, typer.Option(help="upgrade the schema first")] = True,
) -> None:
    """Run every service in one process (embedded mode unless Kafka/Redis/PostgreSQL URLs are set)."""
    settings = load_settings()
    configure_logging(settings)
    if migrate:
        _migrate(settings)
    _run(list(runner.SERVICES), settings, http=True)


def migrate() -> None:
    """Upgrade the schema of every service in HULEEDU_DATABASE_URL (PostgreSQL or SQLite)."""
    settings = load_settings()
    configure_logging(settings)
    _migrate(settings)


def token(
    user: Annotated[str, typer.Option("--user", help="the user id (JWT `sub`)")],
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="seconds until the token expires")] = (
        DEFAULT_TTL_SECONDS
    ),
) -> None:
    """Print a development JWT (HS256, signed with HULEEDU_JWT_SECRET) for a teacher."""
    settings = load_settings()
    if not user.strip():
        typer.echo("--user must not be empty", err=True)
        raise typer.Exit(USAGE_ERROR)
    try:
        typer.echo(encode_token(settings, user.strip(), ttl_seconds=ttl))
    except ValueError as exc:
        typer.echo(f"--user: {exc}", err=True)
        raise typer.Exit(USAGE_ERROR) from None


def export(
    directory: Annotated[Path, typer.Argument(help="where to write, e.g. docs/contracts")],
    prefix: Annotated[str, typer.Option(help="topic prefix used in the documents")] = DEFAULT_PREFIX,
) -> None:
    """Write a JSON Schema per event and the AsyncAPI 3.0 document of all topics."""
    written = export_contracts(directory, Topics(prefix))
    typer.echo(f"wrote {len(written)} files under {directory}", err=True)


def build_cli() -> typer.Typer:
    """The command tree."""
    app = typer.Typer(
        name="huleedu",
        help="HuleEdu Results: essay assessment results, from the services that make them to teachers.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for command in (serve, up, migrate, token):
        app.command()(command)
    contracts = typer.Typer(help="The event contracts (JSON Schema, AsyncAPI).", no_args_is_help=True)
    contracts.command("export")(export)
    app.add_typer(contracts, name="contracts")
    app.add_typer(cj_app, name="cj")
    app.add_typer(ops_app, name="ops")
    app.add_typer(ras_app, name="ras")
    app.command("demo")(demo)
    return app


def main() -> None:
    build_cli()()
