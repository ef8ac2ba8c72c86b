"""Idempotent consumption, in two layers.

The fast path is an `IdempotencyGuard` (Redis `SET NX` of `{service}:idempotency:{event_id}`: a short
"processing" lease, then "done" for 24 h once the handler's transaction committed). The guarantee is
the `processed_events` table, written in the handler's own transaction: an event whose id is already
there is skipped even if Redis forgot it, was down, or the process died between commit and "done".
Adapters: `RedisIdempotency` and `MemoryIdempotency` (embedded mode).
"""

import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Protocol

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from huleedu.cache.breaker import CircuitBreaker

log = structlog.get_logger(__name__)


class Claim(StrEnum):
    CLAIMED = "claimed"  # ours to process now
    DONE = "done"  # processed before: skip
    BUSY = "busy"  # another consumer holds the lease: try again later


class IdempotencyGuard(Protocol):
    async def claim(self, event_ids: Sequence[str]) -> dict[str, Claim]:
        """Take a processing lease on each id not yet done. Fails open: on a cache error every id
        is CLAIMED (the database layer still prevents double application)."""

    async def mark_done(self, event_ids: Sequence[str]) -> None:
        """Record ids as done (24 h TTL). Call only after the handler's transaction committed."""

    async def release(self, event_ids: Sequence[str]) -> None:
        """Drop leases of ids whose handling failed, so a redelivery retries them at once."""


# --- adapters ---

FAIL_OPEN = Counter(
    "huleedu_idempotency_fail_open_total",
    "Event ids the idempotency guard let through unchecked (claim) or could not record (mark_done,"
    " release) because Redis did not answer; the processed_events table still deduplicates them.",
    ["service", "op"],
)

_PROCESSING = b"processing"
_DONE = b"done"

# Scripts rather than pipelines: one command of N keys costs the client far less than N commands
# (the guard runs for every event), and a script is atomic, so no lease can vanish between our
# SET NX and the read of its value.

# Lease every key not yet taken; answer 1 for ours, else the value found ("processing" or "done").
_CLAIM = """
local answers = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'EX', ARGV[2]) then
    answers[i] = 1
  else
    answers[i] = redis.call('GET', key)
  end
end
return answers
"""

_MARK_DONE = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
end
return #KEYS
"""

# Drop only leases: a key already marked "done" by a handler that committed must survive a release.
_RELEASE_LEASES = """
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"""


class MemoryIdempotency:
    """The guard of the embedded mode: one per service, in one process's memory.

    Holds at most `max_entries` ids, forgetting the oldest first; that only sends an old duplicate
    on to the database layer, which skips it."""

    def __init__(
        self,
        *,
        lease_seconds: int = 60,
        ttl_seconds: int = 24 * 3600,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lease_seconds = lease_seconds
        self._ttl_seconds = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        # event id -> (state, expires_at), oldest write first (every write re-inserts at the end)
        self._entries: dict[str, tuple[bytes, float]] = {}

    async def claim(self, event_ids: Sequence[str]) -> dict[str, Claim]:
        now = self._clock()
        claims: dict[str, Claim] = {}
        for event_id in dict.fromkeys(event_ids):
            state = self._state(event_id, now)
            if state is None:
                self._write(event_id, _PROCESSING, now + self._lease_seconds)
                claims[event_id] = Claim.CLAIMED
            else:
                claims[event_id] = Claim.DONE if state == _DONE else Claim.BUSY
        return claims

    async def mark_done(self, event_ids: Sequence[str]) -> None:
        expires_at = self._clock() + self._ttl_seconds
        for event_id in event_ids:
            self._write(event_id, _DONE, expires_at)

    async def release(self, event_ids: Sequence[str]) -> None:
        now = self._clock()
        for event_id in event_ids:
            if self._state(event_id, now) == _PROCESSING:
                del self._entries[event_id]

    def _state(self, event_id: str, now: float) -> bytes | None:
        entry = self._entries.get(event_id)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[event_id]
            return None
        return entry[0]

    def _write(self, event_id: str, state: bytes, expires_at: float) -> None:
        self._entries.pop(event_id, None)
        self._entries[event_id] = (state, expires_at)
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]


class RedisIdempotency:
    """The guard on Redis, keys `{key_prefix}{service}:idempotency:{event_id}`.

    Fails open: when Redis errs, times out or its circuit is open, `claim` answers CLAIMED for every
    id and `mark_done`/`release` do nothing; each such id is counted, and an outage is logged once
    when it begins and once when it ends. Never raises for Redis's sake.
    """

    def __init__(
        self,
        client: Redis,
        service: str,
        *,
        key_prefix: str = "",
        lease_seconds: int = 60,
        ttl_seconds: int = 24 * 3600,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._client = client
        self.service = service
        self._key_prefix = f"{key_prefix}{service}:idempotency:"
        self._lease_seconds = lease_seconds
        self._ttl_seconds = ttl_seconds
        self._breaker = breaker if breaker is not None else CircuitBreaker(f"{service}-idempotency")
        self._claim = client.register_script(_CLAIM)
        self._mark_done = client.register_script(_MARK_DONE)
        self._release_leases = client.register_script(_RELEASE_LEASES)
        self._outage = False
        for op in ("claim", "mark_done", "release"):
            FAIL_OPEN.labels(service, op)

    def key(self, event_id: str) -> str:
        return self._key_prefix + event_id

    async def claim(self, event_ids: Sequence[str]) -> dict[str, Claim]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}
        try:
            self._check_breaker()
            answers = await self._claim(
                keys=[self.key(event_id) for event_id in ids], args=[_PROCESSING, self._lease_seconds]
            )
        except _REDIS_FAILURES as exc:
            self._failed("claim", exc, len(ids))
            return dict.fromkeys(ids, Claim.CLAIMED)
        self._answered()
        return {event_id: _as_claim(answer) for event_id, answer in zip(ids, answers, strict=True)}

    async def mark_done(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        try:
            self._check_breaker()
            await self._mark_done(
                keys=[self.key(event_id) for event_id in event_ids], args=[_DONE, self._ttl_seconds]
            )
        except _REDIS_FAILURES as exc:
            self._failed("mark_done", exc, len(event_ids))
            return
        self._answered()

    async def release(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        try:
            self._check_breaker()
            await self._release_leases(
                keys=[self.key(event_id) for event_id in event_ids], args=[_PROCESSING]
            )
        except _REDIS_FAILURES as exc:
            self._failed("release", exc, len(event_ids))
            return
        self._answered()

    def _check_breaker(self) -> None:
        if not self._breaker.allow():
            raise _CircuitOpen

    def _failed(self, op: str, exc: Exception, count: int) -> None:
        if not isinstance(exc, _CircuitOpen):
            self._breaker.record_failure()
        FAIL_OPEN.labels(self.service, op).inc(count)
        if not self._outage:
            self._outage = True
            log.warning(
                "idempotency cache unavailable; failing open", service=self.service, op=op, error=repr(exc)
            )

    def _answered(self) -> None:
        self._breaker.record_success()
        if self._outage:
            self._outage = False
            log.info("idempotency cache answers again", service=self.service)


def _as_claim(answer: int | bytes) -> Claim:
    if answer == 1:
        return Claim.CLAIMED
    return Claim.DONE if answer == _DONE else Claim.BUSY


class _CircuitOpen(Exception):
    """Raised internally when the breaker refuses a call, to share the fail-open path."""


_REDIS_FAILURES = (RedisError, OSError, TimeoutError, _CircuitOpen)
