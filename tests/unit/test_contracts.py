"""Every event of the wire: round trip, readable rejection, tolerance of unknown fields, exact fields.

The expected field sets are copied from docs/contracts.md by hand, on purpose: a model that grows or loses a
field must fail here until the contract document says the same.
"""

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import orjson
import pytest
from pydantic import ValidationError

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.errors import ErrorBody, ErrorDetail
from huleedu.contracts.events import (
    AssessmentResultV1,
    BatchDeadlineReachedV1,
    BatchEssaysRegisteredV1,
    BatchResultsReadyV1,
    CJAssessmentCompletedV1,
    CJAssessmentProgressV1,
    CJAssessmentRequestedV1,
    EssayResultV1,
    SpellcheckCompletedV1,
    SpellcheckRequestedV1,
    SpellcheckResultV1,
    TeacherNotificationRequestedV1,
)
from huleedu.contracts.topics import Topics, dlq_topic
from huleedu.messaging.bus import Record
from huleedu.messaging.envelope_codec import decode, validation_reason
from huleedu.messaging.errors import PoisonEvent

ERROR = {
    "code": "PROCESSING_ERROR",
    "message": "the judge gave up",
    "correlation_id": str(uuid4()),
    "service": "cj_assessment_service",
    "operation": "judge_pair",
    "timestamp": "2025-11-27T10:00:00Z",
    "details": {"attempts": 3},
}

# One valid `data` object per event, as JSON would carry it.
SAMPLES: dict[type[WireModel], dict[str, Any]] = {
    BatchEssaysRegisteredV1: {
        "batch_id": "b-1",
        "user_id": "teacher-1",
        "org_id": "org-1",
        "class_id": "class-9a",
        "assignment_id": "assign-1",
        "course_code": "ENG5",
        "title": "Persuasive essays",
        "essay_ids": ["e-1", "e-2", "e-3"],
        "expected_essay_count": 3,
        "requested_phases": ["spellcheck", "cj_assessment"],
        "notify_email": "teacher@example.org",
        "registered_at": "2025-11-27T09:00:00Z",
    },
    CJAssessmentRequestedV1: {
        "batch_id": "b-1",
        "user_id": "teacher-1",
        "assignment_id": "assign-1",
        "language": "en",
        "essays": [{"essay_id": "e-1", "text_storage_id": "sha256-a"}],
        "anchors": [{"anchor_id": "a-1", "text_storage_id": "sha256-b", "grade": "B+"}],
        "max_comparisons_per_essay": 20,
    },
    SpellcheckRequestedV1: {
        "batch_id": "b-1",
        "user_id": "teacher-1",
        "assignment_id": None,
        "language": "en",
        "essays": [{"essay_id": "e-1", "text_storage_id": "sha256-a"}],
    },
    CJAssessmentCompletedV1: {
        "batch_id": "b-1",
        "cj_assessment_job_id": "job-1",
        "status": "completed_with_failures",
        "processing_summary": {
            "total_essays": 2,
            "successful": 1,
            "failed": 1,
            "successful_essay_ids": ["e-1"],
            "failed_essay_ids": ["e-2"],
            "processing_time_seconds": 12.5,
        },
    },
    AssessmentResultV1: {
        "batch_id": "b-1",
        "cj_assessment_job_id": "job-1",
        "assignment_id": "assign-1",
        "assessment_method": "cj_assessment",
        "model_used": "heuristic",
        "model_provider": "huleedu",
        "model_version": "1",
        "essay_results": [
            {
                "essay_id": "e-1",
                "status": "completed",
                "bt_score": 0.75,
                "bt_se": 0.31,
                "rank": 1,
                "comparison_count": 18,
                "letter_grade": "B+",
                "normalized_score": 0.8,
                "confidence_score": 0.9,
                "confidence_label": "HIGH",
                "is_anchor": False,
                "display_name": "essay1.txt",
                "error": None,
            },
            {
                "essay_id": "e-2",
                "status": "failed",
                "bt_score": None,
                "bt_se": None,
                "rank": None,
                "comparison_count": 0,
                "letter_grade": None,
                "normalized_score": None,
                "confidence_score": None,
                "confidence_label": None,
                "is_anchor": False,
                "display_name": None,
                "error": ERROR,
            },
            {
                "essay_id": "a-1",
                "status": "completed",
                "bt_score": 0.1,
                "bt_se": 0.4,
                "rank": None,
                "comparison_count": 12,
                "letter_grade": "B",
                "normalized_score": 0.6,
                "confidence_score": None,
                "confidence_label": None,
                "is_anchor": True,
                "display_name": "anchor B",
                "error": None,
            },
        ],
        "assessment_metadata": {
            "comparisons_total": 30,
            "comparisons_per_essay": 20.0,
            "scale_separation_reliability": 0.87,
            "anchors_used": 1,
            "calibration_method": "anchor_centres",
            "stop_reason": "budget",
            "processing_duration_seconds": 4.2,
            "dropped_judgements": 1,
            "tokens_in": 48000,
            "tokens_out": 2100,
            "cost": 0.0084,
        },
        "assessed_at": "2025-11-27T09:05:00Z",
    },
    CJAssessmentProgressV1: {
        "batch_id": "b-1",
        "cj_assessment_job_id": "job-1",
        "comparisons_done": 45,
        "comparisons_planned": 180,
        "waves_done": 3,
    },
    SpellcheckCompletedV1: {"batch_id": "b-1", "essay_id": "e-1", "status": "completed"},
    SpellcheckResultV1: {
        "batch_id": "b-1",
        "essay_id": "e-1",
        "user_id": "teacher-1",
        "status": "completed",
        "corrections_made": 3,
        "correction_metrics": {
            "total_corrections": 3,
            "spellchecker_corrections": 3,
            "word_count": 250,
            "correction_density": 0.012,
        },
        "corrected_text_storage_id": "sha256-c",
        "processing_duration_ms": 41,
        "processor_version": "pyspellchecker-0.8",
        "error": None,
    },
    BatchDeadlineReachedV1: {"batch_id": "b-1", "deadline_at": "2025-11-27T11:00:00Z"},
    BatchResultsReadyV1: {
        "batch_id": "b-1",
        "user_id": "teacher-1",
        "title": "Persuasive essays",
        "total_essays": 3,
        "completed_essays": 2,
        "failed_essays": 1,
        "phase_results": {
            "spellcheck": {
                "phase_name": "spellcheck",
                "status": "completed",
                "completed_count": 3,
                "failed_count": 0,
                "processing_time_seconds": 1.5,
                "failed_essay_ids": [],
            },
            "cj_assessment": {
                "phase_name": "cj_assessment",
                "status": "completed",
                "completed_count": 2,
                "failed_count": 1,
                "processing_time_seconds": 12.5,
                "failed_essay_ids": ["e-2"],
            },
        },
        "overall_status": "completed_with_failures",
        "processing_duration_seconds": 14.0,
        "ready_at": "2025-11-27T09:06:00Z",
    },
    TeacherNotificationRequestedV1: {
        "teacher_id": "teacher-1",
        "notification_type": "batch_results_ready",
        "category": "processing_results",
        "priority": "high",
        "payload": {"batch_id": "b-1", "completed_essays": 2},
        "action_required": False,
        "deadline_timestamp": None,
        "correlation_id": str(uuid4()),
        "batch_id": "b-1",
        "class_id": "class-9a",
        "timestamp": "2025-11-27T09:06:00Z",
    },
}

# docs/contracts.md, "Events": the fields of each model, and of the objects nested in it
# (path -> fields; an int in a path picks a list element).
ENVELOPE_FIELDS = {
    "event_id",
    "event_type",
    "event_timestamp",
    "source_service",
    "schema_version",
    "correlation_id",
    "data_schema_uri",
    "data",
    "metadata",
}
ERROR_FIELDS = {"code", "message", "correlation_id", "service", "operation", "timestamp", "details"}
ESSAY_REF_FIELDS = {"essay_id", "text_storage_id"}
ESSAY_RESULT_FIELDS = {
    "essay_id",
    "status",
    "bt_score",
    "bt_se",
    "rank",
    "comparison_count",
    "letter_grade",
    "normalized_score",
    "confidence_score",
    "confidence_label",
    "is_anchor",
    "display_name",
    "error",
}
# `failed_essay_ids`: RAS lists the failures of each phase, so a teacher sees them per phase
# (docs/contracts.md, "What differs from what you might assume").
PHASE_RESULT_FIELDS = {
    "phase_name",
    "status",
    "completed_count",
    "failed_count",
    "processing_time_seconds",
    "failed_essay_ids",
}
DOCUMENTED: dict[type[WireModel], dict[tuple[str | int, ...], set[str]]] = {
    BatchEssaysRegisteredV1: {
        (): {
            "batch_id",
            "user_id",
            "org_id",
            "class_id",
            "assignment_id",
            "course_code",
            "title",
            "essay_ids",
            "expected_essay_count",
            "requested_phases",
            "notify_email",
            "registered_at",
        }
    },
    CJAssessmentRequestedV1: {
        (): {
            "batch_id",
            "user_id",
            "assignment_id",
            "language",
            "essays",
            "anchors",
            "max_comparisons_per_essay",
        },
        ("essays", 0): ESSAY_REF_FIELDS,
        ("anchors", 0): {"anchor_id", "text_storage_id", "grade"},
    },
    SpellcheckRequestedV1: {
        (): {"batch_id", "user_id", "assignment_id", "language", "essays"},
        ("essays", 0): ESSAY_REF_FIELDS,
    },
    CJAssessmentCompletedV1: {
        (): {"batch_id", "cj_assessment_job_id", "status", "processing_summary"},
        ("processing_summary",): {
            "total_essays",
            "successful",
            "failed",
            "successful_essay_ids",
            "failed_essay_ids",
            "processing_time_seconds",
        },
    },
    AssessmentResultV1: {
        (): {
            "batch_id",
            "cj_assessment_job_id",
            "assignment_id",
            "assessment_method",
            "model_used",
            "model_provider",
            "model_version",
            "essay_results",
            "assessment_metadata",
            "assessed_at",
        },
        ("essay_results", 0): ESSAY_RESULT_FIELDS,
        ("essay_results", 1): ESSAY_RESULT_FIELDS,
        ("essay_results", 1, "error"): ERROR_FIELDS,
        ("assessment_metadata",): {
            "comparisons_total",
            "comparisons_per_essay",
            "scale_separation_reliability",
            "anchors_used",
            "calibration_method",
            "stop_reason",
            "processing_duration_seconds",
            "dropped_judgements",
            "tokens_in",
            "tokens_out",
            "cost",
            "essay_reads",
        },
    },
    CJAssessmentProgressV1: {
        (): {"batch_id", "cj_assessment_job_id", "comparisons_done", "comparisons_planned", "waves_done"}
    },
    SpellcheckCompletedV1: {(): {"batch_id", "essay_id", "status"}},
    SpellcheckResultV1: {
        (): {
            "batch_id",
            "essay_id",
            "user_id",
            "status",
            "corrections_made",
            "correction_metrics",
            "corrected_text_storage_id",
            "processing_duration_ms",
            "processor_version",
            "error",
        },
        ("correction_metrics",): {
            "total_corrections",
            "spellchecker_corrections",
            "word_count",
            "correction_density",
        },
    },
    BatchDeadlineReachedV1: {(): {"batch_id", "deadline_at"}},
    BatchResultsReadyV1: {
        (): {
            "batch_id",
            "user_id",
            "title",
            "total_essays",
            "completed_essays",
            "failed_essays",
            "phase_results",
            "overall_status",
            "processing_duration_seconds",
            "ready_at",
        },
        ("phase_results", "spellcheck"): PHASE_RESULT_FIELDS,
        ("phase_results", "cj_assessment"): PHASE_RESULT_FIELDS,
    },
    TeacherNotificationRequestedV1: {
        (): {
            "teacher_id",
            "notification_type",
            "category",
            "priority",
            "payload",
            "action_required",
            "deadline_timestamp",
            "correlation_id",
            "batch_id",
            "class_id",
            "timestamp",
        }
    },
}

# One invalid value per event and the field path the reason must name (under the envelope's `data`).
INVALID: dict[type[WireModel], list[tuple[tuple[str | int, ...], Any, str]]] = {
    BatchEssaysRegisteredV1: [
        (("essay_ids",), [], "data.essay_ids"),
        (("requested_phases",), ["spellcheck", "astrology"], "data.requested_phases.1"),
        (("batch_id",), "", "data.batch_id"),
    ],
    CJAssessmentRequestedV1: [
        (("anchors", 0, "grade"), "Z", "data.anchors.0.grade"),
        (("essays",), [], "data.essays"),
        (("max_comparisons_per_essay",), 0, "data.max_comparisons_per_essay"),
    ],
    SpellcheckRequestedV1: [
        (("essays", 0, "text_storage_id"), None, "data.essays.0.text_storage_id"),
        (("language",), "e", "data.language"),
    ],
    CJAssessmentCompletedV1: [
        (("status",), "done", "data.status"),
        (("processing_summary", "failed"), -1, "data.processing_summary.failed"),
    ],
    CJAssessmentProgressV1: [
        (("comparisons_done",), -1, "data.comparisons_done"),
        (("comparisons_planned",), "many", "data.comparisons_planned"),
    ],
    AssessmentResultV1: [
        (("assessment_metadata", "cost"), -0.5, "data.assessment_metadata.cost"),
        (("essay_results", 0, "normalized_score"), 1.5, "data.essay_results.0.normalized_score"),
        (("essay_results", 0, "confidence_label"), "VERY_HIGH", "data.essay_results.0.confidence_label"),
        (("model_used",), None, "data.model_used"),
    ],
    SpellcheckCompletedV1: [(("status",), "skipped", "data.status")],
    SpellcheckResultV1: [
        (("corrections_made",), -3, "data.corrections_made"),
        (("correction_metrics", "word_count"), "many", "data.correction_metrics.word_count"),
    ],
    BatchDeadlineReachedV1: [(("deadline_at",), "soon", "data.deadline_at")],
    BatchResultsReadyV1: [
        (("overall_status",), "finished", "data.overall_status"),
        (
            ("phase_results", "spellcheck", "completed_count"),
            -1,
            "data.phase_results.spellcheck.completed_count",
        ),
    ],
    TeacherNotificationRequestedV1: [
        (("priority",), "urgent", "data.priority"),
        (("correlation_id",), "not-a-uuid", "data.correlation_id"),
    ],
}

# Where an unknown field is slipped into the sample besides the top level of `data`.
NESTED_OBJECTS: dict[type[WireModel], list[tuple[str | int, ...]]] = {
    CJAssessmentRequestedV1: [("essays", 0), ("anchors", 0)],
    SpellcheckRequestedV1: [("essays", 0)],
    CJAssessmentCompletedV1: [("processing_summary",)],
    AssessmentResultV1: [("essay_results", 0), ("essay_results", 1, "error"), ("assessment_metadata",)],
    SpellcheckResultV1: [("correction_metrics",)],
    BatchResultsReadyV1: [("phase_results", "cj_assessment")],
}

TOPICS = Topics().all()
TOPIC_IDS = [info.model.__name__ for info in TOPICS]


def _at(document: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _set(document: Any, path: tuple[str | int, ...], value: Any) -> None:
    _at(document, path[:-1])[path[-1]] = value


def _envelope(topic: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid4()),
        "event_type": topic,
        "event_timestamp": "2025-11-27T09:00:00Z",
        "source_service": "contract_test",
        "schema_version": 1,
        "correlation_id": str(uuid4()),
        "data_schema_uri": None,
        "data": data,
        "metadata": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    }


def _record(topic: str, value: bytes) -> Record:
    return Record(topic=topic, partition=0, offset=7, key=b"b-1", value=value)


def test_every_topic_has_a_sample_an_invalid_case_and_documented_fields() -> None:
    models = {info.model for info in TOPICS}
    assert set(SAMPLES) == models
    assert set(INVALID) == models
    assert set(DOCUMENTED) == models


@pytest.mark.parametrize("info", TOPICS, ids=TOPIC_IDS)
def test_event_survives_a_round_trip_through_envelope_bytes(info: Any) -> None:
    data = info.model.model_validate(SAMPLES[info.model])
    envelope = EventEnvelope[info.model](event_type=info.name, source_service="contract_test", data=data)

    value = envelope.to_bytes()
    again = EventEnvelope[info.model].model_validate_json(value)
    event, meta = decode(_record(info.name, value), info.model)

    assert again == envelope
    assert again.to_bytes() == value
    assert event == data
    assert (meta.event_id, meta.correlation_id, meta.event_type) == (
        envelope.event_id,
        envelope.correlation_id,
        info.name,
    )


@pytest.mark.parametrize("info", TOPICS, ids=TOPIC_IDS)
def test_producer_emits_exactly_the_documented_fields(info: Any) -> None:
    envelope = EventEnvelope[info.model](
        event_type=info.name,
        source_service="contract_test",
        data=info.model.model_validate(SAMPLES[info.model]),
    )
    emitted = orjson.loads(envelope.to_bytes())

    assert set(emitted) == ENVELOPE_FIELDS
    for path, fields in DOCUMENTED[info.model].items():
        assert set(_at(emitted["data"], path)) == fields, f"fields of data{list(path)}"


@pytest.mark.parametrize("info", TOPICS, ids=TOPIC_IDS)
def test_invalid_values_are_rejected_with_a_reason_naming_the_field(info: Any) -> None:
    for path, value, location in INVALID[info.model]:
        data = copy.deepcopy(SAMPLES[info.model])
        _set(data, path, value)
        raw = orjson.dumps(_envelope(info.name, data))

        with pytest.raises(PoisonEvent) as caught:
            decode(_record(info.name, raw), info.model)

        assert caught.value.error_type == "invalid_event"
        assert f"{location}: " in caught.value.reason, caught.value.reason


@pytest.mark.parametrize("info", TOPICS, ids=TOPIC_IDS)
def test_a_missing_required_field_is_named_in_the_reason(info: Any) -> None:
    required = next(name for name, field in info.model.model_fields.items() if field.is_required())
    data = copy.deepcopy(SAMPLES[info.model])
    del data[required]

    with pytest.raises(PoisonEvent) as caught:
        decode(_record(info.name, orjson.dumps(_envelope(info.name, data))), info.model)

    assert f"data.{required}: Field required" in caught.value.reason


@pytest.mark.parametrize("info", TOPICS, ids=TOPIC_IDS)
def test_unknown_extra_fields_are_accepted_and_not_re_emitted(info: Any) -> None:
    data = copy.deepcopy(SAMPLES[info.model])
    data["added_in_v1_1"] = {"anything": [1, 2]}
    for path in NESTED_OBJECTS.get(info.model, []):
        _at(data, path)["added_in_v1_1"] = "x"
    raw = _envelope(info.name, data)
    raw["envelope_extension"] = True

    event, _meta = decode(_record(info.name, orjson.dumps(raw)), info.model)
    emitted = orjson.loads(
        EventEnvelope[info.model](event_type=info.name, source_service="relay", data=event).to_bytes()
    )

    assert event == info.model.model_validate(SAMPLES[info.model])
    assert "envelope_extension" not in emitted
    assert b"added_in_v1_1" not in orjson.dumps(emitted)


def test_a_record_without_value_or_json_is_poison_with_its_reason() -> None:
    topic = Topics().spellcheck_completed
    with pytest.raises(PoisonEvent) as empty:
        decode(Record(topic, 0, 0, None, None), SpellcheckCompletedV1)
    with pytest.raises(PoisonEvent) as garbage:
        decode(_record(topic, b"\x00not json"), SpellcheckCompletedV1)
    with pytest.raises(PoisonEvent) as not_object:
        decode(_record(topic, b"[1, 2]"), SpellcheckCompletedV1)

    assert (empty.value.error_type, garbage.value.error_type, not_object.value.error_type) == (
        "empty_record",
        "undecodable",
        "invalid_envelope",
    )


def test_validation_reason_lists_every_failing_field() -> None:
    data = copy.deepcopy(SAMPLES[SpellcheckResultV1])
    data["status"] = "unknown"
    data["processing_duration_ms"] = -1
    with pytest.raises(ValidationError) as caught:
        SpellcheckResultV1.model_validate(data)

    reason = validation_reason(caught.value)

    assert "status: Input should be 'completed' or 'failed'" in reason
    assert "processing_duration_ms: Input should be greater than or equal to 0" in reason


# --- rules beyond field types ---


def _essay(**changes: Any) -> dict[str, Any]:
    essay = copy.deepcopy(SAMPLES[AssessmentResultV1]["essay_results"][0])
    essay.update(changes)
    return essay


def _reason(model: type[WireModel], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return validation_reason(caught.value)


def test_a_failed_essay_result_must_carry_an_error() -> None:
    failed = _essay(status="failed", **dict.fromkeys(("bt_score", "bt_se", "rank", "letter_grade"), None))
    failed.update(normalized_score=None, confidence_score=None, confidence_label=None)

    assert "a failed essay result must carry an error" in _reason(EssayResultV1, failed)
    assert EssayResultV1.model_validate({**failed, "error": ERROR}).error is not None


def test_a_failed_essay_result_must_not_carry_scores() -> None:
    reason = _reason(EssayResultV1, _essay(status="failed", error=ERROR))

    for name in ("bt_score", "bt_se", "rank", "letter_grade", "normalized_score", "confidence_score"):
        assert name in reason


def test_an_anchor_has_no_rank_among_students() -> None:
    assert "an anchor has no rank" in _reason(EssayResultV1, _essay(is_anchor=True, rank=3))
    assert EssayResultV1.model_validate(_essay(is_anchor=True, rank=None)).is_anchor


@pytest.mark.parametrize("grade", ["A", "A+", "A-", "B", "C+", "D-", "E", "F", "F+", "U"])
def test_letter_grades_of_the_scale_are_accepted(grade: str) -> None:
    assert EssayResultV1.model_validate(_essay(letter_grade=grade)).letter_grade == grade


@pytest.mark.parametrize("grade", ["Z", "a", "G", "A++", "U+", "", "B +", "AB"])
def test_letter_grades_outside_the_scale_are_rejected(grade: str) -> None:
    assert "letter_grade: String should match pattern" in _reason(EssayResultV1, _essay(letter_grade=grade))


def test_essay_results_of_one_event_name_each_essay_once() -> None:
    data = copy.deepcopy(SAMPLES[AssessmentResultV1])
    data["essay_results"][2] = {**data["essay_results"][0]}

    assert "essay_results[].essay_id must be unique; repeated: ['e-1']" in _reason(AssessmentResultV1, data)


def test_a_registration_needs_essays_unique_ids_and_a_matching_count() -> None:
    base = SAMPLES[BatchEssaysRegisteredV1]

    empty = _reason(BatchEssaysRegisteredV1, {**base, "essay_ids": [], "expected_essay_count": 1})
    repeated = _reason(BatchEssaysRegisteredV1, {**base, "essay_ids": ["e-1", "e-2", "e-1"]})
    miscounted = _reason(BatchEssaysRegisteredV1, {**base, "expected_essay_count": 4})
    twice_a_phase = _reason(BatchEssaysRegisteredV1, {**base, "requested_phases": ["spellcheck"] * 2})

    assert "essay_ids: List should have at least 1 item" in empty
    assert "essay_ids must be unique; repeated: ['e-1']" in repeated
    assert "expected_essay_count (4) must equal the number of essay_ids (3)" in miscounted
    assert "requested_phases must be unique" in twice_a_phase


def test_a_registration_without_phases_requests_spellcheck_and_cj() -> None:
    data = {k: v for k, v in SAMPLES[BatchEssaysRegisteredV1].items() if k != "requested_phases"}

    assert [str(p) for p in BatchEssaysRegisteredV1.model_validate(data).requested_phases] == [
        "spellcheck",
        "cj_assessment",
    ]


def test_a_failed_spellcheck_result_must_carry_an_error() -> None:
    data = {**SAMPLES[SpellcheckResultV1], "status": "failed", "correction_metrics": None}

    assert "a failed spellcheck result must carry an error" in _reason(SpellcheckResultV1, data)


def test_phase_results_are_keyed_by_their_own_phase_name() -> None:
    data = copy.deepcopy(SAMPLES[BatchResultsReadyV1])
    data["phase_results"]["spellcheck"]["phase_name"] = "cj_assessment"

    assert "phase_results keys must equal their phase_name" in _reason(BatchResultsReadyV1, data)


def test_timestamps_are_read_as_utc_whatever_their_offset() -> None:
    registered = BatchEssaysRegisteredV1.model_validate(
        {**SAMPLES[BatchEssaysRegisteredV1], "registered_at": "2025-11-27T09:00:00"}
    )
    shifted = BatchEssaysRegisteredV1.model_validate(
        {**SAMPLES[BatchEssaysRegisteredV1], "registered_at": "2025-11-27T11:00:00+02:00"}
    )
    built = ErrorDetail(
        code="TIMEOUT",
        message="late",
        service="ras",
        operation="deadline",
        timestamp=datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5))),
    )

    assert registered.registered_at == datetime(2025, 11, 27, 9, tzinfo=UTC)
    assert registered.registered_at.tzinfo is UTC
    assert shifted.registered_at == registered.registered_at
    assert shifted.registered_at.utcoffset() == timedelta(0)
    assert built.timestamp == datetime(2025, 1, 1, 17, tzinfo=UTC)


def test_the_error_body_has_the_documented_shape() -> None:
    body = ErrorBody(error=ErrorDetail.model_validate(ERROR)).model_dump(mode="json")

    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_FIELDS
    assert "error.code: Input should be" in _reason(ErrorBody, {"error": {**ERROR, "code": "OOPS"}})


def test_topics_follow_the_prefix_and_have_dead_letter_twins() -> None:
    default, custom = Topics(), Topics("acme")

    assert default.cj_assessment_result == "huleedu.cj_assessment.result.published.v1"
    assert [info.name for info in custom.all()] == [
        info.name.replace("huleedu.", "acme.", 1) for info in default.all()
    ]
    assert custom.model_of("acme.spellcheck.completed.v1") is SpellcheckCompletedV1
    assert dlq_topic(custom.batch_results_ready) == "acme.batch.results.ready.v1.dlq"
    with pytest.raises(KeyError):
        custom.model_of("huleedu.spellcheck.completed.v1")
