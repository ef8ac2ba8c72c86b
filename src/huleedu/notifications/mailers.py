"""Where emails go: `SmtpMailer` (aiosmtplib) in production, `FolderMailer` (`.eml` files) in embedded
mode. Both say how a failed send ended, because that decides whether a retry is safe:

    DeliveryError
    ├── DeliveryRefused    the server said no before taking the email: retry (4xx, no server) or not (5xx)
    └── DeliveryUncertain  the connection broke while the email was being handed over: it may have
                           arrived, so it is not sent again
"""

import asyncio
import os
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from huleedu.platform.settings import Settings


class DeliveryError(Exception):
    pass


class DeliveryRefused(DeliveryError):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.permanent = permanent


class DeliveryUncertain(DeliveryError):
    pass


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> str:
        """Deliver `message` to its To address; returns where it went. Raises DeliveryError."""


def eml_path(mail_dir: Path, message_id: str) -> Path:
    """The file of a message in the mail folder: named by its Message-ID, so a job has one file."""
    return mail_dir / f"{message_id.strip('<>').replace('/', '-')}.eml"


class FolderMailer:
    """Writes each message to `mail_dir` (created if missing). Writing the same message again
    replaces the file with the same bytes: in this mode a second send is impossible by design."""

    def __init__(self, mail_dir: Path) -> None:
        self._mail_dir = mail_dir

    async def send(self, message: EmailMessage) -> str:
        path = eml_path(self._mail_dir, str(message["Message-ID"]))
        try:
            await asyncio.to_thread(self._write, path, message.as_bytes(policy=SMTP_POLICY))
        except OSError as exc:
            raise DeliveryRefused(f"cannot write {path}: {exc}", permanent=False) from exc
        return str(path)

    def _write(self, path: Path, content: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".eml.part")
        partial.write_bytes(content)
        os.replace(partial, path)  # atomic: a reader never sees half an email


class SmtpMailer:
    """One connection per message. `smtp_tls`: `tls` = implicit TLS (port 465 style), `starttls` =
    upgrade required, `none` = plain text (no opportunistic upgrade). Logs in when a username is set."""

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ValueError("SmtpMailer needs smtp_host")
        self._settings = settings
        self._sender = parseaddr(settings.mail_from)[1]

    async def send(self, message: EmailMessage) -> str:
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            use_tls=settings.smtp_tls == "tls",
            start_tls=settings.smtp_tls == "starttls",
            validate_certs=settings.smtp_validate_certs,
            timeout=settings.smtp_timeout_seconds,
        )
        recipient = str(message["To"])
        try:
            await self._prepare(client, recipient)
            await self._hand_over(client, message)
        except BaseException:
            client.close()  # no polite QUIT to a server that failed us, or when we are cancelled
            raise
        await _quit(client)
        return f"smtp://{settings.smtp_host}:{settings.smtp_port}"

    async def _prepare(self, client: aiosmtplib.SMTP, recipient: str) -> None:
        """Everything before DATA: a failure here leaves nothing at the server."""
        settings = self._settings
        try:
            await client.connect()
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                await client.login(settings.smtp_username, password)
            await client.mail(self._sender)
            await client.rcpt(recipient)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Credentials are fixed by an operator, not by time; but retrying costs little and
            # gives them the backoff window to do it.
            raise DeliveryRefused(f"SMTP login refused: {exc.code} {exc.message}", permanent=False) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryRefused(
                f"SMTP refused: {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryRefused(f"SMTP unavailable: {exc!r}", permanent=False) from exc

    async def _hand_over(self, client: aiosmtplib.SMTP, message: EmailMessage) -> None:
        try:
            await client.data(message.as_bytes(policy=SMTP_POLICY))
        except aiosmtplib.SMTPResponseException as exc:
            # The server answered the end of the data with a refusal: it did not take the email.
            raise DeliveryRefused(
                f"SMTP refused: {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryUncertain(f"connection lost while handing over the email: {exc!r}") from exc


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()
