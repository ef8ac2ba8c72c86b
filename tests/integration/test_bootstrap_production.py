"""The production wiring: with every URL set, bootstrap picks PostgreSQL, Redis and Kafka, and the
app's health check reaches all three; closing the adapters releases them."""

import httpx
import pytest

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
