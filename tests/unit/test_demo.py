"""`huleedu demo`: the bundled sample, what it prints, and one real run of the command (embedded
mode, `--exit`), which must end with the results table, the email file and a working dashboard URL."""

import re
import signal
import subprocess
import time
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from huleedu.demo_data import sample
from huleedu.platform.cli import build_cli
from huleedu.platform.demo import demo_settings
from huleedu.platform.demo_report import display_host, progress_bar, results_table
from huleedu.platform.settings import Settings
from support.processes import huleedu_command


def test_the_sample_is_24_essays_and_6_anchors_of_80_to_200_words() -> None:
    essays, anchors = sample.essays(), sample.anchors()
    assert len(essays) == 24
    assert len({essay.name for essay in essays}) == 24
    assert [anchor.name for anchor in anchors] == ["A", "B", "C", "D", "E", "F"]
    for text in [*essays, *anchors]:
        assert 80 <= len(text.text.split()) <= 200, text.name


def test_the_sample_submission_is_a_valid_body_for_intake() -> None:
    from huleedu.intake.submission import validate_submission

    accepted = validate_submission(sample.submission(notify_email="t@example.org"))

    assert len(accepted.essays) == 24
    assert [anchor.grade for anchor in accepted.anchors] == ["A", "B", "C", "D", "E", "F"]
    assert accepted.notify_email == "t@example.org"


def test_a_progress_bar_is_filled_in_proportion() -> None:
    assert progress_bar(0, 24, width=12) == "[............]"
    assert progress_bar(12, 24, width=12) == "[######......]"
    assert progress_bar(24, 24, width=12) == "[############]"
    assert progress_bar(0, 0, width=4) == "[....]"


def test_the_results_table_lists_ranked_essays_first_and_names_failures() -> None:
    batch = {
        "essays": [
            {
                "essay_id": "e3",
                "filename": "c.txt",
                "cj_rank": None,
                "cj_assessment_error_detail": {"message": "x"},
            },
            {
                "essay_id": "e2",
                "filename": "b.txt",
                "cj_rank": 2,
                "letter_grade": "C+",
                "confidence_label": "MID",
                "confidence_score": 0.55,
                "cj_score": -0.5,
                "cj_se": 0.4,
                "spellcheck_correction_count": 3,
            },
            {
                "essay_id": "e1",
                "filename": "a.txt",
                "cj_rank": 1,
                "letter_grade": "A",
                "cj_score": 1.25,
                "cj_se": 0.3,
            },
        ]
    }

    lines = results_table(batch)

    assert lines[0].split() == ["rank", "filename", "grade", "confidence", "score", "spelling", "failures"]
    assert [line.split()[1] for line in lines[2:]] == ["a.txt", "b.txt", "c.txt"]
    assert lines[3].split() == ["2", "b.txt", "C+", "MID", "0.55", "-0.50", "±0.40", "3", "-"]
    assert lines[4].split()[:2] == ["-", "c.txt"]
    assert lines[4].endswith("  Comparative judgement")


def test_the_demo_runs_embedded_whatever_the_environment_says(tmp_path: Path) -> None:
    production = Settings(
        database_url="postgresql+asyncpg://u@db/huleedu",
        kafka_bootstrap_servers="kafka:9092",
        redis_url="redis://cache:6379/0",
        smtp_host="smtp.example.org",
        ras_url="http://ras:8000",
        cj_judge="llm",
        http_host="0.0.0.0",
    )

    settings = demo_settings(production, tmp_path, 8123)

    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'huleedu.sqlite'}"
    assert (settings.kafka_bootstrap_servers, settings.redis_url, settings.smtp_host, settings.ras_url) == (
        None,
        None,
        None,
        None,
    )
    assert settings.cj_judge == "heuristic"
    assert settings.mail_dir == tmp_path.resolve() / "mail"
    assert settings.public_url == "http://127.0.0.1:8123"
    assert display_host("::") == "127.0.0.1"
    assert display_host("::1") == "[::1]"


def _email(path: Path) -> Message:
    return message_from_bytes(path.read_bytes())


def test_huleedu_demo_prints_the_results_the_email_file_and_a_working_signed_in_dashboard_url(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        build_cli(), ["demo", "--exit", "--dir", str(tmp_path / "demo"), "--port", "0"]
    )

    output = result.output
    assert result.exit_code == 0, output
    batch_id = re.search(r"graded anchors as demo-teacher \(POST /v1/batches\): batch (\S+)", output)
    assert batch_id, output
    assert "completed successfully, 24 of 24 essays assessed" in output

    rows = [line.split() for line in output.splitlines() if re.match(r"^\s+\d+\s+\S+\.txt\s", line)]
    assert [int(row[0]) for row in rows] == list(range(1, 25))
    assert sorted(row[1] for row in rows) == sorted(essay.name for essay in sample.essays())
    assert all(re.fullmatch(r"[A-F][+-]?|U", row[2]) for row in rows), rows

    email_line = re.search(r"Email to demo-teacher@example.org: (\S+\.eml)", output)
    assert email_line, output
    email_path = Path(email_line.group(1))
    email = _email(email_path)
    assert email["To"] == "demo-teacher@example.org"
    assert batch_id.group(1) in email.as_string()

    link = re.search(
        r"Dashboard \(signed in\): (http://127\.0\.0\.1:(\d+))/\?batch=(\S+)#token=(\S+)", output
    )
    assert link, output
    assert link.group(3) == batch_id.group(1)
    claims = jwt.decode(link.group(4), options={"verify_signature": False})
    assert claims["sub"] == "demo-teacher"
    with pytest.raises(httpx.ConnectError):  # --exit: nothing serves any more
        httpx.get(link.group(1) + "/", timeout=2.0)


def test_huleedu_demo_keeps_serving_the_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*huleedu_command(), "demo", "--dir", str(tmp_path / "demo"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while not any(line.startswith("Serving until Ctrl-C") for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = process.stdout.readline()
            assert line, "the demo ended early:\n" + "".join(lines)
            lines.append(line)
        output = "".join(lines)
        link = re.search(
            r"Dashboard \(signed in\): (http://127\.0\.0\.1:\d+)/\?batch=(\S+)#token=(\S+)", output
        )
        assert link, output
        base, batch_id, token = link.groups()

        page = httpx.get(base + "/", timeout=5.0)
        batch = httpx.get(
            f"{base}/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {token}"}, timeout=5.0
        )

        assert page.status_code == 200
        assert "HuleEdu Results" in page.text
        assert batch.status_code == 200
        assert batch.json()["overall_status"] == "completed_successfully"
        assert len(batch.json()["essays"]) == 24
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0
