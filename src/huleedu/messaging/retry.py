"""Capped exponential backoff with jitter, shared by every retry loop (bus adapters, relay, email
worker, WebSocket backplane, LLM judge)."""

import random


def backoff_seconds(attempt: int, *, initial_seconds: float, max_seconds: float) -> float:
    """The wait before retry number `attempt` (1 for the first retry): `initial_seconds` doubled per
    attempt, capped at `max_seconds`, then scaled by a random factor in [0.5, 1].

    The jitter keeps the partitions that failed together (a database restart) from retrying in
    lockstep; it never makes a wait longer than the cap.
    """
    exponent = min(max(attempt, 1) - 1, 62)  # 2**62 already exceeds any sensible cap
    capped = min(max_seconds, initial_seconds * 2.0**exponent)
    return capped * random.uniform(0.5, 1.0)
