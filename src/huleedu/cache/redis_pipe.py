"""`RedisPipe`: one pipelined Redis connection for the hottest read, the cache hit.

redis-py spends about a hundred microseconds of CPU per command (a pool checkout under a lock, a
health check, a task per send for its timeout, retries), as much as the rest of a cached RAS answer.
Here every caller writes its command to one shared connection and waits for its own reply: Redis
answers in order, so replies are matched to callers first in, first out. Nothing is checked out or
locked; a caller that gives up (timeout, cancellation) leaves its place in the queue, and its late
reply is dropped when it comes, so the connection never gets out of step.

It speaks to the server of a redis-py client (host and port or Unix socket, database, credentials);
TLS connections are left to redis-py (`for_client` returns None). Errors are redis-py's exception
types, so callers handle both the same way.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int

REPLY_TIMEOUT_SECONDS = 0.25


def encode(args: Sequence[Arg]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@runtime_checkable
class _Writer(Protocol):
    """What we use of a transport (uvloop's are not subclasses of asyncio.Transport)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[object]] = deque()
        self.transport: _Writer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, _Writer):
            raise TypeError(f"not a stream transport: {transport!r}")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():
                continue  # its caller gave up; the reply is dropped, the order kept
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
                future.set_exception(error)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError(f"redis connection lost: {exc!r}"))


class RedisPipe:
    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_seconds: float = REPLY_TIMEOUT_SECONDS,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._db, self._username, self._password = db, username, password
        self._timeout = timeout_seconds
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # a connection belongs to one loop
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def for_client(cls, client: Redis) -> "RedisPipe | None":
        """A pipe to the server of `client`, with its credentials and timeout; None for a kind of
        connection it does not speak (TLS)."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        return cls(
            host=kwargs.get("host", "localhost"),
            port=int(kwargs.get("port", 6379)),
            path=kwargs.get("path"),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            timeout_seconds=float(kwargs.get("socket_timeout") or REPLY_TIMEOUT_SECONDS),
        )

    async def call(self, *args: Arg) -> object:
        """Send one command and return its reply. Raises redis-py's ConnectionError, TimeoutError
        (after `timeout_seconds`), ResponseError or NoScriptError."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None or self._loop is not asyncio.get_running_loop():
            protocol = await self._connect()
        transport = protocol.transport
        if transport is None:
            raise RedisConnectionError("redis connection lost")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        transport.write(encode(args))
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise RedisTimeoutError(f"no reply from redis within {self._timeout}s") from None

    async def evalsha(self, sha: str, script: bytes, keys: Sequence[Arg], args: Sequence[Arg]) -> object:
        """EVALSHA, and EVAL once when the server no longer knows the script (restarted, flushed)."""
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.call(b"EVAL", script, len(keys), *keys, *args)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (tests): start afresh
            self._protocol, self._loop, self._connecting = None, loop, asyncio.Lock()
        assert self._connecting is not None
        async with self._connecting:
            if self._protocol is not None and self._protocol.transport is not None:
                return self._protocol
            try:
                async with asyncio.timeout(self._timeout):
                    if self._path is not None:
                        _, protocol = await loop.create_unix_connection(_Protocol, self._path)
                    else:
                        _, protocol = await loop.create_connection(_Protocol, self._host, self._port)
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to redis: {exc!r}") from exc
            self._protocol = protocol
            try:
                if self._password is not None:
                    credentials = [self._username, self._password] if self._username else [self._password]
                    await self.call(b"AUTH", *credentials)
                if self._db:
                    await self.call(b"SELECT", self._db)
            except BaseException:
                self.close()
                raise
            return protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(RuntimeError):
                protocol.transport.close()
