"""A national update's whole life through both adapters of one running bot (issue 5).

One `BotApp` runs the Telegram and the Slack adapter the way `fpbot serve` does (webhooks for
both, one ASGI app), against the fake Bot API and the fake Slack Web API. The Chile focal point
files and revises an update in Telegram; the coordinator reviews it in Slack, with buttons and
the one-field modal; outbox notices cross from one platform to the other; the observatory search
finds the approved update and its Chatham House twin, the twin without attribution.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select

from bot.adapters.slack import SlackAdapter
from bot.adapters.telegram import SECRET_HEADER, TelegramAdapter, rate_limiter
from bot.app import BotApp
from bot.runner import running, web_app
from bot.settings import Secret, Settings
from handlers.clock import FrozenClock
from storage.db import Database
from storage.invitations import create_invitation
from storage.models import Identity, NationalUpdate, OutboxItem, Person
from tests.conftest import COORDINATOR, FP_CHILE
from tests.fakes.slack_api import (
    TEAM_ID,
    FakeSlackAPI,
    interaction_body,
    signed_headers,
    slash_command_body,
)
from tests.fakes.telegram_api import FakeBotAPI

TG_TOKEN = "123:abc"
TG_SECRET = "e2e-hook_secret"
SLACK_TOKEN = "xoxb-test"
SIGNING_SECRET = "e2e-signing-secret-7d2b"
FP_CHAT = 42  # the Chile focal point's Telegram user (and private chat)
COORD = "U9"  # the coordinator's Slack user
AUTHOR = "Catalina Rojas"
WORD = "benchmarking"

TITLE = "Progress indicators in the second national action plan"
FIRST_TEXT = "The second NAP sets progress indicators for each of its objectives."
COMMENT = "Please add the year the plan was adopted."
REVISED_TEXT = ("The second NAP, adopted in 2015, sets progress indicators for each objective, "
                f"with {WORD} against the first plan.")
TWIN_TITLE = "Lessons from consultations with women mediators"
TWIN_TEXT = f"Mediators discussed {WORD} of participation targets, in confidence."


@dataclass
class Story:
    """One bot process serving Telegram and Slack webhooks, and the two fakes it talks to."""

    db: Database
    app: BotApp
    telegram: TelegramAdapter
    slack: SlackAdapter
    tg: FakeBotAPI
    sk: FakeSlackAPI
    http: httpx.AsyncClient
    update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    triggers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- Telegram: the focal point -------------------------------------------------------
    async def _telegram(self, update: dict[str, Any]) -> None:
        """Deliver one update to the webhook and wait until it is handled and answered."""
        response = await self.http.post("/telegram/webhook",
                                        json={"update_id": next(self.update_ids), **update},
                                        headers={SECRET_HEADER: TG_SECRET})
        assert response.status_code == 200
        await self.telegram.wait_idle()

    async def say(self, text: str) -> None:
        await self._telegram(self.tg.message_update(FP_CHAT, text, first_name="Catalina"))

    def step(self) -> tuple[int, str, dict[str, str]]:
        """The focal point's current form question in Telegram: id, text, buttons.

        The newest message with form controls: the adapter takes the buttons off an answered
        question when it asks the next one, but not when a typed answer closes the form (it
        ignores `Outgoing.closes_form`), so the last question of an edit keeps its buttons.
        """
        live = [(mid, msg) for (chat, mid), msg in self.tg.messages.items()
                if chat == FP_CHAT and any(d.startswith("x|") for d in tg_buttons(msg).values())]
        assert live, "no question is open"
        mid, msg = max(live, key=lambda m: m[0])
        return mid, msg["text"], tg_buttons(msg)

    async def press(self, label: str) -> None:
        mid, _, buttons = self.step()
        assert label in buttons, f"no {label!r} among {list(buttons)}"
        await self._telegram(self.tg.callback_update(FP_CHAT, buttons[label], mid))

    def tg_sent(self, after: int) -> list[str]:
        return [c.params["text"] for c in self.tg.calls_to("sendMessage")[after:]
                if c.status == 200 and c.params["chat_id"] == FP_CHAT]

    def tg_mark(self) -> int:
        return len(self.tg.calls_to("sendMessage"))

    async def tg_notice(self, needle: str, after: int) -> str:
        """Wait for a message to the focal point (from the outbox) that contains `needle`."""
        seen = after
        while True:
            calls = await self.tg.wait_for("sendMessage", seen + 1)
            for call in calls[seen:]:
                if (call.status == 200 and call.params["chat_id"] == FP_CHAT
                        and needle in call.params["text"]):
                    return str(call.params["text"])
            seen = len(calls)

    # -- Slack: the coordinator -------------------------------------------------------------
    async def _slack(self, body: str) -> None:
        response = await self.http.post("/slack/events", content=body,
                                         headers=signed_headers(SIGNING_SECRET, body))
        assert response.status_code == 200

    def sk_mark(self) -> int:
        return len(self.sk.calls_to("chat.postMessage"))

    async def fp(self, text: str) -> None:
        """The coordinator types `/fp <text>` in their DM with the bot."""
        await self._slack(slash_command_body(text=text, user_id=COORD, channel_id=f"D{COORD}",
                                             trigger_id=f"trigger-{next(self.triggers)}"))

    async def dm_post(self, needle: str, after: int) -> dict[str, Any]:
        """Wait for a post in the coordinator's DM whose text contains `needle`."""
        seen = after
        while True:
            calls = await self.sk.wait_for("chat.postMessage", seen + 1)
            for call in calls[seen:]:
                if call.params["channel"] == COORD and needle in slack_text(call.params):
                    return call.params
            seen = len(calls)

    async def click(self, post: dict[str, Any], label: str) -> str:
        """Press the button labelled `label` on a bot post; returns the trigger id."""
        found = [(block["block_id"], e) for block in slack_blocks(post)
                 if block["type"] == "actions" for e in block["elements"]
                 if e.get("text", {}).get("text") == label]
        assert len(found) == 1, f"no button {label!r} in {json.dumps(slack_blocks(post))}"
        block_id, button = found[0]
        trigger = f"press-{next(self.triggers)}"
        await self._slack(interaction_body({
            "type": "block_actions", "team": {"id": TEAM_ID},
            "user": {"id": COORD, "team_id": TEAM_ID}, "trigger_id": trigger,
            "channel": {"id": f"D{COORD}"}, "container": {"type": "message"},
            "message": {"ts": post.get("ts", "1.1"), "text": post["text"],
                        "blocks": slack_blocks(post)},
            "actions": [{**button, "block_id": block_id}]}))
        return trigger

    async def submit(self, view: dict[str, Any], values: dict[str, str]) -> None:
        state = {name: {"value": {"type": "plain_text_input", "value": value}}
                 for name, value in values.items()}
        await self._slack(interaction_body({
            "type": "view_submission", "team": {"id": TEAM_ID},
            "user": {"id": COORD, "team_id": TEAM_ID}, "api_app_id": "A1",
            "trigger_id": f"submit-{next(self.triggers)}",
            "view": {**view, "id": "V1", "state": {"values": state}}}))

    # -- the store ----------------------------------------------------------------------
    async def update(self, update_id: int) -> dict[str, Any]:
        async with self.db.transaction() as session:
            row = await session.get(NationalUpdate, update_id)
            assert row is not None
            return {"status": row.status, "version": row.version, "title": row.title,
                    "body": row.body, "visibility": row.visibility, "section": row.section,
                    "note": row.review_note, "member": row.member.name,
                    "author": row.author.name, "links": list(row.links)}

    async def newest_update(self) -> int:
        async with self.db.transaction() as session:
            newest = await session.scalar(select(NationalUpdate.id)
                                          .order_by(NationalUpdate.id.desc()))
        assert newest is not None
        return int(newest)


def tg_buttons(message: dict[str, Any]) -> dict[str, str]:
    markup = message.get("reply_markup") or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", [])
            for b in row}


def slack_blocks(params: dict[str, Any], key: str = "blocks") -> Any:
    value = params.get(key) or []
    return json.loads(value) if isinstance(value, str) else value


def slack_text(params: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in slack_blocks(params)
                     if b.get("type") in ("header", "section"))


def hit(results: str, title: str, others: list[str]) -> str:
    """The part of a search answer that belongs to the hit titled `title`."""
    start = results.index(title)
    ends = [results.index(o) for o in others if results.index(o) > start]
    return results[start:min(ends, default=len(results))]


async def invitation(db: Database, email: str, clock: FrozenClock) -> str:
    async with db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == email))
        assert person is not None
        code, _ = await create_invitation(session, person.id, "invite", now=clock.now(),
                                          ttl=timedelta(days=14))
    return code


@pytest_asyncio.fixture
async def story(demo_db: Database, clock: FrozenClock) -> AsyncIterator[Story]:
    async with FakeBotAPI(TG_TOKEN) as tg, FakeSlackAPI(token=SLACK_TOKEN) as sk:
        sk.add_user(COORD, real_name="Amina Diallo")
        settings = Settings(database_url=demo_db.url, telegram_token=Secret(TG_TOKEN),
                            telegram_api_url=f"{tg.url}/bot",
                            telegram_webhook_secret=Secret(TG_SECRET),
                            slack_bot_token=Secret(SLACK_TOKEN),
                            slack_signing_secret=Secret(SIGNING_SECRET),
                            slack_api_url=f"{sk.url}/api/")
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
            yield Story(demo_db, app, telegram, slack, tg, sk, http)


async def file_in_telegram(s: Story, category: str, title: str, text: str,
                           visibility: str) -> tuple[int, str]:
    """/update in Telegram, answering with buttons and messages; the update's id and receipt."""
    await s.say("/update")
    _, question, buttons = s.step()
    assert "What kind of update is it?" in question and "1/6" in question
    assert "NAP progress" in buttons and "Back" not in buttons
    await s.press(category)
    assert "A short title?" in s.step()[1]
    await s.say(title)
    assert "The update itself" in s.step()[1]
    await s.say(text)
    assert "Links to documents" in s.step()[1] and "Skip" in s.step()[2]
    await s.press("Skip")
    assert "Any documents or photos" in s.step()[1]
    await s.press("Skip")
    assert "Who may see it?" in s.step()[1]
    mid = s.step()[0]
    await s.press(visibility)
    receipt = s.tg.messages[(FP_CHAT, mid)]["text"]  # the last question became the receipt
    update_id = await s.newest_update()
    assert f"Filed: update #{update_id}" in receipt and "with the secretariat" in receipt
    return update_id, receipt


async def approve_in_slack(s: Story, update_id: int, button: str) -> str:
    """`/fp review` in Slack, then the Approve button; returns the coordinator's answer."""
    mark = s.sk_mark()
    await s.fp("review")
    item = await s.dm_post(f"Review #{update_id}", mark)
    mark = s.sk_mark()
    await s.click(item, button)
    done = await s.dm_post(f"Approved #{update_id}", mark)
    return slack_text(done)


async def test_an_update_filed_in_telegram_is_reviewed_in_slack_and_found(
        story: Story, demo_db: Database, clock: FrozenClock) -> None:
    s = story

    # 1. The focal point binds Telegram, the coordinator Slack, each with an invitation.
    await s.say(f"/start {await invitation(demo_db, FP_CHILE, clock)}")
    [welcome] = s.tg_sent(0)
    assert "Welcome, " in welcome and "Chile" in welcome
    await s.fp(f"start {await invitation(demo_db, COORDINATOR, clock)}")
    hello = await s.dm_post("Amina Diallo", 0)
    assert "Welcome" in slack_text(hello)
    async with demo_db.transaction() as session:
        bound = {(i.platform, i.user_id, i.person.email) for i in await session.scalars(
            select(Identity).where(Identity.platform.in_(["telegram", "slack"])))}
    assert bound == {("telegram", str(FP_CHAT), FP_CHILE),
                     ("slack", f"{TEAM_ID}/{COORD}", COORDINATOR)}

    # 2. The focal point files a public NAP progress update in Telegram.
    mark = s.sk_mark()
    update_id, receipt = await file_in_telegram(s, "NAP progress", TITLE, FIRST_TEXT,
                                                "Public (newsletter)")
    assert TITLE in receipt and "Chile" in receipt
    row = await s.update(update_id)
    assert (row["status"], row["visibility"], row["member"], row["body"], row["links"]) == (
        "submitted", "public", "Chile", FIRST_TEXT, [])
    notice = await s.dm_post(f"New update #{update_id} to review", mark)  # via the outbox
    assert TITLE in slack_text(notice)

    # 3. The coordinator asks for changes in Slack: the button opens the one-field modal.
    mark = s.sk_mark()
    await s.fp("review")
    item = await s.dm_post(f"Review #{update_id}", mark)
    shown = slack_text(item)
    assert TITLE in shown and FIRST_TEXT in shown and "Chile" in shown and AUTHOR in shown
    trigger = await s.click(item, "Request changes")
    [opened] = await s.sk.wait_for("views.open")
    assert opened.params["trigger_id"] == trigger
    view = slack_blocks(opened.params, "view")
    assert view["callback_id"] == "form:review_note"
    assert [b["block_id"] for b in view["blocks"]] == ["note"]
    [pressed] = await s.sk.wait_for("chat.update")  # the pressed buttons are gone
    assert "actions" not in [b["type"] for b in slack_blocks(pressed.params)]
    assert (await s.update(update_id))["status"] == "submitted"  # nothing decided yet

    tg_mark, mark = s.tg_mark(), s.sk_mark()
    await s.submit(view, {"note": COMMENT})
    asked = await s.dm_post(f"for changes to #{update_id}", mark)
    assert AUTHOR in slack_text(asked)
    row = await s.update(update_id)
    assert (row["status"], row["note"]) == ("changes_requested", COMMENT)

    # 4. The focal point is told in Telegram, and revises with /edit.
    told = await s.tg_notice(COMMENT, tg_mark)
    assert f"asks for changes to your update #{update_id}" in told and TITLE in told
    tg_mark, mark = s.tg_mark(), s.sk_mark()
    await s.say(f"/edit {update_id}")
    editing = s.tg_sent(tg_mark)
    assert f"Editing update #{update_id}" in editing[0]
    assert "What kind of update is it?" in s.step()[1] and "NAP progress" in s.step()[1]
    await s.say("-")  # keep the category
    assert "A short title?" in s.step()[1] and TITLE in s.step()[1]
    await s.say("-")  # keep the title
    assert "The update itself" in s.step()[1] and FIRST_TEXT in s.step()[1]
    await s.say(REVISED_TEXT)
    await s.press("Skip")  # no links
    await s.press("Skip")  # no files
    assert "Who may see it?" in s.step()[1]
    tg_mark = s.tg_mark()
    await s.say("-")  # keep the visibility
    [saved] = s.tg_sent(tg_mark)
    assert f"update #{update_id} is now at version 2" in saved
    row = await s.update(update_id)
    assert (row["status"], row["version"], row["title"], row["body"], row["visibility"]) == (
        "submitted", 2, TITLE, REVISED_TEXT, "public")
    revised = await s.dm_post(f"Update #{update_id} was revised (version 2)", mark)
    assert WORD in slack_text(revised)

    # 5. The coordinator approves it in Slack with the button.
    tg_mark = s.tg_mark()
    done = await approve_in_slack(s, update_id, "Approve · National action plan progress")
    assert AUTHOR in done and "National action plan progress" in done
    row = await s.update(update_id)
    assert (row["status"], row["section"]) == ("approved", "nap_progress")

    # 6. The focal point is told, and the observatory finds it, attributed to Chile.
    told = await s.tg_notice(f"update #{update_id}", tg_mark)
    assert "was approved" in told and "National action plan progress" in told
    tg_mark = s.tg_mark()
    await s.say(f"/search {WORD}")
    [results] = s.tg_sent(tg_mark)
    assert "1 update for" in results and WORD in results
    found = hit(results, TITLE, [])
    assert "Chile" in found and "NAP progress" in found

    # 7. Its Chatham House twin, filed and approved the same way, is found without attribution.
    mark = s.sk_mark()
    twin_id, receipt = await file_in_telegram(s, "Best practice or lesson learned", TWIN_TITLE,
                                              TWIN_TEXT, "Chatham House")
    assert twin_id != update_id and "Chatham House" in receipt
    await s.dm_post(f"New update #{twin_id} to review", mark)
    tg_mark = s.tg_mark()
    await approve_in_slack(s, twin_id, "Approve · Best practices and lessons learned")
    twin = await s.update(twin_id)
    assert (twin["status"], twin["visibility"], twin["member"], twin["author"]) == (
        "approved", "chatham", "Chile", f"{AUTHOR} (demo)")
    await s.tg_notice(f"update #{twin_id}", tg_mark)

    tg_mark = s.tg_mark()
    await s.say(f"/search {WORD}")
    [results] = s.tg_sent(tg_mark)
    mark = s.sk_mark()
    await s.fp(f"search {WORD}")
    in_slack = slack_text(await s.dm_post(WORD, mark))
    for answer in (results, in_slack):  # the same answer in HTML and in mrkdwn
        assert "2 updates for" in answer
        public = hit(answer, TITLE, [TWIN_TITLE])
        assert "Chile" in public
        chatham = hit(answer, TWIN_TITLE, [TITLE])
        assert "A member (Chatham House Rule)" in chatham and WORD in chatham
        for attribution in ("Chile", "Catalina", "Rojas"):
            assert attribution not in chatham, (attribution, chatham)

    # Every notice went out: nothing is left waiting for the two people of the story.
    async with demo_db.transaction() as session:
        people = select(Person.id).where(Person.email.in_([FP_CHILE, COORDINATOR]))
        left = list(await session.scalars(select(OutboxItem.message).where(
            OutboxItem.person_id.in_(people), OutboxItem.sent_at.is_(None))))
    assert left == []
