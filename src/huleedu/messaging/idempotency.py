"""Idempotent consumption, in two layers.

The fast path is an `IdempotencyGuard` (Redis `SET NX` of `{service}:idempotency:{event_id}`: a short
"processing" lease, then "done" for 24 h once the handler's transaction committed). The guarantee is
the `processed_events` table, written in the handler's own transaction: an event whose id is already
there is skipped even if Redis forgot it, was down, or the process died between commit and "done".
"""

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol


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
