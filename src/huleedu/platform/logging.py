"""Structured logging for every process: JSON lines in production, readable lines in a terminal.

structlog and the standard library (uvicorn, aiokafka, SQLAlchemy) go through one handler on the root
logger, so every line has the same shape, and the correlation id bound with `bind_correlation` appears
on every line logged inside its block, by our code or a library's.
"""

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO
from uuid import UUID

import structlog
from structlog.typing import EventDict, Processor

from huleedu.platform.settings import Settings

# Libraries that are chatty at INFO; they keep WARNING and above unless we run at DEBUG.
QUIET_LIBRARIES = (
    "aiokafka",
    "kafka",
    "sqlalchemy.engine",
    "alembic.runtime.migration",
    "uvicorn.access",
    "httpx",  # one INFO line per request: the dashboard asks RAS on every page load
)


def _drop_color_message(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's ANSI copy of the message, as an `extra`
    return event_dict


_TOKEN = re.compile(r"(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Blanks `token=...` in library log lines: uvicorn logs WebSocket paths with the JWT in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.getMessage():
            record.msg = _TOKEN.sub(r"\1[redacted]", record.getMessage())
            record.args = None
        return True


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (stderr by default) in `settings.log_format`.

    Safe to call again (tests, a CLI command after another): the root handler is replaced, not added.
    """
    output = stream or sys.stderr
    renderer: Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.dict_tracebacks, renderer]
    else:
        # Plain tracebacks: rich ones with locals are slow to render and may print secrets.
        renderer = structlog.dev.ConsoleRenderer(
            colors=output.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        final = [renderer]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a reconfiguration (tests, `huleedu up` after `migrate`) must reach module loggers.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(output)
    handler.addFilter(RedactTokens())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    quiet = logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's own handlers would print a second copy
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


@contextmanager
def bind_correlation(correlation_id: UUID | str) -> Iterator[None]:
    """Every log line inside the block, in this task and the tasks it starts, carries the id."""
    with structlog.contextvars.bound_contextvars(correlation_id=str(correlation_id)):
        yield
