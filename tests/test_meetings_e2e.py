"""The Berlin meeting, end to end, through Telegram, Slack and the console of one running bot.

The secretariat plans Berlin (9-10 April 2018, from 09:00 Europe/Berlin, 3 seats) at the
console. Chile's focal point registers in Telegram (guided steps, buttons), Germany's in Slack
(`/fp register`, a modal, signed requests), Spain's at the console, Namibia's in Telegram: the
fourth is waitlisted. Spain cancels; Namibia is promoted and told, with the invitation. Every
confirmed registrant holds an .ics file that icalendar reads back to 07:00Z on 9 April; moving
the meeting sends SEQUENCE 1 under the same UID; the CSV lists exactly the three confirmed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from icalendar import Calendar
from sqlalchemy import select

from bot.adapters.console import ConsoleAdapter
from bot.adapters.slack import SlackAdapter
from bot.adapters.telegram import SECRET_HEADER, TelegramAdapter, rate_limiter
from bot.app import BotApp
from bot.runner import running, web_app
from bot.settings import Secret, Settings
from handlers.clock import FrozenClock
from storage import meetings as store
from storage.db import Database
from storage.invitations import create_invitation
from storage.models import Meeting, Person
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY
from tests.fakes.slack_api import (
    TEAM_ID,
    FakeSlackAPI,
    interaction_body,
    signed_headers,
    slash_command_body,
)
from tests.fakes.telegram_api import FakeBotAPI

FP_SPAIN = "fp.spain@demo.invalid"
FP_NAMIBIA = "fp.namibia@demo.invalid"
TG_TOKEN = "123:abc"
TG_SECRET = "meetings-hook_secret"
SLACK_TOKEN = "xoxb-test"
SIGNING_SECRET = "meetings-signing-secret-41c9"
CHILE_CHAT, NAMIBIA_CHAT = 42, 43
GERMANY_SLACK = "U7"
BERLIN_START = datetime(2018, 4, 9, 7, 0, tzinfo=UTC)  # 09:00 in Berlin (summer time)


@dataclass
class Berlin:
    db: Database
    app: BotApp
    telegram: TelegramAdapter
    tg: FakeBotAPI
    sk: FakeSlackAPI
    http: httpx.AsyncClient
    files: Path
    out: io.StringIO
    update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(500))
    triggers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- Telegram -------------------------------------------------------------------------
    async def tg_say(self, chat: int, text: str) -> None:
        await self._tg(self.tg.message_update(chat, text, first_name=f"fp{chat}"))

    async def _tg(self, update: dict[str, Any]) -> None:
        response = await self.http.post("/telegram/webhook",
                                        json={"update_id": next(self.update_ids), **update},
                                        headers={SECRET_HEADER: TG_SECRET})
        assert response.status_code == 200
        await self.telegram.wait_idle()

    def tg_step(self, chat: int) -> tuple[int, str, dict[str, str]]:
        live = [(mid, msg) for (c, mid), msg in self.tg.messages.items()
                if c == chat and any(d.startswith("x|") for d in buttons(msg).values())]
        assert live, "no question is open"
        mid, msg = max(live, key=lambda m: m[0])
        return mid, msg["text"], buttons(msg)

    async def tg_press(self, chat: int, label: str) -> None:
        mid, _, found = self.tg_step(chat)
        assert label in found, f"no {label!r} among {list(found)}"
        await self._tg(self.tg.callback_update(chat, found[label], mid))

    def tg_documents(self, chat: int) -> list[tuple[str, bytes, str]]:
        """(file name, content, caption) of every document sent to a chat."""
        return [(c.params["document"]["filename"], c.params["document"]["content"],
                 c.params.get("caption", "")) for c in self.tg.calls_to("sendDocument")
                if c.status == 200 and c.params["chat_id"] == chat]

    # -- Slack ----------------------------------------------------------------------------
    async def slack(self, body: str) -> None:
        response = await self.http.post("/slack/events", content=body,
                                         headers=signed_headers(SIGNING_SECRET, body))
        assert response.status_code == 200

    async def fp(self, text: str) -> None:
        await self.slack(slash_command_body(
            text=text, user_id=GERMANY_SLACK, channel_id=f"D{GERMANY_SLACK}",
            trigger_id=f"trigger-{next(self.triggers)}"))

    async def submit(self, view: dict[str, Any], values: dict[str, str]) -> None:
        state: dict[str, Any] = {}
        for block in view["blocks"]:
            name, element = block["block_id"], block["element"]
            value = values.get(name, "")
            if element["type"] == "static_select":
                option = next(o for o in element["options"] if o["value"] == value)
                state[name] = {"value": {"type": "static_select", "selected_option": option}}
            else:
                state[name] = {"value": {"type": element["type"], "value": value or None}}
        await self.slack(interaction_body({
            "type": "view_submission", "team": {"id": TEAM_ID},
            "user": {"id": GERMANY_SLACK, "team_id": TEAM_ID}, "api_app_id": "A1",
            "trigger_id": f"submit-{next(self.triggers)}",
            "view": {**view, "id": "V1", "state": {"values": state}}}))

    def slack_files(self) -> list[tuple[str, bytes]]:
        return [(u["filename"], u["content"]) for u in self.sk.uploads.values()
                if u["channel_id"] == f"D{GERMANY_SLACK}"]

    # -- the console ----------------------------------------------------------------------
    async def console(self, who: str, *lines: str) -> str:
        """Lines typed at a console as `who`; what the console printed meanwhile."""
        await self.app.core.console_identity(who)
        adapter = ConsoleAdapter(self.app.core, self.app.renderer, user=who, stdout=self.out,
                                 files_dir=self.files)
        self.app.sender.channels["console"] = adapter
        start = self.out.tell()
        for line in lines:
            await adapter.say(line)
        return self.out.getvalue()[start:]


def buttons(message: dict[str, Any]) -> dict[str, str]:
    markup = message.get("reply_markup") or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", [])
            for b in row}


def slack_blocks(params: dict[str, Any], key: str = "blocks") -> Any:
    value = params.get(key) or []
    return json.loads(value) if isinstance(value, str) else value


def slack_text(params: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in slack_blocks(params)
                     if b.get("type") in ("header", "section"))


def event_of(content: bytes) -> Any:
    cal = Calendar.from_ical(content)
    [event] = cal.walk("VEVENT")
    return cal, event


async def invitation(db: Database, email: str, clock: FrozenClock) -> str:
    async with db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == email))
        assert person is not None
        code, _ = await create_invitation(session, person.id, "invite", now=clock.now(),
                                          ttl=timedelta(days=14))
    return code


@pytest_asyncio.fixture
async def berlin(demo_db: Database, clock: FrozenClock, tmp_path: Path) -> AsyncIterator[Berlin]:
    async with FakeBotAPI(TG_TOKEN) as tg, FakeSlackAPI(token=SLACK_TOKEN) as sk:
        sk.add_user(GERMANY_SLACK, real_name="Julia Becker", tz="Europe/Berlin")
        settings = Settings(database_url=demo_db.url, telegram_token=Secret(TG_TOKEN),
                            telegram_api_url=f"{tg.url}/bot",
                            telegram_webhook_secret=Secret(TG_SECRET),
                            slack_bot_token=Secret(SLACK_TOKEN),
                            slack_signing_secret=Secret(SIGNING_SECRET),
                            slack_api_url=f"{sk.url}/api/", files_dir=str(tmp_path / "files"))
        app = BotApp(settings, clock=clock)
        telegram = TelegramAdapter(app, limiter=rate_limiter(chat_rate=None))
        slack = SlackAdapter(app)
        asgi = web_app(app, [telegram, slack])
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(app.close)
            await stack.enter_async_context(running(app, [telegram, slack], webhook=True,
                                                    scheduler=False))
            http = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=asgi), base_url="http://bot.test"))
            yield Berlin(demo_db, app, telegram, tg, sk, http, tmp_path / "files", io.StringIO())


async def register_in_telegram(b: Berlin, chat: int, meeting_id: int) -> str:
    """/register N with the buttons; the receipt's caption (it comes with the .ics)."""
    await b.tg_say(chat, f"/register {meeting_id}")
    _, question, found = b.tg_step(chat)
    assert "Who attends?" in question and "1/5" in question
    assert list(found)[:2] == ["Myself", "Someone of my delegation"]
    await b.tg_press(chat, "Myself")
    assert "Role in the delegation?" in b.tg_step(chat)[1]
    await b.tg_press(chat, "Head of delegation")
    assert "accessibility" in b.tg_step(chat)[1]
    await b.tg_press(chat, "Skip")
    assert "visa support letter" in b.tg_step(chat)[1]
    await b.tg_press(chat, "No")
    assert "dietary" in b.tg_step(chat)[1]
    before = len(b.tg_documents(chat))
    mid = b.tg_step(chat)[0]
    await b.tg_press(chat, "Skip")
    if len(b.tg_documents(chat)) > before:  # a receipt with a file comes as a document
        return str(b.tg_documents(chat)[-1][2])
    return str(b.tg.messages[(chat, mid)]["text"])  # else the last question became it


async def test_the_berlin_meeting_across_telegram_slack_and_the_console(
        berlin: Berlin, demo_db: Database, clock: FrozenClock) -> None:
    b = berlin

    # 1. The secretariat plans Berlin at the console.
    planned = await b.console(
        COORDINATOR, "/meeting new", "Berlin meeting of the Focal Points Network",
        "Annual meeting", "Germany", "Federal Foreign Office, Berlin", "-", "Europe/Berlin",
        "2018-04-09 09:00", "2018-04-10 17:00", "-", "2018-04-02 18:00", "3", "3",
        "Focal points and alternates", "No", "-", "No")
    assert "is planned: Berlin meeting of the Focal Points Network, 9 April 2018, 09:00 " \
           "(Europe/Berlin)" in planned
    async with demo_db.transaction() as session:
        mid = await session.scalar(select(Meeting.id).where(Meeting.title.startswith("Berlin")))
    assert mid is not None

    # 2. Chile registers in Telegram, with buttons.
    await b.tg_say(CHILE_CHAT, f"/start {await invitation(demo_db, FP_CHILE, clock)}")
    receipt = await register_in_telegram(b, CHILE_CHAT, mid)
    assert "<b>Registered</b>: you are registered for <b>Berlin meeting" in receipt
    assert "9 April 2018, 04:00 (America/Santiago)" in receipt  # Chile reads Santiago time
    [(name, chile_ics, _)] = b.tg_documents(CHILE_CHAT)
    assert name.startswith(f"meeting-{mid}-") and name.endswith(".ics")  # named for the attendee

    # 3. Germany registers in Slack: /fp register opens the modal; its answers come back.
    await b.fp(f"start {await invitation(demo_db, FP_GERMANY, clock)}")
    [welcome] = await b.sk.wait_for("chat.postMessage")  # bound before she registers
    assert "Welcome" in slack_text(welcome.params)
    await b.fp(f"register {mid}")
    [opened] = await b.sk.wait_for("views.open")
    view = slack_blocks(opened.params, "view")
    assert view["callback_id"] == "form:register"
    assert [bl["block_id"] for bl in view["blocks"]] == [
        "attendee", "name", "email", "title", "delegation_role", "accessibility",
        "visa_letter", "dietary"]
    assert [bl["optional"] for bl in view["blocks"][1:4]] == [True, True, True]
    posts_before = len(b.sk.calls_to("chat.postMessage"))
    await b.submit(view, {"attendee": "self", "delegation_role": "head", "visa_letter": "no",
                          "accessibility": "Step-free access, please"})
    posts = await b.sk.wait_for("chat.postMessage", posts_before + 1)
    told = slack_text(posts[-1].params)
    assert "*Registered*: you are registered for *Berlin meeting" in told
    assert "9 April 2018, 09:00 (Europe/Berlin)" in told
    await b.sk.wait_for("files.completeUploadExternal")
    [(name, germany_ics)] = b.slack_files()
    assert name.startswith(f"meeting-{mid}-") and name.endswith(".ics")

    # Germany's App Home lists the upcoming meetings; Register buttons for the open ones she
    # is not registered for (the demo's two); pressing one opens the registration modal.
    seen = 0
    while True:  # the Home tab is refreshed after each answered request
        calls = await b.sk.wait_for("views.publish", seen + 1)
        seen = len(calls)
        home = slack_blocks(calls[-1].params, "view")
        home_text = "\n".join(bl["text"]["text"] for bl in home["blocks"]
                               if bl["type"] == "section")
        if calls[-1].params["user_id"] == GERMANY_SLACK and "you: registered" in home_text:
            break
    assert "*Upcoming meetings*" in home_text and f"#{mid} · Berlin meeting" in home_text
    assert "you: registered" in home_text
    pressable = [e for bl in home["blocks"] if bl["type"] == "actions" for e in bl["elements"]]
    assert [(e["text"]["text"], e["value"]) for e in pressable] == [
        ("Register for #1", "/register 1"), ("Register for #2", "/register 2")]
    await b.slack(interaction_body({
        "type": "block_actions", "team": {"id": TEAM_ID},
        "user": {"id": GERMANY_SLACK, "team_id": TEAM_ID}, "trigger_id": "home-press",
        "container": {"type": "view", "view_id": "VHOME"},
        "actions": [{**pressable[0], "block_id": "home:0"}]}))
    opened_again = await b.sk.wait_for("views.open", 2)
    assert opened_again[-1].params["trigger_id"] == "home-press"
    assert slack_blocks(opened_again[-1].params, "view")["callback_id"] == "form:register"

    # 4. Spain registers at the console: the .ics is written to the files folder.
    typed = await b.console(FP_SPAIN, f"/register {mid}", "Myself", "Member of the delegation",
                            "-", "No", "-")
    assert "Registered: you are registered for Berlin meeting" in typed
    [spain_file] = b.files.glob(f"meeting-{mid}-*.ics")
    assert f"saved as {spain_file}" in typed
    spain_ics = spain_file.read_bytes()

    # 5. Namibia, fourth, joins the waitlist.
    await b.tg_say(NAMIBIA_CHAT, f"/start {await invitation(demo_db, FP_NAMIBIA, clock)}")
    waitlisted = await register_in_telegram(b, NAMIBIA_CHAT, mid)
    assert "<b>Waitlisted</b>" in waitlisted and "number 1 on the waitlist" in waitlisted
    assert b.tg_documents(NAMIBIA_CHAT) == []

    # Everyone confirmed holds an invitation for 07:00Z on 9 April, one UID, SEQUENCE 0.
    uids = set()
    for content in (chile_ics, germany_ics, spain_ics):
        cal, event = event_of(content)
        assert cal["METHOD"] == "REQUEST" and cal.walk("VTIMEZONE")
        assert event.decoded("DTSTART").astimezone(UTC) == BERLIN_START
        assert int(event["SEQUENCE"]) == 0
        uids.add(str(event["UID"]))
    assert len(uids) == 1

    # 6. Spain cancels at the console; Namibia is promoted and told in Telegram, with the file.
    asked = await b.console(FP_SPAIN, f"/unregister {mid}")
    assert "Cancel your registration for" in asked
    cancelled = await b.console(FP_SPAIN, f"/unregister {mid} confirm")
    assert "Your registration for Berlin meeting" in cancelled and "is cancelled" in cancelled
    assert "The seat went to the first person on the waitlist" in cancelled
    docs = await b.tg.wait_for("sendDocument", 2)
    [(name, namibia_ics, caption)] = b.tg_documents(NAMIBIA_CHAT)
    assert docs and "<b>A seat came free for you</b>: you moved up from the waitlist" in caption
    assert event_of(namibia_ics)[1].decoded("DTSTART").astimezone(UTC) == BERLIN_START
    async with demo_db.transaction() as session:
        assert [(r.email, r.status) for r in await store.participants(session, mid)] == [
            (FP_CHILE, "confirmed"), (FP_GERMANY, "confirmed"), (FP_SPAIN, "cancelled"),
            (FP_NAMIBIA, "confirmed")]

    # 7. The meeting moves by an hour: SEQUENCE 1, same UID, to each registrant's platform.
    uploads = len(b.slack_files())
    moved = await b.console(COORDINATOR, f"/meeting edit {mid}", *(["-"] * 6),
                            "2018-04-09 10:00", *(["-"] * 9))
    assert "time or place changed: 3 people registered or waitlisted were told" in moved
    await b.tg.wait_for("sendDocument", 4)
    for chat in (CHILE_CHAT, NAMIBIA_CHAT):
        name, content, caption = b.tg_documents(chat)[-1]
        assert "has changed" in caption
        _, event = event_of(content)
        assert (str(event["UID"]), int(event["SEQUENCE"])) == (next(iter(uids)), 1)
        assert event.decoded("DTSTART").astimezone(UTC) == BERLIN_START + timedelta(hours=1)
    await b.sk.wait_for("files.completeUploadExternal", 2)
    assert len(b.slack_files()) == uploads + 1
    _, event = event_of(b.slack_files()[-1][1])
    assert (str(event["UID"]), int(event["SEQUENCE"])) == (next(iter(uids)), 1)

    # 8. The CSV lists exactly the three confirmed.
    exported = await b.console(COORDINATOR, f"/participants {mid} csv")
    assert "3 rows" in exported
    rows = list(csv.DictReader(io.StringIO(
        (b.files / f"meeting-{mid}-participants.csv").read_text(encoding="utf-8-sig"))))
    assert sorted(r["E-mail"] for r in rows) == sorted([FP_CHILE, FP_GERMANY, FP_NAMIBIA])
    assert {r["Status"] for r in rows} == {"registered"}
    germany = next(r for r in rows if r["E-mail"] == FP_GERMANY)
    assert germany["Accessibility"] == "Step-free access, please"
