"""What `huleedu demo` prints: phase progress bars (redrawn in place on a terminal) and the results
table. Formatting only; the demo's run is in `demo.py`."""

from typing import Any, TextIO

BAR_WIDTH = 30
PHASE_NAMES = {"spellcheck": "Spell check", "cj_assessment": "Comparative judgement"}


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#########.....]` with `done` of `total` filled (an empty bar for an empty total)."""
    filled = round(width * done / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def phase_states(batch: dict[str, Any]) -> list[tuple[str, str, int, int, int]]:
    """(phase, status, done, failed, total) of each requested phase; done counts failures too."""
    total = int(batch["essay_count"])
    states = []
    for phase in batch["requested_phases"]:
        result = batch["phase_results"].get(phase, {})
        failed = int(result.get("failed_count", 0))
        done = int(result.get("completed_count", 0)) + failed
        states.append((phase, str(result.get("status", "pending")), done, failed, total))
    return states


def phase_line(phase: str, status: str, done: int, failed: int, total: int) -> str:
    failures = f", {failed} failed" if failed else ""
    name = PHASE_NAMES.get(phase, phase)
    return f"  {name:<22} {progress_bar(done, total)} {done:>3}/{total} {status}{failures}"


def _short(value: object, width: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text if len(text) <= width else text[: width - 1] + "~"


def _number(value: object, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def _failures(essay: dict[str, Any]) -> str:
    failed = [
        PHASE_NAMES.get(phase, phase)
        for phase, key in (
            ("spellcheck", "spellcheck_error_detail"),
            ("cj_assessment", "cj_assessment_error_detail"),
        )
        if essay.get(key)
    ]
    return ", ".join(failed) or "-"


RESULT_COLUMNS = (
    ("rank", 4),
    ("filename", 24),
    ("grade", 5),
    ("confidence", 10),
    ("score", 12),
    ("spelling", 8),
)


def results_table(batch: dict[str, Any]) -> list[str]:
    """One line per essay, best first: rank, filename, grade, confidence, score ± SE, spelling
    corrections, failures."""
    header = "  ".join(f"{name:<{width}}" for name, width in RESULT_COLUMNS) + "  failures"
    lines = [header, "-" * len(header)]
    essays = sorted(batch["essays"], key=lambda e: (e.get("cj_rank") is None, e.get("cj_rank") or 0))
    for essay in essays:
        label, score = essay.get("confidence_label"), essay.get("confidence_score")
        confidence = f"{label} {score:.2f}" if label and isinstance(score, int | float) else "-"
        bt = (
            f"{essay['cj_score']:+.2f} ±{_number(essay.get('cj_se'), 2)}"
            if isinstance(essay.get("cj_score"), int | float)
            else "-"
        )
        cells = (
            _short(essay.get("cj_rank"), 4),
            _short(essay.get("filename") or essay.get("essay_id"), 24),
            _short(essay.get("letter_grade"), 5),
            _short(confidence, 10),
            _short(bt, 12),
            _short(essay.get("spellcheck_correction_count"), 8),
        )
        row = "  ".join(f"{cell:<{width}}" for cell, (_, width) in zip(cells, RESULT_COLUMNS, strict=True))
        lines.append(f"{row}  {_failures(essay)}")
    return lines


def display_host(host: str) -> str:
    """Where a browser on this machine reaches a server listening on `host`."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)


# --- the run ---


class Progress:
    """Phase bars that redraw in place on a terminal; elsewhere (pipes, logs) a line per phase when
    its status changes or it is done."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._drawn = 0
        self._printed: dict[str, tuple[str, bool]] = {}

    def show(self, batch: dict[str, Any]) -> None:
        states = phase_states(batch)
        if self._tty:
            if self._drawn:
                self._out.write(f"\x1b[{self._drawn}F")  # back to the first line of the bars
            self._out.write("".join(f"\x1b[2K{phase_line(*state)}\n" for state in states))
            self._drawn = len(states)
        else:
            for state in states:
                phase, status, done, _, total = state
                key = (status, done >= total)
                if self._printed.get(phase) != key:
                    self._printed[phase] = key
                    self._out.write(phase_line(*state) + "\n")
        self._out.flush()
