"""A token bucket for request starts, shared by every run of a process, with a hold for Retry-After.

One bucket per model endpoint and process: however many jobs judge at once, their requests together
start at most `per_second` per second on average and `burst` at once. A 429's Retry-After holds back
every request of the bucket until it has passed, not just the one that got it: the endpoint said
"not now" to the client, not to one request.
"""

import asyncio


class RateLimiter:
    """`per_second` None: no limit (only Retry-After holds). Waiters are served in arrival order."""

    def __init__(self, per_second: float | None, burst: int = 1) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._rate = per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated: float | None = None  # loop time of the last refill
        self._held_until = 0.0
        self._lock = asyncio.Lock()  # FIFO: the first to wait is the first to start

    async def acquire(self) -> None:
        """Wait until one request may start, and take its token."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            while True:
                now = loop.time()
                self._refill(now)
                wait = max(self._held_until - now, 0.0)
                if self._rate is not None and self._tokens < 1.0:
                    wait = max(wait, (1.0 - self._tokens) / self._rate)
                if wait <= 0.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep(wait)

    def hold_back(self, seconds: float) -> None:
        """No request starts in the next `seconds` (a 429's Retry-After)."""
        until = asyncio.get_running_loop().time() + seconds
        self._held_until = max(self._held_until, until)

    def _refill(self, now: float) -> None:
        if self._updated is not None and self._rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
