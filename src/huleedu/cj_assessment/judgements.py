"""Judgements: the SQL of the stored judgements, inside the caller's transaction (never commits).

Written as they arrive by the job that asked for them; read back by the same job to go on after a
restart and to fit the scale, and by the evidence API (an essay's comparisons, a batch's as CSV).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.cj_assessment.judges.port import Usage
from huleedu.cj_assessment.tables import (
    DROPPED,
    JUDGED,
    cj_judgement_essays,
    cj_judgements,
    cj_prompts,
)
from huleedu.storage.dialect import insert_ignoring_duplicates

PAIR = "pair"


@dataclass(frozen=True)
class NewJudgement:
    """One judgement to store: the essays in the order shown, and `winner` (None when dropped)."""

    judgement_id: str
    job_id: str
    batch_id: str
    wave: int
    shown: tuple[str, str]
    winner: str | None
    judge_kind: str
    model: str
    provider: str
    prompt_version: str | None
    rationale: str | None
    confidence: float | None
    error: str | None
    attempts: int
    latency_ms: int
    usage: Usage | None
    worker: str
    judged_at: datetime


@dataclass(frozen=True)
class StoredPair:
    """A stored pair judgement as a run replays it: essay ids, `first` shown first."""

    wave: int
    first: str
    second: str
    winner: str | None  # None: dropped
    confidence: float | None
    usage: Usage | None  # None: the judge reported none


class Judgements:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def remember_prompt(self, version: str, text: str, now: datetime) -> None:
        """Keep a prompt's text under its version (once: the version is a digest of the text)."""
        row = {"prompt_version": version, "text": text, "created_at": now}
        await self._session.execute(insert_ignoring_duplicates(self._session, cj_prompts, [row]))

    async def add(self, judgements: Sequence[NewJudgement]) -> None:
        if not judgements:
            return
        await self._session.execute(cj_judgements.insert(), [_judgement_row(j) for j in judgements])
        await self._session.execute(
            cj_judgement_essays.insert(),
            [
                {
                    "judgement_id": j.judgement_id,
                    "batch_id": j.batch_id,
                    "essay_id": essay_id,
                    "shown_position": position,
                    "place": None if j.winner is None else (1 if essay_id == j.winner else 2),
                }
                for j in judgements
                for position, essay_id in enumerate(j.shown)
            ],
        )

    async def pairs_of(self, job_id: str) -> list[StoredPair]:
        """The job's pair judgements in the order they were stored (wave, then time)."""
        j, e = cj_judgements, cj_judgement_essays
        rows = await self._session.execute(
            select(
                j.c.judgement_id,
                j.c.wave,
                j.c.confidence,
                j.c.tokens_in,
                j.c.tokens_out,
                j.c.cost,
                e.c.essay_id,
                e.c.shown_position,
                e.c.place,
            )
            .join(e, e.c.judgement_id == j.c.judgement_id)
            .where(j.c.cj_assessment_job_id == job_id, j.c.kind == PAIR)
            .order_by(j.c.wave, j.c.judged_at, j.c.judgement_id, e.c.shown_position)
        )
        pairs: list[StoredPair] = []
        essays: list[Any] = []
        for row in rows:
            essays.append(row)
            if len(essays) < 2:
                continue
            first, second = essays
            essays = []
            winner = next((r.essay_id for r in (first, second) if r.place == 1), None)
            usage = (
                None if first.tokens_in is None else Usage(first.tokens_in, first.tokens_out or 0, first.cost)
            )
            pairs.append(
                StoredPair(first.wave, first.essay_id, second.essay_id, winner, first.confidence, usage)
            )
        return pairs

    async def of_essay(self, batch_id: str, essay_id: str) -> list[dict[str, Any]]:
        """Every judgement of `essay_id` in the batch, oldest first: the opponent, whether the essay
        was shown first, won or lost (None when dropped), and who judged it and why."""
        j, mine, other = cj_judgements, cj_judgement_essays.alias("mine"), cj_judgement_essays.alias("other")
        rows = await self._session.execute(
            select(
                j.c.judgement_id,
                j.c.wave,
                j.c.outcome,
                other.c.essay_id.label("opponent_id"),
                mine.c.shown_position,
                mine.c.place,
                j.c.rationale,
                j.c.confidence,
                j.c.error,
                j.c.judge_kind,
                j.c.model,
                j.c.provider,
                j.c.prompt_version,
                j.c.latency_ms,
                j.c.tokens_in,
                j.c.tokens_out,
                j.c.cost,
                j.c.judged_at,
            )
            .join(mine, mine.c.judgement_id == j.c.judgement_id)
            .join(
                other,
                and_(
                    other.c.judgement_id == j.c.judgement_id, other.c.shown_position != mine.c.shown_position
                ),
            )
            .where(mine.c.batch_id == batch_id, mine.c.essay_id == essay_id)
            .order_by(j.c.judged_at, j.c.judgement_id)
        )
        return [
            {
                "judgement_id": row.judgement_id,
                "wave": row.wave,
                "opponent_id": row.opponent_id,
                "shown": "first" if row.shown_position == 0 else "second",
                "result": "dropped" if row.outcome == DROPPED else ("won" if row.place == 1 else "lost"),
                "rationale": row.rationale,
                "confidence": row.confidence,
                "error": row.error,
                "judge": row.judge_kind,
                "model": row.model,
                "provider": row.provider,
                "prompt_version": row.prompt_version,
                "latency_ms": row.latency_ms,
                "tokens_in": row.tokens_in,
                "tokens_out": row.tokens_out,
                "cost": row.cost,
                "judged_at": row.judged_at,
            }
            for row in rows
        ]

    async def of_batch(self, batch_id: str) -> list[dict[str, Any]]:
        """Every judgement of the batch, oldest first, one row each (essay shown first and second)."""
        j, first, second = (
            cj_judgements,
            cj_judgement_essays.alias("first"),
            cj_judgement_essays.alias("second"),
        )
        rows = await self._session.execute(
            select(
                j,
                first.c.essay_id.label("first_id"),
                second.c.essay_id.label("second_id"),
                first.c.place.label("first_place"),
            )
            .join(first, and_(first.c.judgement_id == j.c.judgement_id, first.c.shown_position == 0))
            .join(second, and_(second.c.judgement_id == j.c.judgement_id, second.c.shown_position == 1))
            .where(j.c.batch_id == batch_id)
            .order_by(j.c.judged_at, j.c.judgement_id)
        )
        found = []
        for row in rows.mappings():
            winner = None
            if row["outcome"] == JUDGED:
                winner = row["first_id"] if row["first_place"] == 1 else row["second_id"]
            found.append({**row, "winner_id": winner})
        return found

    async def tally(self, batch_id: str) -> dict[str, dict[str, int]]:
        """essay_id -> {won, lost, dropped} over the batch's judgements."""
        e, j = cj_judgement_essays, cj_judgements
        rows = await self._session.execute(
            select(e.c.essay_id, e.c.place, j.c.outcome, func.count().label("n"))
            .join(j, j.c.judgement_id == e.c.judgement_id)
            .where(e.c.batch_id == batch_id)
            .group_by(e.c.essay_id, e.c.place, j.c.outcome)
        )
        tally: dict[str, dict[str, int]] = {}
        for essay_id, place, outcome, n in rows.tuples():
            counts = tally.setdefault(essay_id, {"won": 0, "lost": 0, "dropped": 0})
            key = "dropped" if outcome == DROPPED else ("won" if place == 1 else "lost")
            counts[key] += n
        return tally


def _judgement_row(j: NewJudgement) -> dict[str, Any]:
    usage = j.usage
    return {
        "judgement_id": j.judgement_id,
        "cj_assessment_job_id": j.job_id,
        "batch_id": j.batch_id,
        "wave": j.wave,
        "kind": PAIR,
        "outcome": DROPPED if j.winner is None else JUDGED,
        "judge_kind": j.judge_kind,
        "model": j.model,
        "provider": j.provider,
        "prompt_version": j.prompt_version,
        "rationale": j.rationale,
        "confidence": j.confidence,
        "error": j.error,
        "attempts": j.attempts,
        "latency_ms": j.latency_ms,
        "tokens_in": usage.tokens_in if usage is not None else None,
        "tokens_out": usage.tokens_out if usage is not None else None,
        "cost": usage.cost if usage is not None else None,
        "worker": j.worker,
        "judged_at": j.judged_at,
    }
