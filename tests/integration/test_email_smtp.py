"""The email worker against a real SMTP server (aiosmtpd on a free port) on PostgreSQL: one email per
finished batch with both parts; a refusal is retried; a restart never sends twice; STARTTLS + login."""

import asyncio
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select, update

from huleedu.messaging.email_queue import email_queue
from huleedu.notifications.app import email_worker
from huleedu.notifications.jobs import EmailJobs
from huleedu.notifications.worker import EmailWorker
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.settings import Settings
from huleedu.storage.migrations import upgrade
from huleedu.storage.unit_of_work import UnitOfWork
from support import ras_events as ev
from support import servers
from support.ras_app import RasProcess, ras_process, ras_settings

WAIT_SECONDS = 30.0


class Mailbox:
    """An aiosmtpd handler (runs in the server's thread) that keeps what it accepted. It can refuse
    the next `refuse` emails with 451, or keep an email and hold back its 250 until `release`."""

    def __init__(self) -> None:
        self.accepted: list[EmailMessage] = []
        self.refuse = 0
        self.hold = False
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 Try again later"
        message = message_from_bytes(envelope.content, policy=default)
        assert isinstance(message, EmailMessage)
        self.accepted.append(message)
        if self.hold:  # the email is taken; the client will not hear so before it dies
            self.holding.set()
            await asyncio.to_thread(self.release.wait, WAIT_SECONDS)  # not blocking the server's loop
        return "250 OK"


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A database of this module alone: other tests' batches must not reach our SMTP server."""
    url = servers.create_database("huleedu_email")
    try:
        upgrade(url)
        yield url
    finally:
        servers.drop_database(url)


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=servers.free_port())
    controller.start()
    try:
        yield box, controller.port
    finally:
        box.release.set()
        controller.stop()


@pytest.fixture
async def ras(database_url: str) -> AsyncIterator[RasProcess]:
    async with ras_process(ras_settings(database_url=database_url), migrate=False) as process:
        yield process


def smtp_settings(database_url: str, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_timeout_seconds": 5.0,
        "email_retry_initial_seconds": 0.05,
        "email_retry_max_seconds": 0.1,
        "public_url": "https://results.example.org",
        "log_level": "WARNING",
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[EmailWorker]:
    """A worker process's worth: its own adapters, so each block is a fresh start."""
    async with build_adapters(settings) as adapters:
        yield email_worker(adapters)


async def finish_batch(ras: RasProcess, batch_id: str, recipient: str) -> None:
    topics = ras.adapters.topics
    essays = ["e1", "e2", "e3", "e4"]
    await ras.feed(
        [
            ev.registration(topics, batch_id, essays, notify_email=recipient, title=f"Batch {batch_id}"),
            *(ev.spellcheck_result(topics, batch_id, essay, failed=essay == "e4") for essay in essays),
            ev.cj_result(topics, batch_id, essays),
        ]
    )


async def job_of(ras: RasProcess, batch_id: str) -> dict[str, Any]:
    async with UnitOfWork(ras.adapters.sessions) as uow:
        row = (
            await uow.session.execute(
                select(email_queue).where(email_queue.c.job_key == f"batch_results_ready:{batch_id}")
            )
        ).mappings()
        return dict(row.one())


async def backoff_runs_out(ras: RasProcess, batch_id: str) -> None:
    """The batch's email job is due now, as if its backoff had run its course."""
    async with UnitOfWork(ras.adapters.sessions) as uow:
        await uow.session.execute(
            update(email_queue)
            .where(email_queue.c.job_key == f"batch_results_ready:{batch_id}")
            .values(next_attempt_at=None)
        )
        await uow.commit()


async def test_each_finished_batch_sends_one_email_with_both_parts(
    ras: RasProcess, mailbox: tuple[Mailbox, int], database_url: str
) -> None:
    box, port = mailbox
    await finish_batch(ras, "smtp-1", "one@example.org")
    await finish_batch(ras, "smtp-2", "two@example.org")
    await finish_batch(ras, "smtp-1", "one@example.org")  # redelivered: no second job, no second email
    async with worker(smtp_settings(database_url, port)) as sender:
        assert await sender.run_once() == 2
        assert await sender.run_once() == 0
    assert sorted(message["To"] for message in box.accepted) == ["one@example.org", "two@example.org"]
    [first] = [message for message in box.accepted if message["To"] == "one@example.org"]
    assert first.get_content_type() == "multipart/alternative"
    plain, html = first.get_body(("plain",)), first.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "3 of 4 essays were assessed; 1 could not be assessed." in plain.get_content()
    assert "Spell check: 1 essay(s): e4" in plain.get_content()
    assert 'href="https://results.example.org/?batch=smtp-1"' in html.get_content()
    job = await job_of(ras, "smtp-1")
    assert (job["status"], job["attempts"]) == ("sent", 1)
    assert first["Message-ID"] == f"<batch_results_ready-smtp-1.{job['id']}@huleedu.local>"


async def test_an_email_the_server_refused_once_is_sent_on_the_retry(
    ras: RasProcess, mailbox: tuple[Mailbox, int], database_url: str
) -> None:
    box, port = mailbox
    box.refuse = 1
    await finish_batch(ras, "smtp-3", "three@example.org")
    # A backoff no pass outlasts, however slow the machine: the retry is not due within this pass.
    patient = smtp_settings(
        database_url, port, email_retry_initial_seconds=60.0, email_retry_max_seconds=60.0
    )
    async with worker(patient) as sender:
        assert await sender.run_once() == 1
        assert await sender.run_once() == 0  # backing off
        refused = await job_of(ras, "smtp-3")
        assert (refused["status"], refused["attempts"]) == ("pending", 1)
        assert "451" in refused["last_error"]
        await backoff_runs_out(ras, "smtp-3")
        assert await sender.run_once() == 1
    assert (await job_of(ras, "smtp-3"))["status"] == "sent"
    assert [message["To"] for message in box.accepted] == ["three@example.org"]
    assert (await job_of(ras, "smtp-3"))["attempts"] == 2


async def test_a_restarted_worker_never_sends_an_email_again(
    ras: RasProcess, mailbox: tuple[Mailbox, int], database_url: str
) -> None:
    box, port = mailbox
    settings = smtp_settings(database_url, port)
    await finish_batch(ras, "smtp-4", "four@example.org")
    async with worker(settings) as first:
        assert await first.run_once() == 1
    async with worker(settings) as restarted:
        assert await restarted.run_once() == 0
    assert [message["To"] for message in box.accepted] == ["four@example.org"]

    # A worker killed while the server takes the email: the server has it, the queue cannot know.
    box.hold = True
    await finish_batch(ras, "smtp-5", "five@example.org")
    async with build_adapters(settings) as adapters:
        dying = asyncio.create_task(email_worker(adapters).run_once())
        assert await asyncio.to_thread(box.holding.wait, WAIT_SECONDS), "the server never got the email"
        dying.cancel()
        await asyncio.gather(dying, return_exceptions=True)
    box.release.set()
    async with worker(settings) as restarted:
        assert await restarted.run_once() == 0  # claimed and leased: not touched
    assert (await job_of(ras, "smtp-5"))["status"] == "sending"
    # Once the dead worker's lease has run out, the job is failed with the reason, still not resent.
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await EmailJobs(ras.adapters.sessions).fail_interrupted(now=later) == 1
    async with worker(settings) as restarted:
        assert await restarted.run_once() == 0
    job = await job_of(ras, "smtp-5")
    assert job["status"] == "failed"
    assert "interrupted while sending" in job["last_error"]
    assert sorted(message["To"] for message in box.accepted) == ["five@example.org", "four@example.org"]


async def test_starttls_and_login_are_used_when_configured(
    ras: RasProcess, database_url: str, tmp_path: Path
) -> None:
    context = _self_signed(tmp_path)
    box = Mailbox()
    logins: list[tuple[bytes, bytes]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"secret")

    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=servers.free_port(),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        await finish_batch(ras, "smtp-6", "six@example.org")
        settings = smtp_settings(
            database_url,
            controller.port,
            smtp_tls="starttls",
            smtp_validate_certs=False,
            smtp_username="huleedu",
            smtp_password="secret",
        )
        async with worker(settings) as sender:
            assert await sender.run_once() == 1
    finally:
        controller.stop()
    assert [message["To"] for message in box.accepted] == ["six@example.org"]
    assert logins == [(b"huleedu", b"secret")]


def _self_signed(folder: Path) -> ssl.SSLContext:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"),
            *("-days", "1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_two_workers_share_the_queue_without_sending_any_email_twice(
    ras: RasProcess, mailbox: tuple[Mailbox, int], database_url: str
) -> None:
    box, port = mailbox
    for n in range(8):
        await finish_batch(ras, f"smtp-pair-{n}", f"pair-{n}@example.org")
    settings = smtp_settings(database_url, port)
    async with worker(settings) as one, worker(settings) as two:
        handled = await asyncio.gather(one.run_once(), two.run_once())
    assert sum(handled) == 8
    ids = [message["Message-ID"] for message in box.accepted]
    assert len(ids) == len(set(ids)) == 8
