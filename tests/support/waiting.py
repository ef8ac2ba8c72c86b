"""Waiting in a test for something to happen, never for a while: ask a probe until its answer
will do, bounded by a deadline generous enough for a two-core machine that other work is loading.

The probe reads what the test can observe (a list a handler fills, a row, a counter, the clock
when age is what is under test); `until` says which answer will do (a truthy one by default).
On timeout the AssertionError names what was awaited and the last answer seen.
"""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_SECONDS = 60.0
_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 0.1  # a long wait costs at most this much after the condition holds
_SHOWN_CHARS = 500


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    *,
    what: str,
    until: Callable[[T], object] = bool,
    seconds: float = WAIT_SECONDS,
) -> T:
    """Call `probe` (plain or async) until `until(answer)` holds; returns that answer."""
    deadline = time.monotonic() + seconds
    pause = _FIRST_PAUSE
    while True:
        answer = probe()
        if inspect.isawaitable(answer):
            answer = await answer
        if until(answer):
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(_gave_up(what, seconds, answer))
        await asyncio.sleep(pause)  # spacing the probes, not synchronising: the probe decides
        pause = min(pause * 2, _LONGEST_PAUSE)


def eventually_sync(
    probe: Callable[[], T], *, what: str, until: Callable[[T], object] = bool, seconds: float = WAIT_SECONDS
) -> T:
    """`eventually` for code without an event loop (starting a server process, say)."""
    deadline = time.monotonic() + seconds
    pause = _FIRST_PAUSE
    while True:
        answer = probe()
        if until(answer):
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(_gave_up(what, seconds, answer))
        time.sleep(pause)  # spacing the probes, not synchronising: the probe decides
        pause = min(pause * 2, _LONGEST_PAUSE)


def _gave_up(what: str, seconds: float, answer: object) -> str:
    shown = repr(answer)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[:_SHOWN_CHARS] + "..."
    return f"gave up after {seconds:g} s waiting for {what}; last seen: {shown}"
