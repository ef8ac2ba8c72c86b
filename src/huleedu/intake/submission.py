"""What a valid batch submission is: the body's shape (pydantic, types only) and the rules on its
values, checked all at once so the teacher learns every problem in one answer. Pure, no I/O.

Limits: 1..500 essays, each 1 byte..100 KiB (102 400 bytes) of UTF-8 after trimming whitespace;
filenames unique (ignoring case); at most 100 anchors, each with a grade like `A`, `B+`, `C-` or `U`
and a text under the essay rules; anchors need the `cj_assessment` phase; phases are the ones
offered (`spellcheck`, `cj_assessment`), unique, at least one.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from huleedu.contracts.enums import PhaseName
from huleedu.storage.text import unstorable_reason

MAX_ESSAYS = 500
MAX_ANCHORS = 100
MAX_TEXT_BYTES = 100 * 1024
MAX_TITLE_CHARS = 500
MAX_ID_CHARS = 255
MAX_FILENAME_CHARS = 255
MAX_EMAIL_CHARS = 320
MAX_COMPARISONS = 200
MAX_LANGUAGE_CHARS = 12
OFFERED_PHASES = (PhaseName.SPELLCHECK, PhaseName.CJ_ASSESSMENT)
DEFAULT_LANGUAGE = "en"

GRADE = re.compile(r"^([A-F][+-]?|U)$")
LANGUAGE = re.compile(r"^[a-z]{2,3}([-_][a-z0-9]{2,8})?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

FieldPath = tuple[str | int, ...]


# --- the body (types only: value rules are below, so that all of them are reported together) ---
# Strict: `true` or `5.0` is no integer, `1` no string. The bounds given as `json_schema_extra` are
# the ones the rules below enforce: stated in the schema only, so that pydantic does not stop at one
# of them before every other rule was checked.

_STRICT = ConfigDict(extra="ignore", strict=True)


class EssayIn(BaseModel):
    model_config = _STRICT

    filename: str | None = Field(
        default=None,
        description="unique within the batch (ignoring case)",
        json_schema_extra={"maxLength": MAX_FILENAME_CHARS},
    )
    text: str = Field(
        description="1 byte..100 KiB of UTF-8 after trimming whitespace",
        json_schema_extra={"minLength": 1, "maxLength": MAX_TEXT_BYTES},
    )


class AnchorIn(BaseModel):
    model_config = _STRICT

    text: str = Field(
        description="a graded reference essay, same size rules as essays",
        json_schema_extra={"minLength": 1, "maxLength": MAX_TEXT_BYTES},
    )
    grade: str = Field(description="^([A-F][+-]?|U)$", examples=["B+"], json_schema_extra={"maxLength": 2})


class BatchSubmission(BaseModel):
    """The JSON body of `POST /v1/batches`. No string may hold a NUL character (U+0000)."""

    model_config = _STRICT

    title: str = Field(
        description="1..500 characters", json_schema_extra={"minLength": 1, "maxLength": MAX_TITLE_CHARS}
    )
    assignment_id: str | None = Field(
        default=None, description="up to 255 characters", json_schema_extra={"maxLength": MAX_ID_CHARS}
    )
    phases: list[str] | None = Field(
        default=None,
        description="spellcheck and/or cj_assessment; default both",
        examples=[["spellcheck"]],
        json_schema_extra={"maxItems": len(OFFERED_PHASES), "items": {"type": "string", "maxLength": 32}},
    )
    notify_email: str | None = Field(
        default=None,
        description="where to email when results are ready",
        json_schema_extra={"maxLength": MAX_EMAIL_CHARS},
    )
    language: str = Field(
        default=DEFAULT_LANGUAGE,
        description="language of the essays, e.g. en",
        json_schema_extra={"maxLength": MAX_LANGUAGE_CHARS},
    )
    max_comparisons_per_essay: int | None = Field(
        default=None,
        description=f"CJ budget, 1..{MAX_COMPARISONS}",
        json_schema_extra={"minimum": 1, "maximum": MAX_COMPARISONS},
    )
    essays: list[EssayIn] = Field(
        description=f"1..{MAX_ESSAYS} essays", json_schema_extra={"minItems": 1, "maxItems": MAX_ESSAYS}
    )
    anchors: list[AnchorIn] = Field(
        default_factory=list,
        description=f"graded anchors for CJ, up to {MAX_ANCHORS}",
        json_schema_extra={"maxItems": MAX_ANCHORS},
    )


# --- the accepted submission ---


@dataclass(frozen=True)
class Essay:
    text: str  # trimmed
    filename: str | None = None


@dataclass(frozen=True)
class Anchor:
    text: str  # trimmed
    grade: str


@dataclass(frozen=True)
class Submission:
    title: str
    essays: tuple[Essay, ...]
    phases: tuple[PhaseName, ...] = OFFERED_PHASES
    anchors: tuple[Anchor, ...] = ()
    assignment_id: str | None = None
    notify_email: str | None = None
    language: str = DEFAULT_LANGUAGE
    max_comparisons_per_essay: int | None = None


@dataclass(frozen=True)
class Violation:
    path: FieldPath
    message: str
    type: str = "value_error"


@dataclass
class InvalidSubmission(Exception):
    """Every rule the submission breaks, with the path of the offending field."""

    violations: list[Violation] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{'.'.join(map(str, v.path))}: {v.message}" for v in self.violations)


def validate_submission(raw: object) -> Submission:
    """The accepted submission, or InvalidSubmission listing every violation."""
    try:
        body = BatchSubmission.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSubmission(
            [Violation(tuple(error["loc"]), error["msg"], error["type"]) for error in exc.errors()]
        ) from exc
    found = _Found()
    submission = _apply_rules(body, found.fail)
    if found.violations:
        raise InvalidSubmission(found.violations)
    return submission


class _Found:
    """Collects violations; rules report through `fail`."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def fail(self, path: FieldPath, message: str, kind: str = "value_error") -> None:
        self.violations.append(Violation(path, message, kind))


class _Fail(Protocol):
    def __call__(self, path: FieldPath, message: str, kind: str = ..., /) -> None: ...


def _apply_rules(body: BatchSubmission, fail: _Fail) -> Submission:
    # Texts are checked by their own rule; any other string must be storable too, or the database
    # would refuse it later, after the teacher was told the batch was accepted.
    labels: list[tuple[FieldPath, str | None]] = [
        (("title",), body.title),
        (("assignment_id",), body.assignment_id),
        (("notify_email",), body.notify_email),
        (("language",), body.language),
        *((("essays", i, "filename"), essay.filename) for i, essay in enumerate(body.essays)),
        *((("anchors", i, "grade"), anchor.grade) for i, anchor in enumerate(body.anchors)),
        *((("phases", i), phase) for i, phase in enumerate(body.phases or ())),
    ]
    for path, value in labels:
        if value is not None and (reason := unstorable_reason(value)) is not None:
            fail(path, reason, "unicode")

    title = body.title.strip()
    if not title:
        fail(("title",), "must not be empty", "missing")
    elif len(title) > MAX_TITLE_CHARS:
        fail(("title",), f"is {len(title)} characters; at most {MAX_TITLE_CHARS}", "too_long")

    assignment_id = _optional(body.assignment_id)
    if assignment_id is not None and len(assignment_id) > MAX_ID_CHARS:
        fail(("assignment_id",), f"is {len(assignment_id)} characters; at most {MAX_ID_CHARS}", "too_long")

    notify_email = _optional(body.notify_email)
    if notify_email is not None and (len(notify_email) > MAX_EMAIL_CHARS or not EMAIL.match(notify_email)):
        fail(("notify_email",), "is not an email address", "value_error")

    language = body.language.strip().lower()
    if not LANGUAGE.match(language):
        fail(("language",), "is not a language code such as 'en' or 'pt-br'", "value_error")

    maximum = body.max_comparisons_per_essay
    if maximum is not None and not 1 <= maximum <= MAX_COMPARISONS:
        fail(("max_comparisons_per_essay",), f"must be between 1 and {MAX_COMPARISONS}", "value_error")

    phases = _phases(body.phases, fail)

    if not body.essays:
        fail(("essays",), "at least 1 essay is required", "too_short")
    elif len(body.essays) > MAX_ESSAYS:
        fail(("essays",), f"has {len(body.essays)} essays; at most {MAX_ESSAYS}", "too_long")
    essays = tuple(
        Essay(text=_text(essay.text, ("essays", i, "text"), fail), filename=_optional(essay.filename))
        for i, essay in enumerate(body.essays)
    )
    _check_filenames(essays, fail)

    if len(body.anchors) > MAX_ANCHORS:
        fail(("anchors",), f"has {len(body.anchors)} anchors; at most {MAX_ANCHORS}", "too_long")
    if body.anchors and PhaseName.CJ_ASSESSMENT not in phases:
        fail(("anchors",), "anchors are used only by the cj_assessment phase, which is not requested")
    anchors = []
    for i, anchor in enumerate(body.anchors):
        grade = anchor.grade.strip()
        if not GRADE.match(grade):
            fail(("anchors", i, "grade"), f"{anchor.grade!r} is not a grade (A-F with optional +/-, or U)")
        anchors.append(Anchor(text=_text(anchor.text, ("anchors", i, "text"), fail), grade=grade))

    return Submission(
        title=title,
        essays=essays,
        phases=phases,
        anchors=tuple(anchors),
        assignment_id=assignment_id,
        notify_email=notify_email,
        language=language,
        max_comparisons_per_essay=maximum,
    )


def _optional(value: str | None) -> str | None:
    """Blank means absent."""
    if value is None:
        return None
    return value.strip() or None


def _phases(given: Sequence[str] | None, fail: _Fail) -> tuple[PhaseName, ...]:
    if given is None:
        return OFFERED_PHASES
    if not given:
        fail(("phases",), "at least 1 phase is required", "too_short")
    offered = {phase.value: phase for phase in OFFERED_PHASES}
    phases: list[PhaseName] = []
    for i, name in enumerate(given):
        phase = offered.get(name.strip())
        if phase is None:
            fail(("phases", i), f"unknown phase {name!r}; offered: {', '.join(offered)}", "enum")
        elif phase in phases:
            fail(("phases", i), f"phase {name!r} is listed twice")
        else:
            phases.append(phase)
    return tuple(phases)


def _text(text: str, path: FieldPath, fail: _Fail) -> str:
    trimmed = text.strip()
    reason = unstorable_reason(trimmed)
    if reason is not None:
        fail(path, reason, "unicode")
        return trimmed
    size = len(trimmed.encode("utf-8"))
    if size == 0:
        fail(path, "must not be empty (after trimming whitespace)", "too_short")
    elif size > MAX_TEXT_BYTES:
        fail(path, f"is {size} bytes of UTF-8; at most {MAX_TEXT_BYTES} (100 KiB)", "too_long")
    return trimmed


def _check_filenames(essays: Sequence[Essay], fail: _Fail) -> None:
    first_seen: dict[str, int] = {}
    for i, essay in enumerate(essays):
        if essay.filename is None:
            continue
        if len(essay.filename) > MAX_FILENAME_CHARS:
            fail(("essays", i, "filename"), f"is longer than {MAX_FILENAME_CHARS} characters", "too_long")
        key = essay.filename.casefold()
        if key in first_seen:
            fail(
                ("essays", i, "filename"),
                f"{essay.filename!r} is already used by essays.{first_seen[key]}",
                "duplicate",
            )
        else:
            first_seen[key] = i
