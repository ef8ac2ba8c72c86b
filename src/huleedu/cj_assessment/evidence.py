"""The evidence behind a CJ scale, as the internal API shows it: the shapes of its answers and the
CSV of a batch's judgements. Pure: no I/O."""

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

CSV_COLUMNS = (
    "judged_at",
    "wave",
    "judgement_id",
    "shown_first",
    "shown_second",
    "outcome",
    "winner",
    "confidence",
    "rationale",
    "error",
    "judge",
    "model",
    "provider",
    "prompt_version",
    "attempts",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "cost",
    "worker",
    "kind",
    "shown",
    "ranking",
)


class ComparisonView(BaseModel):
    """One judgement of an essay, from the essay's side."""

    judgement_id: str
    wave: int
    opponent_id: str
    shown: Literal["first", "second"]
    result: Literal["won", "lost", "dropped"]
    rationale: str | None
    confidence: float | None
    error: str | None
    judge: str
    model: str
    provider: str
    prompt_version: str | None
    latency_ms: int
    tokens_in: int | None
    tokens_out: int | None
    cost: float | None
    judged_at: datetime


class Tally(BaseModel):
    won: int
    lost: int
    dropped: int


class EssayComparisonsView(Tally):
    batch_id: str
    essay_id: str
    comparisons: list[ComparisonView]


class BatchTallyView(BaseModel):
    """Every judged essay's wins, losses and dropped judgements."""

    batch_id: str
    essays: dict[str, Tally]


class JobView(BaseModel):
    batch_id: str
    cj_assessment_job_id: str
    state: str
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    judgements_stored: int
    outcome_status: str | None
    stop_reason: str | None
    comparisons_total: int | None
    tokens_in: int | None
    tokens_out: int | None
    cost: float | None
    created_at: datetime
    judging_started_at: datetime | None
    completed_at: datetime | None


def essay_comparisons(
    batch_id: str, essay_id: str, rows: Sequence[Mapping[str, Any]]
) -> EssayComparisonsView:
    comparisons = [ComparisonView.model_validate(row) for row in rows]
    return EssayComparisonsView(
        batch_id=batch_id,
        essay_id=essay_id,
        won=sum(1 for c in comparisons if c.result == "won"),
        lost=sum(1 for c in comparisons if c.result == "lost"),
        dropped=sum(1 for c in comparisons if c.result == "dropped"),
        comparisons=comparisons,
    )


def comparisons_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per judgement, oldest first: a pair's essays shown first and second and its
    winner; a ranking's essays in the order shown (`shown`) and best first (`ranking`, its best
    also under `winner`), space-separated."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = {
            "judged_at": row["judged_at"].isoformat(),
            "wave": row["wave"],
            "judgement_id": row["judgement_id"],
            "shown_first": row["first_id"],
            "shown_second": row["second_id"],
            "outcome": row["outcome"],
            "winner": row["winner_id"],
            "confidence": row["confidence"],
            "rationale": row["rationale"],
            "error": row["error"],
            "judge": row["judge_kind"],
            "model": row["model"],
            "provider": row["provider"],
            "prompt_version": row["prompt_version"],
            "attempts": row["attempts"],
            "latency_ms": row["latency_ms"],
            "tokens_in": row["tokens_in"],
            "tokens_out": row["tokens_out"],
            "cost": row["cost"],
            "worker": row["worker"],
            "kind": row["kind"],
            "shown": " ".join(row["shown_ids"]),
            "ranking": " ".join(row["ranked_ids"]) or None,
        }
        writer.writerow(["" if values[column] is None else values[column] for column in CSV_COLUMNS])
    return out.getvalue()
