"""The email worker as a service unit (`huleedu serve email`): one background task, no consumers.
It sends through the mailer bootstrap chose: SMTP, or `.eml` files in `mail_dir`."""

from huleedu.notifications.jobs import EmailJobs
from huleedu.notifications.rendering import Renderer
from huleedu.notifications.worker import EmailWorker
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.settings import Settings


def public_url(settings: Settings) -> str:
    """The base of links in emails."""
    return settings.public_url or f"http://{settings.http_host}:{settings.http_port}"


def email_worker(adapters: Adapters) -> EmailWorker:
    settings = adapters.settings
    return EmailWorker(
        EmailJobs(adapters.sessions),
        adapters.mailer,
        Renderer(public_url(settings)),
        sender=settings.mail_from,
        max_attempts=settings.email_max_attempts,
        retry_initial_seconds=settings.email_retry_initial_seconds,
        retry_max_seconds=settings.email_retry_max_seconds,
        # connect, login, MAIL, RCPT, DATA: each waits at most smtp_timeout_seconds
        send_timeout_seconds=5 * settings.smtp_timeout_seconds,
        poll_seconds=settings.email_poll_seconds,
    )


def build(adapters: Adapters) -> ServiceUnit:
    return ServiceUnit(name="email", background=[email_worker(adapters).run])
