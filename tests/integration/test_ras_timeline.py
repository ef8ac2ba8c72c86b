"""A batch's timeline on PostgreSQL: every event that reached RAS, once, oldest first, with its
source, its correlation id and the lag of each hop; bounded pages; the deadline's own event."""

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from support import ras_events as ev
from support.ras_app import RasProcess


def batch_life(ras: RasProcess, batch_id: str, at: datetime) -> list[EventEnvelope[WireModel]]:
    topics = ras.adapters.topics
    essays = [f"{batch_id}-e{i}" for i in range(3)]
    correlation = uuid.uuid4()
    return [
        ev.registration(topics, batch_id, essays, registered_at=at, correlation_id=correlation),
        *(
            ev.spellcheck_result(topics, batch_id, essay, at=at + timedelta(seconds=10 * (i + 1)))
            for i, essay in enumerate(essays)
        ),
        ev.cj_result(topics, batch_id, essays, at=at + timedelta(minutes=5)),
    ]


async def timeline(ras: RasProcess, batch_id: str, query: str = "") -> dict[str, object]:
    response = await ras.client.get(f"/internal/v1/batches/{batch_id}/timeline{query}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_every_event_of_a_batch_is_listed_once_in_order_with_its_source_and_lag(
    ras: RasProcess,
) -> None:
    batch_id = f"t-{uuid.uuid4().hex[:8]}"
    at = datetime.now(UTC) - timedelta(minutes=10)
    life = batch_life(ras, batch_id, at)
    delivered = [*life, life[1], life[4]]  # two redeliveries
    random.Random(3).shuffle(delivered)
    before = datetime.now(UTC)
    await ras.feed(delivered, chunk=2)

    body = await timeline(ras, batch_id)

    assert body["registered"] is True
    assert body["results_ready_at"] is not None
    assert body["pagination"] == {"limit": 500, "offset": 0, "total": len(life)}
    events = body["events"]
    assert isinstance(events, list)
    assert [e["event_id"] for e in events] == [str(item.event_id) for item in life]  # by the producers' time
    assert [e["source_service"] for e in events] == [
        "intake_service",
        "spellcheck_service",
        "spellcheck_service",
        "spellcheck_service",
        "cj_assessment_service",
    ]
    assert [e["event_type"] for e in events] == [item.event_type for item in life]
    assert [e["correlation_id"] for e in events] == [str(item.correlation_id) for item in life]
    for event, item in zip(events, life, strict=True):
        produced = datetime.fromisoformat(event["produced_at"])
        received = datetime.fromisoformat(event["received_at"])
        assert produced == item.event_timestamp
        assert received >= before
        assert event["lag_seconds"] == pytest.approx((received - produced).total_seconds(), abs=1e-5)
    assert [e["since_previous_seconds"] for e in events] == [None, 10.0, 10.0, 10.0, 270.0]


async def test_a_page_of_the_timeline_knows_the_event_before_it(ras: RasProcess) -> None:
    batch_id = f"t-{uuid.uuid4().hex[:8]}"
    await ras.feed(batch_life(ras, batch_id, datetime.now(UTC)))

    page = await timeline(ras, batch_id, "?limit=2&offset=2")

    events = page["events"]
    assert isinstance(events, list)
    assert len(events) == 2
    assert [e["since_previous_seconds"] for e in events] == [10.0, 10.0]
    assert page["pagination"] == {"limit": 2, "offset": 2, "total": 5}


async def test_results_of_a_batch_not_registered_yet_have_a_timeline_and_an_unknown_batch_is_a_404(
    ras: RasProcess,
) -> None:
    batch_id = f"t-{uuid.uuid4().hex[:8]}"
    await ras.feed([ev.spellcheck_result(ras.adapters.topics, batch_id, f"{batch_id}-e0")])

    body = await timeline(ras, batch_id)
    assert (body["registered"], body["results_ready_at"]) == (False, None)
    assert body["pagination"] == {"limit": 500, "offset": 0, "total": 1}

    missing = await ras.client.get("/internal/v1/batches/no-such-batch/timeline")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    for query in ("?limit=0", "?limit=1001", "?offset=-1", "?offset=1000001"):
        refused = await ras.client.get(f"/internal/v1/batches/{batch_id}/timeline{query}")
        assert refused.status_code == 422, query


async def test_the_deadline_shows_in_the_timeline_as_an_event_of_ras_itself(ras: RasProcess) -> None:
    batch_id = f"t-{uuid.uuid4().hex[:8]}"
    registered = datetime.now(UTC) - timedelta(hours=3)  # past the default 2 h deadline
    await ras.feed(
        [ev.registration(ras.adapters.topics, batch_id, [f"{batch_id}-e0"], registered_at=registered)]
    )
    await ras.reach_deadlines()

    events = (await timeline(ras, batch_id))["events"]

    assert isinstance(events, list)
    assert [(e["event_type"], e["source_service"]) for e in events] == [
        (ras.adapters.topics.batch_essays_registered, "intake_service"),
        (ras.adapters.topics.batch_deadline_reached, "result_aggregator_service"),
    ]
    assert events[0]["correlation_id"] == events[1]["correlation_id"]  # the batch's own
