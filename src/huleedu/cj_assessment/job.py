"""Working on one claimed CJ job: judge outside any transaction, store each judgement as it arrives,
then fit the scale and publish, each step a short transaction guarded by the lease.

A job goes on from what is stored: the run is rebuilt from the job's judgements, so a restarted job
plans its next wave from them and never asks again for a judgement it has. A `scored` job (judging
stopped, nothing published yet) only fits and publishes. No transaction stays open while the judge
thinks: the longest is one that stores the judgements that arrived together.
"""

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import uuid4

import structlog

from huleedu.cj_assessment import metrics
from huleedu.cj_assessment.announcements import Announcer
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import drive
from huleedu.cj_assessment.inputs import run_inputs
from huleedu.cj_assessment.judgements import Judgements, NewJudgement, StoredJudgement
from huleedu.cj_assessment.judges.port import Judge, Judgement, Ranking, Usage
from huleedu.cj_assessment.judging import JudgeChoice, SpendLimits
from huleedu.cj_assessment.lifecycle import JobState
from huleedu.cj_assessment.model import AssessmentOutcome, StopReason
from huleedu.cj_assessment.pool import Pool, build_pool, insufficient
from huleedu.cj_assessment.repository import CJJobs, Job
from huleedu.cj_assessment.run import Answer, Asked, Run, WaveCheck
from huleedu.content.client import ContentAccess
from huleedu.contracts.events import CJAssessmentRequestedV1
from huleedu.messaging.outbox import Outbox
from huleedu.storage.engine import Sessions
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


class LeaseLost(Exception):
    """The job is no longer ours (our lease ran out and another worker took it, or an operator
    moved it): stop at once and change nothing."""


@dataclass(frozen=True)
class JobDeps:
    sessions: Sessions
    outbox: Outbox
    announcer: Announcer
    content: ContentAccess
    judges: JudgeChoice
    config: CJConfig  # the request's max_comparisons_per_essay, when it has one, replaces the budget
    limits: SpendLimits
    lease_seconds: float
    progress_interval_seconds: float
    clock: Callable[[], datetime]


async def work_on(job: Job, owner: str, deps: JobDeps) -> None:
    """Take a claimed job to `published`. Raises LeaseLost, and whatever else stopped it
    (ContentUnavailable, a database error, a bug) for the runner to retry or give up on."""
    request = request_of(job)
    async with deps.sessions() as session:  # a short read: the texts, and what was judged already
        students, anchors = await run_inputs(request, deps.content(session), job.correlation_id)
        stored = await Judgements(session).of_job(job.job_id)
        await session.commit()
    config = deps.config
    if request.max_comparisons_per_essay is not None:
        config = replace(config, max_comparisons_per_essay=request.max_comparisons_per_essay)
    pool = build_pool(students, anchors, job.correlation_id)
    spent = total([judgement.usage for judgement in stored])
    if pool.n_students < 2:
        if job.state is JobState.JUDGING:
            await _move(deps, job, owner, JobState.SCORED, stop_reason=StopReason.INSUFFICIENT_ESSAYS.value)
        await _publish(job, owner, request, insufficient(pool, students), None, deps)
        return
    run = Run(pool, config, _replayed(pool, stored))
    stop = job.stop_reason or StopReason.BUDGET_REACHED
    if job.state is JobState.JUDGING:
        stop, spent = await _judge(job, owner, request, run, spent, deps)
        await _move(deps, job, owner, JobState.SCORED, stop_reason=stop.value)
    await _publish(job, owner, request, run.outcome(stop), spent, deps)


def request_of(job: Job) -> CJAssessmentRequestedV1:
    if job.request is None:
        raise ValueError(f"job of batch {job.batch_id} has no stored request")
    return job.request


async def _judge(
    job: Job, owner: str, request: CJAssessmentRequestedV1, run: Run, spent: Usage | None, deps: JobDeps
) -> tuple[StopReason, Usage | None]:
    """Judge until the run stops; each judgement stored as it arrives, progress after each wave
    (at most once per `progress_interval_seconds`). Returns why it stopped and the total spend."""
    judge = await deps.judges.judge_for(request.language)
    prompts = [prompt for prompt in (deps.judges.prompt, deps.judges.ranking_prompt) if prompt is not None]
    if prompts:
        async with UnitOfWork(deps.sessions) as uow:
            for prompt in prompts:
                await Judgements(uow.session).remember_prompt(prompt.version, prompt.text, deps.clock())
            await uow.commit()
    writer = _Writer(job, owner, deps)
    pool = run.pool
    planned = run.budget_reads // run.judgement_size(judge)  # judgements the budget allows at most
    loop = asyncio.get_running_loop()
    last_progress: float | None = None

    async def record(asked: Asked, answer: Answer) -> None:
        nonlocal spent
        spent = total([spent, answer.usage])
        await writer.store(_new_judgement(job, owner, pool, judge, deps.judges, asked, answer, deps.clock()))

    async def after_wave(check: WaveCheck) -> None:
        nonlocal last_progress
        now = loop.time()
        if last_progress is not None and now - last_progress < deps.progress_interval_seconds:
            return
        last_progress = now
        done = len(run.comparisons)
        entry = deps.announcer.progress(request, job.job_id, job.correlation_id, done, planned, check.wave)
        async with UnitOfWork(deps.sessions) as uow:
            if not await CJJobs(uow.session).holds_judging(
                job.batch_id, owner, lease_seconds=deps.lease_seconds, now=deps.clock()
            ):
                raise LeaseLost(job.batch_id)
            await deps.outbox.add_many(uow.session, [entry])
            await uow.commit()

    stop = await drive(
        run, judge, record=record, may_ask=lambda: deps.limits.allows(spent or Usage()), after_wave=after_wave
    )
    log.info(
        "judging stopped", batch_id=job.batch_id, stop_reason=stop.value, comparisons=len(run.comparisons)
    )
    return stop, spent


async def _move(deps: JobDeps, job: Job, owner: str, target: JobState, **values: Any) -> None:
    async with UnitOfWork(deps.sessions) as uow:
        if await CJJobs(uow.session).move(job.batch_id, owner, target, **values) is None:
            raise LeaseLost(job.batch_id)
        await uow.commit()


async def _publish(
    job: Job,
    owner: str,
    request: CJAssessmentRequestedV1,
    outcome: AssessmentOutcome,
    spent: Usage | None,
    deps: JobDeps,
) -> None:
    """The outcome events and the move to `published`, in one transaction: exactly once."""
    now = deps.clock()
    seconds = round(max((now - (job.judging_started_at or job.created_at)).total_seconds(), 0.0), 3)
    model_used, provider, version = deps.judges.identity
    entries = deps.announcer.outcome(
        request, job.job_id, job.correlation_id, outcome, (model_used, provider, version), seconds, spent
    )
    students = outcome.students
    async with UnitOfWork(deps.sessions) as uow:
        moved = await CJJobs(uow.session).move(
            job.batch_id,
            owner,
            JobState.PUBLISHED,
            outcome_status=outcome.status.value,
            essays_total=len(students),
            essays_failed=sum(1 for essay in students if essay.failed),
            comparisons_total=outcome.comparisons_total,
            stop_reason=outcome.stop_reason.value,
            model_used=model_used,
            processing_seconds=seconds,
            tokens_in=spent.tokens_in if spent is not None else None,
            tokens_out=spent.tokens_out if spent is not None else None,
            cost=spent.cost if spent is not None else None,
            completed_at=now,
        )
        if moved is None:
            raise LeaseLost(job.batch_id)
        await deps.outbox.add_many(uow.session, entries)
        await uow.commit()
    metrics.RUNS.labels(outcome.status.value).inc()
    metrics.COMPARISONS.inc(outcome.comparisons_total)
    metrics.DROPPED_JUDGEMENTS.inc(outcome.dropped_judgements)
    metrics.RUN_SECONDS.observe(seconds)
    log.info(
        "batch assessed",
        batch_id=job.batch_id,
        status=outcome.status.value,
        comparisons=outcome.comparisons_total,
        stop_reason=outcome.stop_reason.value,
        seconds=seconds,
    )


def total(usages: Iterable[Usage | None]) -> Usage | None:
    """The sum of what was reported; None when nothing was (a judge without usage)."""
    reported = [usage for usage in usages if usage is not None]
    if not reported:
        return None
    spent = reported[0]
    for usage in reported[1:]:
        spent = spent + usage
    return spent


def _replayed(pool: Pool, stored: Sequence[StoredJudgement]) -> list[Asked]:
    """Stored judgements as pool indices (one naming an essay no longer in the pool is left out)."""
    index = {text.essay_id: i for i, text in enumerate(pool.texts)}
    asked = []
    for judgement in stored:
        if any(essay not in index for essay in judgement.shown):
            continue
        shown = tuple(index[essay] for essay in judgement.shown)
        order = (
            None
            if judgement.ranked is None
            else tuple(judgement.shown.index(essay) for essay in judgement.ranked)
        )
        asked.append(Asked(judgement.wave, shown, order, judgement.confidence))
    return asked


def _new_judgement(
    job: Job,
    owner: str,
    pool: Pool,
    judge: Judge,
    choice: JudgeChoice,
    asked: Asked,
    answer: Answer,
    now: datetime,
) -> NewJudgement:
    ids = tuple(pool.texts[i].essay_id for i in asked.shown)
    ranked = asked.ranked
    verdict = answer.judgement
    prompt = choice.prompt if len(ids) == 2 else choice.ranking_prompt
    return NewJudgement(
        judgement_id=str(uuid4()),
        job_id=job.job_id,
        batch_id=job.batch_id,
        wave=asked.wave,
        shown=ids,
        ranked=None if ranked is None else tuple(pool.texts[i].essay_id for i in ranked),
        judge_kind=choice.kind,
        model=(verdict.model if verdict is not None else None) or judge.model_used,
        provider=judge.model_provider,
        prompt_version=(verdict.prompt_version if verdict is not None else None)
        or (prompt.version if prompt is not None else None),
        rationale=_rationale(verdict, ids),
        confidence=verdict.confidence if verdict is not None else None,
        error=answer.error,
        attempts=answer.attempts,
        latency_ms=round(answer.seconds * 1000),
        usage=answer.usage,
        worker=owner,
        judged_at=now,
    )


def _rationale(verdict: Judgement | Ranking | None, ids: tuple[str, ...]) -> str | None:
    """A pair's rationale; a ranking's, one line per essay that has one (`essay id: text`)."""
    if verdict is None:
        return None
    if not isinstance(verdict, Ranking):
        return verdict.rationale
    if verdict.rationales is None:
        return None
    lines = [f"{essay}: {text}" for essay, text in zip(ids, verdict.rationales, strict=True) if text]
    return "\n".join(lines) or None


class _Writer:
    """Stores judgements as they arrive, in as few short transactions as they allow: those that
    arrive while a store is under way go together in the next one. Every store renews the lease
    and is refused (LeaseLost) once the job is no longer ours, so a worker that lost the job adds
    nothing to it."""

    def __init__(self, job: Job, owner: str, deps: JobDeps) -> None:
        self._job, self._owner, self._deps = job, owner, deps
        self._waiting: list[tuple[NewJudgement, asyncio.Future[None]]] = []
        self._lock = asyncio.Lock()

    async def store(self, judgement: NewJudgement) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((judgement, done))
        async with self._lock:
            if self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._write([item for item, _ in batch])
                except Exception as exc:
                    for _, waiting in batch:
                        if waiting is not done:
                            waiting.set_exception(exc)
                    raise
                for _, waiting in batch:
                    waiting.set_result(None)
        await done

    async def _write(self, judgements: list[NewJudgement]) -> None:
        deps = self._deps
        async with UnitOfWork(deps.sessions) as uow:
            if not await CJJobs(uow.session).holds_judging(
                self._job.batch_id, self._owner, lease_seconds=deps.lease_seconds, now=deps.clock()
            ):
                raise LeaseLost(self._job.batch_id)
            await Judgements(uow.session).add(judgements)
            await uow.commit()
