"""Running units in one process on the embedded adapters: wiring, graceful stop, failures, registry."""

import asyncio
import os
import signal
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from huleedu.contracts.enums import EssayStatus
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.events import SpellcheckCompletedV1
from huleedu.messaging.consumer import EventConsumer, Route
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.messaging.outbox import Outbox
from huleedu.platform import runner
from huleedu.platform.bootstrap import Adapters, ServiceUnit, build_adapters
from huleedu.platform.settings import Settings
from huleedu.storage.migrations import upgrade_async
from huleedu.storage.unit_of_work import UnitOfWork
from support.servers import free_port

DEADLINE_SECONDS = 60  # generous: a loaded two-core machine


@pytest.fixture
async def adapters(tmp_path: Path) -> AsyncIterator[Adapters]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/huleedu.sqlite",
        http_port=free_port(),
        relay_poll_seconds=0.2,
        log_level="WARNING",
    )
    await upgrade_async(settings.database_url)
    async with build_adapters(settings) as built:
        yield built


async def _refused(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/healthz")
    except httpx.ConnectError:
        return True
    return False


def _probe_unit(adapters: Adapters, received: list[SpellcheckCompletedV1], got: asyncio.Event) -> ServiceUnit:
    async def remember(event: SpellcheckCompletedV1, meta: EventMeta, uow: UnitOfWork) -> None:
        received.append(event)
        got.set()

    consumer = EventConsumer(
        service="probe",
        group="probe",
        routes=[Route(adapters.topics.spellcheck_completed, SpellcheckCompletedV1, remember)],
        bus=adapters.bus,
        sessions=adapters.sessions,
        guard=adapters.guard_for("probe"),
    )
    router = APIRouter()

    @router.get("/v1/probe")
    async def probe() -> dict[str, int]:
        return {"received": len(received)}

    return ServiceUnit("probe", consumers=[consumer], outbox_services=["producer"], routers=[router])


async def test_a_unit_runs_consumers_relay_background_tasks_and_http_until_stopped(
    adapters: Adapters,
) -> None:
    received: list[SpellcheckCompletedV1] = []
    got, background_ran, background_cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def background() -> None:
        background_ran.set()
        try:
            await asyncio.Event().wait()
        finally:
            background_cancelled.set()

    unit = _probe_unit(adapters, received, got)
    unit.background.append(background)
    stop, started = asyncio.Event(), asyncio.Event()
    port = adapters.settings.http_port
    running = asyncio.create_task(
        runner.run_units([unit], adapters, stop=stop, started=started, handle_signals=False)
    )
    await asyncio.wait_for(started.wait(), DEADLINE_SECONDS)

    event = SpellcheckCompletedV1(batch_id="b-1", essay_id="e-1", status=EssayStatus.COMPLETED)
    envelope = EventEnvelope[SpellcheckCompletedV1](
        event_type=adapters.topics.spellcheck_completed, source_service="producer", data=event
    )
    async with UnitOfWork(adapters.sessions) as uow:
        await Outbox("producer", adapters.relay_wakeup).add(
            uow.session, envelope, adapters.topics.spellcheck_completed, "b-1"
        )
        await uow.commit()
    await asyncio.wait_for(got.wait(), DEADLINE_SECONDS)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        health = await client.get("/healthz")
        probe = await client.get("/v1/probe")

    stop.set()
    await asyncio.wait_for(running, DEADLINE_SECONDS)

    assert received == [event]
    assert health.status_code == 200
    assert probe.json() == {"received": 1}
    assert background_ran.is_set()
    assert background_cancelled.is_set()
    assert await _refused(port)


async def test_sigterm_stops_the_process_gracefully(adapters: Adapters) -> None:
    started = asyncio.Event()
    running = asyncio.create_task(
        runner.run_units([ServiceUnit("idle")], adapters, started=started, handle_signals=True)
    )
    await asyncio.wait_for(started.wait(), DEADLINE_SECONDS)

    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, DEADLINE_SECONDS)

    assert await _refused(adapters.settings.http_port)


async def test_a_crashing_background_task_stops_everything_and_is_raised(adapters: Adapters) -> None:
    async def crash() -> None:
        raise RuntimeError("sweeper broke")

    with pytest.raises(RuntimeError, match="sweeper broke"):
        await asyncio.wait_for(
            runner.run_units([ServiceUnit("fragile", background=[crash])], adapters, handle_signals=False),
            DEADLINE_SECONDS,
        )

    assert await _refused(adapters.settings.http_port)


async def test_a_background_task_that_finishes_its_work_does_not_stop_the_process(adapters: Adapters) -> None:
    finished, stop, started = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def one_off() -> None:
        finished.set()

    running = asyncio.create_task(
        runner.run_units(
            [ServiceUnit("once", background=[one_off])],
            adapters,
            stop=stop,
            started=started,
            handle_signals=False,
        )
    )
    await asyncio.wait_for(asyncio.gather(started.wait(), finished.wait()), DEADLINE_SECONDS)
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{adapters.settings.http_port}/healthz")
    stop.set()
    await asyncio.wait_for(running, DEADLINE_SECONDS)

    assert health.status_code == 200


async def test_a_taken_port_fails_before_anything_starts(adapters: Adapters) -> None:
    with socket.socket() as taken:
        taken.bind((adapters.settings.http_host, adapters.settings.http_port))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            await runner.run_units([ServiceUnit("idle")], adapters, handle_signals=False)


async def test_without_http_the_units_still_run_and_stop(adapters: Adapters) -> None:
    stop, started = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(
        runner.run_units(
            [ServiceUnit("quiet")], adapters, http=False, stop=stop, started=started, handle_signals=False
        )
    )
    await asyncio.wait_for(started.wait(), DEADLINE_SECONDS)
    refused_while_running = await _refused(adapters.settings.http_port)
    stop.set()
    await asyncio.wait_for(running, DEADLINE_SECONDS)

    assert refused_while_running


# --- the registry ---


def test_every_service_of_the_architecture_is_registered() -> None:
    assert set(runner.SERVICES) == {
        "intake",
        "spellcheck",
        "cj",
        "els",
        "ras",
        "websocket",
        "email",
        "dashboard",
    }
    assert all(target.count(":") == 1 for target in runner.SERVICES.values())


def test_an_unknown_service_is_refused_with_the_known_names() -> None:
    with pytest.raises(runner.UnknownService, match="unknown service 'nope'; known: cj, dashboard"):
        runner.service_builder("nope")


def test_a_service_whose_own_imports_fail_is_a_real_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_service_for_test.py").write_text("import a_dependency_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(runner.SERVICES, "broken", "broken_service_for_test:build")

    with pytest.raises(ModuleNotFoundError, match="a_dependency_nobody_installed"):
        runner.service_builder("broken")


def test_a_builder_must_return_a_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapters: Adapters
) -> None:
    (tmp_path / "probe_services_for_test.py").write_text(
        textwrap.dedent(
            """
            from huleedu.platform.bootstrap import ServiceUnit

            def plain(adapters):
                return ServiceUnit("plain")

            def wrong(adapters):
                return "not a unit"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("plain", "wrong"):
        monkeypatch.setitem(runner.SERVICES, name, f"probe_services_for_test:{name}")

    assert runner.build_unit("plain", adapters).name == "plain"
    with pytest.raises(TypeError, match="returned str, not a ServiceUnit"):
        runner.build_unit("wrong", adapters)
