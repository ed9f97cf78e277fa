"""The durable inbox and the outbox: nothing handled twice, nothing sent twice, nothing lost."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from bot.delivery import Outbox
from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import Incoming, Outgoing
from storage.db import Database
from storage.models import OutboxItem
from tests.conftest import COORDINATOR, Transcript


class Recorder:
    """An adapter stand-in for the outbox: records what it is asked to send."""

    def __init__(self, platform: str = "console", fail: int = 0) -> None:
        self.platform = platform
        self.sent: list[tuple[str, str]] = []
        self.fail = fail

    def reaches(self, chat_id: str) -> bool:
        return True

    async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
        await asyncio.sleep(0)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("platform down")
        self.sent.append((chat_id, message.key))


async def _queue_request(chat: Transcript) -> None:
    await chat.say("/start", as_="9001", platform="telegram")
    for answer in ("Chile", "Ana", "Adviser", "MFA", "ana@example.org"):
        await chat.say(answer, as_="9001", platform="telegram")
    await chat.core.console_identity(COORDINATOR)


async def test_a_redelivered_update_is_acted_on_once(core: Core) -> None:
    inc = Incoming(platform="telegram", user_id="9001", chat_id="9001", text="/start")
    first = await core.receive("telegram", "update-1", inc.to_dict())
    assert first is not None
    replies = await core.handle(inc, first)
    assert [r.key for r in replies] == ["onboarding.hello", "forms.question"]
    again = await core.receive("telegram", "update-1", inc.to_dict())
    assert again == first  # not yet answered: the same item, and handling it is a no-op
    assert await core.handle(inc, again) == []
    assert [r.key for r in await core.stored_replies(first)] == ["onboarding.hello",
                                                                "forms.question"]
    await core.mark_replied(first)
    assert await core.receive("telegram", "update-1", inc.to_dict()) is None
    assert await core.unanswered("telegram") == []


async def test_an_update_received_before_a_crash_is_found_again(core: Core) -> None:
    inc = Incoming(platform="telegram", user_id="9001", chat_id="9001", text="/help")
    inbox_id = await core.receive("telegram", "update-7", inc.to_dict())
    pending = await core.unanswered("telegram")
    assert [p.id for p in pending] == [inbox_id]
    stored = Incoming.from_dict(pending[0].payload)
    assert [r.key for r in await core.handle(stored, inbox_id)] == ["network.help"]


async def test_a_user_error_still_marks_the_update_handled(core: Core) -> None:
    inc = Incoming(platform="telegram", user_id="9001", chat_id="9001", text="/start NOPE-NOPE")
    inbox_id = await core.receive("telegram", "update-8", inc.to_dict())
    assert [r.key for r in await core.handle(inc, inbox_id)] == ["onboarding.code_unknown"]
    assert [r.key for r in await core.stored_replies(inbox_id)] == ["onboarding.code_unknown"]
    assert await core.handle(inc, inbox_id) == []


async def test_the_outbox_sends_each_notice_once_across_instances(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await _queue_request(chat)
    a, b = Recorder(), Recorder()
    one, two = Outbox(demo_db, clock, {"console": a}), Outbox(demo_db, clock, {"console": b})
    counts = await asyncio.gather(one.deliver_due(), two.deliver_due())
    assert sum(counts) == 1
    assert a.sent + b.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]
    assert await one.deliver_due() == 0 and await two.deliver_due() == 0


async def test_a_failed_send_is_retried_later_not_dropped(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await _queue_request(chat)
    flaky = Recorder(fail=1)
    outbox = Outbox(demo_db, clock, {"console": flaky})
    assert await outbox.deliver_due() == 0
    async with demo_db.transaction() as session:
        item = await session.scalar(select(OutboxItem))
        assert item is not None and item.attempts == 1 and item.sent_at is None
        assert item.last_error == "ConnectionError"
    assert await outbox.deliver_due() == 0  # backing off
    clock.advance(seconds=6)
    assert await outbox.deliver_due() == 1
    assert flaky.sent == [(COORDINATOR, "onboarding.request_for_secretariat")]


async def test_a_notice_waits_until_its_person_has_an_account(
    chat: Transcript, demo_db: Database, clock: FrozenClock, core: Core
) -> None:
    await chat.say("/start", as_="9001", platform="telegram")
    for answer in ("Chile", "Ana", "Adviser", "MFA", "ana@example.org"):
        await chat.say(answer, as_="9001", platform="telegram")
    recorder = Recorder()
    outbox = Outbox(demo_db, clock, {"console": recorder})
    assert await outbox.deliver_due() == 0  # the coordinator has no account yet
    async with demo_db.transaction() as session:
        item = await session.scalar(select(OutboxItem))
        assert item is not None and "no reachable account" in item.last_error
    await core.console_identity(COORDINATOR)
    await core.resume_outbox("console", COORDINATOR)
    assert await outbox.deliver_due() == 1


async def test_the_freshest_platform_account_is_preferred(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await chat.say("/link", as_=COORDINATOR)
    code = chat.last().context["one_time_code"]
    await chat.say(f"/start {code}", as_="4242", platform="telegram")
    await _queue_request(chat)
    console, telegram = Recorder("console"), Recorder("telegram")
    outbox = Outbox(demo_db, clock, {"console": console, "telegram": telegram})
    assert await outbox.deliver_due() == 1
    assert telegram.sent == [("4242", "onboarding.request_for_secretariat")] and not console.sent


async def test_a_lapsed_claim_is_not_sent_by_its_old_owner(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await _queue_request(chat)
    slow, fast = Recorder(), Recorder()
    first = Outbox(demo_db, clock, {"console": slow})
    token, items = await first._claim(10)
    assert len(items) == 1
    clock.advance(minutes=3)  # the first instance stalled past its claim
    second = Outbox(demo_db, clock, {"console": fast})
    assert await second.deliver_due() == 1
    assert not await first._extend(items[0].id, token)
    assert fast.sent and not slow.sent


async def test_replies_are_sent_by_whoever_handled_them_until_the_lease_ends(
    core: Core, clock: FrozenClock
) -> None:
    inc = Incoming(platform="slack", user_id="T1/U1", chat_id="U1", text="/help")
    inbox_id = await core.receive("slack", "ev:1", inc.to_dict())
    assert inbox_id is not None
    assert [r.key for r in await core.handle(inc, inbox_id)] == ["network.help"]
    assert not await core.take_delivery(inbox_id)  # the handler is sending them
    clock.advance(minutes=11)  # ... or died: another may take over, once
    assert await core.take_delivery(inbox_id)
    assert not await core.take_delivery(inbox_id)
    await core.mark_replied(inbox_id)
    clock.advance(minutes=30)
    assert not await core.take_delivery(inbox_id)


async def test_a_stopping_outbox_hands_back_what_it_has_not_sent(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await _queue_request(chat)
    await chat.say("/start", as_="9002", platform="telegram")  # a second request, a second notice
    for answer in ("Uruguay", "Rosa", "Adviser", "MFA", "rosa@example.org"):
        await chat.say(answer, as_="9002", platform="telegram")
    recorder = Recorder()
    outbox = Outbox(demo_db, clock, {"console": recorder})
    outbox.stop()
    assert await outbox.deliver_due() == 0 and recorder.sent == []
    async with demo_db.transaction() as session:
        items = list(await session.scalars(select(OutboxItem)))
    assert len(items) == 2 and all(i.claimed_by is None and i.sent_at is None for i in items)
    assert await Outbox(demo_db, clock, {"console": recorder}).deliver_due() == 2
