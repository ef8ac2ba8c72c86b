"""Turning consumed records into typed envelopes, and the reasons when that is impossible."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from pydantic import ValidationError

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import envelope_of
from huleedu.messaging.bus import Record
from huleedu.messaging.errors import PoisonEvent


@dataclass(frozen=True, slots=True)
class EventMeta:
    """What a handler may know about an event besides its data."""

    event_id: UUID
    event_type: str
    event_timestamp: datetime
    source_service: str
    correlation_id: UUID
    topic: str
    partition: int
    offset: int
    key: str | None
    metadata: dict[str, Any] | None


def validation_reason(error: ValidationError) -> str:
    """A readable, field-level summary: `data.essay_ids: List should have at least 1 item`."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "<root>"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def _unstorable_string(value: object) -> str | None:
    """The path of the first string (key or value) holding NUL, which no database of ours stores."""
    pending: list[tuple[str, object]] = [("<root>", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return path
                pending.append((key if path == "<root>" else f"{path}.{key}", child))
        elif isinstance(item, list):
            pending.extend((f"{path}.{index}", child) for index, child in enumerate(item))
    return None


def decode(record: Record, model: type[WireModel]) -> tuple[WireModel, EventMeta]:
    """Decode a record's value as an envelope of `model`. Raises PoisonEvent with the reason."""
    if record.value is None:
        raise PoisonEvent("record has no value", error_type="empty_record")
    try:
        raw = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        raise PoisonEvent(f"value is not JSON: {exc}", error_type="undecodable") from exc
    if not isinstance(raw, dict):
        raise PoisonEvent("value is not a JSON object", error_type="invalid_envelope")
    # JSON can carry NUL only escaped; the cheap byte test spares the walk for every normal record.
    if b"\\u0000" in record.value and (where := _unstorable_string(raw)) is not None:
        raise PoisonEvent(f"{where}: contains a NUL character (U+0000)", error_type="invalid_event")
    try:
        envelope = envelope_of(model).model_validate(raw)
    except ValidationError as exc:
        raise PoisonEvent(validation_reason(exc), error_type="invalid_event") from exc
    meta = EventMeta(
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        event_timestamp=envelope.event_timestamp,
        source_service=envelope.source_service,
        correlation_id=envelope.correlation_id,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode(errors="replace") if record.key is not None else None,
        metadata=envelope.metadata,
    )
    return envelope.data, meta
