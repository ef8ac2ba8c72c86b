"""The settings as a command reads them: a bad `HULEEDU_*` variable is reported as the variable, its
value (secrets and URL passwords hidden) and what is wrong, with exit code 2, never as a traceback.
Shared by the `huleedu` commands (`cli.py`) and `huleedu demo` (`demo.py`)."""

import re

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from huleedu.platform.settings import Settings

USAGE_ERROR = 2
_SECRET_FIELDS = re.compile(r"secret|password|api_key", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


def redacted(url: str) -> str:
    """`url` with its password, if any, as `***`."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def _shown(field: str, value: object) -> str:
    if _SECRET_FIELDS.search(field):
        return "<hidden>"
    return redacted(repr(value))


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
