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


def test_the_heap_is_frozen_once_enough_was_born_and_collected_once_as_much_died() -> None:
    heap = LongLivedHeap(freeze_after=3)
    for _ in range(2):
        heap.born()
    heap.tick(alive=2)
    assert gc.get_freeze_count() == 0  # not enough yet
    heap.born()
    heap.tick(alive=3)
    assert gc.get_freeze_count() > 0
    frozen_at = heap.frozen_at
    born_before = frozen_at - 1.0
    for _ in range(2):
        heap.died(born_before)
    heap.tick(alive=1)
    assert heap.frozen_at == frozen_at  # two dead of three frozen: no collection yet
    heap.died(born_before)
    heap.died(frozen_at + 1.0)  # born after the freeze: freed without the collector's help
    heap.tick(alive=0)
    assert heap.frozen_at > frozen_at  # collected, then frozen again
