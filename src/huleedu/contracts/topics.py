"""Topic names with the configurable prefix, and the model each one carries (docs/contracts.md, "Topics")."""

from dataclasses import dataclass

from huleedu.contracts.base import WireModel
from huleedu.contracts.events import (
    AssessmentResultV1,
    BatchDeadlineReachedV1,
    BatchEssaysRegisteredV1,
    BatchResultsReadyV1,
    CJAssessmentCompletedV1,
    CJAssessmentProgressV1,
    CJAssessmentRequestedV1,
    SpellcheckCompletedV1,
    SpellcheckRequestedV1,
    SpellcheckResultV1,
    TeacherNotificationRequestedV1,
)

DEFAULT_PREFIX = "huleedu"
DLQ_SUFFIX = ".dlq"

# suffix after the prefix -> (model, producer, consumers, summary)
_CATALOGUE: dict[str, tuple[type[WireModel], str, tuple[str, ...], str]] = {
    "batch.essays.registered.v1": (
        BatchEssaysRegisteredV1,
        "intake",
        ("result_aggregator", "essay_lifecycle"),
        "A teacher's batch was accepted: its essays and the phases requested.",
    ),
    "cj_assessment.requested.v1": (
        CJAssessmentRequestedV1,
        "intake",
        ("cj_assessment",),
        "Comparative judgement requested for a batch.",
    ),
    "spellcheck.requested.v1": (
        SpellcheckRequestedV1,
        "intake",
        ("spellcheck",),
        "Spell checking requested for a batch.",
    ),
    "cj_assessment.completed.v1": (
        CJAssessmentCompletedV1,
        "cj_assessment",
        ("essay_lifecycle",),
        "Thin CJ outcome: ids, counts and status only.",
    ),
    "cj_assessment.progress.v1": (
        CJAssessmentProgressV1,
        "cj_assessment",
        ("essay_lifecycle", "result_aggregator"),
        "Thin CJ progress while judging: judgements done and planned, about once per wave.",
    ),
    "cj_assessment.result.published.v1": (
        AssessmentResultV1,
        "cj_assessment",
        ("result_aggregator",),
        "Rich CJ outcome: scores, ranks, grades, confidence.",
    ),
    "spellcheck.completed.v1": (
        SpellcheckCompletedV1,
        "spellcheck",
        ("essay_lifecycle",),
        "Thin spellcheck outcome of one essay.",
    ),
    "essay.spellcheck.results.v1": (
        SpellcheckResultV1,
        "spellcheck",
        ("result_aggregator",),
        "Rich spellcheck outcome of one essay: corrections and metrics.",
    ),
    "batch.results.ready.v1": (
        BatchResultsReadyV1,
        "result_aggregator",
        ("websocket",),
        "Every requested phase of a batch is terminal; published exactly once per batch.",
    ),
    "batch.deadline.reached.v1": (
        BatchDeadlineReachedV1,
        "result_aggregator",
        ("result_aggregator",),
        "A batch was still open at its deadline: RAS fails what never reported and completes it.",
    ),
    "notification.teacher.requested.v1": (
        TeacherNotificationRequestedV1,
        "result_aggregator",
        ("websocket",),
        "A notification for one teacher's dashboard.",
    ),
}


@dataclass(frozen=True)
class TopicInfo:
    name: str
    model: type[WireModel]
    producer: str
    consumers: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class Topics:
    """The full topic names under one prefix. `Topics()` gives the defaults."""

    prefix: str = DEFAULT_PREFIX

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def batch_essays_registered(self) -> str:
        return self._name("batch.essays.registered.v1")

    @property
    def cj_assessment_requested(self) -> str:
        return self._name("cj_assessment.requested.v1")

    @property
    def spellcheck_requested(self) -> str:
        return self._name("spellcheck.requested.v1")

    @property
    def cj_assessment_completed(self) -> str:
        return self._name("cj_assessment.completed.v1")

    @property
    def cj_assessment_progress(self) -> str:
        return self._name("cj_assessment.progress.v1")

    @property
    def cj_assessment_result(self) -> str:
        return self._name("cj_assessment.result.published.v1")

    @property
    def spellcheck_completed(self) -> str:
        return self._name("spellcheck.completed.v1")

    @property
    def spellcheck_result(self) -> str:
        return self._name("essay.spellcheck.results.v1")

    @property
    def batch_results_ready(self) -> str:
        return self._name("batch.results.ready.v1")

    @property
    def batch_deadline_reached(self) -> str:
        return self._name("batch.deadline.reached.v1")

    @property
    def teacher_notification(self) -> str:
        return self._name("notification.teacher.requested.v1")

    def all(self) -> list[TopicInfo]:
        return [
            TopicInfo(self._name(suffix), model, producer, consumers, summary)
            for suffix, (model, producer, consumers, summary) in _CATALOGUE.items()
        ]

    def model_of(self, topic: str) -> type[WireModel]:
        for info in self.all():
            if info.name == topic:
                return info.model
        raise KeyError(f"unknown topic {topic!r}")


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX
