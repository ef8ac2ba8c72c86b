"""A multipart upload turned into the same submission as the JSON body: `.txt` (UTF-8) and `.docx`
files become essays named by their filenames, and violations point at the form fields.

Form fields: `title`, `assignment_id`, `notify_email`, `language`, `max_comparisons_per_essay`,
`phases` (repeated, or comma-separated), `files` (repeated: the essays), and for CJ anchors
`anchor_files` with `anchor_grades` (repeated, in the same order).
"""

import asyncio
import re
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile

from huleedu.intake.docx_text import UnreadableDocx, docx_text
from huleedu.intake.submission import (
    MAX_COMPARISONS,
    FieldPath,
    InvalidSubmission,
    Submission,
    Violation,
    validate_submission,
)

MAX_FILE_BYTES = 10 * 1024 * 1024  # a .docx holds far more than its text; the text rule still applies
TEXT_SUFFIX = ".txt"
DOCX_SUFFIX = ".docx"
# Digits only, and few enough that int() is cheap; a longer number is out of range anyway.
_SMALL_WHOLE_NUMBER = re.compile(r"\s*([0-9]{1,9})\s*")


@dataclass(frozen=True)
class _Read:
    text: str | None  # None when the file could not be read; the violation says why
    filename: str | None
    violation: Violation | None = None


async def _read(item: str | UploadFile, path: FieldPath) -> _Read:
    if not isinstance(item, UploadFile):
        return _Read(None, None, Violation(path, "must be a file, not a text field", "type_error"))
    filename = (item.filename or "").strip() or None
    data = await item.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return _Read(
            None, filename, Violation(path, f"file is larger than {MAX_FILE_BYTES} bytes", "too_long")
        )
    suffix = (filename or "").lower().rpartition(".")[2]
    if f".{suffix}" == TEXT_SUFFIX:
        try:
            return _Read(data.decode("utf-8-sig"), filename)
        except UnicodeDecodeError as exc:
            message = f"{filename} is not valid UTF-8 text ({exc.reason} at byte {exc.start})"
            return _Read(None, filename, Violation(path, message, "unicode"))
    if f".{suffix}" == DOCX_SUFFIX:
        try:
            return _Read(await asyncio.to_thread(docx_text, data), filename)
        except UnreadableDocx as exc:
            return _Read(None, filename, Violation(path, f"{filename} {exc}", "value_error"))
    message = f"{filename or 'the file'} is neither a .txt nor a .docx file"
    return _Read(None, filename, Violation(path, message, "value_error"))


def _form_path(path: FieldPath) -> FieldPath:
    """A path of the JSON submission as the form field that fed it."""
    match path:
        case ("essays", int(i), *_):
            return ("files", i)
        case ("essays",):
            return ("files",)
        case ("anchors", int(i), "grade"):
            return ("anchor_grades", i)
        case ("anchors", int(i), *_):
            return ("anchor_files", i)
        case ("anchors",):
            return ("anchor_files",)
    return path


async def submission_from_form(form: FormData) -> Submission:
    """The submission of a multipart form. Raises InvalidSubmission naming form fields."""
    violations: list[Violation] = []
    files = [await _read(item, ("files", i)) for i, item in enumerate(form.getlist("files"))]
    anchor_files = [
        await _read(item, ("anchor_files", i)) for i, item in enumerate(form.getlist("anchor_files"))
    ]
    unreadable = {("essays", i) for i, read in enumerate(files) if read.violation} | {
        ("anchors", i) for i, read in enumerate(anchor_files) if read.violation
    }
    violations.extend(read.violation for read in [*files, *anchor_files] if read.violation is not None)

    grades = [value for value in form.getlist("anchor_grades") if isinstance(value, str)]
    if len(grades) != len(anchor_files):
        violations.append(
            Violation(
                ("anchor_grades",),
                f"{len(grades)} grades for {len(anchor_files)} anchor files; give one grade per file",
            )
        )
    raw: dict[str, object] = {
        "essays": [{"filename": read.filename, "text": read.text or "-"} for read in files],
        "anchors": [
            {"text": read.text or "-", "grade": grades[i] if i < len(grades) else "U"}
            for i, read in enumerate(anchor_files)
        ],
    }
    for name in ("title", "assignment_id", "notify_email", "language"):
        if (value := _field(form, name)) is not None:
            raw[name] = value
    phases = [
        part.strip()
        for value in form.getlist("phases")
        if isinstance(value, str)
        for part in value.split(",")
    ]
    if phases:
        raw["phases"] = [phase for phase in phases if phase]
    maximum = _field(form, "max_comparisons_per_essay")
    if maximum is not None:
        if number := _SMALL_WHOLE_NUMBER.fullmatch(maximum):
            raw["max_comparisons_per_essay"] = int(number.group(1))
        elif maximum.strip().isascii() and maximum.strip().isdigit():
            violations.append(
                Violation(("max_comparisons_per_essay",), f"must be between 1 and {MAX_COMPARISONS}")
            )
        else:
            violations.append(
                Violation(("max_comparisons_per_essay",), "must be a whole number", "int_parsing")
            )

    try:
        submission = validate_submission(raw)
    except InvalidSubmission as invalid:
        violations.extend(
            Violation(_form_path(v.path), v.message, v.type)
            for v in invalid.violations
            if v.path[:2] not in unreadable  # the file's own violation says it already
        )
    if violations:
        raise InvalidSubmission(violations)
    return submission


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None
