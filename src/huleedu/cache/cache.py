"""The cache port: the few operations services need of Redis, and the one error they must handle.

Every method raises `CacheUnavailable` (and nothing else) when the cache cannot answer, so a caller
falls back to the database with one `except`. Two adapters pass one contract suite: `RedisCache` and
`MemoryCache` (embedded mode).
"""

from collections.abc import Sequence
from typing import Protocol


class CacheUnavailable(Exception):
    """The cache did not answer (error, timeout, or circuit open): read the database instead."""


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, or None when missing or expired."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One value (or None) per key, in the order of `keys`, in one round trip."""

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Store `value`, replacing any previous one; it expires after `ttl_seconds` (>= 1)."""

    async def delete(self, *keys: str) -> None:
        """Remove the keys; missing ones are ignored."""

    async def incr(self, *keys: str, ttl_seconds: int | None = None) -> list[int]:
        """Increment every counter by one in one atomic step (generation counters): no reader sees
        some incremented and others not. A missing counter counts from 0. Returns the new values in
        the order of `keys`.

        With `ttl_seconds` each counter (re)starts that expiry; choose it far longer than the TTL of
        the data the counters version, or a reset counter could meet an old entry again."""

    async def get_versioned(self, version_key: str, data_key_prefix: str) -> tuple[int, bytes | None]:
        """Read generation counter `version_key` (0 when missing) and the value stored at
        `data_key_prefix + str(generation)`, atomically, in one round trip.

        A reader that misses stores what it read from the database under that same generation; an
        invalidation that raced it has already moved the counter on, so the late write is never read.
        """

    async def peek_versioned(self, version_key: str, data_key_prefix: str) -> tuple[int, bool]:
        """As `get_versioned`, but whether the entry exists instead of the entry: for a reader that
        will not use it (a fresh read), and stores its own answer only where none is stored."""

    async def ping(self) -> None:
        """Return if the cache answers (health checks)."""


def check_ttl(ttl_seconds: int) -> None:
    """Both adapters refuse a TTL Redis would refuse, as a ValueError: a bug, not an outage."""
    if ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be at least 1, got {ttl_seconds}")
