"""Browser tests: headless system Chromium driven by Playwright's async API. Playwright never
downloads a browser here; a missing Chromium stops the run with how to install it."""

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from support.servers import ServerMissing, chromium_path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    try:
        executable = chromium_path()
    except ServerMissing as exc:
        pytest.exit(str(exc), returncode=3)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
