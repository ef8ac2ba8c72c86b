"""A token bucket for request starts, shared by every run of a process, with a hold for Retry-After.

One bucket per model endpoint and process: however many jobs judge at once, their requests together
start at most `per_second` per second on average and `burst` at once. A 429's Retry-After holds back
every request of the bucket until it has passed, not just the one that got it: the endpoint said
"not now" to the client, not to one request.
"""

import asyncio
import math
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class RateLimiter:
    """`per_second` None: no limit (only Retry-After holds). Waiters are served in arrival order.
    `clock` and `sleep` are the event loop's unless a test drives time itself."""

    def __init__(
        self,
        per_second: float | None,
        burst: int = 1,
        *,
        clock: Clock = _loop_time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        # The cell-rate form of a token bucket: `_next` is when the bucket would next be empty-handed
        # at the steady rate; a start may run ahead of it by `burst - 1` intervals. Each start's time
        # is computed once and slept to, never re-derived from the clock, so float rounding cannot
        # leave a waiter asking for ever smaller sleeps.
        self._interval = None if per_second is None else 1.0 / per_second
        self._ahead = 0.0 if self._interval is None else (burst - 1) * self._interval
        self._next = -math.inf
        self._held_until = -math.inf
        self._lock = asyncio.Lock()  # FIFO: the first to wait is the first to start
        self._clock, self._sleep = clock, sleep

    async def acquire(self) -> None:
        """Wait until one request may start, and take its turn."""
        async with self._lock:
            start = self._clock()
            while True:
                due = max(start, self._held_until, self._next - self._ahead)
                if due <= start:
                    break
                await self._sleep(due - self._clock())
                start = due
                if self._held_until <= due:  # no Retry-After came in while we waited
                    break
            if self._interval is not None:
                self._next = max(self._next, start) + self._interval

    def hold_back(self, seconds: float) -> None:
        """No request starts in the next `seconds` (a 429's Retry-After)."""
        until = self._clock() + seconds
        self._held_until = max(self._held_until, until)
