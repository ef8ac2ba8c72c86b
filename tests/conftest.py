"""The test harness: real PostgreSQL, Redis and the Tansu broker, started or created per session.

A missing server stops the run with a message saying how to start it: integration tests never skip.
"""

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from huleedu.platform.logging import configure_logging
from huleedu.platform.settings import Settings
from support import servers
from support.services import migrated_sqlite

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        part = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if part in {"unit", "integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, part))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session, migrated to head, dropped at the end."""
    from huleedu.storage.migrations import upgrade

    try:
        url = servers.create_database()
    except servers.ServerMissing as exc:
        pytest.exit(str(exc), returncode=3)
    try:
        upgrade(url)
        yield url
    finally:
        servers.drop_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database that embedded-mode tests copy (`support.services.copy_sqlite`):
    copying takes milliseconds, migrating a second or two."""
    path = tmp_path_factory.mktemp("template") / "huleedu.sqlite"
    migrated_sqlite(path)
    return path


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        servers.check_redis(servers.REDIS_URL)
    except servers.ServerMissing as exc:
        pytest.exit(str(exc), returncode=3)
    return servers.REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key namespace of this test alone, deleted afterwards."""
    prefix = f"huleedu-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    servers.delete_keys(redis_url, prefix)


@pytest.fixture(scope="session")
def broker() -> Iterator[servers.TansuBroker]:
    """The Tansu broker, started once per session on a free port."""
    tansu = servers.TansuBroker()
    try:
        tansu.start()
    except servers.ServerMissing as exc:
        pytest.exit(str(exc), returncode=3)
    yield tansu
    tansu.stop()


@pytest.fixture
def kafka_bootstrap(broker: servers.TansuBroker) -> str:
    if not broker.is_running:  # a test that stopped it must not break the next one
        broker.start()
    return broker.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """Topics of one test never meet another test's records."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session", autouse=True)
def _quiet_logging() -> None:
    # Unconfigured structlog renders exceptions with rich: seconds per logged exception.
    configure_logging(Settings(log_level="WARNING"))


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """For tests of commands and logging set-up, which configure logging (onto a runner's captured
    stderr, say): the root logger and structlog are put back as they were afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_huleedu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell settings must not leak into tests.
    for name in list(os.environ):
        if name.startswith("HULEEDU_") and not name.startswith("HULEEDU_TEST_"):
            monkeypatch.delenv(name)
