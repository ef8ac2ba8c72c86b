"""Reading topics in a test as an outside observer would: a consumer group of its own from the
earliest offset, every record decoded (wait for what should arrive with `support.waiting`)."""

import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from huleedu.messaging.bus import Record
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.settings import Settings


class TopicReader:
    """Collects the envelopes (as JSON data) of `topics`; `envelopes[topic]` in arrival order."""

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        self.envelopes: dict[str, list[dict[str, Any]]] = {topic: [] for topic in topics}
        self.undecodable: list[Record] = []
        self._bus = KafkaBus(settings)
        self._bus.subscribe(f"reader-{uuid.uuid4().hex[:8]}", list(topics), self._collect)

    async def _collect(self, records: Sequence[Record]) -> None:
        for record in records:
            try:
                self.envelopes[record.topic].append(orjson.loads(record.value or b""))
            except orjson.JSONDecodeError:
                self.undecodable.append(record)

    async def start(self) -> None:
        await self._bus.start()

    async def stop(self) -> None:
        await self._bus.stop()

    def of_batch(self, topic: str, batch_id: str) -> list[dict[str, Any]]:
        return [
            envelope for envelope in self.envelopes[topic] if envelope["data"].get("batch_id") == batch_id
        ]
