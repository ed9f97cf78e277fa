"""One conformance suite for every adapter: the delivery promises, held the same way by each.

Parametrized by adapter (Telegram polling and webhook, Slack HTTP and Socket Mode, the console)
and, through `demo_db`, by store (SQLite and PostgreSQL). Each adapter runs for real against its
fake platform: PTB's `Bot`, Bolt's `AsyncApp`, the console's printed output. A new platform
adapter is done when it passes this suite.

The crash scenarios (`kill -9` during a hung send, two instances on one PostgreSQL with one
killed) run real `fpbot` processes: see the end of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette

from bot.adapters.console import ConsoleAdapter
from bot.adapters.slack import SlackAdapter
from bot.adapters.telegram import SECRET_HEADER, TelegramAdapter, rate_limiter
from bot.app import BotApp
from bot.runner import running
from bot.settings import Secret, Settings
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import FrozenClock
from handlers.context import Context
from handlers.dispatch import Core
from handlers.routing import Access, Command
from handlers.types import Incoming, Outgoing
from storage.db import Database
from storage.models import Identity, InboxItem, OutboxItem, Person
from tests.conftest import FP_CHILE
from tests.fakes.slack_api import TEAM_ID, FakeSlackAPI, event_body, signed_headers
from tests.fakes.telegram_api import FakeBotAPI

TG_TOKEN = "123:abc"
TG_SECRET = "conformance-hook_1"
SLACK_TOKEN = "xoxb-test"
SIGNING = "conformance-signing-secret"
ADAPTERS = ["telegram-polling", "telegram-webhook", "slack-http", "slack-socket", "console"]


async def _five(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Answer with five messages (a long reply in parts)."""
    return [Outgoing("errors.unknown_command", {"command": f"part{n}", "suggestion": ""})
            for n in range(1, 6)]


def conformance_core(db: Database, clock: FrozenClock) -> Core:
    commands = (*COMMANDS, Command("five", _five, Access.ANYONE, "help.help"))
    return Core(db, commands, FORMS, clock=clock, free_text=FREE_TEXT)


class Driver:
    """One adapter, started the way `fpbot run` / `fpbot serve` start it, and its fake."""

    name = ""
    platform = ""
    limits = True  # the platform rate-limits and can refuse a chat (the console cannot)

    def __init__(self, db: Database, clock: FrozenClock) -> None:
        self.db, self.clock = db, clock
        self.keys = iter(range(1000, 10**6))
        self.app: BotApp | None = None

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        raise NotImplementedError

    def chat(self, user: int) -> str:
        raise NotImplementedError

    def account(self, user: int) -> str:
        return self.chat(user)

    async def say(self, user: int, text: str, key: int | None = None) -> None:
        raise NotImplementedError

    def texts(self, user: int) -> list[str]:
        raise NotImplementedError

    def rate_limit_next(self, retry_after: int) -> None:
        raise NotImplementedError

    def refuse_next(self) -> None:
        raise NotImplementedError

    def sends(self) -> list[int]:
        """The HTTP status of every send so far."""
        raise NotImplementedError

    async def settle(self) -> None:
        assert self.app is not None
        await self.app.wait_idle(10)

    def bot_app(self, settings: Settings) -> BotApp:
        app = BotApp(settings, clock=self.clock)
        app.core = app.inbound.core = conformance_core(app.db, self.clock)
        app.core.outbox_listeners.append(app.sender.poke)
        app.sender.quick_pause = 0.05
        self.app = app
        return app


class TelegramDriver(Driver):
    platform = "telegram"

    def __init__(self, db: Database, clock: FrozenClock, *, webhook: bool) -> None:
        super().__init__(db, clock)
        self.webhook = webhook
        self.name = "telegram-webhook" if webhook else "telegram-polling"

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        self.fake = await stack.enter_async_context(FakeBotAPI(TG_TOKEN))
        app = self.bot_app(Settings(database_url=self.db.url, telegram_token=Secret(TG_TOKEN),
                                    telegram_api_url=f"{self.fake.url}/bot",
                                    telegram_webhook_secret=Secret(TG_SECRET)))
        stack.push_async_callback(app.close)
        self.adapter = TelegramAdapter(app, limiter=rate_limiter(chat_rate=None, max_retries=0),
                                       poll_timeout=1.0, retry_first=0.05)
        await stack.enter_async_context(running(app, [self.adapter], webhook=self.webhook,
                                                scheduler=False))
        if self.webhook:
            from bot.runner import web_app
            self.http = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=web_app(app, [self.adapter])),
                base_url="http://bot.test"))

    def chat(self, user: int) -> str:
        return str(user)

    async def say(self, user: int, text: str, key: int | None = None) -> None:
        update = {"update_id": key or next(self.keys), **self.fake.message_update(user, text)}
        if self.webhook:
            response = await self.http.post("/telegram/webhook", json=update,
                                            headers={SECRET_HEADER: TG_SECRET})
            assert response.status_code == 200
        else:
            self.fake.push_update(update)
            deadline = time.monotonic() + 5
            while self.fake.confirmed_offset <= update["update_id"] and any(
                    u["update_id"] == update["update_id"] for u in self.fake.pending_updates()):
                assert time.monotonic() < deadline, "update not taken"
                await asyncio.sleep(0.01)

    def texts(self, user: int) -> list[str]:
        return [c.params["text"] for c in self.fake.calls_to("sendMessage")
                if c.status == 200 and c.params["chat_id"] == user]

    def rate_limit_next(self, retry_after: int) -> None:
        self.fake.fail_next("sendMessage", 429, retry_after=retry_after)

    def refuse_next(self) -> None:
        self.fake.fail_next("sendMessage", 403,
                            description="Forbidden: bot was blocked by the user")

    def sends(self) -> list[int]:
        return [c.status for c in self.fake.calls_to("sendMessage")]


class SlackDriver(Driver):
    platform = "slack"

    def __init__(self, db: Database, clock: FrozenClock, *, socket: bool) -> None:
        super().__init__(db, clock)
        self.socket = socket
        self.name = "slack-socket" if socket else "slack-http"

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        self.fake = await stack.enter_async_context(FakeSlackAPI(token=SLACK_TOKEN))
        if self.socket:
            self.fake.use_socket_mode()
        app = self.bot_app(Settings(
            database_url=self.db.url, slack_bot_token=Secret(SLACK_TOKEN),
            slack_signing_secret=Secret("" if self.socket else SIGNING),
            slack_app_token=Secret(self.fake.app_token if self.socket else ""),
            slack_api_url=f"{self.fake.url}/api/"))
        stack.push_async_callback(app.close)
        self.adapter = SlackAdapter(app)
        await stack.enter_async_context(running(app, [self.adapter], webhook=not self.socket,
                                                scheduler=False))
        if not self.socket:
            self.http = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=Starlette(routes=self.adapter.routes())),
                base_url="http://slack.test"))

    def chat(self, user: int) -> str:
        return f"U{user}"

    def account(self, user: int) -> str:
        return f"{TEAM_ID}/U{user}"

    async def say(self, user: int, text: str, key: int | None = None) -> None:
        event = {"type": "message", "channel": f"DU{user}", "channel_type": "im",
                 "user": f"U{user}", "text": text, "ts": "1.1"}
        event_id = f"Ev{key or next(self.keys)}"
        body = event_body(event, event_id=event_id)
        if self.socket:
            envelope = f"env-{event_id}"
            await self.fake.socket_send({"envelope_id": envelope, "type": "events_api",
                                         "accepts_response_payload": False,
                                         "payload": json.loads(body)})
            acks = len([m for m in self.fake.socket_received
                        if m.get("envelope_id") == envelope])
            await self.fake.wait_for_socket_ack(envelope, acks + 1)
        else:
            response = await self.http.post("/slack/events", content=body, headers=signed_headers(
                SIGNING, body, content_type="application/json"))
            assert response.status_code == 200

    def texts(self, user: int) -> list[str]:
        out = []
        for call in self.fake.calls_to("chat.postMessage"):
            if call.status != 200 or call.params.get("channel") != f"U{user}":
                continue
            if any(call is r for r in self.fake.__dict__.get("refused", [])):
                continue
            blocks = call.params.get("blocks") or []
            blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
            if not blocks:  # a refused call (its answer was not ok)
                continue
            out.append("\n".join(b["text"]["text"] for b in blocks if b.get("type") == "section"))
        return out

    def rate_limit_next(self, retry_after: int) -> None:
        self.fake.fail_next("chat.postMessage", 429, retry_after=retry_after)

    def refuse_next(self) -> None:
        self.fake.refuse_next("chat.postMessage", "channel_not_found")

    def sends(self) -> list[int]:
        return [c.status for c in self.fake.calls_to("chat.postMessage")]


class HostedConsole(ConsoleAdapter):
    """The console as `running()` hosts an adapter (it has nothing to connect)."""

    async def start(self, *, webhook: bool) -> None:
        return None

    async def stop_receiving(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class ConsoleDriver(Driver):
    """The console's lines kept and answered through the shared path (one person at it)."""

    name = "console"
    platform = "console"
    limits = False

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        app = self.bot_app(Settings(database_url=self.db.url))
        stack.push_async_callback(app.close)
        self.out = io.StringIO()
        self.adapter = HostedConsole(app.core, app.renderer, user=self.chat(1),
                                     stdout=self.out)
        app.stop_grace = 1.0
        await stack.enter_async_context(running(app, [self.adapter],  # type: ignore[list-item]
                                                webhook=False, scheduler=False))

    def chat(self, user: int) -> str:
        return "person@console.invalid"

    async def say(self, user: int, text: str, key: int | None = None) -> None:
        assert self.app is not None
        await self.app.inbound.receive("console", f"line-{key or next(self.keys)}",
                                       self.adapter.to_incoming(text))

    def texts(self, user: int) -> list[str]:
        notice = self.adapter.renderer.render("console.notice", "en", "plain")
        return [m.strip() for m in self.out.getvalue().split(notice + "\n") if m.strip()]


def make(name: str, db: Database, clock: FrozenClock) -> Driver:
    if name.startswith("telegram"):
        return TelegramDriver(db, clock, webhook=name.endswith("webhook"))
    if name.startswith("slack"):
        return SlackDriver(db, clock, socket=name.endswith("socket"))
    return ConsoleDriver(db, clock)


@pytest.fixture(params=ADAPTERS)
async def bot(request: pytest.FixtureRequest, demo_db: Database,
              clock: FrozenClock) -> AsyncIterator[Driver]:
    driver = make(request.param, demo_db, clock)
    async with contextlib.AsyncExitStack() as stack:
        await driver.open(stack)
        yield driver


async def _count(db: Database, model: Any, *where: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where))
                   or 0)


# -- the promises ---------------------------------------------------------------------------
async def test_a_reply_arrives(bot: Driver) -> None:
    await bot.say(401, "/help")
    await bot.settle()
    [answer] = bot.texts(401)
    assert "Welcome to the Focal Points Bot" in answer and "help" in answer
    assert await _count(bot.db, OutboxItem, OutboxItem.status != "sent") == 0


async def test_a_duplicate_delivery_is_acted_on_once(bot: Driver) -> None:
    await bot.say(402, "/help", key=77)
    await bot.settle()
    await bot.say(402, "/help", key=77)  # the platform delivering it again
    await bot.settle()
    assert len(bot.texts(402)) == 1
    assert await _count(bot.db, InboxItem) == 1


async def test_a_five_part_reply_keeps_its_order(bot: Driver) -> None:
    if bot.limits:
        bot.rate_limit_next(1)  # even when part 1 has to wait
    await bot.say(403, "/five")
    await bot.settle()
    texts = bot.texts(403)
    assert len(texts) == 5
    assert [f"/part{n}" in t for n, t in enumerate(texts, 1)] == [True] * 5, texts


async def test_a_429_with_retry_after_is_waited_out(bot: Driver) -> None:
    if not bot.limits:
        pytest.skip("the console has no rate limits")
    bot.rate_limit_next(1)
    began = time.monotonic()
    await bot.say(404, "/help")
    await bot.settle()
    assert time.monotonic() - began >= 1.0
    assert bot.sends() == [429, 200] and len(bot.texts(404)) == 1


async def test_a_blocked_person_is_recorded_and_the_loop_goes_on(
        bot: Driver, demo_db: Database, clock: FrozenClock) -> None:
    if not bot.limits:
        pytest.skip("a console cannot refuse the bot")
    async with demo_db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == FP_CHILE))
        assert person is not None
        session.add(Identity(person_id=person.id, platform=bot.platform,
                             user_id=bot.account(405), chat_id=bot.chat(405),
                             created_at=clock.now()))
    bot.refuse_next()
    await bot.say(405, "/help")
    await bot.settle()
    await bot.say(406, "/help")  # someone else is still answered
    await bot.settle()
    assert bot.texts(405) == [] and len(bot.texts(406)) == 1
    async with demo_db.transaction() as session:
        identity = await session.scalar(select(Identity).where(
            Identity.platform == bot.platform, Identity.chat_id == bot.chat(405)))
        failed = await session.scalar(select(OutboxItem).where(OutboxItem.status == "failed"))
    assert identity is not None and identity.unreachable_since == clock.now()
    assert failed is not None and failed.chat_id == bot.chat(405)
    assert failed.attempts == 1  # refused for good: not tried again


# -- real processes: kill -9 and restart; two instances, one killed --------------------------
# (tests/test_conformance_processes.py)



# -- real processes: kill -9 and restart; two instances on one store, one killed -------------
async def _invitation(db: Database, clock: FrozenClock) -> str:
    from datetime import timedelta

    from storage.invitations import create_invitation

    async with db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == FP_CHILE))
        assert person is not None
        code, _ = await create_invitation(session, person.id, "invite", now=clock.now(),
                                          ttl=timedelta(days=3650))
    return code


def _welcomes(fake: FakeBotAPI, chat: int) -> list[str]:
    return [c.params["text"] for c in fake.calls_to("sendMessage")
            if c.status == 200 and c.params["chat_id"] == chat and "Welcome" in c.params["text"]]


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_kill_9_during_a_hung_send_then_restart_answers_once_within_10_s(
        demo_db: Database, clock: FrozenClock, tmp_path: Any) -> None:
    from tests.test_telegram_cli import finish, fpbot

    code = await _invitation(demo_db, clock)
    async with FakeBotAPI(TG_TOKEN) as fake:
        env = {"DATABASE_URL": demo_db.url, "TELEGRAM_TOKEN": TG_TOKEN,
               "TELEGRAM_API_URL": f"{fake.url}/bot"}
        fake.hang_next("sendMessage")
        first = await fpbot(tmp_path, env, "run")
        try:
            fake.push_update(fake.message_update(42, f"/start {code}"))
            await _wait(lambda: fake.__dict__.get("hung"), 30, "the send never started")
        finally:
            first.kill()  # kill -9 while the send hangs
            await first.wait()
        restarted_at = time.monotonic()
        second = await fpbot(tmp_path, env, "run")
        try:
            await _wait(lambda: _welcomes(fake, 42), 30, "no welcome after the restart")
            took = time.monotonic() - restarted_at
            fake.release_hangs()  # the dead process's request is answered: it never went
            await asyncio.sleep(1.0)  # nothing more comes
        finally:
            logged = await finish(second)
    assert took < 10, (took, logged)
    [welcome] = _welcomes(fake, 42)
    assert "Welcome, " in welcome and "Chile" in welcome
    assert await _count(demo_db, InboxItem) == 1
    async with demo_db.transaction() as session:
        invitation_uses = await session.scalar(select(func.count()).select_from(OutboxItem)
                                               .where(OutboxItem.status == "sent"))
    assert invitation_uses == 1


async def test_a_second_fpbot_run_on_one_token_is_refused_in_one_line(
        demo_db: Database, tmp_path: Any) -> None:
    from tests.test_telegram_cli import finish, fpbot

    async with FakeBotAPI(TG_TOKEN) as fake:
        env = {"DATABASE_URL": demo_db.url, "TELEGRAM_TOKEN": TG_TOKEN,
               "TELEGRAM_API_URL": f"{fake.url}/bot"}
        first = await fpbot(tmp_path, env, "run")
        try:
            await fake.wait_for("deleteWebhook", timeout=30)  # polling from here on
            second = await fpbot(tmp_path, env, "run")
            _, err = await asyncio.wait_for(second.communicate(), 60)
        finally:
            await finish(first)
    assert second.returncode == 2
    assert err.decode().strip().splitlines() == [
        "fpbot: another instance polls this bot; use `fpbot serve` with webhooks for several "
        "instances"]


@pytest.mark.postgres
async def test_two_instances_on_postgresql_one_killed_the_survivor_finishes_within_20_s(
        demo_db: Database, tmp_path: Any, request: pytest.FixtureRequest) -> None:
    if demo_db.is_sqlite:
        pytest.skip("several instances share PostgreSQL")
    from tests.test_telegram_cli import finish, fpbot, free_port, serving

    async with FakeBotAPI(TG_TOKEN) as fake:
        env = {"DATABASE_URL": demo_db.url, "TELEGRAM_TOKEN": TG_TOKEN,
               "TELEGRAM_API_URL": f"{fake.url}/bot", "TELEGRAM_WEBHOOK_SECRET": TG_SECRET}
        ports = [free_port(), free_port()]
        doomed = await fpbot(tmp_path, env, "serve", "--port", str(ports[0]))
        survivor = await fpbot(tmp_path, env, "serve", "--port", str(ports[1]))
        try:
            for port in ports:
                await serving(port)
            async with httpx.AsyncClient() as http:
                fake.hang_next("sendMessage", times=1000)
                for n in range(20):  # twenty people write to the doomed instance
                    update = {"update_id": 5000 + n, **fake.message_update(600 + n, "/help")}
                    response = await http.post(f"http://127.0.0.1:{ports[0]}/telegram/webhook",
                                               json=update, headers={SECRET_HEADER: TG_SECRET})
                    assert response.status_code == 200
                await _wait(lambda: fake.__dict__.get("hung", 0) >= 1, 20, "nothing was sent")
                doomed.kill()
                await doomed.wait()
                killed_at = time.monotonic()
                fake.release_hangs()
                await _wait(lambda: all(
                    [c for c in fake.calls_to("sendMessage")
                     if c.status == 200 and c.params["chat_id"] == 600 + n]
                    for n in range(20)), 25, "the survivor did not finish")
                took = time.monotonic() - killed_at
                await asyncio.sleep(0.5)
        finally:
            logged = await finish(survivor)
    assert took < 20, (took, logged)
    for n in range(20):
        assert len([c for c in fake.calls_to("sendMessage")
                    if c.status == 200 and c.params["chat_id"] == 600 + n]) == 1, n


async def test_kill_9_during_a_hung_slack_send_then_restart_answers_once_within_10_s(
        demo_db: Database, tmp_path: Any) -> None:
    from tests.test_telegram_cli import finish, fpbot, free_port

    def welcomes(fake: FakeSlackAPI) -> list[Any]:
        return [c for c in fake.calls_to("chat.postMessage")
                if c.status == 200 and c.params.get("channel") == "U7"
                and "Welcome to the Focal Points Bot" in str(c.params.get("blocks"))]

    async with FakeSlackAPI(token=SLACK_TOKEN) as fake:
        env = {"DATABASE_URL": demo_db.url, "SLACK_BOT_TOKEN": SLACK_TOKEN,
               "SLACK_SIGNING_SECRET": SIGNING, "SLACK_API_URL": f"{fake.url}/api/"}
        port = free_port()
        fake.hang_next("chat.postMessage")
        first = await fpbot(tmp_path, env, "serve", "--port", str(port))
        body = event_body({"type": "message", "channel": "DU7", "channel_type": "im",
                           "user": "U7", "text": "/help", "ts": "1.1"}, event_id="Ev-kill")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    assert time.monotonic() < deadline, "serve did not come up"
                    await asyncio.sleep(0.1)
                response = await http.post("/slack/events", content=body, headers=signed_headers(
                    SIGNING, body, content_type="application/json"))
                assert response.status_code == 200
            await _wait(lambda: fake.__dict__.get("hung"), 30, "the send never started")
        finally:
            first.kill()
            await first.wait()
        restarted_at = time.monotonic()
        second = await fpbot(tmp_path, env, "serve", "--port", str(port))
        try:
            await _wait(lambda: welcomes(fake), 30, "no answer after the restart")
            took = time.monotonic() - restarted_at
            fake.release_hangs()
            await asyncio.sleep(1.0)
        finally:
            logged = await finish(second)
    assert took < 10, (took, logged)
    assert len(welcomes(fake)) == 1
