"""A circuit breaker, so a dead or hanging Redis costs callers nothing while it stays down.

Closed: calls go through and consecutive failures are counted. After `failure_threshold` of them the
breaker opens: calls are refused at once, without touching the network, for `reset_seconds`. Then it
is half-open: one call goes through as a probe; its success closes the breaker, its failure opens it
for another cool-down. Every other call stays refused while the probe is in flight.
"""

import time
from collections.abc import Callable
from enum import StrEnum

import structlog
from prometheus_client import Gauge

log = structlog.get_logger(__name__)

BREAKER_OPEN = Gauge(
    "huleedu_cache_breaker_open",
    "1 while a circuit breaker refuses calls to Redis (open, or half-open waiting for its probe), else 0.",
    ["breaker"],
)


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls are refused until the cool-down has passed
    HALF_OPEN = "half_open"  # the next call (or the one in flight) is a probe


class CircuitBreaker:
    """Not thread-safe; meant for one event loop. `name` only labels the log lines."""

    def __init__(
        self,
        name: str = "redis",
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self.name = name
        self._threshold = failure_threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None  # None while closed
        self._probing = False
        BREAKER_OPEN.labels(name).set(0)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self._reset_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go to the network now. True for a half-open probe, which restarts the
        cool-down: a probe that never reports back (cancelled) cannot block the next one for long."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self._reset_seconds:
            return False
        self._opened_at = now
        self._probing = True
        return True

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.info("circuit closed", breaker=self.name)
            BREAKER_OPEN.labels(self.name).set(0)
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or (self._opened_at is None and self._failures >= self._threshold):
            if self._opened_at is None:
                log.warning("circuit opened", breaker=self.name, failures=self._failures)
                BREAKER_OPEN.labels(self.name).set(1)
            self._opened_at = self._clock()
            self._probing = False
