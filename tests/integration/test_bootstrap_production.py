"""The production wiring: with every URL set, bootstrap picks PostgreSQL, Redis and Kafka, and the
app's health check reaches all three; closing the adapters releases them. The relay wake-up it picks
crosses processes through PostgreSQL."""

import asyncio
import uuid

import httpx
import pytest

from huleedu.contracts.enums import EssayStatus
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.events import SpellcheckCompletedV1
from huleedu.messaging.outbox import Outbox
from huleedu.platform.bootstrap import ServiceUnit, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.settings import Settings
from support.servers import TansuBroker


@pytest.fixture
def production(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> Settings:
    return Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
    )


async def test_every_url_set_selects_the_production_adapters_and_health_reaches_them(
    production: Settings,
) -> None:
    async with build_adapters(production) as adapters:
        app = create_app([ServiceUnit("probe")], adapters)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as client:
            response = await client.get("/healthz")
        await adapters.cache.set("probe", b"1", 60)
        cached = await adapters.cache.get("probe")

    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert {name: check["adapter"] for name, check in checks.items()} == {
        "database": "postgresql",
        "cache": "RedisCache",
        "bus": "KafkaBus",
    }
    assert {check["status"] for check in checks.values()} == {"ok"}
    assert cached == b"1"


async def test_health_names_the_broker_when_it_is_down(production: Settings, broker: TansuBroker) -> None:
    async with build_adapters(production) as adapters:
        app = create_app([ServiceUnit("probe")], adapters)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as client:
            broker.stop()
            try:
                response = await client.get("/healthz")
            finally:
                broker.start()

    assert response.status_code == 503
    assert response.json()["checks"]["bus"]["status"] == "error"
    assert response.json()["checks"]["database"]["status"] == "ok"


async def test_the_production_wake_up_carries_a_commit_to_a_relay_of_another_process(
    production: Settings,
) -> None:
    service = f"svc_{uuid.uuid4().hex[:10]}"
    event = EventEnvelope[SpellcheckCompletedV1](
        event_type="probe",
        source_service=service,
        data=SpellcheckCompletedV1(batch_id="b-1", essay_id="e-1", status=EssayStatus.COMPLETED),
    )
    woken = asyncio.Event()
    async with (
        build_adapters(production) as relaying,
        build_adapters(production) as writing,
        relaying.relay_wakeup.listening([service], woken.set) as listening,
    ):
        await asyncio.wait_for(listening.wait(), 15)
        woken.clear()  # a (re)connected listener wakes its relay once, to catch up
        async with writing.sessions() as session:
            await Outbox(service, writing.relay_wakeup).add(session, event, "huleedu.probe.v1", "b-1")
            await session.commit()
        await asyncio.wait_for(woken.wait(), 15)

    assert woken.is_set()
