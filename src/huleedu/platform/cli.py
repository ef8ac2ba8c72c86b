"""The `huleedu` command: run services, migrate, print a development token, export the contracts.

Services are looked up in `runner.SERVICES`; sub-command groups of services (`huleedu cj ...`) and
optional commands (`huleedu demo`) are added when their module exists. A bad `HULEEDU_*` setting is
reported as the variable, its value and what is wrong, with exit code 2, never as a traceback.
"""

import asyncio
import importlib
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from huleedu.contracts.export import export_contracts
from huleedu.contracts.topics import DEFAULT_PREFIX, Topics
from huleedu.platform import runner
from huleedu.platform.logging import configure_logging
from huleedu.platform.security import DEFAULT_TTL_SECONDS, encode_token
from huleedu.platform.settings import Settings
from huleedu.storage.engine import is_sqlite
from huleedu.storage.migrations import upgrade

# Typer apps of services, mounted as `huleedu NAME ...` when their module exists.
SUB_APPS = {"cj": "huleedu.cj_assessment.cli:app"}
# Single commands living with their feature, added as `huleedu NAME` when their module exists.
OPTIONAL_COMMANDS = {"demo": "huleedu.platform.demo:demo"}

USAGE_ERROR = 2
_SECRET_FIELDS = re.compile(r"secret|password|api_key", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


def _shown(field: str, value: object) -> str:
    if _SECRET_FIELDS.search(field):
        return "<hidden>"
    return _URL_PASSWORD.sub(r"\1***@", repr(value))


def describe_settings_error(error: ValidationError | SettingsError) -> str:
    """One line per bad variable: `HULEEDU_HTTP_PORT='70000': Input should be ...`."""
    lines = ["Invalid configuration (HULEEDU_* environment variables):"]
    if isinstance(error, SettingsError):
        lines.append(f"  {error}")
        return "\n".join(lines)
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else ""
        variable = f"HULEEDU_{field.upper()}" if field else "<settings>"
        lines.append(f"  {variable}={_shown(field, item.get('input'))}: {item['msg']}")
    return "\n".join(lines)


def load_settings(*, development: bool = False) -> Settings:
    """Settings from the environment, or exit 2 with a readable report of what is wrong.
    `development` implies HULEEDU_ENV=development (the demo)."""
    try:
        return Settings(env="development") if development else Settings()
    except (ValidationError, SettingsError) as exc:
        typer.echo(describe_settings_error(exc), err=True)
        raise typer.Exit(USAGE_ERROR) from None


def _redacted(url: str) -> str:
    return _URL_PASSWORD.sub(r"\1***@", url)


def _migrate(settings: Settings) -> None:
    upgrade(settings.database_url)
    typer.echo(f"database {_redacted(settings.database_url)} is migrated to the newest schema", err=True)


def _run(names: list[str], settings: Settings, http: bool) -> None:
    try:
        asyncio.run(runner.run_services(names, settings, http=http))
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
    except (runner.UnknownService, runner.ServiceNotBuilt) as exc:
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
    names, missing = runner.available_services()
    for reason in missing.values():
        typer.echo(f"skipped: {reason}", err=True)
    if not names:
        typer.echo("no service is built yet; nothing to run", err=True)
        raise typer.Exit(USAGE_ERROR)
    if migrate:
        _migrate(settings)
    _run(names, settings, http=True)


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


def _optional(target: str) -> Any:
    """The object at `module:attribute`, or None when that module does not exist (yet)."""
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return None
        raise
    return getattr(module, attribute, None)


def build_cli() -> typer.Typer:
    """The command tree, with the optional parts that exist in this installation."""
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
    for name, target in SUB_APPS.items():
        sub_app = _optional(target)
        if isinstance(sub_app, typer.Typer):
            app.add_typer(sub_app, name=name)
    for name, target in OPTIONAL_COMMANDS.items():
        function = _optional(target)
        if callable(function):
            app.command(name)(function)
    return app


def main() -> None:
    build_cli()()
