"""Dead-lettering a record a consumer gave up on, in a way that never blocks its partition.

1. The record is kept whole in the `dead_letters` table (its own transaction): bytes of key and
   value, headers, source topic/partition/offset, reason, time. One row per (consumer group, topic,
   partition, offset): a retried fetch finds the row and writes nothing twice.
2. Unless the row says so already, the record goes to `<topic>.dlq`: whole, with the reason in
   `dlq_*` headers, when it fits MAX_DLQ_RECORD_BYTES and the broker takes it; else a summary that
   always fits (reason, source coordinates, size and SHA-256 of the value; `dlq_form: summary`).
   The row records which form went out.
3. A broker that is not there raises TransientError: the fetch is retried, and step 2 with it. A
   DLQ that refuses even the summary (not authorised, say) will not change its mind: the row keeps
   the record, the failure is logged and counted, and the consumer goes on.

Replay tooling can work from either place: the row holds the original always; a DLQ record holds
it when `dlq_form` is `full` (its value, key and non-`dlq_*` headers are the original's).
"""

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import structlog
from sqlalchemy import select, update

from huleedu.contracts.topics import dlq_topic
from huleedu.messaging import metrics
from huleedu.messaging.bus import EventBus, OutboundRecord, PublishOutcome, Record, record_size
from huleedu.messaging.errors import TransientError
from huleedu.messaging.tables import dead_letters
from huleedu.messaging.transient import is_broker_unavailable
from huleedu.storage.dialect import insert_ignoring_duplicates
from huleedu.storage.engine import Sessions
from huleedu.storage.text import storable
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

# Under Kafka's default record limit (1 MiB) with room for the broker's framing.
MAX_DLQ_RECORD_BYTES = 900 * 1024
MAX_REASON_CHARS = 4_000
MAX_SUMMARY_KEY_BYTES = 1_024  # a summary keeps the key (and so the partition) when it is this small
FULL, SUMMARY, KEPT_ONLY = "full", "summary", "kept_only"


@dataclass(frozen=True)
class DeadLetter:
    """A record given up on by `group` of `service`, and why."""

    record: Record
    reason: str
    error_type: str
    service: str
    group: str
    failed_at: datetime

    @property
    def dlq_topic(self) -> str:
        return dlq_topic(self.record.topic)

    @property
    def value(self) -> bytes:
        return self.record.value or b""

    def headers(self) -> dict[str, bytes]:
        """The `dlq_*` headers every DLQ record carries."""
        return {
            "dlq_reason": storable(self.reason)[:MAX_REASON_CHARS].encode(),
            "dlq_error_type": self.error_type.encode(),
            "dlq_source_topic": self.record.topic.encode(),
            "dlq_source_partition": str(self.record.partition).encode(),
            "dlq_source_offset": str(self.record.offset).encode(),
            "dlq_consumer_group": self.group.encode(),
            "dlq_service": self.service.encode(),
            "dlq_failed_at": self.failed_at.isoformat().encode(),
            "dlq_value_bytes": str(len(self.value)).encode(),
            "dlq_value_sha256": hashlib.sha256(self.value).hexdigest().encode(),
        }


def full_record(letter: DeadLetter) -> OutboundRecord:
    """The original record (value, key, headers) with the `dlq_*` headers added."""
    headers = {**dict(letter.record.headers), **letter.headers(), "dlq_form": FULL.encode()}
    return OutboundRecord(letter.dlq_topic, letter.value, letter.record.key, headers)


def summary_record(letter: DeadLetter) -> OutboundRecord:
    """What is known of the record without its contents: small whatever the record was."""
    key = letter.record.key
    kept_key = key if key is not None and len(key) <= MAX_SUMMARY_KEY_BYTES else None
    summary = {
        "dead_letter": {
            "source_topic": letter.record.topic,
            "source_partition": letter.record.partition,
            "source_offset": letter.record.offset,
            "consumer_group": letter.group,
            "service": letter.service,
            "error_type": letter.error_type,
            "reason": storable(letter.reason)[:MAX_REASON_CHARS],
            "failed_at": letter.failed_at.isoformat(),
            "value_bytes": len(letter.value),
            "value_sha256": hashlib.sha256(letter.value).hexdigest(),
            "key_bytes": len(key) if key is not None else None,
            "header_names": [storable(name)[:255] for name, _ in letter.record.headers[:100]],
            "kept_in": "the dead_letters table of the consuming service's database",
        }
    }
    headers = {**letter.headers(), "dlq_form": SUMMARY.encode()}
    return OutboundRecord(letter.dlq_topic, orjson.dumps(summary), kept_key, headers)


async def dead_letter(bus: EventBus, sessions: Sessions, letter: DeadLetter) -> None:
    """Keep `letter` and publish it to its DLQ (see the module's steps). Idempotent per source
    record. Raises TransientError while the broker (or the database) is unavailable."""
    row_id, published, new = await _keep(sessions, letter)
    if new:
        metrics.DEAD_LETTERED.labels(letter.service, letter.record.topic, letter.error_type).inc()
        log.warning(
            "dead-lettered",
            service=letter.service,
            topic=letter.record.topic,
            partition=letter.record.partition,
            offset=letter.record.offset,
            error_type=letter.error_type,
            reason=letter.reason[:MAX_REASON_CHARS],
            value_bytes=len(letter.value),
        )
    if published:
        return  # a retried fetch: this record is on the DLQ already

    attempts = [full_record(letter), summary_record(letter)]
    if record_size(attempts[0]) > MAX_DLQ_RECORD_BYTES:
        attempts.pop(0)
    refusal: Exception | None = None
    for outbound in attempts:
        [outcome] = await bus.publish([outbound])
        if outcome is None:
            form = outbound.headers["dlq_form"].decode()
            await _mark(sessions, row_id, form=form, error=_error_text(refusal))
            metrics.DEAD_LETTER_PUBLISHED.labels(letter.service, letter.record.topic, form).inc()
            return
        if is_broker_unavailable(outcome):
            raise TransientError(f"dead-letter topic unavailable: {outcome!r}") from outcome
        refusal = outcome  # the record's own fault: try the smaller form
    await _mark(sessions, row_id, form=None, error=_error_text(refusal))
    metrics.DEAD_LETTER_PUBLISHED.labels(letter.service, letter.record.topic, KEPT_ONLY).inc()
    log.error(
        "the dead-letter topic refuses even a summary; the record is kept in dead_letters only",
        topic=letter.dlq_topic,
        dead_letter_id=row_id,
        error=_error_text(refusal),
    )


async def _keep(sessions: Sessions, letter: DeadLetter) -> tuple[int, bool, bool]:
    """Insert the row unless it exists; returns (its id, is it on the DLQ, was it new)."""
    record = letter.record
    row = {
        "service": letter.service,
        "consumer_group": letter.group,
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "record_key": record.key,
        "record_value": record.value,
        "record_headers": [
            [storable(name), base64.b64encode(value).decode()] for name, value in record.headers
        ],
        "record_timestamp_ms": record.timestamp_ms,
        "value_bytes": len(letter.value),
        "value_sha256": hashlib.sha256(letter.value).hexdigest(),
        "error_type": letter.error_type,
        "reason": storable(letter.reason),
        "failed_at": letter.failed_at,
        "dlq_topic": letter.dlq_topic,
    }
    async with UnitOfWork(sessions) as uow:
        inserted = await uow.session.execute(
            insert_ignoring_duplicates(uow.session, dead_letters, [row]).returning(dead_letters.c.id)
        )
        new = inserted.first() is not None
        stored = (
            await uow.session.execute(
                select(dead_letters.c.id, dead_letters.c.dlq_published_at).where(
                    dead_letters.c.consumer_group == letter.group,
                    dead_letters.c.source_topic == record.topic,
                    dead_letters.c.source_partition == record.partition,
                    dead_letters.c.source_offset == record.offset,
                )
            )
        ).one()
        await uow.commit()
    return stored.id, stored.dlq_published_at is not None, new


async def _mark(sessions: Sessions, row_id: int, *, form: str | None, error: str | None) -> None:
    values: dict[str, object] = {"dlq_form": form, "dlq_error": error}
    if form is not None:
        values["dlq_published_at"] = datetime.now(UTC)
    async with UnitOfWork(sessions) as uow:
        await uow.session.execute(update(dead_letters).where(dead_letters.c.id == row_id).values(**values))
        await uow.commit()


def _error_text(outcome: PublishOutcome) -> str | None:
    return storable(f"{type(outcome).__name__}: {outcome}")[:MAX_REASON_CHARS] if outcome else None
