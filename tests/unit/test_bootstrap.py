"""Bootstrap is the one place that chooses adapters: every URL unset gives the embedded adapter of
every port, every URL set the production one; nothing connects until used, and on exit the bus
stops before the clients close. The in-process RAS client reaches the app built over the adapters."""

from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi import APIRouter

from huleedu.cache.memory import MemoryCache
from huleedu.cache.redis_cache import RedisCache
from huleedu.content.client import HttpContentClient, LocalContentClient
from huleedu.dashboard.internal_client import UpstreamUnavailable
from huleedu.messaging.bus import Record
from huleedu.messaging.idempotency import MemoryIdempotency, RedisIdempotency
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.memory import InMemoryBus
from huleedu.messaging.wakeup import InProcessWakeup, PostgresWakeup
from huleedu.notifications.mailers import FolderMailer, SmtpMailer
from huleedu.platform.bootstrap import ServiceUnit, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.settings import Settings
from huleedu.websocket.backplane import MemoryBackplane
from huleedu.websocket.redis_backplane import RedisBackplane
from support.servers import free_port


def _embedded(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'huleedu.sqlite'}", mail_dir=tmp_path / "mail"
    )


def _production() -> Settings:
    """Every URL set, each pointing at a port nobody listens on: building must not notice."""
    nowhere = f"127.0.0.1:{free_port()}"
    return Settings(
        database_url=f"postgresql+asyncpg://huleedu@{nowhere}/huleedu",
        kafka_bootstrap_servers=nowhere,
        redis_url=f"redis://{nowhere}/0",
        smtp_host="127.0.0.1",
        content_url=f"http://{nowhere}",
        ras_url=f"http://{nowhere}",
        ras_timeout_seconds=2.0,
    )


async def test_every_url_unset_selects_the_embedded_adapter_of_every_port(tmp_path: Path) -> None:
    async with build_adapters(_embedded(tmp_path)) as adapters:
        assert isinstance(adapters.bus, InMemoryBus)
        assert isinstance(adapters.cache, MemoryCache)
        assert isinstance(adapters.guard_for("ras"), MemoryIdempotency)
        assert isinstance(adapters.backplane, MemoryBackplane)
        assert isinstance(adapters.relay_wakeup, InProcessWakeup)
        assert isinstance(adapters.mailer, FolderMailer)
        assert adapters.engine.dialect.name == "sqlite"
        async with adapters.sessions() as session:
            assert isinstance(adapters.content_for("huleedu-cj")(session), LocalContentClient)


async def test_every_url_set_selects_the_production_adapter_of_every_port_and_connects_nothing() -> None:
    async with build_adapters(_production()) as adapters:
        assert isinstance(adapters.bus, KafkaBus)
        assert isinstance(adapters.cache, RedisCache)
        assert isinstance(adapters.guard_for("ras"), RedisIdempotency)
        assert isinstance(adapters.backplane, RedisBackplane)
        assert isinstance(adapters.relay_wakeup, PostgresWakeup)
        assert isinstance(adapters.mailer, SmtpMailer)
        assert adapters.engine.dialect.name == "postgresql"
        async with adapters.sessions() as session:  # a session connects only when it runs SQL
            spellcheck = adapters.content_for("huleedu-spellcheck")
            cj = adapters.content_for("huleedu-cj")
            assert isinstance(spellcheck(session), HttpContentClient)
            assert spellcheck(session) is adapters.content_for("huleedu-spellcheck")(session)
            assert cj(session) is not spellcheck(session)  # each service calls with its own id
        with pytest.raises(UpstreamUnavailable):  # over the network, to `ras_url`, where nothing listens
            await adapters.ras.get("/batches/user/t", headers={})


async def test_the_in_process_ras_client_reaches_the_app_built_over_the_adapters(tmp_path: Path) -> None:
    router = APIRouter()

    @router.get("/internal/v1/probe")
    async def probe() -> dict[str, str]:
        return {"answered_by": "this process"}

    async with build_adapters(_embedded(tmp_path)) as adapters:
        with pytest.raises(RuntimeError, match="no HTTP app was built"):
            await adapters.ras.get("/probe", headers={})
        create_app([ServiceUnit("probe", routers=[router])], adapters)

        assert await adapters.ras.get("/probe", headers={}) == {"answered_by": "this process"}
        assert await adapters.ras.get("/no-such-route", headers={}) is None


async def test_on_exit_the_bus_stops_before_anything_else_closes(tmp_path: Path) -> None:
    seen: list[str] = []

    async def handle(_records: Sequence[Record]) -> None:
        return None

    async with build_adapters(_embedded(tmp_path)) as adapters:

        async def closing_client() -> None:
            # A running bus refuses new subscriptions: this one succeeds only once it stopped.
            try:
                adapters.bus.subscribe("late", ["huleedu.probe.v1"], handle)
            except RuntimeError:
                seen.append("the bus was still running")
            else:
                seen.append("the bus had stopped")

        adapters.on_close(closing_client)
        await adapters.bus.start()

    assert seen == ["the bus had stopped"]
