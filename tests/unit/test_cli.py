"""The `huleedu` command, driven as a user would: arguments, environment, output and exit code."""

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from huleedu.contracts.export import contract_files
from huleedu.contracts.topics import Topics
from huleedu.platform.cli import build_cli
from huleedu.platform.security import decode_token
from huleedu.platform.settings import Settings

cli = CliRunner()


pytestmark = pytest.mark.usefixtures("restored_logging")


def test_help_lists_the_commands() -> None:
    result = cli.invoke(build_cli(), ["--help"])

    assert result.exit_code == 0
    for command in ("serve", "up", "migrate", "token", "contracts"):
        assert command in result.stdout


def test_token_prints_a_jwt_the_platform_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULEEDU_JWT_SECRET", "cli-test-secret-of-enough-length")

    result = cli.invoke(build_cli(), ["token", "--user", "teacher-42", "--ttl", "120"])

    assert result.exit_code == 0, result.output
    claims = decode_token(Settings(), result.stdout.strip())
    assert claims.user_id == "teacher-42"
    assert 100 <= (claims.expires_at.timestamp() - claims.claims["iat"]) <= 120


def test_token_refuses_a_ttl_below_one_second() -> None:
    result = cli.invoke(build_cli(), ["token", "--user", "t", "--ttl", "0"])

    assert result.exit_code == 2
    assert "--ttl" in result.output


def test_contracts_export_writes_the_documents(tmp_path: Path) -> None:
    result = cli.invoke(build_cli(), ["contracts", "export", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    for relative, text in contract_files(Topics()).items():
        assert (tmp_path / "out" / relative).read_text(encoding="utf-8") == text


def test_contracts_export_can_use_another_topic_prefix(tmp_path: Path) -> None:
    result = cli.invoke(build_cli(), ["contracts", "export", str(tmp_path), "--prefix", "acme"])

    assert result.exit_code == 0, result.output
    assert '"address": "acme.batch.results.ready.v1"' in (tmp_path / "asyncapi.json").read_text()


def test_a_bad_setting_is_reported_readably_with_exit_code_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULEEDU_HTTP_PORT", "70000")

    result = cli.invoke(build_cli(), ["serve", "ras"])

    assert result.exit_code == 2
    assert "HULEEDU_HTTP_PORT='70000': Input should be less than or equal to 65535" in result.output
    assert "Traceback" not in result.output


def test_a_bad_setting_report_hides_secrets_and_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULEEDU_DATABASE_URL", "mysql://app:hunter2@db/huleedu")
    monkeypatch.setenv("HULEEDU_SMTP_PORT", "0")

    result = cli.invoke(build_cli(), ["token", "--user", "t"])

    assert result.exit_code == 2
    assert "HULEEDU_DATABASE_URL='mysql://app:***@db/huleedu': Value error, must start with" in result.output
    assert "HULEEDU_SMTP_PORT='0'" in result.output
    assert "hunter2" not in result.output


def test_serving_an_unknown_service_says_so() -> None:
    unknown = cli.invoke(build_cli(), ["serve", "nope"])

    assert unknown.exit_code == 2
    assert "unknown service 'nope'" in unknown.output


def test_migrate_creates_the_schema_of_a_fresh_sqlite_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "fresh" / "huleedu.sqlite"
    monkeypatch.setenv("HULEEDU_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("HULEEDU_LOG_LEVEL", "WARNING")

    result = cli.invoke(build_cli(), ["migrate"])

    assert result.exit_code == 0, result.output
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"event_outbox", "processed_events", "alembic_version"} <= tables


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HULEEDU_JWT_SECRET", ""),
        ("HULEEDU_INTERNAL_API_KEY", ""),
        ("HULEEDU_ALLOWED_SERVICE_IDS", '["svc-a","svc-b"'),
        ("HULEEDU_ALLOWED_SERVICE_IDS", ","),
        ("HULEEDU_KAFKA_BOOTSTRAP_SERVERS", "not a host:port"),
    ],
)
@pytest.mark.parametrize("command", [["up", "--no-migrate"], ["token", "--user", "t"], ["migrate"]])
def test_a_setting_that_cannot_work_stops_every_command_with_exit_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, command: list[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    result = cli.invoke(build_cli(), command)

    assert result.exit_code == 2, result.output
    assert variable in result.output
    assert "Traceback" not in result.output
