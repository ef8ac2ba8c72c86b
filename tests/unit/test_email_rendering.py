"""The batch-results-ready email: what it says, its two parts, its headers."""

from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from huleedu.notifications.app import public_url
from huleedu.notifications.jobs import EmailJob
from huleedu.notifications.rendering import Renderer, compose
from huleedu.platform.settings import Settings

VARIABLES = {
    "batch_id": "batch 7/a",
    "title": "Essays <script>alert(1)</script> & more",
    "overall_status": "completed_with_failures",
    "total_essays": 24,
    "completed_essays": 22,
    "failed_essays": 2,
    "failures": {"cj_assessment": ["essay-3"], "spellcheck": ["essay-3", "essay-9"]},
    "user_id": "teacher-1",
    "ready_at": "2026-11-01T09:30:00+00:00",
}


def job(**overrides: object) -> EmailJob:
    values: dict[str, object] = {
        "id": 42,
        "job_key": "batch_results_ready:batch 7/a",
        "recipient": "teacher@example.org",
        "template": "batch_results_ready",
        "variables": VARIABLES,
        "attempts": 1,
        "correlation_id": "6f1c1e8e-8d5e-4a7c-9d0f-2a1b3c4d5e6f",
        "created_at": datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
    }
    values.update(overrides)
    return EmailJob(**values)  # type: ignore[arg-type]


def test_the_email_says_how_many_essays_are_done_what_failed_and_links_to_the_batch() -> None:
    rendered = Renderer("https://results.example.org/").render("batch_results_ready", VARIABLES)
    link = "https://results.example.org/?batch=batch%207%2Fa"
    assert rendered.subject == (
        "Results ready: Essays <script>alert(1)</script> & more (2 of 24 essays failed)"
    )  # a header is not HTML: nothing to escape, and one line
    assert "22 of 24 essays were assessed; 2 could not be assessed." in rendered.text
    assert "Comparative judgement: 1 essay(s): essay-3" in rendered.text
    assert "Spell check: 2 essay(s): essay-3, essay-9" in rendered.text
    assert link in rendered.text
    assert "completed with failures, ready 2026-11-01 09:30 UTC" in rendered.text
    assert f'href="{link}"' in rendered.html
    assert "<strong>22 of 24</strong>" in rendered.html
    assert "<script>" not in rendered.html  # the title is escaped in HTML
    assert "Essays &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in rendered.html


def test_a_batch_without_failures_and_title_reads_cleanly() -> None:
    variables = {**VARIABLES, "title": None, "failed_essays": 0, "completed_essays": 24, "failures": {}}
    rendered = Renderer("http://127.0.0.1:8000").render("batch_results_ready", variables)
    assert rendered.subject == "Results ready: Batch batch 7/a"
    assert "24 of 24 essays were assessed." in rendered.text
    assert "What failed" not in rendered.text
    assert "What failed" not in rendered.html


def test_links_use_the_public_url_or_else_the_http_address() -> None:
    assert public_url(Settings(public_url="https://huleedu.example")) == "https://huleedu.example"
    assert public_url(Settings(http_host="10.0.0.5", http_port=8080)) == "http://10.0.0.5:8080"


def test_the_message_has_a_plain_and_an_html_part_and_a_message_id_stable_per_job() -> None:
    rendered = Renderer("http://dash").render("batch_results_ready", VARIABLES)
    sender = "HuleEdu Results <results@huleedu.example>"
    now = datetime(2026, 11, 1, 9, 31, tzinfo=UTC)
    first = compose(job(), rendered, sender=sender, now=now)
    again = compose(job(attempts=3), rendered, sender=sender, now=now)
    other = compose(job(id=43, job_key="batch_results_ready:b8"), rendered, sender=sender, now=now)
    assert first["Message-ID"] == again["Message-ID"] == "<batch_results_ready-batch-7-a.42@huleedu.example>"
    assert other["Message-ID"] != first["Message-ID"]
    parsed = message_from_bytes(first.as_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["To"] == "teacher@example.org"
    assert parsed["X-Correlation-ID"] == "6f1c1e8e-8d5e-4a7c-9d0f-2a1b3c4d5e6f"
