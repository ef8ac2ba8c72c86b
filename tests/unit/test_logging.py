"""Structured logs: JSON lines or console lines, stdlib and structlog alike, with the correlation id."""

import io
import json
import logging
from uuid import uuid4

import pytest
import structlog

from huleedu.platform.logging import bind_correlation, configure_logging
from huleedu.platform.settings import Settings

pytestmark = pytest.mark.usefixtures("restored_logging")


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_bound_correlation_id_from_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream=stream)
    correlation_id = uuid4()

    with bind_correlation(correlation_id):
        structlog.get_logger("huleedu.test").info("batch registered", batch_id="b-1")
        logging.getLogger("some.library").warning("disk %s", "slow")
    structlog.get_logger("huleedu.test").info("after the block")

    first, second, third = (json.loads(line) for line in _lines(stream))
    assert first["event"] == "batch registered"
    assert first["batch_id"] == "b-1"
    assert first["level"] == "info"
    assert first["correlation_id"] == str(correlation_id)
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "disk slow"
    assert second["logger"] == "some.library"
    assert second["correlation_id"] == str(correlation_id)
    assert "correlation_id" not in third


def test_the_log_level_setting_filters_lines() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="WARNING"), stream=stream)

    structlog.get_logger("huleedu.test").info("hidden")
    structlog.get_logger("huleedu.test").error("shown")

    assert [json.loads(line)["event"] for line in _lines(stream)] == ["shown"]


def test_console_format_writes_readable_lines_not_json() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="console"), stream=stream)

    with bind_correlation("c-123"):
        structlog.get_logger("huleedu.test").info("relay started", services=["ras"])

    [line] = _lines(stream)
    assert "relay started" in line
    assert "correlation_id=c-123" in line
    assert not line.startswith("{")


def test_configuring_twice_keeps_one_handler() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream=io.StringIO())
    configure_logging(Settings(log_format="json"), stream=stream)

    logging.getLogger("x").warning("once")

    assert len(_lines(stream)) == 1


def test_an_exception_is_rendered_in_the_json_line() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream=stream)

    try:
        raise ValueError("bad essay")
    except ValueError:
        structlog.get_logger("huleedu.test").exception("handler failed")

    [line] = _lines(stream)
    record = json.loads(line)
    assert record["event"] == "handler failed"
    assert "bad essay" in json.dumps(record["exception"])


def test_a_token_in_a_library_log_line_is_redacted() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_level="INFO"), stream=stream)
    logging.getLogger("huleedu.tests.a_library").info(  # uvicorn logs WebSocket paths like this
        '%s - "WebSocket %s" %d', "127.0.0.1:1", "/ws?token=abc.def.ghi&since=5", 101
    )
    output = stream.getvalue()
    assert "abc.def.ghi" not in output
    assert "/ws?token=[redacted]&since=5" in output
