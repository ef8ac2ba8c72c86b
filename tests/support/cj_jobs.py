"""CJ jobs in tests and benchmarks: distinct essay texts stored in the content store, requests for
them, the settings (or environment) of a CJ worker judging with the local model server, and reads
of what the CJ tables hold."""

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import uuid4

from sqlalchemy import func, select

from huleedu.cj_assessment.tables import cj_jobs, cj_judgements
from huleedu.content.store import ContentStore
from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import PhaseName
from huleedu.contracts.envelope import EventEnvelope, wrap
from huleedu.contracts.events import BatchEssaysRegisteredV1, CJAssessmentRequestedV1, EssayRef
from huleedu.contracts.topics import Topics
from huleedu.demo_data.sample import essays as sample_essays
from huleedu.storage.engine import Sessions

MODEL = "local-judge-1"


def essay_texts(n: int) -> list[str]:
    """`n` distinct essays: the sample's, then sample essays followed by another's opening paragraph."""
    sample = [essay.text for essay in sample_essays()]
    texts = list(sample[:n])
    i = 0
    while len(texts) < n:
        first, second = sample[i % len(sample)], sample[-1 - (i // len(sample)) % len(sample)]
        texts.append(f"{first}\n\n{second.split(chr(10) * 2)[0]} ({i})")
        i += 1
    assert len(set(texts)) == n
    return texts


@dataclass(frozen=True)
class Batch:
    batch_id: str
    essay_ids: list[str]
    request: EventEnvelope[WireModel]
    registration: EventEnvelope[WireModel]

    @property
    def planned(self) -> int:
        """The judgements its budget allows when they are pairs."""
        return self.allowed(2)

    def allowed(self, size: int) -> int:
        """The most judgements of `size` essays its budget (essay-reads per essay) allows."""
        data = self.request.data
        assert isinstance(data, CJAssessmentRequestedV1)
        return len(self.essay_ids) * (data.max_comparisons_per_essay or 20) // size


async def new_batch(
    sessions: Sessions, topics: Topics, n: int, budget: int, *, user_id: str = "teacher-cj", offset: int = 0
) -> Batch:
    """Store `n` texts and make the CJ request (and the RAS registration) of a new batch of them."""
    async with sessions() as session:
        ids = await ContentStore(session).put_many(essay_texts(n + offset)[offset:])
        await session.commit()
    batch_id = str(uuid4())
    essay_ids = [f"essay-{i:02}" for i in range(n)]
    correlation_id = uuid4()
    request = CJAssessmentRequestedV1(
        batch_id=batch_id,
        user_id=user_id,
        essays=[EssayRef(essay_id=essay_id, text_storage_id=ids[i]) for i, essay_id in enumerate(essay_ids)],
        max_comparisons_per_essay=budget,
    )
    registration = BatchEssaysRegisteredV1(
        batch_id=batch_id,
        user_id=user_id,
        title=f"CJ batch {batch_id[:8]}",
        essay_ids=essay_ids,
        expected_essay_count=n,
        requested_phases=[PhaseName.CJ_ASSESSMENT],
    )
    return Batch(
        batch_id,
        essay_ids,
        wrap(
            request,
            topic=topics.cj_assessment_requested,
            source_service="intake_service",
            correlation_id=correlation_id,
        ),
        wrap(
            registration,
            topic=topics.batch_essays_registered,
            source_service="intake_service",
            correlation_id=correlation_id,
        ),
    )


def llm_env(model_url: str, **settings: object) -> dict[str, str]:
    """HULEEDU_* variables of a CJ worker judging with the local model server; `settings` are
    more, by lower-case name (`cj_job_lease_seconds=3`)."""
    env = {
        "HULEEDU_CJ_JUDGE": "llm",
        "HULEEDU_CJ_LLM_BASE_URL": model_url,
        "HULEEDU_CJ_LLM_MODEL": MODEL,
    }
    env |= {f"HULEEDU_{name.upper()}": str(value) for name, value in settings.items()}
    return env


async def stored_judgements(sessions: Sessions, batch_id: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(cj_judgements).where(cj_judgements.c.batch_id == batch_id)
        )
    return count or 0


async def workers_of(sessions: Sessions, batch_ids: Sequence[str]) -> dict[str, set[str]]:
    """batch_id -> the workers that stored its judgements."""
    async with sessions() as session:
        rows = await session.execute(
            select(cj_judgements.c.batch_id, cj_judgements.c.worker)
            .where(cj_judgements.c.batch_id.in_(list(batch_ids)))
            .distinct()
        )
    found: dict[str, set[str]] = {batch_id: set() for batch_id in batch_ids}
    for batch_id, worker in rows.tuples():
        found[batch_id].add(worker)
    return found


async def job_rows(sessions: Sessions, batch_ids: Sequence[str]) -> dict[str, dict[str, object]]:
    async with sessions() as session:
        rows = await session.execute(select(cj_jobs).where(cj_jobs.c.batch_id.in_(list(batch_ids))))
    return {row["batch_id"]: dict(row) for row in rows.mappings()}
