"""Every metric the alerting rules and the dashboard of deploy/ name is in a live `/metrics` scrape of
the services, right after they started and before any event: series that only traffic would create
are created at start with zero values, so a dashboard shows them and `increase()` sees the first
event. Every service runs on PostgreSQL, Redis and the broker, as in production."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from huleedu.platform.runner import SERVICES
from support.deploy_files import alert_rules, dashboard_exprs, metric_names
from support.running import production_settings, running
from support.servers import TansuBroker


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker of this test alone: consumer groups of the services (named after them, whatever the
    topic prefix) left by earlier tests cannot slow its members' joins."""
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


async def test_every_metric_of_the_rules_and_the_dashboard_is_exported_by_the_running_services(
    postgres_url: str, redis_url: str, redis_prefix: str, private_broker: TansuBroker, topic_prefix: str
) -> None:
    settings = production_settings(
        postgres_url, redis_url, redis_prefix, private_broker.bootstrap, topic_prefix
    )
    services = list(SERVICES)
    used = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    used |= {name for expr in dashboard_exprs() for name in metric_names(expr)}

    async with running(settings, services) as (_adapters, client):
        # The HTTP histogram has series once the process answered a request; for Prometheus the
        # first scrape is one, so its second scrape has them.
        assert (await client.get("/metrics")).status_code == 200
        scrape = await client.get("/metrics")
    exported = {
        sample.name for family in text_string_to_metric_families(scrape.text) for sample in family.samples
    }

    assert len(used) >= 20
    assert sorted(used - exported) == []
