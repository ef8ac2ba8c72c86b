"""The structured error: every HTTP error body and every error stored in an event or a row."""

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from huleedu.contracts.base import Timestamp, WireModel
from huleedu.contracts.enums import ErrorCode


def utc_now() -> datetime:
    return datetime.now(UTC)


class ErrorDetail(WireModel):
    code: ErrorCode
    message: str = Field(min_length=1)
    correlation_id: UUID | None = None
    service: str
    operation: str
    timestamp: Timestamp = Field(default_factory=utc_now)
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(WireModel):
    """`{"error": {...}}` as returned by every HTTP error."""

    error: ErrorDetail
