"""Which exceptions mean "the world is briefly broken, try again" rather than "this event is bad"."""

import asyncio

import redis.exceptions
from sqlalchemy import exc as sa_exc

from huleedu.messaging.errors import PublishError, TransientError

# PostgreSQL SQLSTATEs worth a retry: serialization failure, deadlock, lock not available,
# connection exceptions (class 08), too many connections, admin shutdown, cannot connect now.
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03", "53300", "57P01", "57P03"}
# SQLite primary result codes worth a retry: BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL.
# It raises OperationalError for "no such table" or "too many SQL variables" as well, which no retry
# mends: treated as transient, such an event would hold its partition for ever.
_RETRYABLE_SQLITE_CODES = {5, 6, 7, 10, 13, 14, 15}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError | OSError | asyncio.TimeoutError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
        if isinstance(sqlite_code, int) and not exc.connection_invalidated:
            return sqlite_code & 0xFF in _RETRYABLE_SQLITE_CODES  # the low byte is the primary code
        if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(sqlstate, str) and (sqlstate in _RETRYABLE_SQLSTATES or sqlstate.startswith("08")):
            return True
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


def is_broker_unavailable(outcome: Exception) -> bool:
    """True when a publish failure says nothing about the record itself (broker or network down):
    worth retrying the same record. False when the record is refused for what it is (too large,
    topic not allowed), which no retry changes."""
    if isinstance(outcome, PublishError):
        return outcome.broker_unavailable
    return is_transient(outcome)
