"""The email worker in embedded mode (SQLite, `.eml` files): RAS finishing a batch with a notify
address leads to exactly one email; refusals are retried; an interrupted send is never repeated."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from huleedu.messaging.email_queue import email_queue, enqueue_email
from huleedu.notifications.app import email_worker
from huleedu.notifications.jobs import EmailJobs
from huleedu.notifications.worker import EmailWorker
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.settings import Settings
from huleedu.storage.unit_of_work import UnitOfWork
from support import ras_events as ev
from support.ras_app import RasProcess, ras_process, ras_settings
from support.servers import free_port
from support.services import copy_sqlite, migrated_sqlite
from support.waiting import eventually

TEACHER_EMAIL = "teacher@example.org"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("email-template") / "template.sqlite"
    migrated_sqlite(path)
    return path


@pytest.fixture
def settings(tmp_path: Path, template_db: Path) -> Settings:
    return ras_settings(
        database_url=copy_sqlite(template_db, tmp_path / "huleedu.sqlite"),
        mail_dir=tmp_path / "mail",
        http_port=free_port(),
        public_url="http://dashboard.test",
        email_retry_initial_seconds=0.2,  # short: a send refused too often is given up in moments
        email_retry_max_seconds=0.4,
        email_max_attempts=3,
    )


@pytest.fixture
async def ras(settings: Settings) -> AsyncIterator[RasProcess]:
    async with ras_process(settings, migrate=False) as process:
        yield process


@asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[EmailWorker]:
    """A worker process's worth: its own adapters, so each block is a fresh start."""
    async with build_adapters(settings) as adapters:
        yield email_worker(adapters)


async def finish_batch(ras: RasProcess, batch_id: str, *, failed: tuple[str, ...] = ()) -> None:
    topics = ras.adapters.topics
    essays = ["e1", "e2", "e3"]
    await ras.feed(
        [
            ev.registration(topics, batch_id, essays, notify_email=TEACHER_EMAIL, title="Poetry week"),
            *(ev.spellcheck_result(topics, batch_id, essay) for essay in essays),
            ev.cj_result(topics, batch_id, essays, failed_ids=failed),
        ]
    )


async def jobs(settings: Settings) -> list[dict[str, Any]]:
    async with build_adapters(settings) as adapters, UnitOfWork(adapters.sessions) as uow:
        rows = await uow.session.execute(select(email_queue).order_by(email_queue.c.id))
        return [dict(row) for row in rows.mappings()]


async def backoff_runs_out(settings: Settings) -> None:
    """Every pending job is due now, as if its backoff had run its course."""
    async with build_adapters(settings) as adapters, UnitOfWork(adapters.sessions) as uow:
        await uow.session.execute(
            update(email_queue).where(email_queue.c.status == "pending").values(next_attempt_at=None)
        )
        await uow.commit()


def emails(mail_dir: Path) -> list[EmailMessage]:
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=default)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


async def test_a_finished_batch_becomes_one_email_file_with_both_parts(
    settings: Settings, ras: RasProcess
) -> None:
    await finish_batch(ras, "b1", failed=("e2",))
    async with worker(settings) as first:
        assert await first.run_once() == 1
    [message] = emails(settings.mail_dir)
    assert message["To"] == TEACHER_EMAIL
    assert message["Subject"] == "Results ready: Poetry week (1 of 3 essays failed)"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "2 of 3 essays were assessed; 1 could not be assessed." in plain.get_content()
    assert "Comparative judgement: 1 essay(s): e2" in plain.get_content()
    assert 'href="http://dashboard.test/?batch=b1"' in html.get_content()
    [job] = await jobs(settings)
    assert (job["status"], job["attempts"], job["last_error"]) == ("sent", 1, None)
    assert job["sent_at"] is not None


async def test_a_restarted_worker_sends_nothing_twice(settings: Settings, ras: RasProcess) -> None:
    await finish_batch(ras, "b1")
    async with worker(settings) as first:
        assert await first.run_once() == 1
    [path] = settings.mail_dir.glob("*.eml")
    written = path.stat().st_mtime_ns
    await finish_batch(ras, "b1")  # the same batch's events again: RAS enqueues nothing new
    async with worker(settings) as restarted:
        assert await restarted.run_once() == 0
    assert list(settings.mail_dir.glob("*.eml")) == [path]
    assert path.stat().st_mtime_ns == written


async def test_a_job_interrupted_while_sending_is_failed_not_sent_again(
    settings: Settings, ras: RasProcess
) -> None:
    await finish_batch(ras, "b1")
    # A worker claimed the job and died before recording the outcome; its lease has run out.
    claimed = await EmailJobs(ras.adapters.sessions).claim(lease_seconds=0.0)
    assert claimed is not None
    async with worker(settings) as restarted:
        assert await restarted.run_once() == 0
    [job] = await jobs(settings)
    assert job["status"] == "failed"
    assert "interrupted while sending" in job["last_error"]
    assert emails(settings.mail_dir) == []


async def test_a_refused_send_is_retried_with_backoff_until_it_goes_through(
    settings: Settings, ras: RasProcess
) -> None:
    await finish_batch(ras, "b1")
    settings.mail_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.mail_dir.write_text("a file where the mail folder should be")  # every write fails
    # A backoff no pass outlasts, however slow the machine: the retry is not due within this pass.
    patient = settings.model_copy(
        update={"email_retry_initial_seconds": 60.0, "email_retry_max_seconds": 60.0}
    )
    async with worker(patient) as first:
        assert await first.run_once() == 1
        assert await first.run_once() == 0  # backing off
    [job] = await jobs(settings)
    assert (job["status"], job["attempts"]) == ("pending", 1)
    assert "cannot write" in job["last_error"]
    assert job["next_attempt_at"] > job["created_at"]
    settings.mail_dir.unlink()  # the disk is fixed
    await backoff_runs_out(settings)
    async with worker(settings) as second:
        assert await second.run_once() == 1
    [job] = await jobs(settings)
    assert (job["status"], job["attempts"]) == ("sent", 2)
    assert len(emails(settings.mail_dir)) == 1


async def test_a_send_refused_too_often_is_failed_with_the_reason(
    settings: Settings, ras: RasProcess
) -> None:
    await finish_batch(ras, "b1")
    settings.mail_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.mail_dir.write_text("not a folder")
    async with worker(settings) as stubborn:

        async def given_up() -> bool:
            await stubborn.run_once()
            return bool((await jobs(settings))[0]["status"] != "pending")

        await eventually(given_up, what="the job to be given up")
    [job] = await jobs(settings)
    assert (job["status"], job["attempts"]) == ("failed", settings.email_max_attempts)
    assert job["last_error"].startswith("refused 3 times: cannot write")


async def test_a_job_for_a_template_that_does_not_exist_fails_at_once(settings: Settings) -> None:
    async with build_adapters(settings) as adapters, UnitOfWork(adapters.sessions) as uow:
        await enqueue_email(
            uow.session, job_key="x:1", recipient=TEACHER_EMAIL, template="nope", variables={}
        )
        await uow.commit()
    async with worker(settings) as sender:
        assert await sender.run_once() == 1
    [job] = await jobs(settings)
    assert job["status"] == "failed"
    assert "no email template 'nope'" in job["last_error"]
    assert job["attempts"] == 1
    assert datetime.now(UTC) > job["created_at"]
