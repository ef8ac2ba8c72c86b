"""RAS's rules under any delivery: results in any order, duplicated, in any grouping into fetches,
before or after the registration, with or without the deadline. The store below keeps what the
repository keeps (the newest result per essay and phase; the deadline's failures carry no time),
and every fetch that touches a registered batch is settled, as the handlers do."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from huleedu.contracts.enums import BatchStatus, EssayStatus, PhaseName
from huleedu.result_aggregator.model import (
    Announced,
    BatchProgress,
    EssayProgress,
    expire,
    is_newer,
    newest,
    settle,
)

SPELL, CJ = PhaseName.SPELLCHECK, PhaseName.CJ_ASSESSMENT
REGISTERED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
REGISTRATION = "registration"
DEADLINE = "deadline"


@dataclass(frozen=True)
class Result:
    essay_id: str
    phase: PhaseName
    status: EssayStatus
    event_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.essay_id, self.phase.value)


Delivery = Result | str  # a result, REGISTRATION or DEADLINE


@dataclass
class Ras:
    """One batch as RAS sees it across fetches."""

    essay_ids: list[str]
    phases: tuple[PhaseName, ...]
    stored: dict[tuple[str, PhaseName], tuple[EssayStatus, datetime | None]] = field(default_factory=dict)
    announced: Announced = field(default_factory=Announced)
    registered: bool = False
    expired: bool = False  # the deadline passed while the batch was registered
    clock: datetime = REGISTERED
    results_ready: int = 0
    phases_announced: Counter[PhaseName] = field(default_factory=Counter)
    last: BatchProgress | None = None

    def progress(self) -> BatchProgress:
        essays = tuple(
            EssayProgress(
                essay_id,
                {phase: status for (e, phase), (status, _) in self.stored.items() if e == essay_id},
            )
            for essay_id in self.essay_ids
        )
        last_result_at: dict[PhaseName, datetime] = {}
        for (_, phase), (_, at) in self.stored.items():
            if at is not None and (phase not in last_result_at or last_result_at[phase] < at):
                last_result_at[phase] = at
        return BatchProgress(
            batch_id="b1",
            user_id="teacher-1",
            title=None,
            requested_phases=self.phases,
            essay_count=len(self.essay_ids),
            registered_at=REGISTERED,
            essays=essays,
            announced=self.announced,
            last_result_at=last_result_at,
        )

    def fetch(self, deliveries: list[Delivery]) -> None:
        self.clock += timedelta(seconds=1)
        results = [item for item in deliveries if isinstance(item, Result)]
        for result in newest(results):
            key = (result.essay_id, result.phase)
            if key not in self.stored or is_newer(result.event_at, self.stored[key][1]):
                self.stored[key] = (result.status, result.event_at)
        self.registered = self.registered or REGISTRATION in deliveries
        if not self.registered:
            return
        progress = self.progress()
        self.expired = self.expired or DEADLINE in deliveries
        if DEADLINE in deliveries and (expiry := expire(progress, self.clock)) is not None:
            for phase, essay_ids in expiry.failed.items():
                self.stored.update({(essay_id, phase): (EssayStatus.FAILED, None) for essay_id in essay_ids})
            progress = expiry.progress
            # the deadline's failures are exactly those stored
            assert progress.essays == self.progress().essays
        settlement = settle(progress)
        self.announced = settlement.announced
        self.results_ready += settlement.results_ready is not None
        self.phases_announced.update(settlement.completed_phases)
        self.last = settlement.progress


PHASES = st.sampled_from([(SPELL,), (CJ,), (SPELL, CJ), (CJ, SPELL)])


@st.composite
def deliveries(
    draw: st.DrawFn, *, consistent: bool, results_per_phase: int = 3
) -> tuple[Ras, list[Delivery], list[Delivery]]:
    """A batch, its deliveries in a canonical order (registration first), and the same deliveries
    shuffled, partly duplicated. `consistent`: every result of one essay and phase agrees on the
    status (newer ones only correct details); otherwise later results may contradict earlier ones.
    Each essay has up to `results_per_phase` distinct results per phase."""
    essay_ids = [f"e{i}" for i in range(draw(st.integers(1, 4)))]
    phases = draw(PHASES)
    results: list[Result] = []
    for essay_id in essay_ids:
        for phase in phases:
            if not draw(st.booleans()) and draw(st.booleans()):  # a quarter never report
                continue
            status = draw(st.sampled_from(EssayStatus))
            for n in range(draw(st.integers(1, results_per_phase))):
                if not consistent:
                    status = draw(st.sampled_from(EssayStatus))
                results.append(Result(essay_id, phase, status, REGISTERED + timedelta(minutes=n + 1)))
    canonical: list[Delivery] = [REGISTRATION, *results]
    duplicates = draw(st.lists(st.sampled_from(canonical), max_size=6))
    shuffled = draw(st.permutations(canonical + duplicates))
    return Ras(essay_ids, phases), canonical, shuffled


def fetches(items: list[Delivery], sizes: list[int]) -> list[list[Delivery]]:
    chunks, start = [], 0
    for size in sizes:
        chunks.append(items[start : start + size])
        start += size
    return [*chunks, items[start:]]


def deliver(ras: Ras, items: list[Delivery], sizes: list[int]) -> Ras:
    for chunk in fetches(items, sizes):
        ras.fetch(chunk)
    return ras


def statuses(ras: Ras) -> dict[tuple[str, PhaseName], EssayStatus]:
    return {key: status for key, (status, _) in ras.stored.items()}


SIZES = st.lists(st.integers(1, 4), max_size=10)


@given(batch=deliveries(consistent=True), sizes=SIZES)
def test_any_order_duplication_and_grouping_of_results_gives_the_same_outcome_and_one_announcement(
    batch: tuple[Ras, list[Delivery], list[Delivery]], sizes: list[int]
) -> None:
    ras, canonical, shuffled = batch
    reference = deliver(Ras(ras.essay_ids, ras.phases), canonical, [len(canonical)])
    delivered = deliver(ras, shuffled, sizes)

    assert statuses(delivered) == statuses(reference)
    assert delivered.last is not None
    assert reference.last is not None
    assert delivered.announced.status is reference.announced.status
    assert (delivered.last.essays_succeeded, delivered.last.essays_failed) == (
        reference.last.essays_succeeded,
        reference.last.essays_failed,
    )
    for phase in ras.phases:
        assert delivered.last.tally(phase) == reference.last.tally(phase)
    complete = reference.last.is_complete
    assert delivered.results_ready == reference.results_ready == (1 if complete else 0)
    assert delivered.phases_announced == reference.phases_announced
    assert all(count == 1 for count in delivered.phases_announced.values())


@given(
    batch=deliveries(consistent=False),
    sizes=SIZES,
    deadline_at=st.none() | st.integers(0, 12),
)
def test_results_ready_is_announced_exactly_once_when_the_batch_completes_whatever_happens(
    batch: tuple[Ras, list[Delivery], list[Delivery]], sizes: list[int], deadline_at: int | None
) -> None:
    ras, _, shuffled = batch
    chunks = fetches(shuffled, sizes)
    if deadline_at is not None:
        chunks.insert(min(deadline_at, len(chunks)), [DEADLINE])
    for chunk in chunks:
        ras.fetch(chunk)
        assert ras.results_ready <= 1
        assert all(count == 1 for count in ras.phases_announced.values())

    assert ras.last is not None
    # A deadline passing after the registration always completes the batch.
    assert ras.results_ready == (1 if ras.last.is_complete or ras.expired else 0)
    assert (ras.announced.results_ready_at is not None) == (ras.results_ready == 1)
    if ras.results_ready:
        assert ras.announced.status is not BatchStatus.PROCESSING_PIPELINES
        assert set(ras.phases_announced) == set(ras.phases)


@given(batch=deliveries(consistent=True, results_per_phase=1), sizes=SIZES)
def test_with_one_result_per_essay_and_phase_what_is_announced_and_when_does_not_depend_on_the_order(
    batch: tuple[Ras, list[Delivery], list[Delivery]], sizes: list[int]
) -> None:
    """Times are the events' times, never the moment of evaluation: a rebuild from the topics, in
    whatever order it reads them, gives the read model live processing gave."""
    ras, canonical, shuffled = batch
    reference = deliver(Ras(ras.essay_ids, ras.phases), canonical, [len(canonical)])
    delivered = deliver(ras, shuffled, sizes)

    assert delivered.announced == reference.announced
