"""The base of every wire model: strict about what it needs, tolerant of what it does not know."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class WireModel(BaseModel):
    """Unknown extra fields are ignored (forward compatibility) and never re-emitted, so a
    producer sends exactly the documented fields."""

    model_config = ConfigDict(extra="ignore", frozen=True, use_enum_values=False)


def as_utc(value: datetime) -> datetime:
    """Timestamps on the wire are UTC: a naive one is read as UTC, an offset one converted.

    Storage refuses naive datetimes, so this has to happen at the boundary, not in a handler.
    """
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Every timestamp field of the wire: ISO-8601, always timezone-aware UTC once parsed.
Timestamp = Annotated[datetime, AfterValidator(as_utc)]
