"""The teacher dashboard in headless Chromium against the whole system in this process (embedded
mode: SQLite, in-process bus, memory cache, heuristic judge) on a real port.

The CJ service joins the bus only once the teacher has seen the batch processing: without that the
heuristic judge finishes a small batch before anyone could look, and "processing, then completed,
live" would be a race instead of a fact.
"""

import asyncio
import csv
import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from huleedu.demo_data import sample
from huleedu.messaging.memory import InMemoryBus
from huleedu.platform.bootstrap import Adapters, build_adapters
from huleedu.platform.runner import SERVICES, build_unit, run_units
from huleedu.platform.settings import Settings
from huleedu.storage.migrations import upgrade_async
from support import gateway as gw
from support.model_server import ModelServer
from support.servers import free_port
from support.services import SERVICE_ID, service_settings, teacher_headers
from support.waiting import eventually

ADA, BOB = "teacher-ada", "teacher-bob"
GRADE = re.compile(r"^([A-F][+-]?|U)$")
DEADLINE_MS = 30_000
# Assertions wait as long as actions do: a loaded 2-core machine needs more than Playwright's 5 s.
expect.set_options(timeout=DEADLINE_MS)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 900}


@dataclass
class System:
    url: str
    settings: Settings
    adapters: Adapters
    stops: list[asyncio.Event]
    tasks: list["asyncio.Task[None]"]

    def token(self, user: str) -> str:
        return teacher_headers(self.settings, user)["Authorization"].removeprefix("Bearer ")

    async def start_cj(self) -> None:
        """The CJ service, now: its consumer joins the same in-process broker with a bus of its own
        (a running bus takes no new subscriptions), reading what it missed from the log."""
        assert isinstance(self.adapters.bus, InMemoryBus)
        bus = InMemoryBus(self.adapters.bus.broker)
        adapters = dataclasses.replace(self.adapters, bus=bus)
        await self._run(["cj"], adapters, http=False)

    async def _run(self, names: list[str], adapters: Adapters, *, http: bool) -> None:
        units = [build_unit(name, adapters) for name in names]
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_units(units, adapters, http=http, stop=stop, started=started, handle_signals=False)
        )
        self.stops.append(stop)
        self.tasks.append(task)
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([task, waiting], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()
        assert started.is_set(), f"{names} did not start"


@asynccontextmanager
async def whole_system(tmp_path: Path, *, with_cj: bool = False, **overrides: Any) -> AsyncIterator[System]:
    """Every service but CJ (unless `with_cj`) running on a free port until the block ends;
    `start_cj()` adds it (its internal API then is not on that port)."""
    port = free_port()
    settings = service_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'huleedu.sqlite'}",
        mail_dir=tmp_path / "mail",
        allowed_service_ids=[SERVICE_ID, "dashboard"],
        http_port=port,
        email_poll_seconds=0.2,
        **overrides,
    )
    await upgrade_async(settings.database_url)
    async with build_adapters(settings) as adapters:
        running = System(f"http://127.0.0.1:{port}", settings, adapters, [], [])
        try:
            await running._run([name for name in SERVICES if with_cj or name != "cj"], adapters, http=True)
            yield running
        finally:
            for stop in reversed(running.stops):
                stop.set()
            await asyncio.gather(*running.tasks, return_exceptions=True)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async with whole_system(tmp_path) as running:
        yield running


async def sign_in(page: Page, system: System, user: str) -> None:
    await page.goto(system.url + "/")
    await page.get_by_label("Access token").fill(system.token(user))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_have_text(f"Signed in as {user}")
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")


async def submit_batch(page: Page, title: str) -> None:
    essays = sample.essays()
    chosen = [essays[i].text for i in (0, 7, 15, 21)]  # strong, weak, middling, ...: distinct ranks
    anchors = {anchor.name: anchor.text for anchor in sample.anchors()}
    await page.get_by_label("Title").fill(title)
    await page.get_by_label("Or paste essays").fill("\n---\n".join(chosen))
    for grade in ("A", "C", "F"):
        await page.get_by_role("button", name="Add an anchor").click()
        row = page.locator("#anchors li").last
        await row.get_by_label("Grade").select_option(grade)
        await row.get_by_label("or text").fill(anchors[grade])
    await page.get_by_role("button", name="Submit batch").click()
    await expect(page.locator("#submit-status")).to_contain_text("Accepted: 4 essays")


async def test_a_teacher_watches_a_batch_complete_live_and_downloads_its_results(
    system: System, chromium: Browser, tmp_path: Path
) -> None:
    ada_context = await chromium.new_context(viewport=PHONE)
    bob_context = await chromium.new_context()
    for context in (ada_context, bob_context):
        context.set_default_timeout(DEADLINE_MS)
    ada, bob = await ada_context.new_page(), await bob_context.new_page()
    script_errors: list[str] = []
    for page in (ada, bob):
        page.on("pageerror", lambda error: script_errors.append(str(error)))
    await sign_in(bob, system, BOB)
    await sign_in(ada, system, ADA)
    reloads: list[str] = []
    ada.on("load", lambda page: reloads.append(page.url))
    await ada.evaluate("window.__sameDocument = 'yes'")

    await submit_batch(ada, "Phones debate, group 2")
    batch = ada.locator("#batch")
    await expect(batch).to_have_attribute("data-status", "processing")
    await expect(ada.locator("[data-phase=spellcheck]")).to_have_attribute("data-phase-status", "completed")
    await expect(ada.locator("[data-phase=cj_assessment]")).to_have_attribute("data-phase-status", "pending")
    batch_id = await batch.get_attribute("data-batch-id")
    assert batch_id
    await expect(ada.locator(f"#batches li[data-batch-id='{batch_id}']")).to_have_attribute(
        "data-status", "processing"
    )

    await system.start_cj()

    await expect(batch).to_have_attribute("data-status", "completed_successfully")
    await expect(ada.locator(f"#batches li[data-batch-id='{batch_id}']")).to_have_attribute(
        "data-status", "completed_successfully"
    )
    assert await ada.evaluate("window.__sameDocument") == "yes", "the page was reloaded"
    assert reloads == []

    rows = ada.locator("#essays tbody tr")
    await expect(rows).to_have_count(4)
    ranks = await rows.locator("td.rank").all_inner_texts()
    grades = await rows.locator("td.grade").all_inner_texts()
    names = await rows.locator("td.name").all_inner_texts()
    assert ranks == ["1", "2", "3", "4"]
    assert all(GRADE.match(grade) for grade in grades), grades
    assert sorted(names) == [f"pasted-essay-0{i}.txt" for i in range(1, 5)]
    await expect(ada.locator("#scale svg circle")).to_have_count(4)

    async with ada.expect_download() as download_info:
        await ada.get_by_role("button", name="Download CSV").click()
    download = await download_info.value
    assert download.suggested_filename == "Phones-debate-group-2-results.csv"
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    exported = list(csv.DictReader(saved.read_text(encoding="utf-8").splitlines()))
    assert [row["rank"] for row in exported] == ranks
    assert [row["grade"] for row in exported] == grades
    assert [row["filename"] for row in exported] == names

    # The timeline: every step that reached the results service, from which service, with its delay.
    await ada.locator("#timeline summary").click()
    steps = ada.locator("#timeline-table tbody tr")
    await expect(steps.first.locator("td.step")).to_have_text("Batch registered")
    await expect(steps.first.locator("td.source")).to_have_text("Intake")
    await expect(steps.filter(has_text="Spell check result")).to_have_count(4)
    await expect(steps.filter(has_text="Comparative judgement result")).to_have_count(1)
    await expect(steps.last.locator("td.step")).to_have_text("Comparative judgement result")
    assert all(text.endswith(("s", "min")) for text in await steps.locator("td.lag").all_inner_texts())
    await expect(ada.locator("#timeline-status")).to_contain_text("Results announced")

    # Bob, signed in all along, never saw Ada's batch, and cannot open it by its id.
    await expect(bob.locator("#batches-empty")).to_be_visible()
    await expect(bob.locator("#batches li")).to_have_count(0)
    await bob.goto(f"{system.url}/?batch={batch_id}")
    await expect(bob.locator("#batch-error")).to_contain_text("not found")
    await expect(bob.locator("#essays tbody tr")).to_have_count(0)
    await expect(bob.locator("#timeline-table tbody tr")).to_have_count(0)
    async with httpx.AsyncClient(base_url=system.url) as client:
        timeline = await client.get(
            f"/v1/batches/{batch_id}/timeline", headers=teacher_headers(system.settings, BOB)
        )
        assert timeline.status_code == 404
        response = await client.get(f"/v1/batches/{batch_id}", headers=teacher_headers(system.settings, BOB))
    assert response.status_code == 404
    assert script_errors == []

    await ada_context.close()
    await bob_context.close()


@dataclass
class Connection:
    """One socket the page opened, and the frames passed on to it (as JSON) until it was dropped."""

    url: str
    page: WebSocketRoute
    server: WebSocketRoute | None = None
    frames: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    dropped: bool = False

    @property
    def since(self) -> str | None:
        return parse_qs(urlsplit(self.url).query).get("since", [None])[0]

    def last_cursor(self) -> str | None:
        """The cursor the page holds from this socket: the id of the last frame that had one."""
        return next((frame["id"] for frame in reversed(self.frames) if frame.get("id")), None)


class SocketLine:
    """Playwright between the page and the gateway: every socket the page opens passes through,
    its frames recorded. The test drops the newest one when it chooses, and may hold the page's
    next ones back (to the page such a socket is still connecting)."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.open = asyncio.Event()
        self.open.set()

    async def route(self, page_side: WebSocketRoute) -> None:
        connection = Connection(page_side.url, page_side)
        self.connections.append(connection)
        await self.open.wait()
        connection.server = page_side.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if not connection.dropped:
                connection.frames.append(orjson.loads(message))
                page_side.send(message)

        connection.server.on_message(to_page)

    async def drop(self) -> None:
        """Close the newest socket at both ends, as a failing network would (the page hears 1006)."""
        dropped = self.connections[-1]
        assert dropped.server is not None
        dropped.dropped = True  # from here on the page gets nothing more from it
        await dropped.page.close(code=1006, reason="dropped by the test")
        await dropped.server.close(code=1000, reason="dropped by the test")

    async def next_connection(self, after: int) -> Connection:
        await eventually(lambda: len(self.connections) > after, what=f"socket number {after + 1}")
        return self.connections[after]


async def test_a_dashboard_whose_socket_drops_resumes_with_its_cursor_and_still_sees_the_batch_complete(
    chromium: Browser, tmp_path: Path
) -> None:
    """The test drops the page's socket itself: once while the batch is processing (the page
    resumes with its cursor and has missed nothing it cannot replay), and once for the whole of the
    CJ run, held offline until the history of one message no longer reaches back to the page's
    cursor (the session frame says so, and the page reloads what it shows from the API)."""
    async with whole_system(tmp_path, ws_history_max_messages=1) as system:
        context = await chromium.new_context()
        context.set_default_timeout(DEADLINE_MS)
        page = await context.new_page()
        line = SocketLine()
        try:
            script_errors: list[str] = []
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            await page.route_web_socket(re.compile(r"/ws(\?|$)"), line.route)
            reloads: list[str] = []
            page.on("load", lambda loaded: reloads.append(loaded.url))
            await sign_in(page, system, ADA)
            reloads.clear()
            [first] = line.connections
            assert first.since is None

            await submit_batch(page, "Resumed batch")
            await expect(page.locator("#batch")).to_have_attribute("data-status", "processing")
            batch_id = await page.locator("#batch").get_attribute("data-batch-id")
            assert batch_id

            # Drop 1: the page comes back at once, with the cursor of the last frame it got.
            await line.drop()
            second = await line.next_connection(1)
            assert first.last_cursor() is not None
            assert second.since == first.last_cursor()
            await expect(page.locator("#live")).to_have_attribute("data-state", "live")
            [session] = second.frames[:1]
            assert session["event"] == "session"
            assert session["data"]["complete"] is True

            # Drop 2: the page is held offline while CJ finishes the batch, until what it missed
            # is more than the history holds.
            line.open.clear()
            await line.drop()
            third = await line.next_connection(2)
            assert second.last_cursor() is not None
            assert third.since == second.last_cursor()
            await system.start_cj()
            async with httpx.AsyncClient(
                base_url=system.url, headers=teacher_headers(system.settings, ADA)
            ) as api:
                await eventually(
                    lambda: batch_status(api, batch_id),
                    until=lambda status: status == "completed_successfully",
                    what="the batch to complete",
                )
            await eventually(
                lambda: resume_is_complete(system, third.since),
                until=lambda complete: complete is False,
                what="the history to move past the page's cursor",
            )
            line.open.set()

            await expect(page.locator("#batch")).to_have_attribute("data-status", "completed_successfully")
            await expect(page.locator("#essays tbody tr td.grade")).to_have_count(4)
            [session] = third.frames[:1]
            assert session["event"] == "session"
            assert session["data"]["complete"] is False
            assert reloads == []
            assert script_errors == []
        finally:
            line.open.set()  # no route handler left waiting
            await context.close()


async def batch_status(api: httpx.AsyncClient, batch_id: str) -> str | None:
    response = await api.get(f"/v1/batches/{batch_id}")
    return str(response.json()["overall_status"]) if response.status_code == 200 else None


async def resume_is_complete(system: System, since: str | None) -> bool:
    """What a socket resuming from `since` would be told: whether the history still reaches it."""
    async with gw.teacher_socket(system.settings, ADA, since=since) as probe:
        session = await probe.frame()
    return bool(session["data"]["complete"])


async def test_the_cj_bar_moves_during_the_run_and_each_essays_comparisons_are_shown_to_its_owner_only(
    chromium: Browser, tmp_path: Path
) -> None:
    """The llm judge against the local model server, which answers six calls and then holds the
    rest: the run is caught half-way, so the bar's moving is a fact, not a race."""
    async with (
        ModelServer(latency_min=0.02, latency_max=0.05, hold_after=6) as server,
        whole_system(
            tmp_path,
            with_cj=True,  # the model server holds the run half-way; the evidence routes need CJ's API
            cj_judge="llm",
            cj_llm_base_url=server.base_url,
            cj_llm_model="local-judge-1",
            cj_progress_interval_seconds=0.0,
            cj_max_comparisons_per_essay=4,
            cj_strategy="adaptive",  # pairs under equal allocation: the bar's 14 is a known number
            cj_ranking_size=2,
        ) as system,
    ):
        ada_context = await chromium.new_context(viewport=DESKTOP)
        bob_context = await chromium.new_context(viewport=PHONE)
        for context in (ada_context, bob_context):
            context.set_default_timeout(DEADLINE_MS)
        ada, bob = await ada_context.new_page(), await bob_context.new_page()
        script_errors: list[str] = []
        for page in (ada, bob):
            page.on("pageerror", lambda error: script_errors.append(str(error)))
        await sign_in(ada, system, ADA)
        await sign_in(bob, system, BOB)

        await submit_batch(ada, "Evidence batch")  # 4 essays and 3 anchors: 14 comparisons at most
        batch = ada.locator("#batch")
        await expect(batch).to_have_attribute("data-status", "processing")
        batch_id = await batch.get_attribute("data-batch-id")
        assert batch_id

        bar = ada.locator("#phase-cj_assessment")
        cj = ada.locator("[data-phase=cj_assessment]")
        await expect(cj).to_have_attribute("data-phase-status", "processing")
        await expect(cj.locator(".count")).to_have_text(re.compile(r"^[1-9]\d* of up to 14 judgements$"))
        part = int(await bar.get_attribute("value") or 0)
        assert 0 < part < 14
        assert await bar.get_attribute("max") == "14"
        assert await batch.get_attribute("data-status") == "processing"

        server.release()
        await expect(batch).to_have_attribute("data-status", "completed_successfully")
        await expect(cj.locator(".count")).to_have_text("4 of 4 essays")

        # The table fits the desktop's card; every essay shows its wins and losses.
        wrap = ada.locator("#essays-wrap")
        await expect(wrap).to_have_attribute("data-overflow", "false")
        assert await wrap.evaluate("w => w.scrollWidth <= w.clientWidth")
        toggles = ada.locator("#essays tbody .evidence-toggle")
        await expect(toggles).to_have_count(4)
        first = toggles.first
        won, lost = (int(n) for n in (await first.inner_text()).split("\N{EN DASH}"))
        count = int((await ada.locator("#essays tbody tr td.comparisons").first.inner_text()).split()[0])
        assert won + lost == count
        await first.click()
        await expect(first).to_have_attribute("aria-expanded", "true")
        evidence = ada.locator("#essays tr.evidence li.comparison")
        await expect(evidence).to_have_count(count)
        await expect(evidence.first.locator(".rationale")).to_contain_text("argues its case")
        await expect(evidence.first.locator(".judge")).to_contain_text("llm · local-judge-1")
        await first.click()
        await expect(ada.locator("#essays tr.evidence")).to_have_count(0)

        # On a phone the table is wider than the screen, and says it scrolls.
        await ada.set_viewport_size(PHONE)
        await expect(ada.locator("#essays-hint")).to_be_visible()
        await expect(wrap).to_have_attribute("data-overflow", "true")

        # Bob cannot see any of it.
        await bob.goto(f"{system.url}/?batch={batch_id}")
        await expect(bob.locator("#batch-error")).to_contain_text("not found")
        await expect(bob.locator("#essays .evidence-toggle")).to_have_count(0)
        essay_id = await ada.locator("#essays tbody tr").first.get_attribute("data-essay-id")
        async with httpx.AsyncClient(base_url=system.url) as client:
            for path in (
                f"/v1/batches/{batch_id}/comparisons",
                f"/v1/batches/{batch_id}/essays/{essay_id}/comparisons",
                f"/v1/batches/{batch_id}/comparisons.csv",
            ):
                mine = await client.get(path, headers=teacher_headers(system.settings, ADA))
                theirs = await client.get(path, headers=teacher_headers(system.settings, BOB))
                assert (mine.status_code, theirs.status_code) == (200, 404), path
        assert script_errors == []
        await ada_context.close()
        await bob_context.close()
