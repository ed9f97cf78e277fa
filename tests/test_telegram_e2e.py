"""The Telegram adapter end to end: the real PTB `Bot` against the fake Bot API, the real core
and store, started the way `fpbot run` (polling) and `fpbot serve` (webhook) start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bot.adapters.telegram import TelegramAdapter, TelegramSetupError, rate_limiter, set_webhook
from bot.app import BotApp
from bot.delivery import PermanentFailure
from bot.runner import running, web_app
from bot.settings import Secret, Settings
from handlers import COMMANDS, FORMS, forms
from handlers.clock import FrozenClock
from handlers.context import Context
from handlers.dispatch import Core
from handlers.forms import Field, Form
from handlers.reminders import queue_outgoing
from handlers.routing import Access, Command
from handlers.types import Choice, Incoming, OutFile, Outgoing
from storage.db import Database
from storage.invitations import create_invitation
from storage.models import (
    Conversation,
    InboxItem,
    Invitation,
    MembershipRequest,
    OutboxItem,
    Person,
    Role,
    RoleName,
)
from tests.conftest import COORDINATOR, FP_CHILE
from tests.fakes.telegram_api import Call, FakeBotAPI, TelegramLimits

TOKEN = "123:abc"
SECRET = "s3cret-hook_42"
HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(TOKEN) as server:
        yield server


class World:
    """Bot processes on one store and one fake Telegram; each `start()` is a fresh process."""

    def __init__(self, db: Database, clock: FrozenClock, fake: FakeBotAPI) -> None:
        self.db = db
        self.clock = clock
        self.fake = fake
        self.settings = Settings(database_url=db.url, telegram_token=Secret(TOKEN),
                                 telegram_api_url=f"{fake.url}/bot",
                                 telegram_webhook_secret=Secret(SECRET))
        self.stacks: list[contextlib.AsyncExitStack] = []
        self.app: BotApp | None = None
        self.adapter: TelegramAdapter | None = None

    async def start(self, *, webhook: bool = False, core: Core | None = None,
                    **kwargs: Any) -> TelegramAdapter:
        """Start a bot process like `fpbot run` (or `fpbot serve` with webhook=True)."""
        app = BotApp(self.settings, clock=self.clock)
        if core is not None:
            app.core = app.inbound.core = core
            core.outbox_listeners.append(app.sender.poke)
        kwargs.setdefault("limiter", rate_limiter(chat_rate=None))
        kwargs.setdefault("poll_timeout", 2.0)
        kwargs.setdefault("retry_first", 0.05)
        adapter = TelegramAdapter(app, **kwargs)
        app.inbound.retry_first = 0.05
        app.sender.quick_pause = 0.05
        stack = contextlib.AsyncExitStack()
        stack.push_async_callback(app.close)
        try:
            await stack.enter_async_context(running(app, [adapter], webhook=webhook,
                                                    scheduler=False))
        except BaseException:
            await stack.aclose()
            raise
        self.stacks.append(stack)
        self.app, self.adapter = app, adapter
        return adapter

    async def stop(self) -> None:
        """Stop the most recent bot process."""
        await self.stacks.pop().aclose()

    async def close(self) -> None:
        while self.stacks:
            await self.stop()

    # -- chatting ---------------------------------------------------------------------
    def say(self, text: str | None, chat_id: int = 77, **kwargs: Any) -> dict[str, Any]:
        return self.fake.push_update(self.fake.message_update(chat_id, text, **kwargs))

    def press(self, chat_id: int, message_id: int, label: str) -> dict[str, Any]:
        """Press the button labelled `label` on a message the bot sent."""
        data = buttons(self.fake, chat_id, message_id)[label]
        return self.fake.push_update(self.fake.callback_update(chat_id, data, message_id))

    async def replies(self, count: int, method: str = "sendMessage") -> list[Call]:
        calls = await self.fake.wait_for(method, count=count)
        assert self.adapter is not None
        await self.adapter.wait_idle()
        return [c for c in calls if c.status == 200]

    async def settle(self) -> None:
        """Wait until every update pushed so far is confirmed and handled."""
        target = self.fake._next_update_id
        deadline = time.monotonic() + 5
        while self.fake.confirmed_offset < target:
            assert time.monotonic() < deadline, "updates not confirmed"
            await asyncio.sleep(0.01)
        assert self.adapter is not None
        await self.adapter.wait_idle()

    async def invite_code(self, email: str = FP_CHILE) -> str:
        async with self.db.transaction() as session:
            person = await session.scalar(select(Person).where(Person.email == email))
            assert person is not None
            code, _ = await create_invitation(session, person.id, "invite",
                                              now=self.clock.now(), ttl=timedelta(days=14))
        return code

    async def unanswered(self) -> int:
        """Updates not handled, plus replies and notices not sent (or given up)."""
        return (await self.count(InboxItem, InboxItem.handled_at.is_(None))
                + await self.count(OutboxItem, OutboxItem.status != "sent"))

    async def count(self, model: Any, *where: Any) -> int:
        async with self.db.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where))
                       or 0)


@pytest_asyncio.fixture
async def world(demo_db: Database, clock: FrozenClock, fake: FakeBotAPI) -> AsyncIterator[World]:
    w = World(demo_db, clock, fake)
    try:
        yield w
    finally:
        await w.close()


def sent_to(fake: FakeBotAPI, chat_id: int, method: str = "sendMessage") -> list[Call]:
    return [c for c in fake.calls_to(method) if c.status == 200 and c.params["chat_id"] == chat_id]


def buttons(fake: FakeBotAPI, chat_id: int, message_id: int) -> dict[str, str]:
    markup = fake.messages[(chat_id, message_id)].get("reply_markup") or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", [])
            for b in row}


def message_id(call: Call) -> int:
    return int(call.result["message_id"])


# -- onboarding ---------------------------------------------------------------------------
async def test_start_with_an_invitation_code_welcomes_and_sets_the_menu(world: World) -> None:
    code = await world.invite_code()
    await world.start()
    world.say(f"/start {code}", chat_id=42)
    [welcome] = await world.replies(1)
    await world.settle()
    assert welcome.params["chat_id"] == 42 and welcome.params["parse_mode"] == "HTML"
    assert "Welcome, " in welcome.params["text"] and "Chile" in welcome.params["text"]
    # Strangers see start/help/cancel; the new focal point gets their own commands.
    menus = {(c.params["scope"]["type"], c.params["scope"].get("chat_id")):
             [x["command"] for x in c.params["commands"]]
             for c in world.fake.calls_to("setMyCommands")}
    assert menus[("default", None)] == ["start", "help", "cancel"]
    assert "whoami" in menus[("chat", 42)]
    assert await world.unanswered() == 0
    assert world.fake.pending_updates() == []


def chat_menus(fake: FakeBotAPI, chat_id: int) -> list[list[str]]:
    """Each command menu set for one private chat, in order (what the person's "/" shows)."""
    return [[x["command"] for x in c.params["commands"]] for c in fake.calls_to("setMyCommands")
            if c.status == 200 and c.params["scope"].get("chat_id") == chat_id]


async def test_a_menu_is_set_when_the_commands_change_not_per_message_nor_per_restart(
        world: World) -> None:
    code = await world.invite_code()
    await world.start()
    world.say(f"/start {code}", chat_id=42)
    await world.replies(1)
    for n in (2, 3, 4):
        world.say("/help" if n % 2 else "/whoami", chat_id=42)
        await world.replies(n)
    await world.settle()
    [menu] = chat_menus(world.fake, 42)
    assert "whoami" in menu and "newsletter" not in menu
    await world.stop()  # a restart: the store, not the process, knows what was set
    await world.start()
    world.say("/help", chat_id=42)
    await world.replies(5)
    await world.settle()
    assert len(chat_menus(world.fake, 42)) == 1
    assert [c.params["scope"]["type"] for c in world.fake.calls_to("setMyCommands")] == [
        "default", "chat", "default"]  # strangers' menu once per start, nobody else's
    # Chile's focal point joins the secretariat: their next message brings the new menu.
    async with world.db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == FP_CHILE))
        assert person is not None
        session.add(Role(person_id=person.id, member_id=None, role=RoleName.SECRETARIAT))
    world.say("/help", chat_id=42)
    [*_, reply] = await world.replies(6)
    await world.settle()
    assert "/newsletter" in reply.params["text"]
    first, second = chat_menus(world.fake, 42)
    assert "newsletter" in second and "newsletter" not in first


async def test_a_menu_telegram_refused_is_set_again_after_the_next_message(world: World) -> None:
    code = await world.invite_code()
    await world.start()
    world.fake.fail_next("setMyCommands", status=502)  # the person's menu (the default is set)
    world.say(f"/start {code}", chat_id=42)
    [welcome] = await world.replies(1)
    await world.settle()
    assert "Welcome, " in welcome.params["text"] and chat_menus(world.fake, 42) == []
    world.say("/help", chat_id=42)
    await world.replies(2)
    await world.settle()
    [menu] = chat_menus(world.fake, 42)
    assert "whoami" in menu
    assert await world.unanswered() == 0


# -- forms --------------------------------------------------------------------------------
async def test_membership_form_with_back_and_text_answers(world: World) -> None:
    await world.start()
    world.say("/start")
    hello, q1 = await world.replies(2)
    assert "a few short questions" in hello.params["text"]
    assert "<b>Membership request</b> · 1/5" in q1.params["text"]
    cancel = buttons(world.fake, 77, message_id(q1))
    assert list(cancel) == ["Cancel"] and re.fullmatch(r"x\|\d+", cancel["Cancel"])

    world.say("Chile")
    _, _, q2 = await world.replies(3)
    assert "2/5" in q2.params["text"]
    assert list(buttons(world.fake, 77, message_id(q2))) == ["Back", "Cancel"]
    # The answered question loses its buttons: only one question is live at a time.
    assert buttons(world.fake, 77, message_id(q1)) == {}

    world.press(77, message_id(q2), "Back")
    [edit] = await world.replies(1, "editMessageText")
    assert edit.params["message_id"] == message_id(q2) and "1/5" in edit.params["text"]
    assert len(sent_to(world.fake, 77)) == 3  # edited in place, not a new message
    assert world.fake.calls_to("answerCallbackQuery")

    for n, answer in enumerate(["Chile", "Ana <b>Pérez</b>", "Director", "Ministry & Peace"]):
        world.say(answer)
        await world.replies(4 + n)
    world.say("ana@example.org")
    await world.replies(8)
    done = sent_to(world.fake, 77)[-1]
    assert "Your request (#1)" in done.params["text"] and "Chile" in done.params["text"]
    async with world.db.transaction() as session:
        request = await session.scalar(select(MembershipRequest))
    assert request is not None
    assert (request.name, request.ministry) == ("Ana <b>Pérez</b>", "Ministry & Peace")
    assert await world.count(Conversation) == 0
    # Every question sent carried escaped user text only as text, never as markup.
    assert all("<b>Pérez" not in c.params["text"] for c in world.fake.calls_to("sendMessage"))


async def test_cancel_button_closes_the_form_in_place(world: World) -> None:
    await world.start()
    world.say("/start", chat_id=78)
    _, q1 = await world.replies(2)
    world.press(78, message_id(q1), "Cancel")
    [edit] = await world.replies(1, "editMessageText")
    assert edit.params["message_id"] == message_id(q1)
    assert "cancelled" in edit.params["text"] and "reply_markup" not in edit.params
    assert buttons(world.fake, 78, message_id(q1)) == {}
    assert await world.count(Conversation) == 0


SURVEY_ANSWERS: list[dict[str, Any]] = []
LONG = "Ministry of Foreign Affairs, International Cooperation and Something Long"


async def _colours(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice("red", "Red"), Choice(LONG, "The long one")]


async def _survey_done(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    SURVEY_ANSWERS.append(answers)
    return [Outgoing("forms.cancelled", {"title": "Survey"}, closes_form=True)]


SURVEY = Form("survey", "onboarding.form_title", (
    Field("colour", "onboarding.ask_member", kind="choice", choices=_colours),
    Field("other", "onboarding.ask_title", kind="choice", choices=_colours),
    Field("note", "onboarding.ask_name", required=False),
), submit=_survey_done)


async def _survey(msg: Incoming, ctx: Context) -> list[Outgoing]:
    return [await forms.start(ctx, SURVEY)]


def survey_core(world: World) -> Core:
    commands = (*COMMANDS, Command("survey", _survey, Access.ANYONE, "help.help"))
    return Core(world.db, commands, {**FORMS, "survey": SURVEY}, clock=world.clock)


async def test_choice_buttons_skip_and_a_stale_button(world: World) -> None:
    SURVEY_ANSWERS.clear()
    await world.start(core=survey_core(world))
    world.say("/survey")
    [q1] = await world.replies(1)
    keys = buttons(world.fake, 77, message_id(q1))
    version = keys["Cancel"].split("|")[1]  # each form starts at a fresh version
    assert keys == {"Red": f"v|{version}|red", "The long one": f"n|{version}|2",
                    "Cancel": f"x|{version}"}

    world.press(77, message_id(q1), "Red")
    await world.replies(1, "editMessageText")
    assert list(buttons(world.fake, 77, message_id(q1))) == ["Red", "The long one", "Back",
                                                             "Cancel"]
    # A button of the first question tapped twice: "stale", then where you are now.
    world.fake.push_update(world.fake.callback_update(77, f"v|{version}|red", message_id(q1)))
    [_, stale] = await world.replies(2, "editMessageText")
    assert stale.params["message_id"] == message_id(q1)
    assert "earlier question" in stale.params["text"] and "reply_markup" not in stale.params
    [_, now] = await world.replies(2)
    assert "2/3" in now.params["text"] and "Back" in buttons(world.fake, 77, message_id(now))

    world.say("/survey")  # start again from a fresh message: asked first, then dropped
    [*_, ask] = await world.replies(3)
    assert "Continue it, or drop it and start it again?" in ask.params["text"]
    world.press(77, message_id(ask), "Drop it, start again")
    [*_, dropped, q] = await world.replies(5)
    assert "cancelled" in dropped.params["text"]
    world.press(77, message_id(q), "The long one")
    await world.replies(3, "editMessageText")
    world.press(77, message_id(q), "The long one")
    await world.replies(4, "editMessageText")
    assert "Skip" in buttons(world.fake, 77, message_id(q))
    world.press(77, message_id(q), "Skip")
    await world.replies(5, "editMessageText")
    await world.settle()
    assert SURVEY_ANSWERS == [{"colour": LONG, "other": LONG, "note": ""}]
    assert "cancelled" in world.fake.messages[(77, message_id(q))]["text"]


async def test_a_button_the_bot_no_longer_knows_says_so(world: World) -> None:
    await world.start()
    world.say("/help")
    [help_] = await world.replies(1)
    world.fake.push_update(world.fake.callback_update(77, "old|layout", message_id(help_)))
    [answer] = await world.fake.wait_for("answerCallbackQuery")
    assert answer.params["text"] == ("This button no longer works. Send /help to see what you "
                                     "can do.")


# -- files --------------------------------------------------------------------------------
async def test_documents_and_photos_reach_the_core_and_big_files_are_refused(
        world: World) -> None:
    adapter = await world.start()
    seen: list[Incoming] = []
    handle = world.app.core.handle  # type: ignore[union-attr]

    async def spy(inc: Incoming, inbox_id: int | None = None, **kw: Any) -> list[Outgoing]:
        seen.append(inc)
        return await handle(inc, inbox_id, **kw)

    world.app.core.handle = spy  # type: ignore[union-attr,method-assign]
    doc = world.fake.add_file("DOC1", b"%PDF-1.4 my update", file_name="update.pdf")
    world.say("our update", document=doc)
    photo = world.fake.add_file("PH1", b"\xff\xd8jpeg", mime_type="image/jpeg")
    world.say(None, photo=[{**photo, "file_id": "PH0", "file_size": 3, "width": 90},
                           {**photo, "width": 800, "height": 600}])
    huge = {"file_id": "BIG", "file_unique_id": "ubig", "file_name": "video.mp4",
            "file_size": 25_000_000, "mime_type": "video/mp4"}
    world.say("too big", document=huge)
    await world.replies(3)
    await world.settle()

    assert [(a.file_id, a.name, a.size, a.mime_type) for i in seen for a in i.attachments] == [
        ("DOC1", "update.pdf", 18, "application/pdf"),
        ("PH1", f"photo-{photo['file_unique_id']}.jpg", 6, "image/jpeg")]
    assert seen[0].text == "our update"
    assert world.fake.calls_to("getFile") == []  # content is fetched only when needed
    assert await adapter.download("DOC1") == b"%PDF-1.4 my update"
    refusal = sent_to(world.fake, 77)[-1].params["text"]
    assert "video.mp4" in refusal and "25.0 MB" in refusal and "20 MB" in refusal


async def test_the_bot_sends_documents_and_splits_long_replies(world: World) -> None:
    adapter = await world.start()
    csv = OutFile("roster.csv", "text/csv", b"email,name\na@b.c,A\n")
    await adapter.send("42", Outgoing("help.help", file=csv), locale="en", tz="UTC")
    [doc] = sent_to(world.fake, 42, "sendDocument")
    assert doc.params["document"] == {"filename": "roster.csv", "content": csv.content}
    assert doc.params["caption"] == "show this list"

    requests = [{"id": n, "name": f"Person <{n}>", "title": "Adviser", "ministry": "MFA",
                 "email": f"p{n}@example.org", "member": "Chile", "created": world.clock.now()}
                for n in range(1, 80)]
    choices = (Choice("/requests approve 1", "Approve #1"), Choice("/requests reject 1", "Reject"))
    await adapter.send("42", Outgoing("onboarding.requests_list", {"requests": requests},
                                      choices=choices), locale="en", tz="Europe/Berlin")
    parts = sent_to(world.fake, 42)
    assert len(parts) >= 2 and all(len(p.params["text"]) <= 4096 for p in parts)
    assert all("reply_markup" not in p.params for p in parts[:-1])
    assert parts[-1].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == (
        "t|/requests approve 1")
    text = "\n".join(p.params["text"] for p in parts)
    assert text.count("Person &lt;") == 79 and "<Person" not in text


# -- exactly once -------------------------------------------------------------------------
async def test_a_redelivered_update_is_acted_on_once(world: World) -> None:
    code = await world.invite_code()
    await world.start()
    update = world.fake.message_update(42, f"/start {code}")
    world.fake.push_update({"update_id": 500, **update})
    world.fake.push_update({"update_id": 500, **update})  # Telegram delivering it twice
    await world.replies(1)
    await world.settle()
    world.fake.push_update({"update_id": 500, **update})  # and once more, much later
    world.say("/help", chat_id=42)
    await world.replies(2)
    await world.settle()
    texts = [c.params["text"] for c in sent_to(world.fake, 42)]
    assert len(texts) == 2 and "Welcome" in texts[0] and "already" not in texts[1]
    assert await world.count(InboxItem) == 2


async def test_killed_between_receiving_and_handling_loses_nothing(world: World) -> None:
    code = await world.invite_code()
    await world.start()
    stuck = asyncio.Event()

    async def hang(inc: Incoming, inbox_id: int | None = None, **kw: Any) -> list[Outgoing]:
        stuck.set()
        await asyncio.Event().wait()  # the process dies here
        return []

    world.app.core.handle = hang  # type: ignore[union-attr,method-assign]
    world.app.stop_grace = 0.05  # type: ignore[union-attr]
    world.say(f"/start {code}", chat_id=42)
    await asyncio.wait_for(stuck.wait(), 5)
    while world.fake.confirmed_offset < 2:  # Telegram was told it arrived: no redelivery
        await asyncio.sleep(0.01)
    await world.stop()
    assert sent_to(world.fake, 42) == []
    assert await world.count(InboxItem, InboxItem.handled_at.is_(None)) == 1

    await world.start()  # the restart drains the inbox
    [welcome] = await world.replies(1)
    assert "Welcome" in welcome.params["text"]
    assert await world.count(Invitation, Invitation.used_at.is_not(None)) == 1
    assert await world.unanswered() == 0


async def test_killed_after_handling_sends_the_stored_replies_without_handling_again(
        world: World) -> None:
    code = await world.invite_code()
    await world.start()
    world.app.stop_grace = 0.05  # type: ignore[union-attr]
    world.fake.fail_next("sendMessage", 500, times=1000)  # Telegram down while answering
    world.say(f"/start {code}", chat_id=42)
    await world.fake.wait_for("sendMessage", count=4)  # the first try and 3 quick retries
    await world.stop()
    world.fake.clear_failures()
    assert await world.count(InboxItem, InboxItem.handled_at.is_not(None)) == 1
    assert await world.count(OutboxItem, OutboxItem.status == "pending") == 1

    world.clock.advance(seconds=5)  # past the reply's backoff
    await world.start()
    await world.replies(1)
    [welcome] = sent_to(world.fake, 42)
    assert "Welcome" in welcome.params["text"]  # not "code already used": handled once
    async with world.db.transaction() as session:
        item = await session.scalar(select(InboxItem))
    assert item is not None and item.attempts == 1 and await world.unanswered() == 0


async def test_polling_never_confirms_what_the_store_did_not_keep(world: World) -> None:
    adapter = await world.start()
    receive = world.app.inbound.receive  # type: ignore[union-attr]
    failures = 0

    async def store_down(*args: Any, **kwargs: Any) -> int | None:
        nonlocal failures
        failures += 1
        raise OperationalError("INSERT", {}, ConnectionError("store down"))

    world.app.inbound.receive = store_down  # type: ignore[union-attr,method-assign]
    world.say("/help", chat_id=42)
    while failures < 2:  # asked Telegram again, with the same offset
        await asyncio.sleep(0.01)
    assert world.fake.confirmed_offset == 0 and len(world.fake.pending_updates()) == 1
    world.app.inbound.receive = receive  # type: ignore[union-attr,method-assign]
    await world.replies(1)
    await world.settle()
    assert len(sent_to(world.fake, 42)) == 1
    assert adapter.offset == 2


# -- webhook ------------------------------------------------------------------------------
async def test_webhook_checks_the_secret_and_stores_before_answering(world: World) -> None:
    adapter = await world.start(webhook=True)
    assert world.fake.calls_to("deleteWebhook") == []  # serve leaves the webhook alone
    code = await world.invite_code()
    update = {"update_id": 9001, **world.fake.message_update(42, f"/start {code}")}
    asgi = web_app(world.app, [adapter])  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://bot") as client:
        for headers in ({}, {HEADER: "wrong"}, {HEADER: SECRET + "x"}):
            forged = await client.post("/telegram/webhook", json=update, headers=headers)
            assert forged.status_code == 403
        assert await world.count(InboxItem) == 0

        receive = adapter.app.inbound.receive

        async def store_down(*args: Any, **kwargs: Any) -> int | None:
            raise OperationalError("INSERT", {}, ConnectionError("store down"))

        adapter.app.inbound.receive = store_down  # type: ignore[method-assign]
        refused = await client.post("/telegram/webhook", json=update, headers={HEADER: SECRET})
        assert refused.status_code == 503  # Telegram will deliver it again
        adapter.app.inbound.receive = receive  # type: ignore[method-assign]

        ok = await client.post("/telegram/webhook", json=update, headers={HEADER: SECRET})
        assert ok.status_code == 200
        assert await world.count(InboxItem) == 1  # stored before the 200
        [welcome] = await world.replies(1)
        again = await client.post("/telegram/webhook", json=update, headers={HEADER: SECRET})
        assert again.status_code == 200
        bad = await client.post("/telegram/webhook", content=b"{", headers={HEADER: SECRET})
        assert bad.status_code == 400
        huge = await client.post("/telegram/webhook", content=b" " * 2_000_000,
                                 headers={HEADER: SECRET})
        assert huge.status_code == 413  # refused before being read
        unsigned_huge = await client.post("/telegram/webhook", content=b" " * 2_000_000)
        assert unsigned_huge.status_code == 403
    await adapter.wait_idle()
    assert "Welcome" in welcome.params["text"] and len(sent_to(world.fake, 42)) == 1


async def test_webhook_mode_needs_a_secret(world: World) -> None:
    world.settings = Settings(database_url=world.db.url, telegram_token=Secret(TOKEN),
                              telegram_api_url=f"{world.fake.url}/bot")
    with pytest.raises(TelegramSetupError, match="TELEGRAM_WEBHOOK_SECRET"):
        await world.start(webhook=True)


async def test_set_webhook_registers_the_url_and_secret(world: World) -> None:
    app = BotApp(world.settings, clock=world.clock)
    try:
        url = await set_webhook(app, "https://bot.example.org")
        assert url == "https://bot.example.org/telegram/webhook"
        assert world.fake.webhook_url == url and world.fake.webhook_secret == SECRET
        [call] = world.fake.calls_to("setWebhook")
        assert call.params["allowed_updates"] == ["message", "callback_query"]
        app.settings = Settings(database_url=world.db.url, telegram_token=Secret(TOKEN),
                                telegram_api_url=f"{world.fake.url}/bot")
        with pytest.raises(ValueError, match="TELEGRAM_WEBHOOK_SECRET"):
            await set_webhook(app, "https://bot.example.org")
    finally:
        await app.close()


# -- rate limits --------------------------------------------------------------------------
async def test_a_429_storm_is_waited_out_and_every_reply_goes(world: World) -> None:
    await world.start(limiter=rate_limiter(chat_rate=None, max_retries=3))
    chats = [101, 102, 103, 104, 105]
    world.fake.fail_next("sendMessage", 429, retry_after=1)
    for chat in chats:
        world.say("/help", chat_id=chat)
    began = time.monotonic()
    await world.replies(len(chats) + 1)
    await world.settle()
    # A RetryAfter holds back every request, then each reply still goes, once.
    assert time.monotonic() - began >= 1.0
    calls = world.fake.calls_to("sendMessage")
    assert [c.status for c in calls].count(429) == 1 and len(calls) == len(chats) + 1
    for chat in chats:
        assert len(sent_to(world.fake, chat)) == 1, chat
    assert await world.unanswered() == 0


async def test_when_ptb_gives_up_on_a_429_the_adapter_tries_again(world: World) -> None:
    await world.start(limiter=rate_limiter(chat_rate=None, max_retries=1))
    world.fake.fail_next("sendMessage", 429, retry_after=1, times=2)
    world.say("/help", chat_id=42)
    await world.replies(3)
    await world.settle()
    assert [c.status for c in world.fake.calls_to("sendMessage")] == [429, 429, 200]
    assert await world.unanswered() == 0


async def test_one_private_chat_is_paced_while_others_are_not(world: World) -> None:
    """Order, not wall time: while a chat's next message waits out its pace (a minute),
    the other chats' messages go; under load a timed bound here failed at random."""
    adapter = await world.start(limiter=rate_limiter(chat_rate=(1, 60)))

    def send(chat: str) -> Coroutine[Any, Any, None]:
        return adapter.send(chat, Outgoing("help.help"), locale="en", tz="UTC")

    await send("204")
    held = asyncio.create_task(send("204"))  # the chat's second must wait its minute
    try:
        await asyncio.wait_for(asyncio.gather(*(send(str(c)) for c in (201, 202, 203))), 30)
        assert not held.done()
        sent = [c.params["chat_id"] for c in world.fake.calls_to("sendMessage")]
        assert sorted(int(chat) for chat in sent) == [201, 202, 203, 204]
    finally:
        held.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held


async def test_a_paced_chat_gets_every_message_at_its_pace(world: World) -> None:
    adapter = await world.start(limiter=rate_limiter(chat_rate=(1, 0.3)))
    began = time.monotonic()
    await asyncio.gather(*(adapter.send("204", Outgoing("help.help"), locale="en", tz="UTC")
                           for _ in range(3)))
    assert time.monotonic() - began >= 0.55  # a lower bound: the pace guarantees it
    assert len(sent_to(world.fake, 204)) == 3


async def test_a_fan_out_past_the_flood_limits_is_paced_and_meets_no_429(world: World) -> None:
    """Telegram's published limits (the fake's): 30 a second after a burst of 30, one a
    second in a chat after a burst of 3."""
    adapter = await world.start(limiter=rate_limiter())  # the chat pace too, as in production
    world.fake.limits = TelegramLimits()

    await asyncio.gather(*(adapter.send(str(c), Outgoing("help.help"), locale="en", tz="UTC")
                           for c in range(301, 346)))
    for _ in range(4):
        await adapter.send("400", Outgoing("forms.nothing_to_cancel"), locale="en", tz="UTC")

    calls = world.fake.calls_to("sendMessage")
    assert [c.status for c in calls] == [200] * 49
    assert sorted(int(c.params["chat_id"]) for c in calls) == [*range(301, 346), *[400] * 4]
    assert all("There is nothing to cancel." == c.params["text"] for c in calls[-4:])


async def test_a_stall_as_a_burst_begins_does_not_bunch_the_messages_paced_behind_it(
        world: World) -> None:
    """The process stops for half a second as a fan-out's first message reaches Telegram (a
    garbage collection, a busy machine). Paced by the clock alone, the messages due in that
    half second went the moment it ended and reached Telegram with the burst: 429s (CI, stop
    18). Paced by the answers too, they wait for the burst's first answer."""
    adapter = await world.start(limiter=rate_limiter())
    world.fake.limits = TelegramLimits()
    world.fake.stall_next_message(0.5)

    await asyncio.gather(*(adapter.send(str(c), Outgoing("help.help"), locale="en", tz="UTC")
                           for c in range(301, 346)))

    calls = world.fake.calls_to("sendMessage")
    assert [c.status for c in calls] == [200] * 45
    assert sorted(int(c.params["chat_id"]) for c in calls) == [*range(301, 346)]
    assert "show this list" in calls[-1].params["text"]


async def test_a_server_error_is_retried_and_the_reply_still_goes(world: World) -> None:
    await world.start()
    world.fake.fail_next("sendMessage", 502, times=2)
    world.say("/help", chat_id=42)
    await world.replies(3)
    await world.settle()
    assert [c.status for c in world.fake.calls_to("sendMessage")] == [502, 502, 200]


# -- restart mid-form ---------------------------------------------------------------------
async def test_a_form_survives_a_restart_halfway(world: World) -> None:
    await world.start()
    world.say("/start")
    await world.replies(2)
    world.say("Chile")
    _, _, q2 = await world.replies(3)
    await world.stop()

    await world.start()  # a new process: nothing in memory
    world.press(77, message_id(q2), "Back")  # a button sent by the old process still works
    [edit] = await world.replies(1, "editMessageText")
    assert "1/5" in edit.params["text"]
    for n, answer in enumerate(["Germany", "Ana", "Director", "MFA", "ana@example.org"]):
        world.say(answer)
        await world.replies(4 + n)
    await world.settle()
    async with world.db.transaction() as session:
        request = await session.scalar(select(MembershipRequest))
    assert request is not None and request.member.name == "Germany"
    assert "Your request" in sent_to(world.fake, 77)[-1].params["text"]


@contextlib.asynccontextmanager
async def sweeps_held_up(db: Database) -> AsyncIterator[None]:
    """Hold what the outbox sweep takes first (SQLite's write lock; PostgreSQL's claimers'
    advisory lock), so that a sweep started now waits on the store."""
    if db.is_sqlite:
        raw = sqlite3.connect(make_url(db.url).database or "", isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            raw.execute("ROLLBACK")
            raw.close()
    else:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(900900)"))
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(900900)"))


async def store_is_free(db: Database) -> bool:
    """Whether nothing left behind holds the store: a writer gets in without waiting."""
    if db.is_sqlite:
        raw = sqlite3.connect(make_url(db.url).database or "", timeout=0, isolation_level=None)
        try:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            raw.close()
    async with db.engine.connect() as conn:
        free = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(900900)")))
        if free:
            await conn.execute(text("SELECT pg_advisory_unlock(900900)"))
        return free


async def until(condition: Any) -> None:
    """Let the bot's tasks run until `condition()` holds (5 s at most)."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0)


async def test_a_stop_in_the_middle_of_a_sweep_lets_it_end_and_leaves_the_store_free(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Stopping cancels no store work in hand (bot/delivery/stopping.py): a cancelled query
    left its connection, inside its transaction, to the garbage collector, and the next
    process met "database is locked" for as long as it lived."""
    await world.start()
    app = world.app
    assert app is not None
    async with sweeps_held_up(world.db):
        app.sender.poke()
        await until(app.sender._sweep_lock.locked)  # the sweep waits on the store
        stopping = asyncio.create_task(world.stop())
        await until(lambda: app.inbound.stopping)  # the process stops; the sweep still waits
    await stopping
    assert await store_is_free(world.db)
    assert "did not stop" not in caplog.text

    await world.start()  # the next process starts at once and answers
    world.say("/help")
    [reply] = await world.replies(1)
    assert "Welcome to the Focal Points Bot" in reply.params["text"]


# -- groups -------------------------------------------------------------------------------
async def test_in_a_group_only_commands_for_the_bot_and_no_personal_data(world: World) -> None:
    code = await world.invite_code()
    await world.start()
    world.say(f"/start {code}", chat_id=42)
    await world.replies(1)
    group = {"chat_id": -1001, "user_id": 42, "chat_type": "supergroup"}
    world.say("hello all", **group)
    world.say("/help@some_other_bot", **group)
    world.say("/help@fpbot_test_bot", **group)
    await world.replies(2)
    await world.settle()
    [help_] = sent_to(world.fake, -1001)
    assert "/whoami" in help_.params["text"]

    world.say("/whoami", **group)
    await world.replies(4)
    await world.settle()
    whoami = sent_to(world.fake, 42)[-1].params["text"]
    assert FP_CHILE in whoami  # the personal answer went to the private chat
    notice = sent_to(world.fake, -1001)[-1].params["text"]
    assert "private chat" in notice and "@" not in notice.replace("@fpbot", "")

    world.fake.fail_next("sendMessage", 403,
                         description="Forbidden: bot can't initiate conversation with a user")
    world.say("/whoami", **group)
    await world.replies(6)
    await world.settle()
    refusal = sent_to(world.fake, -1001)[-1].params["text"]
    assert "@fpbot_test_bot" in refusal and "press Start" in refusal
    assert all(FP_CHILE not in c.params["text"] for c in sent_to(world.fake, -1001))


# -- secrets ------------------------------------------------------------------------------
async def test_no_log_line_or_error_shows_the_token(world: World,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    code = await world.invite_code()
    world.fake.fail_next("getUpdates", 429, retry_after=1)
    await world.start(webhook=False)
    world.fake.fail_next("sendMessage", 500)
    world.fake.fail_next("editMessageReplyMarkup", 502)
    world.say(f"/start {code}", chat_id=42)
    world.say("/start")
    world.say("Chile")
    await world.replies(5)
    await world.settle()
    await world.stop()
    assert [c.status for c in world.fake.calls_to("getUpdates")][:2] == [429, 200]

    bad = Settings(database_url=world.db.url, telegram_token=Secret("123:wrong"),
                   telegram_api_url=f"{world.fake.url}/bot")
    world.settings = bad
    with pytest.raises(TelegramSetupError) as failure:
        await world.start()
    assert "123:wrong" not in str(failure.value)

    logged = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    assert "HTTP Request" in logged or "Calling Bot API" in logged  # the run did log requests
    assert TOKEN not in logged and "123:wrong" not in logged and SECRET not in logged
    assert "/bot***/" in logged


async def test_store_down_while_handling_apologises_once_then_answers(world: World) -> None:
    await world.start()
    handle = world.app.core.handle  # type: ignore[union-attr]
    calls = 0

    async def flaky(inc: Incoming, inbox_id: int | None = None, **kw: Any) -> list[Outgoing]:
        nonlocal calls
        calls += 1
        if calls <= 3:  # what the core answers when the store fails mid-way
            return [Outgoing("errors.store_unavailable")]
        return await handle(inc, inbox_id, **kw)

    world.app.core.handle = flaky  # type: ignore[union-attr,method-assign]
    world.say("/help", chat_id=42)
    await world.replies(2)
    await world.settle()
    apology, answer = (c.params["text"] for c in sent_to(world.fake, 42))
    assert "can't reach my database" in apology and "/start" in answer
    assert calls == 4
    assert await world.unanswered() == 0


async def test_a_long_notice_that_fails_half_way_resumes_at_the_part_not_yet_sent(
        world: World) -> None:
    """A notice over Telegram's 4,096 characters goes as several messages: when one of them
    fails, the resend starts there; the parts already out are never sent twice."""
    code = await world.invite_code(COORDINATOR)
    await world.start()
    world.say(f"/start {code}", chat_id=42, user_id=42)
    await world.replies(1)
    await world.settle()
    requests = [{"id": n, "name": f"Person {n}", "title": "Adviser", "ministry": "MFA",
                 "email": f"p{n}@example.org", "member": "Chile", "created": world.clock.now()}
                for n in range(1, 80)]
    notice = Outgoing("onboarding.requests_list", {"requests": requests})
    world.fake.fail_next("sendMessage", 502, after=1)  # the second part fails once
    async with world.db.transaction() as session:
        coordinator = await session.scalar(select(Person.id).where(Person.email == COORDINATOR))
        assert coordinator is not None
        await queue_outgoing(session, [(coordinator, "long-notice", notice)], world.clock.now())
    assert world.app is not None
    world.app.sender.poke()
    await world.app.sender.wait_idle()
    parts = [c.params["text"] for c in sent_to(world.fake, 42)[1:]]  # after the welcome
    assert len(parts) >= 2 and all(len(p) <= 4096 for p in parts)
    assert len(parts) == len(set(parts))  # each part once, the failed one once it went
    text = "\n".join(parts)
    assert text.count("Person ") == 79, text  # every request, once
    assert [c.status for c in world.fake.calls_to("sendMessage")][1:4] == [200, 502, 200]
    async with world.db.transaction() as session:
        row = await session.scalar(select(OutboxItem).where(OutboxItem.dedupe_key == "long-notice"))
    assert row is not None and row.status == "sent"
    assert row.extras["parts_sent"] == {"platform": "telegram", "n": len(parts) - 1}


async def test_personal_data_never_goes_to_a_group_through_the_outbox(world: World) -> None:
    adapter = await world.start()
    with pytest.raises(PermanentFailure, match="group"):
        await adapter.send("-1001", Outgoing("help.help", private=True), locale="en", tz="UTC")
    assert sent_to(world.fake, -1001) == []
