"""The one delivery path: kept before the ack, handled once, every row sent once, in order.

Each test wires the real core, store (SQLite and PostgreSQL), inbox, sender and instance
liveness; a `Recorder` stands in for a platform adapter and fails the way adapters do.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bot.delivery import Inbound, Liveness, Parts, PermanentFailure, Sender, TemporaryFailure
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import MAX_TEXT, Incoming, Outgoing, Route
from messages import Renderer
from storage.db import Database
from storage.demo import load_demo
from storage.migrate import upgrade
from storage.models import Identity, InboxItem, Instance, OutboxItem
from tests.conftest import COORDINATOR, Transcript
from tests.message_coverage import render_everywhere

# Heartbeats every 0.1 s. An instance is found dead after 30 s without one: under load a
# store write can take a second, and a stale of 1 s made a busy instance doubt its own claims
# (it then sends nothing) at random. Tests of a death pass DEATH, and sleep past it.
FAST = {"beat": 0.1, "stale": 30.0}
DEATH = {"stale": 1.0}


class Recorder:
    """An adapter stand-in: records what it is asked to send, fails when told to."""

    def __init__(self, platform: str = "console", renderer: Renderer | None = None) -> None:
        self.platform = platform
        self.reads_back = False
        self.renderer = renderer or Renderer()
        self.sent: list[tuple[str, str]] = []
        self.texts: list[str] = []
        self.failures: list[Exception] = []
        self.fail_on: dict[int, Exception] = {}  # call number -> what it raises
        self.calls = 0
        self.messages: list[Outgoing] = []
        self.hang: asyncio.Event | None = None
        self.refuse_once: set[str] = set()  # chats whose next message is refused for good

    def reaches(self, chat_id: str) -> bool:
        return True

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None:
        await asyncio.sleep(0)
        self.calls += 1
        if self.hang is not None:
            await self.hang.wait()
        if self.calls in self.fail_on:
            raise self.fail_on[self.calls]
        if self.failures:
            raise self.failures.pop(0)
        if chat_id in self.refuse_once:
            self.refuse_once.discard(chat_id)
            raise PermanentFailure("400 Bad Request: chat not found")
        self.sent.append((chat_id, message.key))
        self.messages.append(message)
        shown = replace(message, context={"tz": tz, **message.context})
        self.texts.append(render_everywhere(self.renderer, shown, locale)["plain"])

    def plan(self, inc: Incoming, replies: list[Outgoing],
             hints: Mapping[str, Any]) -> list[Route]:
        return [Route(inc.chat_id, r, {}, f"{self.platform}:{inc.chat_id}") for r in replies]

    async def prepare(self, inc: Incoming) -> Incoming:
        return inc


class Instance_:
    """One bot process's delivery parts on a shared store."""

    def __init__(self, core: Core, *channels: Recorder, **timing: float) -> None:
        self.liveness = Liveness(core.db, core.clock, **{**FAST, **timing})
        self.sender = Sender(core.db, core.clock, self.liveness,
                             {c.platform: c for c in channels}, first_backoff=1.0,
                             quick_retries=0)
        # A receipt slower than 1.5 s answers the platform and is kept later (`ReceiptDelayed`);
        # on a loaded machine a write can take that long, and these tests await the receipt.
        self.inbound = Inbound(core, self.liveness, retry_first=0.05, receipt_timeout=30.0)
        for c in channels:
            self.inbound.receivers[c.platform] = c

    async def __aenter__(self) -> Instance_:
        await self.liveness.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inbound.stop(grace=1)
        await self.sender.stop(grace=1)
        await self.liveness.stop()


async def _queue_request(chat: Transcript) -> None:
    await chat.say("/start", as_="9001", platform="telegram")
    for answer in ("Chile", "Ana", "Adviser", "MFA", "ana@example.org"):
        await chat.say(answer, as_="9001", platform="telegram")
    await chat.core.console_identity(COORDINATOR)


async def _count(db: Database, *where: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxItem)
                                        .where(*where)) or 0)


# -- the inbox ------------------------------------------------------------------------------
async def test_a_redelivered_update_is_acted_on_once(core: Core) -> None:
    tg = Recorder("telegram")
    async with Instance_(core, tg) as one:
        inc = Incoming(platform="telegram", user_id="9001", chat_id="9001", text="/start")
        first = await one.inbound.receive("telegram", "update-1", inc)
        again = await one.inbound.receive("telegram", "update-1", inc)
        assert first is not None and again is None  # in hand: acknowledged, not queued twice
        await one.inbound.wait_idle()
        await one.sender.flush()
        assert await one.inbound.receive("telegram", "update-1", inc) is None
    assert [k for _, k in tg.sent] == ["onboarding.hello", "forms.question"]
    assert "Welcome" in tg.texts[0] or "Hello" in tg.texts[0]


async def test_a_burst_of_requests_is_kept_in_few_transactions_each_once(core: Core) -> None:
    """50 requests arriving together (the same one twice among them) are written in batches:
    each gets its own inbox item, the repeat gets none, all are answered once."""
    tg = Recorder("telegram")
    commits: list[int] = []

    def committed(_conn: object) -> None:
        commits.append(1)

    event.listen(core.db.engine.sync_engine, "commit", committed)
    try:
        async with Instance_(core, tg) as one:
            incs = [Incoming(platform="telegram", user_id=str(9100 + n), chat_id=str(9100 + n),
                             text="/help") for n in range(50)]
            commits.clear()
            kept = await asyncio.gather(
                *(one.inbound.receive("telegram", f"burst-{n}", inc, handle=False)
                  for n, inc in enumerate(incs)),
                one.inbound.receive("telegram", "burst-7", incs[7], handle=False))
            receipts = len(commits)
            ids = kept[:50]
            assert None not in ids and len(set(ids)) == 50 and kept[50] is None
            assert receipts < 10, receipts  # one commit per batch, not one per request
            for inbox_id, inc in zip(ids, incs, strict=True):
                one.inbound.submit("telegram", inbox_id, inc, {})
            await one.inbound.wait_idle()
            await one.sender.flush()
    finally:
        event.remove(core.db.engine.sync_engine, "commit", committed)
    assert sorted(int(chat) for chat, _ in tg.sent) == list(range(9100, 9150))
    assert all("/help" in text or "commands" in text for text in tg.texts)


async def test_a_store_failing_under_a_burst_keeps_none_of_it_and_then_recovers(
        core: Core) -> None:
    """The batch's transaction fails: every request in it is refused (the platform will send
    it again), none half-kept; the next request is kept."""
    async with Instance_(core, Recorder("telegram")) as one:
        incs = [Incoming(platform="telegram", user_id=str(9200 + n), chat_id=str(9200 + n),
                         text="/help") for n in range(5)]
        broken = core.db.engine.sync_engine

        def fail(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if statement.startswith("INSERT INTO inbox"):
                raise OperationalError(statement, {}, sqlite3.OperationalError("disk I/O error"))

        event.listen(broken, "before_cursor_execute", fail)
        try:
            results = await asyncio.gather(
                *(one.inbound.receive("telegram", f"lost-{n}", inc, handle=False)
                  for n, inc in enumerate(incs)), return_exceptions=True)
        finally:
            event.remove(broken, "before_cursor_execute", fail)
        assert all(isinstance(r, Exception) for r in results), results
        async with core.db.transaction() as session:
            assert not await session.scalar(select(func.count()).select_from(InboxItem)
                                            .where(InboxItem.key.like("lost-%")))
        assert await one.inbound.receive("telegram", "lost-0", incs[0], handle=False)


async def test_an_update_kept_by_a_dead_instance_is_handled_by_another(core: Core) -> None:
    tg = Recorder("telegram")
    inc = Incoming(platform="telegram", user_id="9001", chat_id="9001", text="/help")
    dead = Instance_(core, tg, **DEATH)
    await dead.liveness.start()
    kept = await dead.inbound.receive("telegram", "update-7", inc, handle=False)
    dead.liveness.pause()  # the process hangs, then dies: its row stays, its beats stop
    async with Instance_(core, tg, **DEATH) as survivor:
        await survivor.liveness.reap()  # first sight of the other's heartbeat
        assert await survivor.inbound.drain() == 0  # still held by a live-looking instance
        await asyncio.sleep(1.2)
        await survivor.liveness.reap()  # (its own heartbeat reaps too)
        async with core.db.transaction() as session:
            assert await session.get(Instance, dead.liveness.id) is None  # found dead
        assert await survivor.inbound.drain() == 1
        await survivor.inbound.wait_idle()
        await survivor.sender.flush()
    assert kept is not None and [k for _, k in tg.sent] == ["network.help"]
    assert "/start" in tg.texts[0]
    dead.liveness.registered = False


async def test_a_user_error_still_marks_the_update_handled_with_its_answer(core: Core) -> None:
    tg = Recorder("telegram")
    async with Instance_(core, tg) as one:
        inc = Incoming(platform="telegram", user_id="9001", chat_id="9001",
                       text="/start NOPE-NOPE")
        await one.inbound.receive("telegram", "update-8", inc)
        await one.inbound.wait_idle()
        await one.sender.flush()
    assert [k for _, k in tg.sent] == ["onboarding.code_unknown"]
    async with core.db.transaction() as session:
        item = await session.scalar(select(InboxItem))
    assert item is not None and item.handled_at is not None


async def test_an_oversized_text_is_answered_too_long_and_not_kept_whole(core: Core) -> None:
    tg = Recorder("telegram")
    async with Instance_(core, tg) as one:
        inc = Incoming(platform="telegram", user_id="9001", chat_id="9001", text="x" * 100_000)
        await one.inbound.receive("telegram", "update-9", inc)
        await one.inbound.wait_idle()
        await one.sender.flush()
    assert [k for _, k in tg.sent] == ["errors.too_long"]
    assert "100000 characters" in tg.texts[0] and f"at most {MAX_TEXT}" in tg.texts[0]
    async with core.db.transaction() as session:
        item = await session.scalar(select(InboxItem))
    assert item is not None and len(item.payload["incoming"]["text"]) <= 200


async def test_a_flood_from_one_person_gets_one_slow_down_and_others_are_answered(
        core: Core) -> None:
    tg = Recorder("telegram")
    async with Instance_(core, tg) as one:
        one.inbound.rate = (5, 60.0)
        for n in range(40):
            await one.inbound.receive("telegram", f"flood-{n}",
                                      Incoming("telegram", "666", "666", text="/help"))
        await one.inbound.receive("telegram", "calm", Incoming("telegram", "7", "7", text="/help"))
        await one.inbound.wait_idle(10)
        await one.sender.flush()
    to_flooder = [k for chat, k in tg.sent if chat == "666"]
    assert to_flooder.count("network.help") == 5
    assert to_flooder.count("delivery.slow_down") == 1 and len(to_flooder) == 6
    assert [k for chat, k in tg.sent if chat == "7"] == ["network.help"]
    slow = tg.texts[[k for _, k in tg.sent].index("delivery.slow_down")]
    assert "slow down" in slow


# -- the sender -----------------------------------------------------------------------------
async def test_each_notice_is_sent_once_across_instances(chat: Transcript) -> None:
    await _queue_request(chat)
    a, b = Recorder(), Recorder()
    async with Instance_(chat.core, a) as one, Instance_(chat.core, b) as two:
        counts = await asyncio.gather(one.sender.flush(), two.sender.flush())
        assert sum(counts) == 1
        assert await one.sender.flush() == 0 and await two.sender.flush() == 0
    assert a.sent + b.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]


async def test_a_temporary_failure_backs_off_then_is_recorded_failed(
        chat: Transcript, clock: FrozenClock) -> None:
    await _queue_request(chat)
    flaky = Recorder()
    async with Instance_(chat.core, flaky) as one:
        one.sender.max_attempts = 3
        flaky.failures = [TemporaryFailure("502 Bad Gateway")] * 3
        assert await one.sender.flush() == 1 and flaky.sent == []
        async with chat.core.db.transaction() as session:
            item = await session.scalar(select(OutboxItem))
            assert item is not None and item.attempts == 1 and item.status == "pending"
            assert item.last_error == "console: 502 Bad Gateway"
        assert await one.sender.flush() == 0  # backing off
        clock.advance(seconds=1.5)
        assert await one.sender.flush() == 1
        clock.advance(seconds=1.5)
        assert await one.sender.flush() == 0  # the pause grew: 2 s now
        clock.advance(seconds=1)
        assert await one.sender.flush() == 1
    async with chat.core.db.transaction() as session:
        item = await session.scalar(select(OutboxItem))
    assert item is not None and item.status == "failed" and item.attempts == 3
    assert flaky.sent == []


async def test_a_429_is_waited_out_in_place_and_sent_once(chat: Transcript) -> None:
    await _queue_request(chat)
    limited, other = Recorder(), Recorder()
    limited.failures = [TemporaryFailure("429", retry_after=0.5)]
    async with Instance_(chat.core, limited) as one, Instance_(chat.core, other) as two:
        sending = asyncio.create_task(one.sender.flush())
        await asyncio.sleep(0.2)
        assert await two.sender.flush() == 0  # the live, waiting holder is not robbed
        assert await sending == 1
    assert limited.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]
    assert other.sent == []


async def test_a_blocked_person_is_recorded_and_their_other_platform_tried(
        chat: Transcript, clock: FrozenClock) -> None:
    await chat.say("/link", as_=COORDINATOR)
    code = chat.last().context["one_time_code"]
    await chat.say(f"/start {code}", as_="4242", platform="telegram")
    await _queue_request(chat)
    console, telegram = Recorder("console"), Recorder("telegram")
    telegram.failures = [PermanentFailure("403 Forbidden: bot was blocked by the user")]
    async with Instance_(chat.core, console, telegram) as one:
        assert await one.sender.flush() == 1
    assert console.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]
    async with chat.core.db.transaction() as session:
        tg = await session.scalar(select(Identity).where(Identity.platform == "telegram"))
        item = await session.scalar(select(OutboxItem))
    assert tg is not None and tg.unreachable_since == clock.now()
    assert "blocked" in tg.unreachable_reason
    assert item is not None and item.status == "sent" and item.sent_via == "console"


async def test_a_reply_refused_for_good_is_failed_and_the_lane_goes_on(core: Core) -> None:
    tg = Recorder("telegram")
    tg.refuse_once = {"501"}
    async with Instance_(core, tg) as one:
        for n, user in enumerate(("501", "501", "502")):
            await one.inbound.receive("telegram", f"u{n}",
                                      Incoming("telegram", user, user, text="/help"))
        await one.inbound.wait_idle()
        await one.sender.flush()
    assert sorted(tg.sent) == [("501", "network.help"), ("502", "network.help")]
    async with core.db.transaction() as session:
        failed = await session.scalar(select(OutboxItem).where(OutboxItem.status == "failed"))
    assert failed is not None and failed.chat_id == "501"
    assert failed.last_error == "telegram: 400 Bad Request: chat not found"
    assert await _count(core.db, OutboxItem.status == "failed") == 1
    assert await _count(core.db, OutboxItem.status == "sent") == 2


async def test_a_notice_waits_until_its_person_has_an_account(
        chat: Transcript, core: Core) -> None:
    await chat.say("/start", as_="9001", platform="telegram")
    for answer in ("Chile", "Ana", "Adviser", "MFA", "ana@example.org"):
        await chat.say(answer, as_="9001", platform="telegram")
    recorder = Recorder()
    async with Instance_(core, recorder) as one:
        assert await one.sender.flush() == 1 and recorder.sent == []
        async with core.db.transaction() as session:
            item = await session.scalar(select(OutboxItem))
            assert item is not None and "no reachable account" in item.last_error
        await core.console_identity(COORDINATOR)
        await core.resume_outbox("console", COORDINATOR)
        assert await one.sender.flush() == 1
    assert recorder.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]


async def test_the_freshest_platform_account_is_preferred(chat: Transcript) -> None:
    await chat.say("/link", as_=COORDINATOR)
    code = chat.last().context["one_time_code"]
    await chat.say(f"/start {code}", as_="4242", platform="telegram")
    await _queue_request(chat)
    console, telegram = Recorder("console"), Recorder("telegram")
    async with Instance_(chat.core, console, telegram) as one:
        assert await one.sender.flush() == 1
    assert telegram.sent == [("4242", "onboarding.request_for_secretariat")] and not console.sent


async def test_a_five_part_reply_keeps_its_order_and_resumes_at_the_unsent_part(
        core: Core, clock: FrozenClock) -> None:
    tg = Recorder("telegram")
    parts = [Outgoing("help.help", {"n": n}) for n in range(1, 6)]
    inc = Incoming("telegram", "77", "77", text="/help")
    async with Instance_(core, tg) as one:
        inbox_id = await one.inbound.receive("telegram", "five", inc, handle=False)
        assert inbox_id is not None
        await core.answer(inc, inbox_id, parts, plan=lambda i, r: tg.plan(i, r, {}))
        tg.fail_on[3] = TemporaryFailure("502 Bad Gateway")
        await one.sender.flush()
        assert [m.context["n"] for m in tg.messages] == [1, 2]
        clock.advance(seconds=5)
        await one.sender.flush()
    assert [m.context["n"] for m in tg.messages] == [1, 2, 3, 4, 5]
    assert tg.texts == ["show this list"] * 5


async def test_a_stalled_holder_does_not_send_what_another_took_over(chat: Transcript) -> None:
    await _queue_request(chat)
    slow, fast = Recorder(), Recorder()
    stalled = Instance_(chat.core, slow, **DEATH)
    await stalled.liveness.start()
    assert await stalled.sender.sweep() == 1  # claimed, about to send...
    stalled.liveness.pause()  # ...when its heartbeat stalls (the process still runs)
    async with Instance_(chat.core, fast, **DEATH) as other:
        await other.liveness.reap()
        await asyncio.sleep(1.2)
        await other.liveness.reap()
        assert await other.sender.flush() == 1
    await asyncio.gather(*stalled.sender._lane_tasks.values())
    stalled.liveness.pause(False)
    await stalled.liveness.beat_once()  # it finds itself taken for dead: a new id
    assert fast.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]
    assert slow.sent == []
    await stalled.liveness.stop()


async def test_a_clock_jump_of_minutes_kills_nobody_and_sends_once(
        chat: Transcript, clock: FrozenClock) -> None:
    await _queue_request(chat)
    a, b = Recorder(), Recorder()
    async with Instance_(chat.core, a) as one, Instance_(chat.core, b) as two:
        await one.liveness.reap()
        await two.liveness.reap()
        clock.advance(minutes=7)
        await asyncio.sleep(0.35)  # a few heartbeats
        assert await one.liveness.reap() == [] and await two.liveness.reap() == []
        await asyncio.gather(one.sender.flush(), two.sender.flush())
        clock.advance(minutes=-7)
        assert await one.sender.flush() == 0 and await two.sender.flush() == 0
    assert len(a.sent + b.sent) == 1


async def test_a_clean_stop_removes_the_instance_and_hands_back_its_claims(
        chat: Transcript) -> None:
    await _queue_request(chat)
    stuck = Recorder()
    stuck.hang = asyncio.Event()
    one = Instance_(chat.core, stuck)
    await one.liveness.start()
    await one.sender.sweep()
    await one.sender.stop(grace=0.05)
    await one.liveness.stop()
    async with chat.core.db.transaction() as session:
        assert list(await session.scalars(select(Instance))) == []
        item = await session.scalar(select(OutboxItem))
    assert item is not None and item.status == "pending" and item.claimed_by is None
    fresh = Recorder()
    async with Instance_(chat.core, fresh) as two:
        assert await two.sender.flush() == 1
    assert fresh.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]


async def test_a_thousand_queued_messages_at_start_go_once_each_in_order(core: Core) -> None:
    tg = Recorder("telegram")
    async with core.db.transaction() as session:
        for n in range(1000):
            session.add(OutboxItem(platform="telegram", chat_id=str(n % 50),
                                   lane=f"telegram:{n % 50}", message=Outgoing(
                                       "help.help", {"n": n}).to_dict(),
                                   created_at=core.clock.now(), not_before=core.clock.now()))
    async with Instance_(core, tg, beat=5.0, stale=15.0) as one:
        await one.sender.flush()
    assert len(tg.sent) == 1000
    order: dict[str, list[int]] = {}
    for (chat_id, _), message in zip(tg.sent, tg.messages, strict=True):
        order.setdefault(chat_id, []).append(message.context["n"])
    assert all(ns == sorted(ns) and len(ns) == 20 for ns in order.values())
    assert await _count(core.db, OutboxItem.status == "sent") == 1000


async def test_a_platform_waiting_out_its_limits_holds_back_no_other_platform(
        core: Core) -> None:
    """Every Slack send waits (its rate limit, say) with more Slack messages queued than may
    be in flight: Telegram's messages still go out meanwhile (they used to wait for a free
    slot behind the Slack ones), and the Slack ones follow once Slack lets them."""
    slack, tg = Recorder("slack"), Recorder("telegram")
    slack.hang = asyncio.Event()
    now = core.clock.now()
    async with core.db.transaction() as session:
        for platform, chats in (("slack", [f"D{n}" for n in range(40)]),
                                ("telegram", [str(n) for n in range(10)])):
            session.add_all(OutboxItem(platform=platform, chat_id=chat,
                                       lane=f"{platform}:{chat}",
                                       message=Outgoing("help.help", {"n": n}).to_dict(),
                                       created_at=now, not_before=now)
                            for n, chat in enumerate(chats))
    async with Instance_(core, slack, tg) as one:
        sending = asyncio.create_task(one.sender.flush())
        deadline = asyncio.get_running_loop().time() + 10
        while len(tg.sent) < 10:
            assert asyncio.get_running_loop().time() < deadline, (
                f"Telegram sent {len(tg.sent)} of 10 while Slack waited")
            await asyncio.sleep(0.01)
        assert slack.sent == []
        slack.hang.set()
        await sending
    assert sorted(chat for chat, _ in slack.sent) == sorted(f"D{n}" for n in range(40))
    assert all(key == "help.help" for _, key in tg.sent)
    assert await _count(core.db, OutboxItem.status == "sent") == 50


async def test_the_store_down_while_marking_sent_sends_once(tmp_path: Path,
                                                            clock: FrozenClock) -> None:
    path = tmp_path / "outage.db"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=50)
    await upgrade(db)
    async with db.transaction() as session:
        await load_demo(session, clock.now())
    core = Core(db, COMMANDS, FORMS, clock=clock, free_text=FREE_TEXT)
    chat = Transcript(core, Renderer())
    await _queue_request(chat)
    tg = Recorder()
    real = tg.deliver

    async def then_lock(chat_id: str, message: Outgoing, **kw: Any) -> None:
        await real(chat_id, message, **kw)
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  timeout=30)
        blocker.execute("BEGIN IMMEDIATE")  # the store stops taking writes right after the send
        threading.Timer(0.4, lambda: (blocker.execute("ROLLBACK"), blocker.close())).start()

    tg.deliver = then_lock  # type: ignore[method-assign]
    try:
        async with Instance_(core, tg, stale=5.0) as one:
            assert await one.sender.flush() == 1
            assert await one.sender.flush() == 0
    finally:
        await db.dispose()
    assert tg.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]


async def test_the_oldest_live_instance_is_the_leader(core: Core) -> None:
    async with Instance_(core) as first, Instance_(core) as second:
        assert await first.liveness.is_leader() and not await second.liveness.is_leader()
    async with Instance_(core) as third:
        assert await third.liveness.is_leader()  # the others stopped: their rows are gone


async def test_fpbot_outbox_failed_lists_what_was_given_up_and_who_is_unreachable(
        chat: Transcript, clock: FrozenClock) -> None:
    from bot.delivery.report import failed_deliveries

    await chat.say("/link", as_=COORDINATOR)
    code = chat.last().context["one_time_code"]
    await chat.say(f"/start {code}", as_="4242", platform="telegram")
    await _queue_request(chat)
    telegram = Recorder("telegram")
    telegram.failures = [PermanentFailure("403 Forbidden: bot was blocked by the user")]
    async with Instance_(chat.core, telegram) as one:  # no console running: no other way
        assert await one.sender.flush() == 1
    failed, unreachable = await failed_deliveries(chat.core.db)
    assert len(failed) == 1 and "onboarding.request_for_secretariat" in failed[0]
    assert "403 Forbidden: bot was blocked by the user" in failed[0]
    assert unreachable == [
        f"Amina Diallo (demo) <{COORDINATOR}>: unreachable on Telegram since "
        f"{clock.now():%Y-%m-%d %H:%M} UTC (403 Forbidden: bot was blocked by the user)"]


async def test_the_former_outbox_api_still_sends_each_notice_once(chat: Transcript) -> None:
    from bot.delivery import Outbox

    class OldStyle:  # a sender written against the former API: send(), no deliver()
        platform = "console"

        def __init__(self) -> None:
            self.sent: list[tuple[str, str]] = []

        def reaches(self, chat_id: str) -> bool:
            return True

        async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
            self.sent.append((chat_id, message.key))

    await _queue_request(chat)
    old = OldStyle()
    outbox = Outbox(chat.core.db, chat.core.clock, {"console": old})
    assert await outbox.deliver_due() == 1
    assert await outbox.deliver_due() == 0
    await outbox.close()
    assert old.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]


async def test_the_heartbeat_beats_while_every_connection_of_the_pool_is_busy(
        demo_db: Database, clock: FrozenClock) -> None:
    """Under load the work can hold every pooled connection; the heartbeat has its own, or it
    would wait in the pool's queue until the other instances took this one for dead."""
    from contextlib import AsyncExitStack

    from bot.app import BotApp
    from bot.settings import Settings

    app = BotApp(Settings(database_url=demo_db.url), clock=clock)
    pool = app.db.engine.pool
    try:
        async with AsyncExitStack() as busy:
            for _ in range(15):  # the pool's 5 and its 10 overflow: all of them in use
                await busy.enter_async_context(app.db.engine.connect())
            assert pool.checkedout() == 15  # type: ignore[attr-defined]

            await asyncio.wait_for(app.liveness.register(), 5)
            beats = app.liveness.last_beat
            await asyncio.wait_for(app.liveness.beat_once(), 5)
            assert await asyncio.wait_for(app.liveness.reap(), 5) == []
            assert app.liveness.last_beat > beats and app.liveness.fresh()
        async with demo_db.transaction() as session:
            row = await session.get(Instance, app.liveness.id)
        assert row is not None and row.beats == 1
    finally:
        await app.liveness.stop()
        await app.close()


async def test_a_crash_can_resend_no_more_than_the_sends_in_flight(tmp_path: Path,
                                                                  clock: FrozenClock) -> None:
    """Each send holds its platform's slot until it is marked sent, so at any moment at most
    `max_in_flight` rows are out but not yet recorded: what a `kill -9` can send twice. Twice
    another writer holds the store for a moment (marks wait), and every send counts the rows
    out but unmarked; before, they piled up (a fan-out killed half-way resent 29 of 100)."""
    path = tmp_path / "slow.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await upgrade(db)
    now = clock.now()
    async with db.transaction() as session:
        session.add_all(OutboxItem(platform="telegram", chat_id=str(n), lane=f"telegram:{n}",
                                   message=Outgoing("help.help").to_dict(), created_at=now,
                                   not_before=now)
                        for n in range(60))
    core = Core(db, COMMANDS, FORMS, clock=clock, free_text=FREE_TEXT)
    tg = Recorder("telegram")
    unmarked: list[int] = []
    real = tg.deliver

    def marked() -> int:
        reader = sqlite3.connect(path)  # WAL: reads while another holds the write lock
        try:
            [(count,)] = reader.execute("SELECT count(*) FROM outbox WHERE status = 'sent'"
                                        ).fetchall()
        finally:
            reader.close()
        return int(count)

    def hold_the_store() -> None:
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, lambda: (blocker.execute("ROLLBACK"), blocker.close())).start()

    async def counting(chat_id: str, message: Outgoing, **kw: Any) -> None:
        await real(chat_id, message, **kw)
        if len(tg.sent) in (2, 30):
            await asyncio.to_thread(hold_the_store)  # never blocking the event loop
        unmarked.append(len(tg.sent) - await asyncio.to_thread(marked))

    tg.deliver = counting  # type: ignore[method-assign]
    try:
        async with Instance_(core, tg) as one:
            while await one.sender.flush():
                pass
    finally:
        await db.dispose()
    assert sorted(int(chat) for chat, _ in tg.sent) == list(range(60))
    assert max(unmarked) <= one.sender.max_in_flight, unmarked
    assert max(unmarked) >= one.sender.max_in_flight // 2, "the marks did wait"


async def test_a_slow_platform_filling_the_sweep_window_holds_back_no_other(core: Core) -> None:
    """More Slack rows than one sweep looks at, all waiting (Slack's pace), then Telegram's:
    the Telegram ones still go. The sweep's window used to be the oldest 500 pending rows,
    all of them Slack's already in hand, so Telegram waited for Slack to drain (a fan-out to
    1,000 on each took 3.8 times Telegram's floor)."""
    from bot.delivery.sender import BATCH

    slack, tg = Recorder("slack"), Recorder("telegram")
    slack.hang = asyncio.Event()
    now = core.clock.now()
    async with core.db.transaction() as session:
        for platform, chats in (("slack", [f"D{n}" for n in range(BATCH + 20)]),
                                ("telegram", [str(n) for n in range(10)])):
            session.add_all(OutboxItem(platform=platform, chat_id=chat,
                                       lane=f"{platform}:{chat}",
                                       message=Outgoing("help.help").to_dict(),
                                       created_at=now, not_before=now)
                            for chat in chats)
    async with Instance_(core, slack, tg) as one:
        first = await one.sender.sweep()
        assert first == BATCH, "one window of the oldest rows: Slack's"
        second = await one.sender.sweep()
        assert second == 30, "the window reaches past the rows in hand"
        await asyncio.gather(*(one.sender._lane_tasks[f"telegram:{n}"] for n in range(10)))
        assert sorted(int(chat) for chat, _ in tg.sent) == list(range(10))
        assert slack.sent == []
        slack.hang.set()
        await one.sender.flush()
    assert len(slack.sent) == BATCH + 20
    assert await _count(core.db, OutboxItem.status == "sent") == BATCH + 30


def _outbox_rows(core: Core, platform: str, chats: list[str]) -> list[OutboxItem]:
    now = core.clock.now()
    return [OutboxItem(platform=platform, chat_id=chat, lane=f"{platform}:{chat}",
                       message=Outgoing("help.help").to_dict(), created_at=now, not_before=now)
            for chat in chats]


async def test_a_sweep_does_not_read_again_the_rows_already_in_hand(core: Core) -> None:
    """A burst's replies wait in hand for Telegram's pace (3,000 of them take 100 s). Each new
    reply made the next sweep read every row in hand again, so the CPU of a burst grew with
    its square; the sweep now reads only what is not ours yet."""
    from bot.delivery.sender import BATCH

    tg = Recorder("telegram")
    tg.hang = asyncio.Event()
    async with core.db.transaction() as session:
        session.add_all(_outbox_rows(core, "telegram", [str(n) for n in range(BATCH + 100)]))
    read: list[int] = []

    def count_rows(state: Any) -> Any:
        if state.is_select and "outbox.not_before" in str(state.statement):
            frozen = state.invoke_statement().freeze()
            read.append(len(frozen().all()))
            return frozen()
        return None

    async with Instance_(core, tg) as one:
        assert await one.sender.sweep() == BATCH
        assert await one.sender.sweep() == 100
        async with core.db.transaction() as session:
            session.add_all(_outbox_rows(core, "telegram", ["new-1", "new-2", "new-3"]))
        event.listen(Session, "do_orm_execute", count_rows)
        try:
            assert await one.sender.sweep() == 3
        finally:
            event.remove(Session, "do_orm_execute", count_rows)
        assert read == [3], f"the sweep read {read} rows for 3 new ones"
        tg.hang.set()
        await one.sender.flush()
    assert await _count(core.db, OutboxItem.status == "sent") == BATCH + 103
    assert len(tg.sent) == BATCH + 103


async def test_rows_a_failing_store_kept_us_from_handing_back_are_sent_later(
        core: Core) -> None:
    """A lane stops at a row that failed; the rows behind it are handed back, and the store
    fails right then: they stay ours but out of hand. The next sweep hands them back and they
    go (the sweep no longer reads the rows in our hands, so nothing else would)."""
    tg = Recorder("telegram")
    tg.failures = [TemporaryFailure("502 Bad Gateway")]
    async with core.db.transaction() as session:
        session.add_all(OutboxItem(platform="telegram", chat_id="7", lane="telegram:7",
                                   message=Outgoing("help.help", {"n": n}).to_dict(),
                                   created_at=core.clock.now(), not_before=core.clock.now())
                        for n in range(3))
    engine = core.db.engine.sync_engine
    failed: list[str] = []

    def fail_hand_back(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if (statement.startswith("UPDATE outbox SET claimed_by") and "RETURNING" not in statement
                and not failed):
            failed.append(statement)
            raise OperationalError(statement, {}, sqlite3.OperationalError("disk I/O error"))

    async with Instance_(core, tg) as one:
        one.sender.quick_retries = 0
        event.listen(engine, "before_cursor_execute", fail_hand_back)
        try:
            assert await one.sender.sweep() == 3
            await asyncio.gather(*list(one.sender._lane_tasks.values()))
        finally:
            event.remove(engine, "before_cursor_execute", fail_hand_back)
        assert failed, "the hand-back failed"
        assert await _count(core.db, OutboxItem.claimed_by == one.liveness.id) == 2
        core.clock.advance(seconds=5)  # past the failed row's pause
        await one.sender.flush()
        assert [m.context["n"] for m in tg.messages] == [0, 1, 2]  # in order, each once
    assert await _count(core.db, OutboxItem.status == "sent") == 3


async def test_a_row_claimed_by_us_that_no_lane_holds_is_taken_again(core: Core) -> None:
    """A row left claimed by this very instance, in no lane (under stress, a kill-and-restart
    test lost a reminder so): a sweep that finds nothing new takes it again, and it goes."""
    tg = Recorder("telegram")
    async with core.db.transaction() as session:
        session.add_all(_outbox_rows(core, "telegram", ["41", "42"]))
    async with Instance_(core, tg) as one:
        async with core.db.transaction() as session:
            await session.execute(update(OutboxItem).where(OutboxItem.chat_id == "41")
                                  .values(claimed_by=one.liveness.id))
        await one.sender.flush()
        assert sorted(chat for chat, _ in tg.sent) == ["41", "42"]
    assert await _count(core.db, OutboxItem.status == "sent") == 2


class FirstSendCounter(Recorder):
    """A Recorder that notes, at its first send, how many rows the sender had checked out.

    The first call counts; every other send waits until it has (the sends of other lanes
    coming while the count was read used to overwrite it with a later count, after sends
    had freed slots for more checks: 26 seen once in a run of the suite)."""

    def __init__(self, platform: str, db: Database) -> None:
        super().__init__(platform)
        self.db = db
        self.checked_at_first: int | None = None
        self._counting: asyncio.Task[int] | None = None

    async def _count_checked(self) -> int:
        async with self.db.reading() as session:
            return int(await session.scalar(
                select(func.count()).select_from(OutboxItem)
                .where(OutboxItem.attempts > 0)) or 0)

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None:
        if self._counting is None:
            self._counting = asyncio.ensure_future(self._count_checked())
        self.checked_at_first = await self._counting
        await super().deliver(chat_id, message, locale=locale, tz=tz, extras=extras,
                              parts=parts)


async def test_a_fan_out_sends_before_every_row_of_it_is_checked(core: Core) -> None:
    """A fan-out's rows, Telegram's and Slack's in turn (a roster mixing platforms): the first
    Telegram message goes once a few rows are checked (claim still ours) and addressed. Each
    row used to give its slot back between the check and the address and queue again behind
    every other row's check: nothing went until all of them, Slack's too, were checked (ten
    seconds of a fan-out to 1,000 on each)."""
    slack, tg = Recorder("slack"), FirstSendCounter("telegram", core.db)
    slack.hang = asyncio.Event()
    now = core.clock.now()
    async with core.db.transaction() as session:
        for n in range(60):
            for platform, chat in (("telegram", str(n)), ("slack", f"D{n}")):
                session.add(OutboxItem(platform=platform, chat_id=chat, lane=f"{platform}:{chat}",
                                       message=Outgoing("help.help").to_dict(),
                                       created_at=now, not_before=now))
    async with Instance_(core, slack, tg) as one:
        assert await one.sender.sweep() == 120
        await asyncio.gather(*(one.sender._lane_tasks[f"telegram:{n}"] for n in range(60)))
        assert len(tg.sent) == 60 and slack.sent == []
        assert tg.checked_at_first is not None
        assert tg.checked_at_first <= 2 * one.sender.max_in_flight, (
            f"{tg.checked_at_first} of 120 rows checked before the first send")
        slack.hang.set()
        await one.sender.flush()
    assert len(slack.sent) == 60
    assert await _count(core.db, OutboxItem.status == "sent") == 120
