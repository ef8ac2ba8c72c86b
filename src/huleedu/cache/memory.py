"""`MemoryCache`: the cache of the embedded mode, with Redis's semantics in one process's memory.

Every method completes without awaiting anything, so each is atomic on the event loop, as a Redis
command or MULTI/EXEC is. Expired entries are dropped when read and swept as the map grows.
"""

import time
from collections.abc import Callable, Sequence

from huleedu.cache.cache import CacheUnavailable, check_ttl

_FIRST_SWEEP_SIZE = 1024


class MemoryCache:
    """Never raises CacheUnavailable for want of a server; it does for what Redis would refuse (a
    counter that holds something other than an integer)."""

    def __init__(self, *, key_prefix: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self._prefix = key_prefix
        self._clock = clock
        self._entries: dict[str, tuple[bytes, float | None]] = {}  # key -> (value, expires_at)
        self._sweep_at_size = _FIRST_SWEEP_SIZE

    async def get(self, key: str) -> bytes | None:
        return self._read(self._prefix + key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._read(self._prefix + key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        check_ttl(ttl_seconds)
        self._write(self._prefix + key, value, self._clock() + ttl_seconds)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(self._prefix + key, None)

    async def incr(self, *keys: str, ttl_seconds: int | None = None) -> list[int]:
        if ttl_seconds is not None:
            check_ttl(ttl_seconds)
        full_keys = [self._prefix + key for key in keys]
        # Validate every counter before changing any: all together or none.
        current = [_as_counter(key, self._read(key)) for key in full_keys]
        now = self._clock()
        results: list[int] = []
        for key, value in zip(full_keys, current, strict=True):
            value += 1
            if ttl_seconds is not None:
                expires_at: float | None = now + ttl_seconds
            else:
                expires_at = self._entries[key][1] if key in self._entries else None
            self._write(key, str(value).encode(), expires_at)
            results.append(value)
        return results

    async def get_versioned(self, version_key: str, data_key_prefix: str) -> tuple[int, bytes | None]:
        generation = _as_counter(version_key, self._read(self._prefix + version_key))
        return generation, self._read(f"{self._prefix}{data_key_prefix}{generation}")

    async def peek_versioned(self, version_key: str, data_key_prefix: str) -> tuple[int, bool]:
        generation, value = await self.get_versioned(version_key, data_key_prefix)
        return generation, value is not None

    async def ping(self) -> None:
        return None

    def _read(self, full_key: str) -> bytes | None:
        entry = self._entries.get(full_key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= self._clock():
            del self._entries[full_key]
            return None
        return value

    def _write(self, full_key: str, value: bytes, expires_at: float | None) -> None:
        self._entries[full_key] = (value, expires_at)
        if len(self._entries) >= self._sweep_at_size:
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock()
        expired = [
            key
            for key, (_, expires_at) in self._entries.items()
            if expires_at is not None and expires_at <= now
        ]
        for key in expired:
            del self._entries[key]
        # Doubling keeps the sweeps' cost constant per write, however large the map grows.
        self._sweep_at_size = max(_FIRST_SWEEP_SIZE, 2 * len(self._entries))


def _as_counter(full_key: str, value: bytes | None) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise CacheUnavailable(f"{full_key!r} holds a value that is not an integer") from None
