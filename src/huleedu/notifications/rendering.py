"""Emails from queue jobs: Jinja2 templates (subject, plain text, HTML) and the MIME message.

Templates live in `templates/<name>.{subject,txt,html}.j2`; only the HTML one is autoescaped. Each
template may have a context function here that turns the job's stored variables into what the
template shows (readable dates, the dashboard link).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound, select_autoescape

from huleedu.notifications.jobs import EmailJob

PHASE_NAMES = {"spellcheck": "Spell check", "cj_assessment": "Comparative judgement"}


class UnknownTemplate(LookupError):
    """The job names a template this worker does not have."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def dashboard_link(base_url: str, batch_id: str) -> str:
    """Where a teacher sees one batch: the dashboard at `/`, opened on that batch."""
    return f"{base_url.rstrip('/')}/?batch={quote(batch_id, safe='')}"


def _readable_time(value: object) -> str:
    if not isinstance(value, str):
        return ""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def results_ready_context(variables: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    batch_id = str(variables["batch_id"])
    failures = variables.get("failures") or {}
    return {
        **variables,
        "title": variables.get("title") or f"Batch {batch_id}",
        "failures": [
            {"phase": PHASE_NAMES.get(phase, phase), "essay_ids": list(essay_ids)}
            for phase, essay_ids in sorted(failures.items())
            if essay_ids
        ],
        "status": str(variables.get("overall_status", "")).replace("_", " "),
        "ready_at": _readable_time(variables.get("ready_at")),
        "dashboard_url": dashboard_link(base_url, batch_id),
    }


CONTEXTS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "batch_results_ready": results_ready_context,
}


class Renderer:
    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._env = Environment(
            loader=PackageLoader("huleedu.notifications", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=False,
        )

    def render(self, template: str, variables: Mapping[str, Any]) -> Rendered:
        """Raises UnknownTemplate; a variable the template needs and the job lacks is a jinja2
        UndefinedError (both are the job's fault: retrying will not help)."""
        make_context = CONTEXTS.get(template)
        context = make_context(variables, self._base_url) if make_context else dict(variables)
        try:
            subject, text, html = (
                self._env.get_template(f"{template}.{part}.j2").render(context)
                for part in ("subject", "txt", "html")
            )
        except TemplateNotFound as exc:
            raise UnknownTemplate(f"no email template {template!r}") from exc
        return Rendered(subject=" ".join(subject.split()), text=text.strip() + "\n", html=html)


def message_id(job: EmailJob, domain: str) -> str:
    """The same for every attempt of a job, so a resend is recognisable as the same email."""
    local = "".join(
        char if char.isascii() and (char.isalnum() or char in "._-") else "-" for char in job.job_key
    )
    return f"<{local}.{job.id}@{domain}>"


def compose(job: EmailJob, rendered: Rendered, *, sender: str, now: datetime) -> EmailMessage:
    """multipart/alternative: the plain-text part first, the HTML part preferred by mail clients."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "huleedu.local"
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = sender
    message["To"] = job.recipient
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(job, domain)
    message["X-HuleEdu-Job"] = job.job_key
    if job.correlation_id:
        message["X-Correlation-ID"] = job.correlation_id
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
