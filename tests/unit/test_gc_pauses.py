"""The long-lived heap keeper: freezes once enough was born, and collects once as much died."""

import gc
from collections.abc import Iterator

import pytest

from huleedu.platform.gc_pauses import LongLivedHeap


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_heap_is_frozen_once_enough_was_born_and_collected_once_half_of_it_died() -> None:
    heap = LongLivedHeap(freeze_after=2, quiet_seconds=3600, always=True)
    heap.born()
    heap.tick(alive=1)
    assert gc.get_freeze_count() == 0  # not enough yet
    for _ in range(5):
        heap.born()
    heap.tick(alive=6)
    assert gc.get_freeze_count() > 0
    frozen_at = heap.frozen_at
    born_before, born_after = frozen_at - 1.0, frozen_at + 1.0
    heap.died(born_before)
    heap.died(born_after)  # born after the freeze: freed without the collector's help
    heap.died(born_after)
    heap.tick(alive=4)
    assert heap.frozen_at == frozen_at  # one of six frozen died: no collection yet
    for _ in range(2):
        heap.died(born_before)
    heap.tick(alive=2)
    assert heap.frozen_at > frozen_at  # half died: collected, and the rest frozen again
    assert gc.get_freeze_count() > 0


def test_a_storm_smaller_than_the_threshold_is_frozen_once_it_is_over() -> None:
    heap = LongLivedHeap(freeze_after=1000, quiet_seconds=0.0, always=True)
    heap.born()
    heap.tick(alive=1)
    assert gc.get_freeze_count() > 0


def test_a_process_that_did_not_freeze_its_start_up_heap_is_left_alone() -> None:
    heap = LongLivedHeap(freeze_after=1, quiet_seconds=0.0)
    heap.born()
    heap.tick(alive=1)
    assert gc.get_freeze_count() == 0
