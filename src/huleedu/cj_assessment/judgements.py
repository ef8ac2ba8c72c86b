"""Judgements: the SQL of the stored judgements, inside the caller's transaction (never commits).

A judgement is a pair or a ranking of k essays: one row per essay with its shown position and its
place (1: best). The evidence views read a ranking as the pairs it implies: an essay "won" against
every essay it was placed above and "lost" against every one placed above it.

Written as they arrive by the job that asked for them; read back by the same job to go on after a
restart and to fit the scale, and by the evidence API (an essay's comparisons, a batch's as CSV).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
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

PAIR, RANKING = "pair", "ranking"


@dataclass(frozen=True)
class NewJudgement:
    """One judgement to store: the essays in the order shown, and `ranked`, the same essays best
    first (None when dropped)."""

    judgement_id: str
    job_id: str
    batch_id: str
    wave: int
    shown: tuple[str, ...]
    ranked: tuple[str, ...] | None
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
class StoredJudgement:
    """A stored judgement as a run replays it: essay ids in the order shown, and best first."""

    wave: int
    shown: tuple[str, ...]
    ranked: tuple[str, ...] | None  # None: dropped
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
                    "place": None if j.ranked is None else j.ranked.index(essay_id) + 1,
                }
                for j in judgements
                for position, essay_id in enumerate(j.shown)
            ],
        )

    async def of_job(self, job_id: str) -> list[StoredJudgement]:
        """The job's judgements (pairs and rankings) in the order they were stored (wave, then time)."""
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
                e.c.place,
            )
            .join(e, e.c.judgement_id == j.c.judgement_id)
            .where(j.c.cj_assessment_job_id == job_id)
            .order_by(j.c.wave, j.c.judged_at, j.c.judgement_id, e.c.shown_position)
        )
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row.judgement_id, []).append(row)
        found = []
        for essays in grouped.values():
            first = essays[0]
            placed = all(row.place is not None for row in essays)
            ranked = tuple(row.essay_id for row in sorted(essays, key=lambda r: r.place)) if placed else None
            usage = (
                None if first.tokens_in is None else Usage(first.tokens_in, first.tokens_out or 0, first.cost)
            )
            found.append(
                StoredJudgement(
                    first.wave, tuple(row.essay_id for row in essays), ranked, first.confidence, usage
                )
            )
        return found

    async def of_essay(self, batch_id: str, essay_id: str) -> list[dict[str, Any]]:
        """Every judgement of `essay_id` in the batch, oldest first, once per other essay in it (a
        pair: once): the opponent, whether the essay was shown before it, won or lost against it
        (None when dropped), and who judged it and why."""
        j, mine, other = cj_judgements, cj_judgement_essays.alias("mine"), cj_judgement_essays.alias("other")
        rows = await self._session.execute(
            select(
                j.c.judgement_id,
                j.c.wave,
                j.c.outcome,
                other.c.essay_id.label("opponent_id"),
                mine.c.shown_position,
                other.c.shown_position.label("opponent_position"),
                mine.c.place,
                other.c.place.label("opponent_place"),
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
            .order_by(j.c.judged_at, j.c.judgement_id, other.c.shown_position)
        )
        return [
            {
                "judgement_id": row.judgement_id,
                "wave": row.wave,
                "opponent_id": row.opponent_id,
                "shown": "first" if row.shown_position < row.opponent_position else "second",
                "result": "dropped"
                if row.outcome == DROPPED
                else ("won" if row.place < row.opponent_place else "lost"),
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
        """Every judgement of the batch, oldest first, one row each: its columns, the essays in the
        order shown (`shown_ids`; `first_id`, `second_id`) and best first (`ranked_ids`;
        `winner_id`: the best, None when dropped)."""
        j, e = cj_judgements, cj_judgement_essays
        judged = (
            (
                await self._session.execute(
                    select(j).where(j.c.batch_id == batch_id).order_by(j.c.judged_at, j.c.judgement_id)
                )
            )
            .mappings()
            .all()
        )
        essays = await self._session.execute(
            select(e.c.judgement_id, e.c.essay_id, e.c.place)
            .where(e.c.batch_id == batch_id)
            .order_by(e.c.judgement_id, e.c.shown_position)
        )
        shown: dict[str, list[tuple[str, int | None]]] = {}
        for judgement_id, essay, place in essays.tuples():
            shown.setdefault(judgement_id, []).append((essay, place))
        found = []
        for row in judged:
            members = shown.get(row["judgement_id"], [])
            ranked = (
                [essay for essay, _ in sorted(members, key=lambda m: m[1] or 0)]
                if row["outcome"] == JUDGED
                else []
            )
            ids = [essay for essay, _ in members]
            found.append(
                {
                    **row,
                    "shown_ids": ids,
                    "first_id": ids[0] if ids else None,
                    "second_id": ids[1] if len(ids) > 1 else None,
                    "ranked_ids": ranked,
                    "winner_id": ranked[0] if ranked else None,
                }
            )
        return found

    async def tally(self, batch_id: str) -> dict[str, dict[str, int]]:
        """essay_id -> {won, lost, dropped} over the batch's judgements: won and lost count the
        pairs the judgements imply (a ranking of k: k - 1 per essay), dropped the judgements."""
        j, mine, other = cj_judgements, cj_judgement_essays.alias("mine"), cj_judgement_essays.alias("other")
        rows = await self._session.execute(
            select(mine.c.essay_id, mine.c.judgement_id, j.c.outcome, mine.c.place, other.c.place)
            .join(j, j.c.judgement_id == mine.c.judgement_id)
            .join(
                other,
                and_(
                    other.c.judgement_id == mine.c.judgement_id,
                    other.c.shown_position != mine.c.shown_position,
                ),
            )
            .where(mine.c.batch_id == batch_id)
        )
        tally: dict[str, dict[str, int]] = {}
        dropped: set[tuple[str, str]] = set()
        for essay_id, judgement_id, outcome, place, other_place in rows.tuples():
            counts = tally.setdefault(essay_id, {"won": 0, "lost": 0, "dropped": 0})
            if outcome == DROPPED:
                if (essay_id, judgement_id) not in dropped:
                    dropped.add((essay_id, judgement_id))
                    counts["dropped"] += 1
            else:
                counts["won" if place < other_place else "lost"] += 1
        return tally


def _judgement_row(j: NewJudgement) -> dict[str, Any]:
    usage = j.usage
    return {
        "judgement_id": j.judgement_id,
        "cj_assessment_job_id": j.job_id,
        "batch_id": j.batch_id,
        "wave": j.wave,
        "kind": PAIR if len(j.shown) == 2 else RANKING,
        "outcome": DROPPED if j.ranked is None else JUDGED,
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
