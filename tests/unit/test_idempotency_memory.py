"""MemoryIdempotency, the guard of the embedded mode: leases, done marks, expiry and its size bound."""

from huleedu.messaging.idempotency import Claim, MemoryIdempotency


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: ManualClock, *, max_entries: int = 1000) -> MemoryIdempotency:
    return MemoryIdempotency(lease_seconds=10, ttl_seconds=3600, max_entries=max_entries, clock=clock)


async def test_an_id_is_claimed_once_then_busy_until_done() -> None:
    ids = guard(ManualClock())

    assert await ids.claim(["a", "b"]) == {"a": Claim.CLAIMED, "b": Claim.CLAIMED}
    assert await ids.claim(["a", "b", "c"]) == {"a": Claim.BUSY, "b": Claim.BUSY, "c": Claim.CLAIMED}

    await ids.mark_done(["a"])
    assert await ids.claim(["a", "b"]) == {"a": Claim.DONE, "b": Claim.BUSY}


async def test_the_same_id_twice_in_one_claim_is_claimed_once() -> None:
    ids = guard(ManualClock())
    assert await ids.claim(["a", "a", "b"]) == {"a": Claim.CLAIMED, "b": Claim.CLAIMED}
    assert await ids.claim(["a"]) == {"a": Claim.BUSY}


async def test_release_frees_a_lease_but_never_forgets_a_done_id() -> None:
    ids = guard(ManualClock())
    await ids.claim(["leased", "finished"])
    await ids.mark_done(["finished"])

    await ids.release(["leased", "finished", "never-claimed"])

    assert await ids.claim(["leased", "finished", "never-claimed"]) == {
        "leased": Claim.CLAIMED,
        "finished": Claim.DONE,
        "never-claimed": Claim.CLAIMED,
    }


async def test_a_lease_of_a_consumer_that_died_expires() -> None:
    clock = ManualClock()
    ids = guard(clock)
    await ids.claim(["a"])

    clock.now += 9
    assert await ids.claim(["a"]) == {"a": Claim.BUSY}
    clock.now += 2
    assert await ids.claim(["a"]) == {"a": Claim.CLAIMED}


async def test_a_done_mark_lasts_its_ttl_then_is_forgotten() -> None:
    clock = ManualClock()
    ids = guard(clock)
    await ids.claim(["a"])
    await ids.mark_done(["a"])

    clock.now += 3599
    assert await ids.claim(["a"]) == {"a": Claim.DONE}
    clock.now += 2
    assert await ids.claim(["a"]) == {"a": Claim.CLAIMED}


async def test_beyond_its_size_bound_the_guard_forgets_the_oldest_ids_first() -> None:
    ids = guard(ManualClock(), max_entries=3)
    await ids.mark_done(["oldest", "old"])
    await ids.claim(["recent"])
    await ids.mark_done(["old"])  # written again: now the most recent

    await ids.mark_done(["newest"])

    assert await ids.claim(["recent", "old", "newest", "oldest"]) == {
        "recent": Claim.BUSY,
        "old": Claim.DONE,
        "newest": Claim.DONE,
        "oldest": Claim.CLAIMED,
    }
