"""How handling can fail, and what the consumer does about it.

    HandlingError
    ├── TransientError   retry with capped backoff; the offset is not committed
    └── PoisonEvent      to `<topic>.dlq` with the reason; the offset is committed

Any other exception from a handler is retried a bounded number of times, then treated as poison:
a bug must not stop a partition forever, and must not lose the event either (the DLQ keeps it).
"""


class HandlingError(Exception):
    """Base of the errors a handler may raise on purpose."""


class TransientError(HandlingError):
    """The world is briefly broken (database, cache or broker unreachable): try again later."""


class PoisonEvent(HandlingError):
    """The event itself can never be handled (undecodable, invalid envelope or model)."""

    def __init__(self, reason: str, *, error_type: str = "invalid_event") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


class PublishError(Exception):
    """The broker did not acknowledge a record."""

    def __init__(self, message: str, *, broker_unavailable: bool) -> None:
        super().__init__(message)
        self.broker_unavailable = broker_unavailable
