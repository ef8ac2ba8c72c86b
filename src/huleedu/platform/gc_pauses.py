"""The garbage collector's pauses, measured, and kept short in long-running processes.

A full collection walks every object the process holds, and stops everything while it does: with
ten thousand sockets open that is a stall of a second or more. Two things keep it short: what was
built at start-up (modules, routes, settings) is frozen out of every later collection
(`gc.freeze`), and the pauses are measured (`huleedu_gc_pause_seconds`), so a stall shows on
/metrics instead of only in a latency tail.
"""

import gc
import time
from typing import Any

from prometheus_client import Histogram

GC_PAUSE = Histogram(
    "huleedu_gc_pause_seconds",
    "Pauses of the garbage collector, per generation collected.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
_started: list[float] = []
_installed = False
# Freezing is for a process of its own (`huleedu serve`/`up`, see `run_services`): in a test run it
# would keep the garbage of every test alive.
_managing = False


def _measure(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        GC_PAUSE.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - _started.pop())


def measure_pauses() -> None:
    """Observe every collection from now on (once per process)."""
    global _installed
    if not _installed:
        gc.callbacks.append(_measure)
        _installed = True


def freeze_startup_heap() -> None:
    """Move everything alive now (start-up's objects, alive for the whole process) out of the
    collector's reach: later full collections walk only what was made since; and let
    `LongLivedHeap`s freeze from now on."""
    global _managing
    gc.collect()
    gc.freeze()
    _managing = True


class LongLivedHeap:
    """Keeps full collections off a heap of long-lived objects (a gateway's open sockets).

    Ten thousand sockets are millions of objects, and every full collection walks them all while
    everything waits: the stall of seconds after a connect storm. Once `freeze_after` objects were
    added (`born`), or fewer but none for `quiet_seconds` (the end of a storm), `tick` freezes the
    heap: what is alive then is no longer walked. Freezing keeps
    what dies later out of reach too, so what dies after being frozen is counted (`died`); once half
    of what was alive at the last freeze has died, the heap is unfrozen and collected once, and what
    is left frozen again. A mass disconnect therefore costs a few collections of a shrinking heap,
    and steady churn one collection per half of the sockets replaced.
    """

    def __init__(self, *, freeze_after: int = 1000, quiet_seconds: float = 2.0, always: bool = False) -> None:
        """`always`: freeze even in a process that did not freeze its start-up heap (tests of this)."""
        self._always = always
        self._freeze_after = freeze_after
        self._quiet_seconds = quiet_seconds
        self._young = 0  # born since the last freeze
        self._last_born = 0.0
        self._frozen_alive = 0  # alive when last frozen
        self._frozen_dead = 0  # died since: garbage that only a collection frees
        self.frozen_at = 0.0  # time.monotonic() of the last freeze

    def born(self) -> None:
        self._young += 1
        self._last_born = time.monotonic()

    def died(self, born_at: float) -> None:
        if born_at < self.frozen_at:
            self._frozen_dead += 1

    def tick(self, alive: int) -> None:
        if not (_managing or self._always):
            return
        if self._frozen_dead >= max(self._freeze_after, self._frozen_alive // 2):
            gc.unfreeze()
            gc.collect()
            self._freeze(alive)
        elif self._young >= self._freeze_after or (
            self._young and time.monotonic() - self._last_born >= self._quiet_seconds
        ):
            self._freeze(alive)

    def _freeze(self, alive: int) -> None:
        gc.freeze()
        self._young = self._frozen_dead = 0
        self._frozen_alive = alive
        self.frozen_at = time.monotonic()
