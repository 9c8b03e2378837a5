"""UI harness: a real `prefect server start` with the Atlas blocks registered, headless Chromium.

Run with `make test-ui` (`pytest -m ui tests/ui`); `make test` leaves these tests out, so it
needs no browser. Chromium is Debian's `/usr/bin/chromium` (or `ATLAS_UI_CHROMIUM`), driven by
Playwright from PyPI. The browser reaches only 127.0.0.1: the Atlas logos are answered from
`prefect_atlas/assets`, other outside images (another collection's logo) with a blank
image so that screenshots show no broken icon, and every other outside request is refused.

- `ATLAS_UI_SCREENSHOTS=docs/images` writes the screenshots there (relative to the repository)
  instead of the test's temporary folder.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from tests.e2e._server import BIN, PrefectServer

if TYPE_CHECKING:
    from playwright.async_api import Page, Route

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ASSETS = ROOT / "prefect_atlas" / "assets"
CHROMIUM = os.environ.get("ATLAS_UI_CHROMIUM", "/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# A 1x1 transparent PNG, the answer to an outside image that is not an Atlas logo.
BLANK_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real `prefect server start` (UI included) with prefect-atlas's blocks registered.

    Replaces the session's test harness for these tests: Python clients (`Block.aload`) and
    the browser talk to the same server.
    """
    home = tmp_path_factory.mktemp("ui-prefect")
    server = PrefectServer(home, {"ATLAS_HOME": str(home / "atlas")})
    try:
        server.wait_ready(timeout=120)
        server.run(
            [str(BIN / "prefect"), "block", "register", "-m", "prefect_atlas"],
            cwd=ROOT,
            timeout=300,
        )
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the screenshots: ATLAS_UI_SCREENSHOTS (e.g. docs/images) or a temporary one."""
    configured = os.environ.get("ATLAS_UI_SCREENSHOTS")
    if not configured:
        return tmp_path_factory.mktemp("ui-screenshots")
    folder = Path(configured)
    folder = folder if folder.is_absolute() else ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _logos() -> dict[str, Path]:
    """The public logo URL of each Atlas block -> the shipped file it names."""
    logos: dict[str, Path] = {}
    for block in (DatabaseBlock, DiscordBlock, VaultBlock):
        url = block._logo_url
        if url is not None:
            logos[str(url)] = ASSETS / Path(urlparse(str(url)).path).name
    return logos


@pytest.fixture
async def page(prefect_server: PrefectServer) -> AsyncIterator[Page]:
    """A fresh headless Chromium page (no drafts or storage from another test)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's `chromium` package "
            "(apt-get install -y chromium) or set ATLAS_UI_CHROMIUM"
        )
    from playwright.async_api import async_playwright

    logos = _logos()

    async def only_local(route: Route) -> None:
        url = route.request.url
        if urlparse(url).hostname in LOCAL_HOSTS:
            await route.continue_()
        elif url in logos and logos[url].is_file():
            await route.fulfill(path=logos[url], content_type="image/png")
        elif route.request.resource_type == "image":
            await route.fulfill(body=BLANK_PNG, content_type="image/png")
        else:
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 900}, color_scheme="light"
            )
            context.set_default_timeout(60_000)
            context.set_default_navigation_timeout(120_000)
            await context.route("**/*", only_local)
            yield await context.new_page()
        finally:
            await browser.close()
