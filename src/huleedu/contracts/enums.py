"""Every enum of the wire (docs/contracts.md, "Enums"). Values are the strings on the wire."""

from enum import StrEnum


class BatchStatus(StrEnum):
    AWAITING_CONTENT_VALIDATION = "awaiting_content_validation"
    CONTENT_INGESTION_FAILED = "content_ingestion_failed"
    AWAITING_PIPELINE_CONFIGURATION = "awaiting_pipeline_configuration"
    READY_FOR_PIPELINE_EXECUTION = "ready_for_pipeline_execution"
    PROCESSING_PIPELINES = "processing_pipelines"
    AWAITING_STUDENT_VALIDATION = "awaiting_student_validation"
    STUDENT_VALIDATION_COMPLETED = "student_validation_completed"
    VALIDATION_TIMEOUT_PROCESSED = "validation_timeout_processed"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED_CRITICALLY = "failed_critically"
    CANCELLED = "cancelled"


class BatchClientStatus(StrEnum):
    """What dashboards see: a coarser view of BatchStatus."""

    PENDING_CONTENT = "pending_content"
    READY = "ready"
    PROCESSING = "processing"
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED = "failed"
    CANCELLED = "cancelled"


_CLIENT_STATUS = {
    BatchStatus.AWAITING_CONTENT_VALIDATION: BatchClientStatus.PENDING_CONTENT,
    BatchStatus.CONTENT_INGESTION_FAILED: BatchClientStatus.FAILED,
    BatchStatus.AWAITING_PIPELINE_CONFIGURATION: BatchClientStatus.PENDING_CONTENT,
    BatchStatus.READY_FOR_PIPELINE_EXECUTION: BatchClientStatus.READY,
    BatchStatus.PROCESSING_PIPELINES: BatchClientStatus.PROCESSING,
    BatchStatus.AWAITING_STUDENT_VALIDATION: BatchClientStatus.PENDING_CONTENT,
    BatchStatus.STUDENT_VALIDATION_COMPLETED: BatchClientStatus.READY,
    BatchStatus.VALIDATION_TIMEOUT_PROCESSED: BatchClientStatus.READY,
    BatchStatus.COMPLETED_SUCCESSFULLY: BatchClientStatus.COMPLETED_SUCCESSFULLY,
    BatchStatus.COMPLETED_WITH_FAILURES: BatchClientStatus.COMPLETED_WITH_FAILURES,
    BatchStatus.FAILED_CRITICALLY: BatchClientStatus.FAILED,
    BatchStatus.CANCELLED: BatchClientStatus.CANCELLED,
}


def client_status(status: BatchStatus) -> BatchClientStatus:
    return _CLIENT_STATUS[status]


def internal_statuses(status: BatchClientStatus) -> list[BatchStatus]:
    """The internal statuses a client status stands for (for filtering queries)."""
    return [internal for internal, client in _CLIENT_STATUS.items() if client is status]


class ProcessingStage(StrEnum):
    PENDING = "pending"
    INITIALIZED = "initialized"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PhaseName(StrEnum):
    SPELLCHECK = "spellcheck"
    CJ_ASSESSMENT = "cj_assessment"
    NLP = "nlp"
    AI_FEEDBACK = "ai_feedback"


class EssayStatus(StrEnum):
    """Outcome of one essay in one phase, as reported by a rich or thin event."""

    COMPLETED = "completed"
    FAILED = "failed"


class CJAssessmentStatus(StrEnum):
    COMPLETED_SUCCESSFULLY = "completed_successfully"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    FAILED_CRITICALLY = "failed_critically"


class EssayState(StrEnum):
    """ELS essay lifecycle: `content_assigned`, then `assessed` or `assessment_failed` (both final)."""

    CONTENT_ASSIGNED = "content_assigned"
    ASSESSED = "assessed"
    ASSESSMENT_FAILED = "assessment_failed"


class ConfidenceLabel(StrEnum):
    HIGH = "HIGH"
    MID = "MID"
    LOW = "LOW"


class NotificationPriority(StrEnum):
    CRITICAL = "critical"
    IMMEDIATE = "immediate"
    HIGH = "high"
    STANDARD = "standard"
    LOW = "low"


class WebSocketEventCategory(StrEnum):
    BATCH_PROGRESS = "batch_progress"
    PROCESSING_RESULTS = "processing_results"
    SYSTEM_ALERTS = "system_alerts"


class ErrorCode(StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    AUTHORIZATION_ERROR = "AUTHORIZATION_ERROR"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    RATE_LIMIT = "RATE_LIMIT"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    PROCESSING_ERROR = "PROCESSING_ERROR"
    TIMEOUT = "TIMEOUT"
    CONTENT_NOT_FOUND = "CONTENT_NOT_FOUND"
    EXTERNAL_SERVICE_ERROR = "EXTERNAL_SERVICE_ERROR"


HTTP_STATUS_OF: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.AUTHENTICATION_ERROR: 401,
    ErrorCode.AUTHORIZATION_ERROR: 403,
    ErrorCode.RESOURCE_NOT_FOUND: 404,
    ErrorCode.RATE_LIMIT: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.PROCESSING_ERROR: 500,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CONTENT_NOT_FOUND: 404,
    ErrorCode.EXTERNAL_SERVICE_ERROR: 502,
}
