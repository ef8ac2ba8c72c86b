"""Alembic migrations of every service's tables, one history, runnable from an installed package.

No alembic.ini is needed: the configuration is built here, with the script folder being this package.
`upgrade(url)` is for sync callers (the CLI, a session fixture); `upgrade_async(url)` for code already
inside an event loop. Both run Alembic in a worker thread, because env.py drives its own event loop.
"""

import asyncio
import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from huleedu.storage.metadata import metadata

SCRIPT_LOCATION = Path(__file__).parent

# Modules whose import registers tables into `metadata`. A table belongs here the day its migration
# is written, so the schema-drift test compares the migrated database with every registered table.
TABLE_MODULES = (
    "huleedu.messaging.tables",
    "huleedu.messaging.email_queue",
    "huleedu.result_aggregator.tables",
    "huleedu.content.tables",
    "huleedu.intake.tables",
    "huleedu.essay_lifecycle.tables",
    "huleedu.cj_assessment.tables",
)


def target_metadata() -> MetaData:
    """The MetaData holding every migrated table (for autogenerate and drift checks)."""
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return metadata


def alembic_config(url: str) -> Config:
    """An Alembic Config for the database at `url` (sqlite+aiosqlite:// or postgresql+asyncpg://)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # Passed as an attribute, not a main option: the ini interpolation would choke on '%' in passwords.
    config.attributes["url"] = url
    return config


def _prepare(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        # A fresh embedded install has no data folder yet; migrating is what creates the database.
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _in_thread(url: str, revision: str, *, down: bool) -> None:
    _prepare(url)
    config = alembic_config(url)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool:
        run = command.downgrade if down else command.upgrade
        pool.submit(run, config, revision).result()


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision`. Blocks; safe to call from any thread."""
    _in_thread(url, revision, down=False)


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at `url` to `revision` (default: drop everything migrated)."""
    _in_thread(url, revision, down=True)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """`upgrade` for callers inside a running event loop; the loop keeps running meanwhile."""
    await asyncio.to_thread(upgrade, url, revision)


async def downgrade_async(url: str, revision: str = "base") -> None:
    await asyncio.to_thread(downgrade, url, revision)


def head_revision() -> str | None:
    """The newest revision of the history (what `upgrade(url)` brings a database to)."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
