"""SpellcheckRequestedV1 -> per essay: fetch, check, store the corrected text, and write the thin
SpellcheckCompletedV1 and the rich SpellcheckResultV1 to the outbox in the consumer's transaction
(same correlation_id as the request). An essay that cannot be checked fails alone; an unknown
language fails every essay of the request. A content store that does not answer is transient:
the whole request is tried again later."""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog

from huleedu.content.client import ContentAccess
from huleedu.contracts.enums import ErrorCode, EssayStatus
from huleedu.contracts.envelope import wrap
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import (
    CorrectionMetrics,
    EssayRef,
    SpellcheckCompletedV1,
    SpellcheckRequestedV1,
    SpellcheckResultV1,
)
from huleedu.contracts.topics import Topics
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.messaging.outbox import Outbox, OutboxEntry
from huleedu.spellcheck import metrics
from huleedu.spellcheck.checker import PROCESSOR_VERSION, Checked, Dictionaries, Speller, UnsupportedLanguage
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

SOURCE_SERVICE = "spellcheck_service"
OPERATION = "spellcheck"


@dataclass(frozen=True)
class Deps:
    outbox: Outbox
    topics: Topics
    content: ContentAccess
    dictionaries: Dictionaries


@dataclass(frozen=True)
class _Outcome:
    essay_id: str
    checked: Checked | None = None
    duration_ms: int = 0
    corrected_text_storage_id: str | None = None
    error: ErrorDetail | None = None


async def check_essays(event: SpellcheckRequestedV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps) -> None:
    """Never commits (the consumer does). Raises ContentUnavailable (transient) if the content store
    cannot be asked."""
    essays = list({essay.essay_id: essay for essay in event.essays}.values())
    try:
        speller = await deps.dictionaries.speller(event.language)
    except UnsupportedLanguage as exc:
        failure = _error(ErrorCode.VALIDATION_ERROR, str(exc), meta.correlation_id, language=event.language)
        outcomes = [_Outcome(essay.essay_id, error=failure) for essay in essays]
    else:
        outcomes = await _check(essays, speller, meta.correlation_id, uow, deps)
    await deps.outbox.add_many(uow.session, _announcements(event, outcomes, meta.correlation_id, deps.topics))
    for outcome in outcomes:
        metrics.ESSAYS_CHECKED.labels("failed" if outcome.error else "completed").inc()


async def _check(
    essays: Sequence[EssayRef], speller: Speller, correlation_id: UUID, uow: UnitOfWork, deps: Deps
) -> list[_Outcome]:
    content = deps.content(uow.session)
    texts = await content.fetch_many([essay.text_storage_id for essay in essays])
    readable = [essay for essay in essays if essay.text_storage_id in texts]
    # CPU work off the event loop: a long batch must not stall heartbeats and other partitions.
    checked = await asyncio.to_thread(_check_texts, speller, [texts[e.text_storage_id] for e in readable])
    corrected_ids = iter(
        await content.store_many([result.corrected_text for result, _ in checked if result is not None])
    )
    done: dict[str, _Outcome] = {}
    for essay, (result, duration_ms) in zip(readable, checked, strict=True):
        if result is None:
            failure = _error(
                ErrorCode.PROCESSING_ERROR,
                "the spellchecker failed on this text",
                correlation_id,
                essay=essay,
            )
            done[essay.essay_id] = _Outcome(essay.essay_id, duration_ms=duration_ms, error=failure)
        else:
            done[essay.essay_id] = _Outcome(essay.essay_id, result, duration_ms, next(corrected_ids))
    outcomes = []
    for essay in essays:
        if essay.essay_id in done:
            outcomes.append(done[essay.essay_id])
            continue
        message = f"text {essay.text_storage_id} of essay {essay.essay_id} is not in the content store"
        failure = _error(ErrorCode.CONTENT_NOT_FOUND, message, correlation_id, essay=essay)
        outcomes.append(_Outcome(essay.essay_id, error=failure))
    return outcomes


def _check_texts(speller: Speller, texts: Sequence[str]) -> list[tuple[Checked | None, int]]:
    """Each text's result (None if the checker broke on it) and the milliseconds it took."""
    results: list[tuple[Checked | None, int]] = []
    for text in texts:
        started = time.perf_counter()
        try:
            result: Checked | None = speller.check(text)
        except Exception:  # one pathological text must not fail its batch
            log.exception("spellchecker failed on a text")
            result = None
        results.append((result, round((time.perf_counter() - started) * 1000)))
    return results


def _error(
    code: ErrorCode, message: str, correlation_id: UUID, *, essay: EssayRef | None = None, **details: Any
) -> ErrorDetail:
    if essay is not None:
        details.update(essay_id=essay.essay_id, text_storage_id=essay.text_storage_id)
    return ErrorDetail(
        code=code,
        message=message,
        correlation_id=correlation_id,
        service=SOURCE_SERVICE,
        operation=OPERATION,
        details=details,
    )


def _announcements(
    event: SpellcheckRequestedV1, outcomes: Sequence[_Outcome], correlation_id: UUID, topics: Topics
) -> list[OutboxEntry]:
    """Per essay, the thin outcome for ELS and the rich result for RAS, in that order."""
    entries = []
    for outcome in outcomes:
        status = EssayStatus.FAILED if outcome.error else EssayStatus.COMPLETED
        checked = outcome.checked
        thin = SpellcheckCompletedV1(batch_id=event.batch_id, essay_id=outcome.essay_id, status=status)
        rich = SpellcheckResultV1(
            batch_id=event.batch_id,
            essay_id=outcome.essay_id,
            user_id=event.user_id,
            status=status,
            corrections_made=checked.corrections if checked else 0,
            correction_metrics=CorrectionMetrics(
                total_corrections=checked.corrections,
                spellchecker_corrections=checked.corrections,
                word_count=checked.word_count,
                correction_density=round(checked.correction_density, 6),
            )
            if checked
            else None,
            corrected_text_storage_id=outcome.corrected_text_storage_id,
            processing_duration_ms=outcome.duration_ms,
            processor_version=PROCESSOR_VERSION,
            error=outcome.error,
        )
        for data, topic in ((thin, topics.spellcheck_completed), (rich, topics.spellcheck_result)):
            envelope = wrap(data, topic=topic, source_service=SOURCE_SERVICE, correlation_id=correlation_id)
            entries.append(OutboxEntry(envelope, topic, event.batch_id))
    return entries
