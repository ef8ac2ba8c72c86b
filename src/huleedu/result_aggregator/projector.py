"""NotificationProjector: what teachers are told, invoked directly by RAS inside the handler's
transaction (no Kafka round trip), so a notification exists if and only if its cause committed."""

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.contracts.enums import NotificationPriority, PhaseName, WebSocketEventCategory
from huleedu.contracts.envelope import wrap
from huleedu.contracts.events import BatchResultsReadyV1, TeacherNotificationRequestedV1
from huleedu.contracts.topics import Topics
from huleedu.messaging.email_queue import enqueue_email
from huleedu.messaging.outbox import OutboxEntry
from huleedu.result_aggregator.model import BatchProgress

SOURCE_SERVICE = "result_aggregator_service"
RESULTS_READY_TEMPLATE = "batch_results_ready"


class NotificationProjector:
    """Turns what became true of a batch into teacher notifications (outbox entries the caller
    writes with everything else of its transaction) and email jobs."""

    def __init__(self, topics: Topics) -> None:
        self._topics = topics

    def phase_completed(
        self, progress: BatchProgress, phase: PhaseName, correlation_id: UUID, now: datetime
    ) -> OutboxEntry:
        tally = progress.tally(phase)
        return self._notification(
            progress,
            correlation_id,
            now,
            notification_type="batch_phase_completed",
            category=WebSocketEventCategory.BATCH_PROGRESS,
            priority=NotificationPriority.STANDARD,
            payload={
                "batch_id": progress.batch_id,
                "phase": phase.value,
                "completed_count": tally.completed,
                "failed_count": tally.failed,
                "total_essays": progress.essay_count,
            },
        )

    def phase_progress(
        self,
        user_id: str,
        batch_id: str,
        phase: PhaseName,
        counts: dict[str, int],
        correlation_id: UUID,
        now: datetime,
        *,
        notification_type: str,
    ) -> OutboxEntry:
        """A phase moved on (CJ: more comparisons done): low priority, only to redraw a bar."""
        notification = TeacherNotificationRequestedV1(
            teacher_id=user_id,
            notification_type=notification_type,
            category=WebSocketEventCategory.BATCH_PROGRESS,
            priority=NotificationPriority.LOW,
            payload={"batch_id": batch_id, "phase": phase.value, **counts},
            correlation_id=correlation_id,
            batch_id=batch_id,
            timestamp=now,
        )
        return self._entry(notification, batch_id, correlation_id)

    async def results_ready(
        self, session: AsyncSession, progress: BatchProgress, ready: BatchResultsReadyV1, correlation_id: UUID
    ) -> OutboxEntry:
        """Enqueue the email (when asked for) and return the teacher's notification to emit."""
        failures = {
            phase.value: result.failed_essay_ids
            for phase, result in ready.phase_results.items()
            if result.failed_count
        }
        payload: dict[str, Any] = {
            "batch_id": ready.batch_id,
            "title": ready.title,
            "overall_status": ready.overall_status.value,
            "total_essays": ready.total_essays,
            "completed_essays": ready.completed_essays,
            "failed_essays": ready.failed_essays,
            "failures": failures,
        }
        notification = self._notification(
            progress,
            correlation_id,
            ready.ready_at,
            notification_type="batch_results_ready",
            category=WebSocketEventCategory.PROCESSING_RESULTS,
            priority=NotificationPriority.HIGH,
            payload=payload,
        )
        if progress.notify_email:
            await enqueue_email(
                session,
                job_key=f"{RESULTS_READY_TEMPLATE}:{ready.batch_id}",
                recipient=progress.notify_email,
                template=RESULTS_READY_TEMPLATE,
                variables={**payload, "user_id": ready.user_id, "ready_at": ready.ready_at.isoformat()},
                correlation_id=correlation_id,
            )
        return notification

    def _notification(
        self,
        progress: BatchProgress,
        correlation_id: UUID,
        now: datetime,
        *,
        notification_type: str,
        category: WebSocketEventCategory,
        priority: NotificationPriority,
        payload: dict[str, Any],
    ) -> OutboxEntry:
        notification = TeacherNotificationRequestedV1(
            teacher_id=progress.user_id,
            notification_type=notification_type,
            category=category,
            priority=priority,
            payload=payload,
            correlation_id=correlation_id,
            batch_id=progress.batch_id,
            timestamp=now,
        )
        return self._entry(notification, progress.batch_id, correlation_id)

    def _entry(
        self, notification: TeacherNotificationRequestedV1, batch_id: str, correlation_id: UUID
    ) -> OutboxEntry:
        topic = self._topics.teacher_notification
        envelope = wrap(
            notification, topic=topic, source_service=SOURCE_SERVICE, correlation_id=correlation_id
        )
        return OutboxEntry(envelope, topic, batch_id, aggregate_id=batch_id)
