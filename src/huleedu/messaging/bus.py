"""The event bus port: what every service needs of a broker, and nothing more.

Two adapters implement it and pass one contract suite: `InMemoryBus` (the embedded default) and
`KafkaBus` (aiokafka). Delivery is at-least-once: a batch's offsets are committed only after the
batch handler returned; a handler that raises gets the same records again after a capped backoff.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record, as the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)


def record_size(record: OutboundRecord) -> int:
    """Bytes of key, value and headers: what a broker's record size limit counts, near enough."""
    headers = sum(len(name.encode()) + len(value) for name, value in record.headers.items())
    return len(record.key or b"") + len(record.value) + headers


# None when the broker acknowledged the record, else why it did not.
PublishOutcome = Exception | None

# Called with records of one partition, in offset order. Returning commits them all.
BatchHandler = Callable[[Sequence[Record]], Awaitable[None]]


class EventBus(Protocol):
    async def start(self) -> None:
        """Connect and start every subscription made so far."""

    async def stop(self) -> None:
        """Let running handlers finish, commit what finished, disconnect. Idempotent."""

    async def publish(self, records: Sequence[OutboundRecord]) -> list[PublishOutcome]:
        """Send records in order and wait for the broker's acknowledgement of each.

        Returns one outcome per record (None = acknowledged). Never raises for a record's failure.
        """

    def subscribe(self, group: str, topics: Sequence[str], handler: BatchHandler) -> None:
        """Register a consumer in `group` for `topics`; it starts with `start()`."""

    async def ping(self) -> None:
        """Raise if the broker is unreachable (health checks)."""
