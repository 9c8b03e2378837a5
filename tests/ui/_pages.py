"""Page objects for the Prefect v2 UI: the block catalog and one create form per Atlas block.

Tests speak of what a user does ("choose the gcs provider", "paste the alerts webhook"); how
that maps to the DOM of Prefect's schema form lives here only. When a block's schema changes
(a provider union, a nested credentials selector), its form class changes and the tests stay.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Self

from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout
from prefect.blocks.core import Block
from pydantic import BaseModel

from prefect_atlas import DatabaseBlock, DiscordBlock, VaultBlock
from prefect_atlas.vault import GcsStorage

# Generous: the first load of the UI bundle on a busy 2-core machine takes seconds.
NAVIGATION_TIMEOUT_MS = 120_000
ACTION_TIMEOUT_MS = 60_000
# How long a refused save is watched for a late redirect to the saved block's page.
REFUSAL_WATCH_MS = 5_000

_BLOCKS_PAGE = re.compile(r"/blocks\?(.+&)?page=1(&|$)")
_CATALOG = re.compile(r"/blocks/catalog$")
_SAVED_URL = re.compile(r"/blocks/block/([0-9a-f-]{36})$")
# The tabs of an `X | None` field; "None" is selected until the user picks the other one.
_NONE_TAB = "None"


async def follow(page: Page, link: Locator, url: str | re.Pattern[str]) -> None:
    """Click ``link`` until the UI shows ``url``.

    On a busy machine a click that lands while the page re-renders can be lost; the user then
    clicks again, and so does this (never when the URL already changed).
    """
    for attempt in range(3):
        await link.click()
        try:
            await page.wait_for_url(url, timeout=NAVIGATION_TIMEOUT_MS // 3, wait_until="commit")
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


async def screenshot(page: Page, path: Path) -> None:
    """The whole page as a user scrolling it sees it, without a focus ring.

    The viewport grows to the page's height for the shot (a full-page capture would draw the
    sticky sidebar in the middle of a long form), then goes back.
    """
    await page.evaluate("() => document.activeElement?.blur()")
    viewport = page.viewport_size
    assert viewport is not None
    height = await page.evaluate("() => document.documentElement.scrollHeight")
    await page.set_viewport_size({"width": viewport["width"], "height": max(height, 600)})
    try:
        await page.screenshot(path=str(path))
    finally:
        await page.set_viewport_size(viewport)


def _label(title: str) -> re.Pattern[str]:
    """A field's label: its title, with " (Optional)" when it has a default."""
    return re.compile("^" + re.escape(title) + r"( \(Optional\))?$")


class Catalog:
    """The block catalog, reached the way a user does: dashboard, Blocks, then "+"."""

    def __init__(self, page: Page) -> None:
        self.page = page

    @classmethod
    async def open(cls, page: Page, ui_url: str) -> Self:
        await page.goto(ui_url + "/", timeout=NAVIGATION_TIMEOUT_MS)
        # the blocks page settles its own query (?page=1&limit=10) before it is usable
        await follow(page, page.get_by_role("link", name="Blocks", exact=True), _BLOCKS_PAGE)
        await follow(page, page.locator('main a[href$="/blocks/catalog"]').first, _CATALOG)
        catalog = cls(page)
        await catalog.cards().locator("h4").first.wait_for(timeout=NAVIGATION_TIMEOUT_MS)
        return catalog

    @property
    def search_box(self) -> Locator:
        return self.page.get_by_placeholder("Search blocks")

    def cards(self) -> Locator:
        return self.page.locator('[data-slot="card"]')

    def card(self, block_type_name: str) -> Locator:
        heading = self.page.locator("h4").filter(has_text=_label(block_type_name))
        return self.cards().filter(has=heading)

    async def search(self, text: str) -> None:
        """Type ``text`` into the search box; returns once only matching cards remain.

        A box typed into while the page is still rendering can be reset, so the typing is
        repeated (as a user would) until the grid shows the filtered cards.
        """
        only_matching = """(text) => {
            const titles = [...document.querySelectorAll('[data-slot="card"] h4')];
            return titles.length > 0 && titles.every(
                (h) => h.textContent.toLowerCase().includes(text.toLowerCase()));
        }"""
        for attempt in range(4):
            assert self.page.url.endswith("/blocks/catalog"), f"left the catalog: {self.page.url}"
            await self.search_box.fill(text)
            try:
                await self.page.wait_for_function(
                    only_matching, arg=text, timeout=ACTION_TIMEOUT_MS // 4
                )
                return
            except PlaywrightTimeout:  # the box was reset: type it again
                if attempt == 3:
                    raise

    async def titles(self) -> list[str]:
        return [t.strip() for t in await self.cards().locator("h4").all_inner_texts()]

    async def open_block_type(self, block_type_name: str) -> None:
        """The block type's page (description, example, Create)."""
        details = self.card(block_type_name).get_by_role("link", name="Details")
        href = await details.get_attribute("href")
        assert href, f"no Details link on the {block_type_name} card"
        await follow(self.page, details, f"**{href}")
        await self.search_box.wait_for(state="detached", timeout=NAVIGATION_TIMEOUT_MS)

    async def screenshot(self, path: Path) -> None:
        await screenshot(self.page, path)


class BlockForm:
    """Prefect's v2 create form for one block type.

    Subclasses address a top-level field by its property name (``self.title("url")``): the
    label the form shows is the title in the block's own JSON schema, so a new title needs no
    change here.
    """

    block_type: ClassVar[type[Block]]

    def __init__(self, page: Page) -> None:
        self.page = page

    @classmethod
    def block_type_name(cls) -> str:
        return cls.block_type.get_block_type_name()

    @classmethod
    def title(cls, prop: str) -> str:
        """The label of the top-level field ``prop`` (the title the UI shows)."""
        properties: dict[str, dict[str, object]] = cls.block_type.model_json_schema()["properties"]
        return str(properties[prop].get("title", prop))

    @classmethod
    async def open(cls, page: Page, ui_url: str) -> Self:
        """Catalog, then the block type's page, then its Create button."""
        catalog = await Catalog.open(page, ui_url)
        await catalog.search("Atlas")
        await catalog.open_block_type(cls.block_type_name())
        create = page.locator("main").get_by_role("link", name="Create", exact=True)
        await follow(page, create, "**/create")
        form = cls(page)
        await form.page.get_by_label("Name", exact=True).wait_for(timeout=NAVIGATION_TIMEOUT_MS)
        return form

    # -------------------------------------------------------------- generic fields

    def field(self, title: str) -> Locator:
        """The outermost field group labelled ``title`` (its input, tabs and errors)."""
        label = self.page.locator("form label").filter(has_text=_label(title))
        return label.locator(
            "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' group ')][1]"
        )

    async def _switched_on(self, title: str) -> Locator:
        """The field ``title``, on its value tab if it is an `X | None` field left on "None"."""
        field = self.field(title)
        tabs = field.get_by_role("tab")
        if await tabs.count():
            none = field.get_by_role("tab", name=_NONE_TAB, exact=True)
            if await none.get_attribute("aria-selected") == "true":
                await tabs.filter(has_not_text=re.compile(f"^{_NONE_TAB}$")).first.click()
        return field

    async def _editor(self, title: str) -> Locator:
        """The text box of a field, switching an `X | None` field off "None" first."""
        field = await self._switched_on(title)
        editor = field.locator("input, textarea").first
        await editor.wait_for(timeout=ACTION_TIMEOUT_MS)
        return editor

    async def name(self, value: str) -> None:
        await self.page.get_by_label("Name", exact=True).fill(value)

    async def text(self, title: str, value: str) -> None:
        await (await self._editor(title)).fill(value)

    async def number(self, title: str, value: float) -> None:
        await (await self._editor(title)).fill(f"{value:g}")

    async def choose(self, title: str, option: str) -> None:
        await self.page.get_by_role("button", name=f"Select {title}", exact=True).click()
        await self.page.get_by_role("option", name=option, exact=True).click()

    async def select_block(self, title: str, block_name: str) -> None:
        """Pick the saved block ``block_name`` in a nested block field."""
        field = await self._switched_on(title)
        await field.get_by_role("button", name="Select a block").click()
        await self.page.get_by_role("option", name=block_name, exact=True).click()

    async def list_items(self, title: str, values: Sequence[str]) -> None:
        field = self.field(title)
        for index, value in enumerate(values):
            await field.get_by_role("button", name="Add item").click()
            await field.locator("input, textarea").nth(index).fill(value)

    async def screenshot(self, path: Path) -> None:
        await screenshot(self.page, path)

    # -------------------------------------------------------------- saving

    async def save(self) -> str:
        """Save and return the id of the block document the UI created."""
        await self.page.get_by_role("button", name="Save", exact=True).click()
        await self.page.wait_for_url(_SAVED_URL, timeout=ACTION_TIMEOUT_MS)
        match = _SAVED_URL.search(self.page.url)
        assert match is not None
        return match.group(1)

    async def press_save(self) -> bool:
        """Press Save: True once the UI shows the saved block, False if it stays on the form."""
        await self.page.get_by_role("button", name="Save", exact=True).click()
        try:
            await self.page.wait_for_url(_SAVED_URL, timeout=REFUSAL_WATCH_MS)
        except PlaywrightTimeout:  # still on the form
            return False
        return True

    async def save_refused(self) -> list[str]:
        """Press Save expecting a refusal: the errors the form shows (AssertionError if it saved).

        Counts as shown: field and form errors, error toasts, and the browser's own message on
        an input that fails its constraints (a number out of bounds).
        """
        if await self.press_save():
            raise AssertionError(f"the form saved the block: {self.page.url}")
        messages: list[str] = await self.page.evaluate(
            """() => {
                const out = [];
                for (const el of document.querySelectorAll('form input, form textarea'))
                    if (!el.validity.valid) out.push(el.validationMessage);
                const shown = ['[role="alert"]', '.text-destructive',
                               '[data-sonner-toast][data-type="error"]'].join(', ');
                for (const el of document.querySelectorAll(shown))
                    if (el.textContent.trim()) out.push(el.textContent.trim());
                return out;
            }"""
        )
        return messages


class DatabaseForm(BlockForm):
    block_type = DatabaseBlock

    async def fill(
        self,
        *,
        url: str,
        max_size: int,
        statement_timeout: float,
        application_name: str,
        read_replica_urls: Sequence[str] = (),
    ) -> None:
        await self.text(self.title("url"), url)
        await self.number(self.title("max_size"), max_size)
        await self.number(self.title("statement_timeout"), statement_timeout)
        await self.text(self.title("application_name"), application_name)
        await self.list_items(self.title("read_replica_urls"), read_replica_urls)


class VaultForm(BlockForm):
    """The vault's form: a Storage field whose tabs are the providers, each with its settings.

    The tabs are titled after the settings models (``GcsStorage``'s title is "Google Cloud
    Storage"); only the chosen tab's fields are on the page, so their labels are unique.
    """

    block_type = VaultBlock

    @staticmethod
    def setting(model: type[BaseModel], prop: str) -> str:
        """The label of the provider setting ``prop`` of the settings model ``model``."""
        properties: dict[str, dict[str, object]] = model.model_json_schema()["properties"]
        return str(properties[prop].get("title", prop))

    async def storage(self, model: type[BaseModel]) -> None:
        """Pick the Storage tab of the settings model ``model`` (clicked until selected)."""
        name = str(model.model_config.get("title") or model.__name__)
        tab = self.field(self.title("storage")).get_by_role("tab", name=name, exact=True)
        for attempt in range(3):
            await tab.click()
            try:
                await self.page.wait_for_function(
                    "(el) => el.getAttribute('aria-selected') === 'true'",
                    arg=await tab.element_handle(),
                    timeout=ACTION_TIMEOUT_MS // 3,
                )
                return
            except PlaywrightTimeout:  # a click lost while the form re-rendered
                if attempt == 2:
                    raise

    async def gcs(
        self,
        *,
        bucket: str | None,
        prefix: str = "",
        project: str | None = None,
        credentials_block: str | None = None,
    ) -> None:
        """The "Google Cloud Storage" tab and its settings (``bucket=None`` leaves it empty);
        ``credentials_block`` is the name of a saved GcpCredentials block, picked."""
        await self.storage(GcsStorage)
        if bucket is not None:
            await self.text(self.setting(GcsStorage, "bucket"), bucket)
        if prefix:
            await self.text(self.setting(GcsStorage, "prefix"), prefix)
        if project is not None:
            await self.text(self.setting(GcsStorage, "project"), project)
        if credentials_block is not None:
            await self.select_block(self.setting(GcsStorage, "gcp_credentials"), credentials_block)


class DiscordForm(BlockForm):
    block_type = DiscordBlock

    async def webhook(self, channel: str, url: str) -> None:
        """The webhook URL of ``channel`` (its field has the channel's name)."""
        await self.text(self.title(channel), url)

    async def fill(
        self,
        *,
        webhooks: Mapping[str, str] | None = None,
        env_tag: str | None = None,
        username: str | None = None,
        fallback_channel: str | None = None,
        mention_role_id: str | None = None,
        max_attempts: int | None = None,
        state_database: str | None = None,
    ) -> None:
        for channel, url in (webhooks or {}).items():
            await self.webhook(channel, url)
        if env_tag is not None:
            await self.text(self.title("env_tag"), env_tag)
        if username is not None:
            await self.text(self.title("username"), username)
        if fallback_channel is not None:
            await self.choose(self.title("fallback_channel"), fallback_channel)
        if mention_role_id is not None:
            await self.text(self.title("mention_role_id"), mention_role_id)
        if max_attempts is not None:
            await self.number(self.title("max_attempts"), max_attempts)
        if state_database is not None:
            await self.select_block(self.title("state_database"), state_database)


class V1VaultForm:
    """The vault's create form in Prefect's v1 UI (still served next to v2, at the v1 paths).

    v1 checks a form against the block's schema before it saves, but through a copy of the
    schema that keeps types, enums, ``required`` and the provider union and drops ``pattern``
    and the length bounds: it refuses a provider without its required setting, and lets a bad
    pattern through.
    """

    def __init__(self, page: Page) -> None:
        self.page = page

    @classmethod
    async def open(cls, page: Page, ui_url: str) -> Self:
        slug = VaultBlock.get_block_type_slug()
        await page.goto(f"{ui_url}/blocks/catalog/{slug}/create", timeout=NAVIGATION_TIMEOUT_MS)
        form = cls(page)
        await form.name_input.wait_for(timeout=NAVIGATION_TIMEOUT_MS)
        return form

    @property
    def name_input(self) -> Locator:
        # v1's labels point at ids their inputs do not carry: find the input inside the label's box
        box = self.page.locator(".p-label").filter(
            has=self.page.locator("label", has_text=re.compile("^Block Name$"))
        )
        return box.locator("input").first

    async def name(self, value: str) -> None:
        await self.name_input.fill(value)

    async def storage(self, model: type[BaseModel]) -> None:
        """Pick the provider button titled after the settings model ``model``."""
        name = str(model.model_config.get("title") or model.__name__)
        await self.page.get_by_role("button", name=name, exact=True).click()

    async def create_refused(self) -> list[str]:
        """Press Create expecting a refusal: the field errors shown (AssertionError if saved)."""
        await self.page.get_by_role("button", name="Create", exact=True).click()
        try:
            await self.page.wait_for_url(_SAVED_URL, timeout=REFUSAL_WATCH_MS)
        except PlaywrightTimeout:
            errors: list[str] = await self.page.get_by_text(
                re.compile(r" is required$")
            ).all_inner_texts()
            return errors
        raise AssertionError(f"the form saved the block: {self.page.url}")
