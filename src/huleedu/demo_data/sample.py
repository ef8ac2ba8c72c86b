"""Reading the sample batch from the package's text files: `essays/<student>.txt` and
`anchors/<grade>.txt`, so a teacher-like submission can be built from them."""

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

TITLE = "Year 9 persuasive writing: should schools ban mobile phones?"
ASSIGNMENT_ID = "demo-phones-debate"


@dataclass(frozen=True)
class SampleText:
    name: str  # the essay's filename, or the anchor's grade
    text: str


def _texts(folder: Traversable) -> list[SampleText]:
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".txt")), key=lambda e: e.name
    )
    return [SampleText(entry.name, entry.read_text(encoding="utf-8").strip()) for entry in entries]


def essays() -> list[SampleText]:
    """The 24 student essays, by filename."""
    return _texts(files(__package__) / "essays")


def anchors() -> list[SampleText]:
    """The 6 anchors, `name` being the grade (A..F)."""
    return [
        SampleText(text.name.removesuffix(".txt"), text.text)
        for text in _texts(files(__package__) / "anchors")
    ]


def submission(*, notify_email: str | None = None) -> dict[str, Any]:
    """The JSON body of `POST /v1/batches` for the whole sample, both phases."""
    body: dict[str, Any] = {
        "title": TITLE,
        "assignment_id": ASSIGNMENT_ID,
        "phases": ["spellcheck", "cj_assessment"],
        "essays": [{"filename": essay.name, "text": essay.text} for essay in essays()],
        "anchors": [{"grade": anchor.name, "text": anchor.text} for anchor in anchors()],
    }
    if notify_email is not None:
        body["notify_email"] = notify_email
    return body
