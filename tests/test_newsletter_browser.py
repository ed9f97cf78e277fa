"""The draft and the preview page of `fpbot serve`, in headless Chromium, and the signed links.

Chromium is Debian's (/usr/bin/chromium, installed by tests/run.sh); Playwright drives it and
never downloads a browser. Screenshots are kept in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, async_playwright
from sqlalchemy import select

from bot.app import BotApp
from bot.runner import web_app
from bot.settings import Secret, Settings
from handlers.clock import FrozenClock
from handlers.newsletter import preview_token
from handlers.newsletter_draft import compile_draft, render
from messages import Renderer
from storage import editions
from storage.db import Database
from storage.edition_demo import load_demo_edition
from storage.models import Person
from tests.conftest import COORDINATOR, FP_CHILE, Transcript
from tests.test_newsletter import HEADINGS

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET = "test-secret-key-for-previews"
WIDTHS = (600, 375)


@pytest.fixture
async def edition_db(demo_db: Database, clock: FrozenClock) -> Database:
    async with demo_db.transaction() as session:
        assert await load_demo_edition(session, clock.now()) is not None
    return demo_db


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def app(edition_db: Database, clock: FrozenClock) -> AsyncIterator[BotApp]:
    bot = BotApp(Settings(database_url=edition_db.url, secret_key=Secret(SECRET),
                          public_url="http://127.0.0.1:1"), clock=clock)
    try:
        yield bot
    finally:
        await bot.close()


async def person_id(db: Database, email: str) -> int:
    async with db.transaction() as session:
        found = await session.scalar(select(Person.id).where(Person.email == email))
        assert found is not None
        return found


async def assert_renders_well(browser: Browser, url: str, name: str) -> None:
    """Every section heading visible, nothing wider than the window, a screenshot kept."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width in WIDTHS:
        page = await browser.new_page(viewport={"width": width, "height": 800})
        try:
            response = await page.goto(url)
            assert response is not None and response.ok
            for heading in HEADINGS:
                locator = page.locator("h2", has_text=heading)
                assert await locator.count() == 1, heading
                assert await locator.is_visible(), heading
                box = await locator.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
            scroll = await page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= width, f"{name} overflows at {width} px: {scroll} px wide"
            shot = ARTIFACTS / f"{name}-{width}.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            await page.close()


async def test_the_html_draft_renders_in_chromium_at_600_and_375_px(
        edition_db: Database, clock: FrozenClock, browser: Browser, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    async with edition_db.transaction() as session:
        edition = await editions.by_number(session, 1)
        assert edition is not None
        draft = await compile_draft(session, edition, Renderer(), now=clock.now(), by=None)
    path = tmp_path / "draft.html"
    path.write_bytes(render(draft, "html"))
    backend = request.node.callspec.params["db"]
    await assert_renders_well(browser, path.as_uri(), f"draft-{backend}")


@contextlib.asynccontextmanager
async def serving(bot: BotApp) -> AsyncIterator[str]:
    """`fpbot serve`'s ASGI app on a free local port (no platform adapter needed)."""
    server = uvicorn.Server(uvicorn.Config(web_app(bot, []), host="127.0.0.1", port=0,
                                           lifespan="off", log_config=None))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_the_preview_page_renders_in_chromium(app: BotApp, edition_db: Database,
                                                    clock: FrozenClock, browser: Browser,
                                                    request: pytest.FixtureRequest) -> None:
    token = preview_token(SECRET, 1, await person_id(edition_db, COORDINATOR),
                          clock.now() + timedelta(days=3))
    async with serving(app) as base:
        backend = request.node.callspec.params["db"]
        await assert_renders_well(browser, f"{base}/newsletter/preview/{token}",
                                  f"preview-{backend}")


async def test_a_preview_link_from_chat_opens_and_an_altered_or_expired_one_is_refused(
        app: BotApp, edition_db: Database, clock: FrozenClock) -> None:
    chat = Transcript(app.core, app.renderer)
    await chat.say("/newsletter 1 preview", as_=COORDINATOR)
    assert chat.keys == ["newsletter.preview_link"]
    for fmt in ("plain", "html", "mrkdwn"):
        assert "valid until 4 March 2018, 04:00 (America/New_York)" in chat.text(-1, fmt)
    url = chat.last().context["url"]
    assert url.startswith("http://127.0.0.1:1/newsletter/preview/")
    path = url.removeprefix("http://127.0.0.1:1")
    transport = httpx.ASGITransport(app=web_app(app, []))
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        ok = await client.get(path)
        assert ok.status_code == 200 and "Focal point spotlight" in ok.text
        assert ok.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in ok.headers["content-security-policy"]
        token = path.rsplit("/", 1)[1]
        b64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
        for i in range(len(token)):  # every character, the last one's spare low bits included
            for other in {b64[b64.index(token[i]) ^ flip] for flip in (1, 2, 32)
                          if token[i] in b64}:
                altered = token[:i] + other + token[i + 1:]
                refused = await client.get(f"/newsletter/preview/{altered}")
                assert refused.status_code == 403, altered
                assert "Spotlight" not in refused.text
        clock.advance(days=3, seconds=1)
        expired = await client.get(path)
        assert expired.status_code == 403
        assert "not valid or has expired" in expired.text


async def test_a_preview_link_made_for_someone_outside_the_secretariat_is_refused(
        app: BotApp, edition_db: Database, clock: FrozenClock) -> None:
    token = preview_token(SECRET, 1, await person_id(edition_db, FP_CHILE),
                          clock.now() + timedelta(days=1))
    forged = preview_token("another-secret", 1, await person_id(edition_db, COORDINATOR),
                           clock.now() + timedelta(days=1))
    transport = httpx.ASGITransport(app=web_app(app, []))
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        assert (await client.get(f"/newsletter/preview/{token}")).status_code == 403
        assert (await client.get(f"/newsletter/preview/{forged}")).status_code == 403
