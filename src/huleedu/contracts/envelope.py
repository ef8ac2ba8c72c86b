"""The event envelope every record carries (CONTRACTS.md, "Event envelope")."""

from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from pydantic import Field

from huleedu.contracts.base import WireModel
from huleedu.contracts.errors import utc_now

T = TypeVar("T", bound=WireModel)

SCHEMA_VERSION = 1


class EventEnvelope(WireModel, Generic[T]):
    event_id: UUID = Field(default_factory=uuid4)
    event_type: str = Field(min_length=1, description="the topic name of the event")
    event_timestamp: datetime = Field(default_factory=utc_now)
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
