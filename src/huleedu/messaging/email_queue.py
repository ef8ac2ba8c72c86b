"""The email queue: the outbox of emails. A service enqueues a job in its own transaction; the
email worker (huleedu.notifications) sends it later. Shared here so no service imports another."""

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, text
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.storage.dialect import insert_skipping_duplicates
from huleedu.storage.metadata import JsonColumn, UtcDateTime, metadata

PENDING = "pending"
SENT = "sent"
FAILED = "failed"

email_queue = Table(
    "email_queue",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    # One job per purpose (e.g. "batch_results_ready:<batch_id>"): a replayed cause enqueues nothing new.
    Column("job_key", String(255), nullable=False, unique=True),
    Column("recipient", String(320), nullable=False),
    Column("template", String(64), nullable=False),
    Column("variables", JsonColumn, nullable=False),
    Column("status", String(16), nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("correlation_id", String(36), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
)

Index(
    "ix_email_queue_pending",
    email_queue.c.id,
    postgresql_where=text("status = 'pending'"),
    sqlite_where=text("status = 'pending'"),
)


async def enqueue_email(
    session: AsyncSession,
    *,
    job_key: str,
    recipient: str,
    template: str,
    variables: dict[str, Any],
    correlation_id: UUID | None = None,
) -> bool:
    """Add a job in the caller's transaction. Returns False if a job with this key already exists."""
    row = {
        "job_key": job_key,
        "recipient": recipient,
        "template": template,
        "variables": variables,
        "status": PENDING,
        "attempts": 0,
        "correlation_id": str(correlation_id) if correlation_id else None,
        "created_at": datetime.now(UTC),
    }
    result = await session.execute(
        insert_skipping_duplicates(session, email_queue).returning(email_queue.c.id), [row]
    )
    return result.first() is not None
