"""The Slack adapter end to end: the real Bolt app, signed HTTP requests, the fake Web API.

Each test starts the adapter as `fpbot serve` does (`running(..., webhook=True)`), sends
requests that Slack would send, signed with the test signing secret, through the ASGI app, and
reads what the bot did from the calls the fake Slack Web API recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy import event, func, select
from starlette.applications import Starlette

from bot.adapters.slack import SlackAdapter
from bot.app import BotApp
from bot.logs import RedactSecrets
from bot.runner import running
from bot.settings import Secret, Settings
from handlers.clock import FrozenClock
from handlers.digest import build_digest, digest_messages
from handlers.reminders import queue_outgoing
from handlers.types import Incoming, OutFile, Outgoing
from storage.db import Database
from storage.deadlines import audience, sync_deadline
from storage.invitations import create_invitation
from storage.models import (
    Conversation,
    DeadlineKind,
    Identity,
    InboxItem,
    MembershipRequest,
    OutboxItem,
    Person,
    RoleName,
    StoreIdentity,
)
from tests.conftest import COORDINATOR, FP_CHILE
from tests.fakes.slack_api import (
    TEAM_ID,
    Call,
    FakeSlackAPI,
    SlackLimits,
    event_body,
    interaction_body,
    signed_headers,
    slash_command_body,
)

SECRET = "test-signing-secret-4f1c9a"
TOKEN = "xoxb-1234567890-test-bot-token"
URL = "/slack/events"


@dataclass
class Slack:
    """A running Slack adapter and the fake Slack around it."""

    app: BotApp
    adapter: SlackAdapter
    fake: FakeSlackAPI
    http: httpx.AsyncClient
    triggers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def post(self, body: str, *, json_body: bool = False, timestamp: int | None = None,
                   secret: str = SECRET, headers: dict[str, str] | None = None) -> httpx.Response:
        kind = "application/json" if json_body else "application/x-www-form-urlencoded"
        signed = signed_headers(secret, body, timestamp=timestamp, content_type=kind)
        return await self.http.post(URL, content=body, headers={**signed, **(headers or {})})

    async def command(self, text: str, *, user: str = "U1", channel: str = "D1") -> httpx.Response:
        body = slash_command_body(text=text, user_id=user, channel_id=channel,
                                  trigger_id=f"trigger-{next(self.triggers)}")
        return await self.post(body)

    async def event(self, event: dict[str, Any], event_id: str = "Ev1",
                    headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.post(event_body(event, event_id=event_id), json_body=True,
                               headers=headers)

    async def dm(self, text: str, *, user: str = "U1", event_id: str = "Ev1") -> httpx.Response:
        return await self.event({"type": "message", "channel": f"D{user}", "channel_type": "im",
                                 "user": user, "text": text, "ts": "1.1"}, event_id=event_id)

    async def interact(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.post(interaction_body(payload))

    async def posts(self, count: int = 1) -> list[Call]:
        return await self.fake.wait_for("chat.postMessage", count)

    async def settled(self) -> None:
        """Wait until everything received is handled and sent (home published last)."""
        await asyncio.sleep(0.05)
        while True:
            while self.adapter.busy:
                await asyncio.wait(list(self.adapter.busy), timeout=2)
            await self.app.wait_idle()
            await self.adapter.homes.drained()
            if not self.adapter.busy:
                return


def text_of(call: Call) -> str:
    """Everything a posted message shows: its header and section texts, one after the other."""
    blocks = call.params.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return "\n".join(b["text"]["text"] for b in blocks if b.get("type") in ("header", "section"))


def blocks_of(params: dict[str, Any], key: str = "blocks") -> Any:
    value = params.get(key)
    return json.loads(value) if isinstance(value, str) else value


def settings_for(db: Database, fake: FakeSlackAPI, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db.url, "slack_bot_token": Secret(TOKEN),
        "slack_signing_secret": Secret(SECRET), "slack_api_url": f"{fake.url}/api/",
    }
    return Settings(**{**values, **changes})


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlackAPI]:
    async with FakeSlackAPI(token=TOKEN) as server:
        server.add_user("U1", real_name="Catalina Rojas")
        yield server


@pytest.fixture
async def slack(demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI) -> AsyncIterator[Slack]:
    app = BotApp(settings_for(demo_db, fake), clock=clock)
    adapter = SlackAdapter(app)
    asgi = Starlette(routes=adapter.routes())
    try:
        async with running(app, [adapter], webhook=True, scheduler=False):
            transport = httpx.ASGITransport(app=asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://slack.test") as http:
                yield Slack(app, adapter, fake, http)
    finally:
        await app.close()


async def bind(db: Database, email: str, user: str, clock: FrozenClock) -> None:
    """Make a Slack user a known person (as if they had redeemed an invitation)."""
    async with db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == email))
        assert person is not None
        session.add(Identity(person_id=person.id, platform="slack", user_id=f"{TEAM_ID}/{user}",
                             chat_id=user, display_name=person.name, created_at=clock.now()))


async def unsent(db: Database) -> int:
    """Replies and notices not sent (pending, or given up)."""
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxItem)
                                        .where(OutboxItem.status != "sent")) or 0)


async def inbox_count(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(InboxItem)) or 0)


# -- the slash command -----------------------------------------------------------------------

async def test_fp_help_answers_the_caller_in_their_dm(slack: Slack) -> None:
    response = await slack.command("help")

    assert response.status_code == 200 and response.text == ""
    [post] = await slack.posts()
    assert post.params["channel"] == "U1"
    assert "Welcome to the Focal Points Bot" in text_of(post)
    assert "/fp start" in text_of(post) and "/fp help" in text_of(post)
    assert post.params["text"] and "link_names" not in post.params and "parse" not in post.params
    [home] = await slack.fake.wait_for("views.publish")
    assert home.params["user_id"] == "U1"
    assert blocks_of(home.params, "view")["type"] == "home"


async def test_fp_alone_is_help_and_a_channel_gets_only_an_ephemeral_pointer(slack: Slack) -> None:
    response = await slack.command("", channel="C123")

    assert response.status_code == 200
    assert "direct messages" in response.text
    [post] = await slack.posts()
    assert post.params["channel"] == "U1", "replies never go to a shared channel"
    assert "Welcome to the Focal Points Bot" in text_of(post)


async def test_an_invitation_code_makes_the_slack_account_a_known_person(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    async with demo_db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == FP_CHILE))
        assert person is not None
        code, _ = await create_invitation(session, person.id, "invite", now=clock.now(),
                                          ttl=timedelta(days=1))

    await slack.command(f"start {code.lower()}")

    [welcome] = await slack.posts()
    assert "Catalina Rojas" in text_of(welcome)
    async with demo_db.transaction() as session:
        identity = await session.scalar(select(Identity).where(Identity.platform == "slack"))
        assert identity is not None
        assert (identity.user_id, identity.chat_id) == ("T1/U1", "U1")
        assert identity.display_name == "Catalina Rojas", "named from users.info"


async def test_person_linked_from_the_console_sees_the_same_whoami_in_slack(
        slack: Slack, clock: FrozenClock) -> None:
    core = slack.app.core
    await core.console_identity(FP_CHILE)
    [code_reply] = await core.handle(Incoming("console", FP_CHILE, FP_CHILE, text="/link"))
    code = code_reply.context["one_time_code"]

    await slack.command(f"start {code}")  # a new account redeems a link code with /start
    [linked] = await slack.posts()
    assert "Catalina Rojas" in text_of(linked)
    await slack.settled()
    await slack.command("whoami")
    whoami = (await slack.posts(2))[1]

    [console_view] = await core.handle(Incoming("console", FP_CHILE, FP_CHILE, text="/whoami"))
    expected = slack.app.renderer.render(console_view.key, "en", "mrkdwn", **console_view.context)
    assert text_of(whoami) == expected
    assert "Focal point of Chile" in text_of(whoami) and "Slack (Catalina Rojas)" in text_of(whoami)


# -- forms as modals ---------------------------------------------------------------------------

def submission(view: dict[str, Any], values: dict[str, str], user: str = "U1") -> dict[str, Any]:
    state = {name: {"value": {"type": "plain_text_input", "value": value}}
             for name, value in values.items()}
    return {
        "type": "view_submission", "team": {"id": TEAM_ID, "domain": "fp"},
        "user": {"id": user, "team_id": TEAM_ID}, "api_app_id": "A1",
        "trigger_id": f"sub-{time.time_ns()}",
        "view": {**view, "id": "V1", "state": {"values": state}},
    }


async def test_start_opens_a_modal_whose_errors_land_on_their_fields(slack: Slack) -> None:
    await slack.command("start")

    [opened] = await slack.fake.wait_for("views.open")
    view = blocks_of(opened.params, "view")
    assert opened.params["trigger_id"] == "trigger-1"
    assert view["type"] == "modal" and view["callback_id"] == "form:membership"
    assert view["title"]["text"] == "Membership request"
    assert [b["block_id"] for b in view["blocks"]] == ["member", "region", "name", "title",
                                                        "ministry", "email"]
    assert view["blocks"][5]["element"]["type"] == "email_text_input"
    assert view["blocks"][1]["optional"] is True  # the region: only for a new member
    assert view["blocks"][0]["hint"]["text"].startswith("For example")
    [hello] = await slack.posts()
    assert "a few short questions" in text_of(hello)
    await slack.settled()

    good = {"member": "Chile", "name": "Ana Pérez", "title": "Adviser",
            "ministry": "Ministry of Foreign Affairs"}
    refused = await slack.interact(submission(view, {**good, "email": "not-an-email"}))

    assert refused.status_code == 200
    answer = refused.json()
    assert answer["response_action"] == "errors"
    assert list(answer["errors"]) == ["email"]
    assert "e-mail address" in answer["errors"]["email"]
    assert len(slack.fake.calls_to("chat.postMessage")) == 1, "a refused modal posts nothing"

    accepted = await slack.interact(submission(view, {**good, "email": "ana@minrel.invalid"}))

    assert accepted.status_code == 200 and accepted.text == ""
    done = (await slack.posts(2))[1]
    assert "Your request (#1)" in text_of(done) and "Chile" in text_of(done)
    async with slack.app.db.transaction() as session:
        request = await session.scalar(select(MembershipRequest))
        assert request is not None and request.user_id == "T1/U1" and request.chat_id == "U1"
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 0


async def test_closing_the_modal_drops_the_form(slack: Slack) -> None:
    await slack.command("start")
    [opened] = await slack.fake.wait_for("views.open")
    await slack.settled()

    view = blocks_of(opened.params, "view")
    closed = await slack.interact({"type": "view_closed", "team": {"id": TEAM_ID},
                                   "user": {"id": "U1", "team_id": TEAM_ID},
                                   "view": {**view, "id": "V1"}, "is_cleared": False})

    assert closed.status_code == 200
    cancelled = (await slack.posts(2))[1]
    assert "cancelled" in text_of(cancelled)
    async with slack.app.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 0


async def test_without_a_modal_the_form_is_asked_step_by_step_in_the_dm(slack: Slack) -> None:
    slack.fake.responses["views.open"] = {"ok": False, "error": "expired_trigger_id"}
    await slack.command("start")
    step = (await slack.posts(2))[1]
    assert "Which Member State" in text_of(step)
    controls = blocks_of(step.params)[-1]
    assert controls["block_id"].startswith("form:") and controls["type"] == "actions"
    assert [e["action_id"] for e in controls["elements"]] == ["form:cancel"]
    await slack.settled()

    await slack.dm("Chile", event_id="Ev-answer")

    second = (await slack.posts(3))[2]
    assert "What is your full name?" in text_of(second)
    await slack.settled()
    version = int(blocks_of(second.params)[-1]["block_id"].split(":")[1])
    back = {"type": "block_actions", "team": {"id": TEAM_ID},
            "user": {"id": "U1", "team_id": TEAM_ID}, "trigger_id": "t-back",
            "channel": {"id": "DU1"}, "container": {"type": "message"},
            "message": {"ts": "1.2", "text": "q", "blocks": blocks_of(second.params)},
            "actions": [{"action_id": "form:back", "block_id": f"form:{version}:controls",
                         "type": "button", "value": str(version),
                         "text": {"type": "plain_text", "text": "Back"}}]}
    assert (await slack.interact(back)).status_code == 200

    again = (await slack.posts(4))[3]
    assert "Which Member State" in text_of(again)
    [update] = await slack.fake.wait_for("chat.update")
    assert update.params["ts"] == "1.2"
    assert all(b["type"] != "actions" for b in blocks_of(update.params))


# -- buttons, App Home, DMs ------------------------------------------------------------------------

async def test_a_button_runs_its_command_and_loses_its_buttons(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    await bind(demo_db, COORDINATOR, "U9", clock)
    slack.fake.add_user("U9", real_name="Amina Diallo")
    await slack.command("start")  # U1, a stranger, asks to join
    [opened] = await slack.fake.wait_for("views.open")
    await slack.settled()
    await slack.interact(submission(blocks_of(opened.params, "view"), {
        "member": "Chile", "name": "Ana", "title": "Adviser", "ministry": "MFA",
        "email": "ana@minrel.invalid"}))
    await slack.posts(2)
    await slack.settled()

    # The secretariat is told through the outbox (its own lane: in any order with U1's).
    notice = next(p for p in await slack.posts(3) if p.params["channel"] == "U9")
    assert notice.params["channel"] == "U9" and "New membership request #1" in text_of(notice)
    await slack.command("requests", user="U9")
    listing = (await slack.posts(4))[3]
    assert listing.params["channel"] == "U9" and "Approve #1" in json.dumps(listing.params)
    buttons = [e for b in blocks_of(listing.params) if b["type"] == "actions" for e in b["elements"]]
    approve = next(e for e in buttons if e["value"] == "/requests approve 1")
    await slack.settled()
    press = {"type": "block_actions", "team": {"id": TEAM_ID},
             "user": {"id": "U9", "team_id": TEAM_ID}, "trigger_id": "t-approve",
             "channel": {"id": "DU9"}, "container": {"type": "message"},
             "message": {"ts": "9.1", "text": "list", "blocks": blocks_of(listing.params)},
             "actions": [{**approve, "block_id": "cmd:0"}]}

    assert (await slack.interact(press)).status_code == 200

    [update] = await slack.fake.wait_for("chat.update")
    assert update.params["channel"] == "DU9"
    assert ":white_check_mark: *Approve #1*" in json.dumps(blocks_of(update.params))
    replies = await slack.posts(6)
    assert {c.params["channel"] for c in replies[4:]} == {"U9", "U1"}, \
        "the coordinator is answered and the applicant told, in their DMs"


async def test_app_home_shows_the_secretariat_its_dashboard(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    await bind(demo_db, COORDINATOR, "U9", clock)

    response = await slack.event({"type": "app_home_opened", "user": "U9", "channel": "DU9",
                                  "tab": "home"}, event_id="Ev-home")

    assert response.status_code == 200
    [publish] = await slack.fake.wait_for("views.publish")
    view = blocks_of(publish.params, "view")
    shown = "\n".join(b["text"]["text"] for b in view["blocks"] if b["type"] == "section")
    assert publish.params["user_id"] == "U9" and view["type"] == "home"
    assert "Hello, Amina Diallo (demo)" in shown
    assert "Upcoming meetings" in shown  # the demo's, with Register buttons
    assert [e["value"] for b in view["blocks"] if b["type"] == "actions"
            for e in b["elements"]] == ["/register 1", "/register 2"]
    assert "0 membership requests waiting" in shown
    assert "/fp requests" in shown


async def test_a_dm_goes_to_the_core_and_is_answered_there(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    await bind(demo_db, FP_CHILE, "U1", clock)

    response = await slack.dm("hello there")

    assert response.status_code == 200
    [post] = await slack.posts()
    assert post.params["channel"] == "U1" and text_of(post)
    await slack.settled()
    async with slack.app.db.transaction() as session:
        item = await session.scalar(select(InboxItem))
        assert item is not None and item.key == "ev:Ev1" and item.handled_at is not None
    assert await unsent(slack.app.db) == 0
    inc = Incoming.from_dict(item.payload["incoming"])
    assert (inc.user_id, inc.chat_id, inc.text, inc.private) == ("T1/U1", "U1", "hello there", True)


async def test_a_stranger_writing_in_the_dm_is_told_how_to_join(slack: Slack) -> None:
    await slack.dm("Chile adopted its second national action plan")

    [post] = await slack.posts()
    assert "I don't know you yet" in text_of(post) and "/fp start" in text_of(post)


async def test_the_bots_own_messages_and_edits_are_ignored(slack: Slack) -> None:
    await slack.event({"type": "message", "channel": "DU1", "channel_type": "im",
                       "user": "UBOT", "bot_id": "B1", "text": "mine"}, event_id="Ev-own")
    await slack.event({"type": "message", "subtype": "message_changed", "channel": "DU1",
                       "channel_type": "im", "message": {"text": "x"}}, event_id="Ev-edit")
    await slack.settled()

    assert slack.fake.calls_to("chat.postMessage") == []
    assert await inbox_count(slack.app.db) == 0


async def test_outbox_messages_reach_a_slack_dm(slack: Slack) -> None:
    assert slack.adapter.reaches("U1") and slack.adapter.reaches("D024BE91L")
    assert not slack.adapter.reaches("12345") and not slack.adapter.reaches("a@b.org")

    await slack.adapter.send("U1", Outgoing("forms.nothing_to_cancel"), locale="en", tz="UTC")

    [post] = slack.fake.calls_to("chat.postMessage")
    assert post.params["channel"] == "U1" and text_of(post) == "There is nothing to cancel."


async def test_a_notice_is_sent_and_marked_while_app_home_is_still_being_published(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    """`views.publish` (Tier 4, 100 a minute) never holds back a notice or its mark."""
    await bind(demo_db, FP_CHILE, "U1", clock)
    slack.fake.hang_next("views.publish")
    async with demo_db.transaction() as session:
        chile = await session.scalar(select(Person.id).where(Person.email == FP_CHILE))
        assert chile is not None
        await queue_outgoing(session, [(chile, "test:first", Outgoing("forms.nothing_to_cancel")),
                                       (chile, "test:second", Outgoing("forms.none_open"))],
                             clock.now())

    await slack.app.wait_idle()  # before: the first send waited on the hanging publish

    assert await unsent(demo_db) == 0
    posts = slack.fake.calls_to("chat.postMessage")
    assert [text_of(p) for p in posts] == [
        "There is nothing to cancel.", "That form is no longer open. Send /fp help to start again."]
    give_up = time.monotonic() + 10  # App Home follows in the background: wait until a
    while not slack.fake.__dict__.get("hung"):  # publish is hanging at the fake (its state)
        assert time.monotonic() < give_up, "App Home was never published"
        await asyncio.sleep(0.01)
    slack.fake.release_hangs()  # the hung publish fails (502); the other lane's went
    await slack.settled()
    publishes = slack.fake.calls_to("views.publish")
    assert sorted(p.status for p in publishes) == [200, 502]
    [home] = [p for p in publishes if p.status == 200]
    assert home.params["user_id"] == "U1"
    assert "Hello, " in json.dumps(blocks_of(home.params, "view"))


async def test_app_home_after_a_notice_reads_its_person_not_the_whole_network(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    """The App Home that follows each Slack notice lists the person's deadlines from their
    own members and roles. It used to load the whole roster for that: 0.4 s of the event
    loop per refresh at 2,000 people, so a Slack fan-out's refreshes (100 a minute) starved
    the process's Telegram sends (a fan-out to 1,000 on each: Telegram 3.7x its floor)."""
    from tests.test_digest import add_members

    await add_members(demo_db, 300, clock.now())
    await bind(demo_db, FP_CHILE, "U1", clock)
    title = "Focal points' contributions to the App Home check"
    async with demo_db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, clock.now() + timedelta(days=3),
                            title, audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
        chile = await session.scalar(select(Person.id).where(Person.email == FP_CHILE))
        assert chile is not None
        await queue_outgoing(session, [(chile, "test:notice", Outgoing("forms.nothing_to_cancel"))],
                             clock.now())
    people: list[int] = []

    def loaded(person: Person, context: Any) -> None:
        people.append(person.id)

    event.listen(Person, "load", loaded)
    try:
        await slack.app.wait_idle()
        await slack.settled()
    finally:
        event.remove(Person, "load", loaded)

    [home] = [p for p in slack.fake.calls_to("views.publish") if p.status == 200]
    assert home.params["user_id"] == "U1"
    assert title in json.dumps(blocks_of(home.params, "view")), "their deadline is listed"
    assert len(people) <= 5, f"{len(people)} people read for one notice and its App Home"


async def test_posts_past_the_workspace_quota_are_paced_and_meet_no_ratelimited(
        slack: Slack) -> None:
    """chat.postMessage: a burst of 50, then 300 a minute across the workspace (the fake's
    limits, as PLATFORM-LIMITS.md states them). Before pacing, ten of these met a 429."""
    slack.fake.limits = SlackLimits()
    reply = {"reply": True}  # a reply mid-exchange: no App Home refresh

    await asyncio.gather(*(slack.adapter.deliver(
        f"U{n}", Outgoing("forms.nothing_to_cancel"), locale="en", tz="UTC", extras=reply)
        for n in range(60)))

    posts = slack.fake.calls_to("chat.postMessage")
    assert len(posts) == 60 and {p.status for p in posts} == {200}
    assert {p.params["channel"] for p in posts} == {f"U{n}" for n in range(60)}
    assert all(text_of(p) == "There is nothing to cancel." for p in posts)
    assert slack.fake.throttled == 0


async def test_posts_to_one_channel_keep_its_pace_and_app_homes_their_tier(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    """One channel: a burst of 3, then one a second. views.publish (Tier 4): a burst of 17,
    then 100 a minute. Before pacing: 2 and 3 ratelimited answers."""
    slack.fake.limits = SlackLimits()

    for _ in range(5):
        await slack.adapter.send("U1", Outgoing("forms.nothing_to_cancel"), locale="en",
                                 tz="UTC")
    for n in range(20):
        slack.adapter.homes.want(("account", f"{TEAM_ID}/U{n}"))
    await slack.settled()

    assert [p.status for p in slack.fake.calls_to("chat.postMessage")] == [200] * 5
    homes = slack.fake.calls_to("views.publish")  # (U1's notices: not a known person's)
    assert sorted(h.params["user_id"] for h in homes) == sorted(f"U{n}" for n in range(20))
    assert slack.fake.throttled == 0


async def test_the_weekly_digest_reads_in_slack_as_a_header_and_a_section_per_part(
        slack: Slack) -> None:
    async with slack.app.db.transaction() as session:
        context = await build_digest(session, slack.app.clock.now())
    chat, _ = digest_messages(context, slack.app.renderer, "2018-03-05T09:00", "UTC")

    await slack.adapter.send("U1", chat, locale="en", tz="UTC")

    [post] = slack.fake.calls_to("chat.postMessage")
    blocks = blocks_of(post.params)
    header, *rest = blocks
    assert header == {"type": "header", "text": {
        "type": "plain_text", "text": "Secretariat digest, 1 March 2018", "emoji": True}}
    parts = [b["text"]["text"] for b in rest if b["type"] == "section"]
    assert [p.split("\n")[0].split("*")[1] for p in parts][:5] == [
        "Awaiting review", "Not yet submitted: Contributions to the next newsletter (demo)",
        "Meetings: registrations against capacity",
        "Deadlines in the next 14 days", "Overdue action points"]
    assert [b["type"] for b in rest] == ["section", *["divider", "section"] * (len(parts) - 1)]
    assert "Secretariat digest" in post.params["text"]  # what a notification shows


async def test_a_file_goes_to_the_dm_channel_after_its_message(slack: Slack) -> None:
    ics = OutFile("meeting.ics", "text/calendar", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")

    await slack.adapter.send("U1", Outgoing("forms.nothing_to_cancel", file=ics),
                             locale="en", tz="UTC")

    [opened] = slack.fake.calls_to("conversations.open")
    assert opened.params["users"] == "U1"
    [upload] = slack.fake.uploads.values()
    assert upload == {"filename": "meeting.ics", "title": "meeting.ics",
                      "content": ics.content, "channel_id": "DU1"}
    assert [c.method for c in slack.fake.calls][:2] == ["chat.postMessage", "conversations.open"]


# -- security --------------------------------------------------------------------------------

async def test_forged_or_unsigned_requests_are_refused(slack: Slack) -> None:
    body = slash_command_body(text="whoami")

    forged = await slack.post(body, secret="not-the-secret")
    unsigned = await slack.http.post(URL, content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded"})

    assert forged.status_code == 401 and unsigned.status_code == 401
    await slack.settled()
    assert slack.fake.calls == [] and await inbox_count(slack.app.db) == 0


async def test_a_request_stamped_six_minutes_away_is_refused(slack: Slack) -> None:
    body = slash_command_body(text="help")

    stale = await slack.post(body, timestamp=int(time.time()) - 360)
    early = await slack.post(body, timestamp=int(time.time()) + 360)

    assert stale.status_code == 401 and early.status_code == 401
    await slack.settled()
    assert slack.fake.calls == [] and await inbox_count(slack.app.db) == 0


async def test_a_replayed_request_is_acknowledged_and_acted_on_once(slack: Slack) -> None:
    body = slash_command_body(text="help", trigger_id="trigger-replayed")
    headers = signed_headers(SECRET, body)

    first = await slack.http.post(URL, content=body, headers=headers)
    await slack.posts()
    await slack.settled()
    replay = await slack.http.post(URL, content=body, headers=headers)
    await slack.settled()

    assert first.status_code == 200 and replay.status_code == 200
    assert len(slack.fake.calls_to("chat.postMessage")) == 1
    assert await inbox_count(slack.app.db) == 1


async def test_a_retried_event_is_acted_on_once(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    await bind(demo_db, FP_CHILE, "U1", clock)
    event = {"type": "message", "channel": "DU1", "channel_type": "im", "user": "U1",
             "text": "hi", "ts": "1.1"}

    await slack.event(event, event_id="Ev-retried")
    await slack.posts()
    await slack.settled()
    answered = len(slack.fake.calls_to("chat.postMessage"))
    retry = await slack.event(event, event_id="Ev-retried",
                              headers={"X-Slack-Retry-Num": "1",
                                       "X-Slack-Retry-Reason": "http_timeout"})
    await slack.settled()

    assert retry.status_code == 200
    assert len(slack.fake.calls_to("chat.postMessage")) == answered
    assert await inbox_count(slack.app.db) == 1

    # A retry of an event whose first delivery never arrived is acted on.
    await slack.event({**event, "text": "/whoami"}, event_id="Ev-lost",
                      headers={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "unknown_error"})
    await slack.posts(answered + 1)


async def test_a_rate_limited_post_waits_and_is_retried(slack: Slack) -> None:
    slack.fake.fail_next("chat.postMessage", 429, retry_after=1)
    started = time.monotonic()

    await slack.command("help")
    await slack.fake.wait_for("chat.postMessage", 2)

    assert [c.status for c in slack.fake.calls_to("chat.postMessage")] == [429, 200]
    assert time.monotonic() - started >= 1.0
    await slack.settled()
    async with slack.app.db.transaction() as session:
        item = await session.scalar(select(InboxItem))
        assert item is not None and item.handled_at is not None
    assert await unsent(slack.app.db) == 0


async def test_hostile_text_is_shown_literally(slack: Slack) -> None:
    await slack.command("<!channel> <https://evil.invalid|UN> &")

    [post] = await slack.posts()
    shown = text_of(post) + post.params["text"]
    assert "&lt;!channel&gt;" in shown
    assert "<!channel>" not in shown and "<https://evil" not in shown


async def test_hostile_text_in_a_dm_is_not_unescaped_into_markup(
        slack: Slack, demo_db: Database, clock: FrozenClock) -> None:
    # Slack delivers typed "<!channel>" as "&lt;!channel&gt;"; the reply must show it as typed.
    await slack.dm("/&lt;!channel&gt; &lt;https://evil.invalid|UN&gt;")

    [post] = await slack.posts()
    shown = text_of(post)
    assert "&lt;!channel&gt;" in shown and "<!channel>" not in shown
    assert "&amp;lt;" not in shown, "not escaped twice"


async def test_logs_hold_no_token_or_signing_secret(
        slack: Slack, caplog: pytest.LogCaptureFixture) -> None:
    raw: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw.append(record)

    keep = Keep(logging.DEBUG)
    logging.getLogger().addHandler(keep)
    caplog.handler.addFilter(RedactSecrets(slack.app.settings.secrets))
    caplog.set_level(logging.DEBUG)
    # Bolt's loggers (its Web API client's too) take the root level when the app is built.
    caplog.set_level(logging.DEBUG, logger="slack_bolt.AsyncApp")
    try:
        await slack.post(slash_command_body(text="help"), secret="forged")
        await slack.command("help")
        await slack.posts()
        slack.fake.fail_next("views.publish", 429, retry_after=0)
        await slack.settled()
        await slack.dm("hello")
        await slack.posts(2)
        await slack.settled()
    finally:
        logging.getLogger().removeHandler(keep)

    assert "Sending a request" in caplog.text, "the Web API client logged at DEBUG"
    assert TOKEN not in caplog.text and SECRET not in caplog.text
    ours = [r for r in raw if r.name.startswith(("bot.", "handlers."))]
    assert ours, "the adapter logged something"
    for record in raw:  # what was logged before any filter: no secret anywhere
        line = record.getMessage() + (str(record.exc_info) if record.exc_info else "")
        assert TOKEN not in line and SECRET not in line, record.name


# -- starting, stopping, leftovers -------------------------------------------------------------

async def test_requests_left_unanswered_are_answered_on_start(
        demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI) -> None:
    """A process kept two requests and died: one unhandled, one handled but not answered."""
    dead = BotApp(settings_for(demo_db, fake), clock=clock)
    inc = Incoming("slack", f"{TEAM_ID}/U1", "U1", text="/help")
    await dead.liveness.start()
    await dead.inbound.receive("slack", "rq:left-over", inc, handle=False)
    handled = await dead.inbound.receive("slack", "rq:handled", inc, handle=False)
    assert handled is not None
    await dead.core.handle(inc, handled)  # handled (its reply kept), then the process died
    await dead.liveness.stop()  # (its row gone, as once it is found dead)
    await dead.close()
    app = BotApp(settings_for(demo_db, fake), clock=clock)
    try:
        async with running(app, [SlackAdapter(app)], webhook=True, scheduler=False):
            await fake.wait_for("chat.postMessage", 2)
            await app.wait_idle()
        posts = fake.calls_to("chat.postMessage")
        assert len(posts) == 2 and {p.params["channel"] for p in posts} == {"U1"}
        assert all("Welcome to the Focal Points Bot" in text_of(p) for p in posts)
        assert await unsent(demo_db) == 0
    finally:
        await app.close()


async def test_http_mode_without_a_signing_secret_refuses_to_start(
        demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI) -> None:
    app = BotApp(settings_for(demo_db, fake, slack_signing_secret=Secret("")), clock=clock)
    try:
        with pytest.raises(RuntimeError, match="SLACK_SIGNING_SECRET"):
            await SlackAdapter(app).start(webhook=True)
    finally:
        await app.close()


async def test_run_without_an_app_token_says_what_slack_needs(
        demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI,
        caplog: pytest.LogCaptureFixture) -> None:
    app = BotApp(settings_for(demo_db, fake), clock=clock)
    adapter = SlackAdapter(app)
    try:
        with caplog.at_level(logging.WARNING):
            await adapter.start(webhook=False)
        await adapter.stop()
    finally:
        await app.close()
    assert "SLACK_APP_TOKEN" in caplog.text and "fpbot serve" in caplog.text
    assert fake.calls == []


async def test_socket_mode_answers_a_slash_command_once(
        demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI) -> None:
    fake.use_socket_mode()
    app = BotApp(settings_for(demo_db, fake, slack_signing_secret=Secret(""),
                              slack_app_token=Secret(fake.app_token)), clock=clock)
    adapter = SlackAdapter(app)
    command = dict(parse_qsl(slash_command_body(text="help")))
    envelope = {"envelope_id": "env-1", "type": "slash_commands",
                "accepts_response_payload": True, "payload": command}
    try:
        async with running(app, [adapter], webhook=False, scheduler=False):
            await fake.socket_send(envelope)
            [ack] = await fake.wait_for_socket_ack("env-1")
            [post] = await fake.wait_for("chat.postMessage")
            await fake.socket_send(envelope)  # Slack redelivers an envelope it thinks was lost
            await fake.wait_for_socket_ack("env-1", 2)
            await asyncio.sleep(0.1)
            while adapter.busy:
                await asyncio.wait(list(adapter.busy), timeout=2)
    finally:
        await app.close()

    assert [c.method for c in fake.calls][:1] == ["apps.connections.open"]
    assert post.params["channel"] == "U1" and "Welcome to the Focal Points Bot" in text_of(post)
    assert len(fake.calls_to("chat.postMessage")) == 1


async def test_socket_mode_with_a_wrong_app_token_fails_loudly(
        demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI) -> None:
    fake.use_socket_mode()
    app = BotApp(settings_for(demo_db, fake, slack_app_token=Secret("xapp-wrong")), clock=clock)
    try:
        with pytest.raises(RuntimeError, match="invalid_auth"):
            await SlackAdapter(app).start(webhook=False)
    finally:
        await app.close()


async def test_a_store_locked_while_acting_is_told_and_the_request_answered_later(
        tmp_path: Any, clock: FrozenClock, fake: FakeSlackAPI) -> None:
    """A store outage while acting: the person is told, the request is kept, then answered."""
    import sqlite3

    from storage.migrate import upgrade

    path = tmp_path / "outage.db"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=100)
    await upgrade(db)
    app = BotApp(settings_for(db, fake), clock=clock)
    await app.db.dispose()
    app.db = app.core.db = app.sender.db = app.inbound.db = app.liveness.db = db
    app.inbound.retry_first = 0.2
    app.inbound.drain_every = 3600  # the item below is handed in by the test, not the drain
    adapter = SlackAdapter(app)
    inc = Incoming("slack", f"{TEAM_ID}/U1", "U1", text="/help")
    try:
        async with running(app, [adapter], webhook=True, scheduler=False):
            await asyncio.sleep(0.1)  # (the drain at start is done)
            await app.inbound.receive("slack", "rq:during-outage", inc, handle=False)
            blocker = sqlite3.connect(path, isolation_level=None, timeout=30)
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the store
            try:
                app.inbound.submit("slack", 1, inc, {})
                told = await fake.wait_for("chat.postMessage")
                assert "database" in text_of(told[-1])  # told to wait
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            [_, answer] = await fake.wait_for("chat.postMessage", 2)
            await app.wait_idle()
        assert "Welcome to the Focal Points Bot" in text_of(answer)
        assert await unsent(db) == 0
    finally:
        await app.close()


async def test_a_store_locked_at_receipt_still_acks_within_3_s_and_says_so(
        tmp_path: Any, clock: FrozenClock, fake: FakeSlackAPI) -> None:
    """SQLite locked for 10 s: every request is acknowledged in time, none silently lost."""
    import sqlite3

    from storage.migrate import upgrade

    path = tmp_path / "locked.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await upgrade(db)
    app = BotApp(settings_for(db, fake), clock=clock)
    await app.db.dispose()
    app.db = app.core.db = app.sender.db = app.inbound.db = app.liveness.db = db
    adapter = SlackAdapter(app)
    asgi = Starlette(routes=adapter.routes())
    try:
        async with running(app, [adapter], webhook=True, scheduler=False):
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://slack.test")
            s = Slack(app, adapter, fake, http)
            blocker = sqlite3.connect(path, isolation_level=None, timeout=30,
                                      check_same_thread=False)
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the store for 10 s
            unlock = threading.Timer(10.0, lambda: (blocker.execute("ROLLBACK"),
                                                    blocker.close()))
            unlock.start()
            try:
                began = time.monotonic()
                command = await s.command("help")
                dm = await s.dm("our national plan", event_id="Ev-locked")
                elapsed = time.monotonic() - began
                assert unlock.is_alive()  # both were acknowledged while the store was locked
            finally:
                await asyncio.to_thread(unlock.join)  # the store is back after its 10 s
            await http.aclose()
            # Once the store is back, the two kept requests are answered too.
            posts = await fake.wait_for("chat.postMessage", 3, timeout=20)
            await s.settled()
        assert command.status_code == 200 and dm.status_code == 200
        assert elapsed < 2 * 3.0  # two requests, each acknowledged well within 3 s
        assert "send it again" in command.text  # the ephemeral answer of the slash command
        texts = [text_of(p) for p in posts]
        assert "send it again" in texts[0] and posts[0].params["channel"] == "U1"
        assert sum("Welcome to the Focal Points Bot" in t for t in texts) == 1  # /fp help
        assert sum("I don't know you yet" in t for t in texts) == 1  # the DM "hello"
        assert await inbox_count(db) == 2
    finally:
        await app.close()


async def test_a_body_over_a_megabyte_is_refused_unread_and_a_forged_one_unparsed(
        slack: Slack) -> None:
    big = await slack.http.post(URL, content=b"x" * 2_000_000,
                                headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    forged = await slack.http.post(URL, content=b"not json {",
                                   headers={"Content-Type": "application/json",
                                            "X-Slack-Request-Timestamp": str(int(time.time())),
                                            "X-Slack-Signature": "v0=00"})
    assert forged.status_code == 401
    assert await inbox_count(slack.app.db) == 0


async def test_a_reply_slack_refuses_for_good_is_recorded_not_repeated(slack: Slack) -> None:
    slack.fake.responses["chat.postMessage"] = {"ok": False, "error": "channel_not_found"}
    await slack.command("help")
    await slack.fake.wait_for("chat.postMessage")
    await slack.settled()
    async with slack.app.db.transaction() as session:
        row = await session.scalar(select(OutboxItem))
    assert row is not None and row.status == "failed"
    assert row.last_error == "slack: channel_not_found"
    await slack.app.sender.flush()
    assert len(slack.fake.calls_to("chat.postMessage")) == 1


async def test_replies_left_unsent_at_a_clean_stop_go_out_at_the_next_start(
        demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI) -> None:
    app = BotApp(settings_for(demo_db, fake), clock=clock)
    app.stop_grace = 0.05
    try:
        adapter = SlackAdapter(app)
        app.sender.quick_retries = 0
        fake.fail_next("chat.postMessage", 500, times=1)  # Slack fails while answering
        async with running(app, [adapter], webhook=True, scheduler=False):
            await app.inbound.receive("slack", "rq:unsent", Incoming(
                "slack", f"{TEAM_ID}/U1", "U1", text="/help"))
            await fake.wait_for("chat.postMessage")
        assert await unsent(demo_db) == 1  # kept; the stopped instance's claims are free
        clock.advance(seconds=5)
        async with running(app, [SlackAdapter(app)], webhook=True, scheduler=False):
            await fake.wait_for("chat.postMessage", 2)
            await app.wait_idle()
        assert await unsent(demo_db) == 0
        assert [c.status for c in fake.calls_to("chat.postMessage")] == [500, 200]
    finally:
        await app.close()


# -- what went before a crash or a timeout is not sent again (issue 13) ----------------------

async def outbox_rows(db: Database) -> list[OutboxItem]:
    async with db.transaction() as session:
        return list(await session.scalars(select(OutboxItem).order_by(OutboxItem.id)))


async def test_each_message_of_an_outbox_row_names_the_row_in_its_metadata(
        slack: Slack) -> None:
    await slack.command("help")
    [post] = await slack.posts()
    await slack.settled()

    [row] = await outbox_rows(slack.app.db)
    assert post.status == 200  # Slack's own checks of the metadata passed (tests/fakes)
    async with slack.app.db.reading() as session:  # the store's identity, not a guess
        store = await session.scalar(select(StoreIdentity.uid))
    assert store and blocks_of(post.params, "metadata") == {
        "event_type": "fpbot_outbox_message",
        "event_payload": {"store": store, "row": row.id, "of": 1, "part": 0}}
    assert row.status == "sent" and row.extras["sending_on"] == "slack"
    assert "/fp start" in text_of(post)  # what the person reads is the reply itself
    assert not slack.fake.calls_to("conversations.history")  # a first send looks for nothing


async def long_notice(db: Database, clock: FrozenClock, user: str = "U1") -> list[list[Any]]:
    """A notice to the coordinator, bound to `user`, that Slack takes as several messages;
    returns the blocks of each (as the adapter cuts them)."""
    from bot.adapters import slack_blocks as kit
    from messages import Renderer

    await bind(db, COORDINATOR, user, clock)
    requests = [{"id": n, "name": f"Person {n}", "title": "Adviser", "ministry": "MFA",
                 "email": f"p{n}@example.org", "member": "Chile", "created": clock.now()}
                for n in range(1, 1800)]
    notice = Outgoing("onboarding.requests_list", {"requests": requests})
    async with db.transaction() as session:
        coordinator = await session.scalar(select(Person.id).where(Person.email == COORDINATOR))
        assert coordinator is not None
        await queue_outgoing(session, [(coordinator, "long-notice", notice)], clock.now())
    text = Renderer().render(notice.key, "en", "mrkdwn", **notice.context)
    return kit.message_blocks(text)


@pytest.mark.parametrize("answered", [0, 1])
async def test_a_post_whose_answer_never_came_is_looked_for_and_not_sent_again(
        slack: Slack, demo_db: Database, clock: FrozenClock, answered: int) -> None:
    """Slack takes a message but its answer never comes (the client times out): the retry
    first reads the conversation, finds that part there by its metadata, and sends only what
    follows it. With `answered` 0 the first of two parts is the one unanswered; with 1, the
    second (the first answered and recorded)."""
    parts = len(await long_notice(demo_db, clock))
    assert parts == 2  # the case under test: a notice over 50 blocks
    slack.adapter.client.timeout = 1
    slack.app.sender.quick_pause = 0.05
    slack.fake.hold_answers("chat.postMessage", after=answered, times=1)
    try:
        slack.app.sender.poke()
        await slack.fake.wait_for("conversations.history", timeout=15)
        await slack.app.wait_idle()
    finally:
        slack.fake.release_hangs()
    await slack.settled()

    mine = slack.fake.messages_to("U1")
    assert [m["metadata"]["event_payload"]["part"] for m in mine] == [0, 1]
    assert "Person 1, Adviser" in json.dumps(mine[0]["blocks"])  # the start, then the end
    assert "Person 1799, Adviser" in json.dumps(mine[1]["blocks"])
    assert len(slack.fake.calls_to("chat.postMessage")) == 2  # each part once
    [looked] = slack.fake.calls_to("conversations.history")
    assert looked.params["channel"] == "DU1"
    [row] = [r for r in await outbox_rows(demo_db) if r.dedupe_key == "long-notice"]
    assert row.status == "sent" and row.attempts == 1


@pytest.mark.parametrize(("whose", "posted"), [
    ("this store's", 0),  # found: nothing posted again
    ("another store's", 2),  # the same row number of another deployment: not this row
    ("cut otherwise", 2),  # the row cut into 3 messages then: its parts are not these
])
async def test_a_row_sent_before_a_crash_is_found_by_the_process_that_takes_it_over(
        demo_db: Database, clock: FrozenClock, fake: FakeSlackAPI, whose: str,
        posted: int) -> None:
    """A process posted both parts of a notice and was killed before recording them: the row
    is left claimed by an instance that is gone, noted as being sent on Slack. The next
    process finds its parts in the conversation and marks it sent, posting nothing; messages
    that only share the row's number (another store's, or the row cut otherwise) are not
    taken for it, and it goes whole (sent twice rather than lost)."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.app import store_identity

    messages = await long_notice(demo_db, clock)
    [row] = await outbox_rows(demo_db)
    store = await store_identity(demo_db, clock.now())
    key = {"store": store, "row": row.id, "of": len(messages)}
    if whose == "another store's":
        key["store"] = "0" * 32
    elif whose == "cut otherwise":
        key["of"] = 3
    client = AsyncWebClient(token=TOKEN, base_url=f"{fake.url}/api/")  # the killed process
    for n, blocks in enumerate(messages):
        await client.chat_postMessage(channel="U1", text="…", blocks=blocks, metadata={
            "event_type": "fpbot_outbox_message", "event_payload": {**key, "part": n}})
    fake.post_by_user("U1", "U1", "thanks")  # the person wrote meanwhile
    async with demo_db.transaction() as session:
        stored = await session.get(OutboxItem, row.id)
        assert stored is not None
        stored.claimed_by, stored.attempts = "a-process-killed-mid-send", 1
        stored.extras = {**stored.extras, "sending_on": "slack"}
    app = BotApp(settings_for(demo_db, fake), clock=clock)
    try:
        async with running(app, [SlackAdapter(app)], webhook=True, scheduler=False):
            await app.sender.flush()
    finally:
        await app.close()

    assert len(fake.calls_to("chat.postMessage")) == len(messages) + posted
    assert len(fake.calls_to("conversations.history")) == 1
    [row] = await outbox_rows(demo_db)
    assert row.status == "sent" and row.sent_via == "slack"


async def test_a_conversation_that_cannot_be_read_back_gets_the_row_again_with_a_warning(
        slack: Slack, demo_db: Database, clock: FrozenClock,
        caplog: pytest.LogCaptureFixture) -> None:
    """An install without the `im:history` scope cannot look: the row goes again
    (at-least-once, as on Telegram), and the account is not taken for unreachable."""
    await long_notice(demo_db, clock)
    slack.adapter.client.timeout = 1
    slack.app.sender.quick_pause = 0.05
    slack.fake.hold_answers("chat.postMessage", after=0, times=1)
    slack.fake.refuse_next("conversations.history", "missing_scope")
    try:
        with caplog.at_level(logging.WARNING):
            slack.app.sender.poke()
            await slack.fake.wait_for("conversations.history", timeout=15)
            slack.fake.release_hangs()
            await slack.app.wait_idle()
    finally:
        slack.fake.release_hangs()
    await slack.settled()

    parts = [m["metadata"]["event_payload"]["part"]
             for m in slack.fake.messages_to("U1")]
    assert parts == [0, 0, 1]  # the first part twice: it could not be looked for
    assert "conversation history not readable (missing_scope)" in caplog.text
    async with demo_db.transaction() as session:
        account = await session.scalar(select(Identity).where(Identity.chat_id == "U1"))
    assert account is not None and account.unreachable_since is None
    [row] = [r for r in await outbox_rows(demo_db) if r.dedupe_key == "long-notice"]
    assert row.status == "sent"


async def test_a_store_failing_as_a_send_is_noted_sends_nothing_and_the_row_goes_later(
        slack: Slack, demo_db: Database, clock: FrozenClock,
        caplog: pytest.LogCaptureFixture) -> None:
    """The note that a Slack send has begun cannot be written: nothing is posted then, the
    row is handed back (not counted as the adapter's failure), and the next sweep sends it,
    once."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    await bind(demo_db, FP_CHILE, "U1", clock)
    failed: list[int] = []

    def fail_note(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE outbox SET extras") and not failed:
            failed.append(len(slack.fake.calls_to("chat.postMessage")))
            raise OperationalError(statement, {}, sqlite3.OperationalError("disk I/O error"))

    engine = slack.app.db.engine.sync_engine  # the bot's own connections
    event.listen(engine, "before_cursor_execute", fail_note)
    try:
        with caplog.at_level(logging.WARNING):
            async with demo_db.transaction() as session:
                chile = await session.scalar(select(Person.id).where(Person.email == FP_CHILE))
                assert chile is not None
                await queue_outgoing(session, [(chile, "test:noted",
                                                Outgoing("forms.none_open"))], clock.now())
            await slack.app.sender.flush()
    finally:
        event.remove(engine, "before_cursor_execute", fail_note)
    await slack.settled()

    assert failed == [0]  # the note failed once, before anything was posted
    assert "not sent now (store unavailable: OperationalError)" in caplog.text
    assert "adapter failed" not in caplog.text
    [post] = slack.fake.calls_to("chat.postMessage")
    assert text_of(post) == "That form is no longer open. Send /fp help to start again."
    [row] = [r for r in await outbox_rows(demo_db) if r.dedupe_key == "test:noted"]
    assert row.status == "sent" and not row.last_error
    assert row.extras["sending_on"] == "slack"
