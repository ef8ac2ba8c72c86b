"""The event envelope every record carries (docs/contracts.md, "The event envelope")."""

import functools
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from pydantic import Field

from huleedu.contracts.base import Timestamp, WireModel
from huleedu.contracts.errors import utc_now

T = TypeVar("T", bound=WireModel)

SCHEMA_VERSION = 1


class EventEnvelope(WireModel, Generic[T]):
    event_id: UUID = Field(default_factory=uuid4)
    event_type: str = Field(min_length=1, description="the topic name of the event")
    event_timestamp: Timestamp = Field(default_factory=utc_now)
    source_service: str = Field(min_length=1)
    schema_version: int = SCHEMA_VERSION
    correlation_id: UUID = Field(default_factory=uuid4)
    data_schema_uri: str | None = None
    data: T
    metadata: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def record_headers(self) -> dict[str, bytes]:
        """Kafka headers duplicating the envelope's routing fields (consumers must not rely on them)."""
        return {
            "event_id": str(self.event_id).encode(),
            "event_type": self.event_type.encode(),
            "correlation_id": str(self.correlation_id).encode(),
            "source_service": self.source_service.encode(),
            "schema_version": str(self.schema_version).encode(),
            "content-type": b"application/json",
        }


@functools.cache
def envelope_of(model: type[T]) -> type[EventEnvelope[T]]:
    """`EventEnvelope[model]`, built once per process. Pydantic holds parametrised models only
    weakly: one that nothing else holds is collected, and built again (milliseconds) on its next use,
    in the middle of handling an event."""
    return EventEnvelope[model]  # type: ignore[valid-type]


def wrap(
    data: T,
    *,
    topic: str,
    source_service: str,
    correlation_id: UUID | None = None,
    event_timestamp: datetime | None = None,
) -> "EventEnvelope[T]":
    """The envelope of `data`, parametrised by its concrete model so it serialises every field."""
    return envelope_of(type(data))(
        event_type=topic,
        source_service=source_service,
        correlation_id=correlation_id or uuid4(),
        event_timestamp=event_timestamp or utc_now(),
        data=data,
    )
