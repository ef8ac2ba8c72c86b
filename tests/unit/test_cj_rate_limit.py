"""The rate limiter on a clock the test drives: a burst starts at once, then one start per interval,
and a Retry-After holds every request back; no real time passes, so nothing here can race."""

import asyncio

import pytest

from huleedu.cj_assessment.judges.rate_limit import RateLimiter


class DrivenClock:
    """Time moves only when the limiter sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def start_times(limiter: RateLimiter, clock: DrivenClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await limiter.acquire()
        times.append(clock.now)
    return times


async def test_a_burst_starts_at_once_then_one_request_per_interval() -> None:
    clock = DrivenClock()
    limiter = RateLimiter(5.0, burst=3, clock=clock, sleep=clock.sleep)

    times = await start_times(limiter, clock, 6)

    assert times[:3] == [100.0, 100.0, 100.0]
    assert times[3:] == pytest.approx([100.2, 100.4, 100.6])


async def test_without_a_burst_every_start_waits_its_interval() -> None:
    clock = DrivenClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)

    times = await start_times(limiter, clock, 4)

    assert times == pytest.approx([100.0, 100.1, 100.2, 100.3])


async def test_a_retry_after_holds_back_every_request_even_with_tokens_left() -> None:
    clock = DrivenClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.hold_back(2.0)

    times = await start_times(limiter, clock, 3)

    assert times == [102.0, 102.0, 102.0]


async def test_waiters_are_served_in_the_order_they_came() -> None:
    clock = DrivenClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    served: list[int] = []

    async def ask(number: int) -> None:
        await limiter.acquire()
        served.append(number)

    await asyncio.gather(*(ask(n) for n in range(5)))

    assert served == [0, 1, 2, 3, 4]


def test_a_rate_or_burst_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="per_second"):
        RateLimiter(0.0)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1.0, burst=0)


async def test_a_retry_after_that_comes_while_a_request_waits_holds_it_back_too() -> None:
    clock = DrivenClock()
    limiters: list[RateLimiter] = []

    async def sleep_then_429(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.sleeps) == 1:  # another request got a 429 saying 5 s while this one slept
            limiters[0].hold_back(5.0)

    limiters.append(RateLimiter(10.0, clock=clock, sleep=sleep_then_429))
    await limiters[0].acquire()  # at 100.0; the next may start at 100.1
    await limiters[0].acquire()

    assert clock.now == pytest.approx(105.1)
