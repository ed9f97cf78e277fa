"""The one sender: every outbox row (reply, notice, reminder, digest) goes out through here.

A sweep claims due rows for this instance, lane by lane, and hands each lane to a task that
sends its rows one after the other, in id order (a five-part reply keeps its order; one slow
chat keeps no one else waiting). Before each send the claim is checked in the store (still
ours, our instance still alive); the send itself runs with no transaction open; the row is then
marked sent. A multi-part reply interrupted by a crash resumes at its first unsent row.

- Temporary failure: a `retry_after` up to `max_wait` is waited out while holding the claim
  (our heartbeat goes on, so nobody takes the row), and so are a few quick retries of a blip;
  then the row waits a growing backoff (the rest of its lane behind it), and after
  `max_attempts` it is recorded as failed.
- Permanent failure: recorded on the row and on the account ("unreachable on Telegram since
  ..."); a notice for a person then tries their other linked platform.
- The store failing after a send: the "sent" mark is retried until it lands; it is never sent
  again by this process. Only a crash in that window (or a heartbeat stall during a send)
  can send a row twice: delivery is at-least-once there, exactly-once everywhere else.
- Except on a platform that can be read back (Slack: `Channel.reads_back`). Before such a
  send the row notes it (`SENDING`); a row found so noted when it is sent again (after a
  crash, a timeout, a failure) is "unsure" (`Parts.unsure`), and the adapter first looks for
  what of it is already in the conversation, then sends only the rest. The Bot API cannot
  read a chat back, so on Telegram the window stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from bot.delivery.batches import GroupCommit
from bot.delivery.errors import DeliveryFailure, Parts, PermanentFailure, TemporaryFailure
from bot.delivery.liveness import Liveness
from bot.delivery.stopping import finish
from handlers.clock import Clock
from handlers.dispatch import STORE_ERRORS
from handlers.types import Outgoing
from storage.db import Database
from storage.models import Identity, Instance, OutboxItem

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
MAX_WAIT = 60.0  # seconds of retry_after waited out in place
QUICK_RETRIES = 3  # a blip (5xx, a dropped connection) is retried in place this many times...
QUICK_PAUSE = 0.5  # ...after 0.5, 1, 2 s; then the row waits a backoff (and frees its lane)
MAX_BACKOFF = timedelta(hours=1)
BATCH = 500
# Sends per platform in flight or sent-but-not-yet-marked at once: what a crash can send twice.
# 8 keeps Telegram's 30 a second with 250 ms per send and its mark, and Slack's 300 a minute.
MAX_IN_FLIGHT = 8


class Channel(Protocol):
    """What the sender needs of an adapter."""

    platform: str
    reads_back: bool  # can tell what of a row already is in a conversation (Parts.unsure)

    def reaches(self, chat_id: str) -> bool: ...

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None: ...


def backoff(attempts: int, first: float = 2.0) -> timedelta:
    return min(timedelta(seconds=first * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


# Built once: each row sent runs them (see `handlers.dispatch`). The claim checked right
# before the send (still ours, our instance alive), counted as an attempt, the row returned.
_me: Any = bindparam("take_me")
_TAKE = (update(OutboxItem)
         .where(OutboxItem.id == bindparam("take_id"), OutboxItem.claimed_by == _me,
                OutboxItem.status == "pending", exists(select(Instance.id).where(Instance.id == _me)))
         .values(attempts=OutboxItem.attempts + 1)
         .returning(OutboxItem)
         .execution_options(synchronize_session=False))
_ACCOUNTS = (select(Identity).where(Identity.person_id == bindparam("accounts_of"))
             .options(joinedload(Identity.person)))

PARTS = "parts_sent"  # in an outbox row's extras: {"platform": ..., "n": parts already out}
SENDING = "sending_on"  # in an outbox row's extras: the platform a send of it was begun on


class Undeliverable(Exception):
    """No running adapter reaches the person (yet)."""


class _NotNoted(Exception):
    """The store failed while a send was being noted on its row (`Sender._note_sending`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sender:
    """Claims due outbox rows and sends them through the adapters."""

    def __init__(self, db: Database, clock: Clock, liveness: Liveness,
                 channels: Mapping[str, Channel] | None = None, *,
                 max_attempts: int = MAX_ATTEMPTS, max_wait: float = MAX_WAIT,
                 first_backoff: float = 2.0, quick_retries: int = QUICK_RETRIES,
                 quick_pause: float = QUICK_PAUSE, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.db = db
        self.clock = clock
        self.liveness = liveness
        self.channels: dict[str, Channel] = dict(channels or {})
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.first_backoff = first_backoff
        self.quick_retries = quick_retries
        self.quick_pause = quick_pause
        # Sends in flight at once per platform, all lanes together, each slot held until its
        # send is marked: the platforms pace us anyway, and at most this many rows
        # sent-but-not-yet-marked keep the at-least-once window after a crash small. Per
        # platform, so that one waiting out its rate limits (Slack's tiers) holds back none
        # of the other's sends. The store work around the sends (claim,
        # address) is bounded the same way, for all platforms together.
        self.max_in_flight = max_in_flight
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._sending: dict[str, asyncio.Semaphore] = {}
        self._marks = GroupCommit(self._write_marks, name="outbox-marks")
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._lanes: dict[str, deque[int]] = {}
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._queued: set[int] = set()
        self._unreleased: set[int] = set()  # claimed, out of hand, not handed back yet
        self._sweep_lock = asyncio.Lock()
        self._runner: asyncio.Task[object] | None = None
        self.refusing = False  # the store was replaced under us: send nothing from it

    # -- claiming -----------------------------------------------------------------------
    async def sweep(self, limit: int = BATCH) -> int:
        """Claim what is due now and start sending it; returns how many rows were claimed.

        The rows looked at are the oldest pending ones not already in our hands: a platform
        slow to take its rows (Slack's 300 a minute) never fills the window and holds back
        the rows of another behind them, and a backlog in hand is not read again at each
        sweep (it was, and a burst of 3,000 replies paced at 30 a second made each sweep read
        all of them). Only a sweep that finds nothing new looks at our own claims, for one
        that no lane holds any more (found under stress in a kill-and-restart test: a row
        left claimed by us was never sent)."""
        async with self._sweep_lock:
            if self.refusing or not self.liveness.fresh():
                return 0
            me = self.liveness.id
            now = self.clock.now()
            if self._unreleased:  # what a failing store kept us from handing back
                ids = sorted(self._unreleased)
                await self._release(ids)
                self._unreleased.difference_update(ids)
            async with self.db.transaction() as session:
                if not self.db.is_sqlite:  # one claimer at a time across instances
                    await session.execute(text("SELECT pg_advisory_xact_lock(900900)"))
                alive = set(await session.scalars(select(Instance.id)))
                rows = (await session.execute(
                    select(OutboxItem.id, OutboxItem.lane, OutboxItem.not_before,
                           OutboxItem.claimed_by, OutboxItem.person_id, OutboxItem.platform)
                    .where(OutboxItem.status == "pending",
                           (OutboxItem.not_before <= now) | (OutboxItem.attempts > 0)
                           | OutboxItem.claimed_by.is_not(None),
                           OutboxItem.claimed_by.is_(None) | (OutboxItem.claimed_by != me))
                    .order_by(OutboxItem.id).limit(limit))).all()
                blocked: set[str] = set()
                take: list[int] = []
                for r in rows:
                    if r.lane in blocked or r.id in self._queued:
                        continue
                    held_elsewhere = r.claimed_by not in (None, me) and r.claimed_by in alive
                    foreign = r.person_id is None and r.platform not in self.channels
                    if held_elsewhere or r.not_before > now or foreign:
                        blocked.add(r.lane)  # its earlier rows go first
                        continue
                    take.append(r.id)
                if not take:  # nothing new: our own claims that no lane holds, if any
                    take = [row_id for row_id in await session.scalars(
                        select(OutboxItem.id)
                        .where(OutboxItem.status == "pending", OutboxItem.claimed_by == me)
                        .order_by(OutboxItem.id)) if row_id not in self._queued]
                    if take:
                        log.info("outbox: %s row(s) claimed by us and held by no lane; "
                                 "taken again", len(take))
                if not take:
                    return 0
                claimed = sorted((await session.execute(
                    update(OutboxItem)
                    .where(OutboxItem.id.in_(take), OutboxItem.status == "pending",
                           OutboxItem.claimed_by.is_(None) | (OutboxItem.claimed_by == me)
                           | OutboxItem.claimed_by.not_in(select(Instance.id)))
                    .values(claimed_by=me)
                    .returning(OutboxItem.id, OutboxItem.lane)
                    .execution_options(synchronize_session=False))).all())
            for row in claimed:
                self._queue(row.lane, row.id)
            return len(claimed)

    def _queue(self, lane: str, row_id: int) -> None:
        self._queued.add(row_id)
        self._idle.clear()
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = deque()
            self._lane_tasks[lane] = asyncio.create_task(self._run_lane(lane, queue),
                                                         name=f"send-{lane}")
        queue.append(row_id)

    async def _run_lane(self, lane: str, queue: deque[int]) -> None:
        try:
            while queue:
                row_id = queue[0]
                try:
                    go_on = await self._send_one(row_id)
                except STORE_ERRORS as exc:
                    log.warning("outbox row %s not sent now (store unavailable: %s)", row_id,
                                type(exc).__name__)
                    go_on = False
                except Exception:
                    log.exception("outbox row %s: unexpected error; tried again later", row_id)
                    go_on = False
                queue.popleft()
                self._queued.discard(row_id)
                if not go_on:  # the rest of the lane waits behind this row
                    rest = list(queue)
                    queue.clear()
                    self._queued.difference_update(rest)
                    try:
                        await self._release([row_id, *rest])
                    except STORE_ERRORS:
                        self._unreleased.update([row_id, *rest])
        finally:
            self._lanes.pop(lane, None)
            self._lane_tasks.pop(lane, None)
            if not self._lanes:
                self._idle.set()
                self.wake.set()  # what waited behind these lanes may be due now

    async def _release(self, ids: list[int]) -> None:
        if not ids:
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxItem).where(OutboxItem.id.in_(ids),
                                         OutboxItem.claimed_by == self.liveness.id,
                                         OutboxItem.status == "pending")
                .values(claimed_by=None))

    # -- sending one row ----------------------------------------------------------------
    async def _take(self, row_id: int) -> tuple[OutboxItem, list[Identity]] | None:
        """Our claim, checked right before sending: the row and its recipient's accounts (in
        the same transaction), or None if the row is not ours now."""
        if self.stopping.is_set() or not self.liveness.fresh():
            return None
        async with self.db.transaction() as session:
            item = (await session.execute(
                _TAKE, {"take_id": row_id, "take_me": self.liveness.id})).scalar_one_or_none()
            if item is None:
                return None
            return item, await self._accounts(session, item)

    @staticmethod
    async def _accounts(session: AsyncSession, item: OutboxItem) -> list[Identity]:
        """The accounts of the row's recipient (none for a row to a chat)."""
        if item.person_id is None:
            return []
        return list((await session.scalars(
            _ACCOUNTS, {"accounts_of": item.person_id})).unique())

    async def _address(self, item: OutboxItem, tried: list[str],
                       identities: list[Identity] | None = None
                       ) -> tuple[Channel, str, str, str]:
        """The adapter and chat that reach the row's recipient, with locale and time zone
        (`identities`: their accounts, when already read)."""
        message = item.message.get("context", {})
        if item.person_id is None:
            channel = self.channels.get(item.platform or "")
            if channel is None or not item.chat_id or not channel.reaches(item.chat_id):
                raise Undeliverable(f"no running {item.platform} adapter")
            return (channel, item.chat_id, str(message.get("locale") or "en"),
                    str(message.get("tz") or "UTC"))
        if identities is None:
            async with self.db.transaction() as session:
                identities = await self._accounts(session, item)
        reachable = [
            i for i in identities
            if i.platform in self.channels and i.chat_id and i.unreachable_since is None
            and i.platform not in tried and self.channels[i.platform].reaches(i.chat_id)]
        if not reachable:
            raise Undeliverable("the person has no reachable account")
        # A platform account beats the console; the one used last wins.
        best = max(reachable, key=lambda i: (i.platform != "console",
                                             i.last_seen_at or i.created_at))
        return (self.channels[best.platform], best.chat_id, best.person.locale,
                best.person.timezone)

    async def _message(self, item: OutboxItem) -> Outgoing:
        out = Outgoing.from_dict(item.message)
        alternative = item.extras.get("if_refused")
        if alternative and item.inbox_id is not None:  # a sibling refused for good?
            async with self.db.transaction() as session:
                refused = await session.scalar(
                    select(OutboxItem.id).where(OutboxItem.inbox_id == item.inbox_id,
                                                OutboxItem.id != item.id,
                                                OutboxItem.status == "failed").limit(1))
            if refused is not None:
                out = replace(out, key=str(alternative))
        return out

    async def _send_one(self, row_id: int) -> bool:
        """Send one claimed row; False when the rest of its lane must wait."""
        item: OutboxItem | None = None
        tried: list[str] = []
        waited = 0.0
        quick = 0
        while True:
            try:
                # The claim checked and the row addressed in one turn: a lane that gave its
                # slot back in between queued again behind every other lane's check, and a
                # fan-out sent nothing until each of its rows (Slack's 1,000 too) was checked.
                async with self._in_flight:
                    accounts: list[Identity] | None = None
                    if item is None:
                        taken = await self._take(row_id)
                        if taken is None:
                            return not self.stopping.is_set() and self.liveness.fresh()
                        item, accounts = taken
                        tried = list(item.extras.get("tried", []))
                    channel, chat_id, locale, tz = await self._address(item, tried, accounts)
                    out = await self._message(item)
            except Undeliverable as exc:
                assert item is not None  # raised by `_address`, once the row is ours
                if tried:  # refused for good on every platform it has
                    await self._give_up(item)
                    return True
                await self._later(item, str(exc), count=False)
                return False
            extras = {k: v for k, v in item.extras.items() if k not in (PARTS, SENDING)}
            slots = self._sending.setdefault(channel.platform,
                                             asyncio.Semaphore(self.max_in_flight))
            try:
                async with slots:  # held until the send is marked: see MAX_IN_FLIGHT
                    parts = self._parts(item, channel.platform)
                    if getattr(channel, "reads_back", False) and not parts.unsure:
                        await self._note_sending(item, channel.platform)
                    await channel.deliver(chat_id, out, locale=locale, tz=tz, extras=extras,
                                          parts=parts)
                    await self._mark_sent(item.id, channel.platform)
            except TemporaryFailure as exc:
                wait = exc.retry_after or 0.0
                if not wait and quick < self.quick_retries:
                    wait = self.quick_pause * 2 ** quick
                    quick += 1
                if 0 < wait and waited + wait <= self.max_wait and not self.stopping.is_set():
                    log.info("outbox row %s: %s; trying again in %.1f s", item.id, exc.reason,
                             wait)
                    waited += wait
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):  # not wait_for: see storage/db.py
                            await self.stopping.wait()
                    if await self._still_ours(item.id):
                        continue
                    return False
                await self._later(item, f"{channel.platform}: {exc.reason}")
                return False
            except PermanentFailure as exc:
                await self._refused(item, channel.platform, chat_id, exc.reason)
                if item.person_id is not None:
                    tried.append(channel.platform)
                    continue  # their other linked platform, if any
                return True
            except DeliveryFailure as exc:  # pragma: no cover - the two kinds above
                await self._later(item, exc.reason)
                return False
            except _NotNoted as exc:  # nothing sent: the row and its lane are handed back
                log.warning("outbox row %s not sent now (store unavailable: %s)", item.id,
                            exc.reason)
                return False
            except Exception as exc:  # an adapter bug: retried a few times, then failed
                log.exception("outbox row %s: the %s adapter failed", item.id, channel.platform)
                await self._later(item, f"{channel.platform}: {type(exc).__name__}")
                return False
            return True

    def _parts(self, item: OutboxItem, platform: str) -> Parts:
        """The parts of this row already out on `platform`; each further one is recorded."""
        done = item.extras.get(PARTS) or {}
        sent = int(done.get("n", 0)) if done.get("platform") == platform else 0

        async def record(n: int) -> None:
            item.extras = {**item.extras, PARTS: {"platform": platform, "n": n}}
            try:
                async with self.db.transaction() as session:
                    await session.execute(
                        update(OutboxItem).where(OutboxItem.id == item.id,
                                                 OutboxItem.status == "pending")
                        .values(extras=item.extras))
            except STORE_ERRORS as exc:  # kept in memory: a crash now resends these parts
                log.warning("outbox row %s: parts sent not recorded (store unavailable: %s)",
                            item.id, type(exc).__name__)

        return Parts(sent, record, row=item.id,
                     unsure=item.extras.get(SENDING) == platform)

    async def _note_sending(self, item: OutboxItem, platform: str) -> None:
        """Note on the row, before its send begins, that it may be out on `platform` from
        now on: a process taking it over after a crash looks for it there first. Raises
        `_NotNoted` when the store fails (and nothing is sent)."""
        extras = {**item.extras, SENDING: platform}
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(OutboxItem).where(OutboxItem.id == item.id,
                                             OutboxItem.status == "pending")
                    .values(extras=extras))
        except STORE_ERRORS as exc:
            raise _NotNoted(type(exc).__name__) from exc
        item.extras = extras

    async def _still_ours(self, row_id: int) -> bool:
        async with self.db.transaction() as session:
            holder = await session.scalar(select(OutboxItem.claimed_by)
                                          .where(OutboxItem.id == row_id,
                                                 OutboxItem.status == "pending"))
        return holder == self.liveness.id and self.liveness.fresh()

    async def _mark_sent(self, row_id: int, platform: str) -> None:
        """Record the send; while the store fails, keep trying (never send it again). Any
        failure counts here, not only an outage: a row left unmarked would be sent twice
        (seen with PostgreSQL's "too many clients", which is no OperationalError)."""
        pause = 0.05
        while True:
            try:
                await self._marks((row_id, platform))  # with the others sent meanwhile
                return
            except Exception as exc:  # any failure, see above
                log.warning("outbox row %s sent but not yet marked (store failing: %s); "
                            "retrying in %.1f s", row_id, type(exc).__name__, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _write_marks(self, sent: Sequence[tuple[int, str]]) -> list[None]:
        """Mark a batch of rows sent, in one transaction."""
        table: Any = OutboxItem.__table__
        now = self.clock.now()
        async with self.db.transaction() as session:
            connection = await session.connection()
            await connection.execute(
                update(table).where(table.c.id == bindparam("row"),
                                    table.c.status == "pending")
                .values(status="sent", sent_at=now, sent_via=bindparam("via"),
                        claimed_by=None),
                [{"row": row_id, "via": platform} for row_id, platform in sent])
        return [None] * len(sent)

    async def _later(self, item: OutboxItem, reason: str, *, count: bool = True) -> None:
        """Try again after a growing pause; after `max_attempts` failures, record it failed."""
        now = self.clock.now()
        failed = count and item.attempts >= self.max_attempts
        values: dict[str, Any] = {"claimed_by": None, "last_error": reason[:500]}
        if failed:
            values.update(status="failed", failed_at=now)
            log.error("outbox row %s given up after %s attempts: %s", item.id, item.attempts,
                      reason)
        else:
            values["not_before"] = now + backoff(item.attempts, self.first_backoff)
            log.warning("outbox row %s not delivered (attempt %s): %s", item.id, item.attempts,
                        reason)
        async with self.db.transaction() as session:
            await session.execute(update(OutboxItem).where(OutboxItem.id == item.id,
                                                           OutboxItem.claimed_by == self.liveness.id)
                                  .values(**values))

    async def _give_up(self, item: OutboxItem) -> None:
        async with self.db.transaction() as session:
            await session.execute(update(OutboxItem).where(OutboxItem.id == item.id)
                                  .values(status="failed", failed_at=self.clock.now(),
                                          claimed_by=None))

    async def _refused(self, item: OutboxItem, platform: str, chat_id: str, reason: str) -> None:
        """A permanent refusal: on the account ("unreachable since"), and on the row."""
        now = self.clock.now()
        log.warning("outbox row %s refused for good by %s: %s", item.id, platform, reason)
        async with self.db.transaction() as session:
            await session.execute(
                update(Identity).where(Identity.platform == platform, Identity.chat_id == chat_id,
                                       Identity.unreachable_since.is_(None))
                .values(unreachable_since=now, unreachable_reason=reason[:200]))
            tried = [*item.extras.get("tried", []), platform]
            await session.execute(
                update(OutboxItem).where(OutboxItem.id == item.id)
                .values(status="failed" if item.person_id is None else "pending",
                        failed_at=now, last_error=f"{platform}: {reason}"[:500],
                        extras={**item.extras, "tried": tried}))
        item.extras = {**item.extras, "tried": tried}

    # -- the loop -----------------------------------------------------------------------
    def poke(self) -> None:
        """Something was just queued: sweep now."""
        self.wake.set()

    async def run(self, every: float = 1.0) -> None:
        """Sweep until stopped: at once when poked, else every `every` seconds."""
        self._runner = asyncio.current_task()
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                while await self.sweep() and not self.stopping.is_set():
                    pass
            except STORE_ERRORS as exc:
                log.warning("outbox sweep: store unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("outbox sweep failed; retrying")
            if not self._lanes:
                self._idle.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self.wake.wait()

    async def flush(self) -> int:
        """Send everything due now and wait for it (the console, tests); returns rows claimed."""
        total = 0
        while True:
            claimed = await self.sweep()
            total += claimed
            if self._lane_tasks:
                await asyncio.gather(*list(self._lane_tasks.values()), return_exceptions=True)
            elif not claimed:
                return total

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until nothing due is left to send (tests)."""
        async def settle() -> None:
            while True:
                if self._lane_tasks:
                    await asyncio.gather(*list(self._lane_tasks.values()),
                                         return_exceptions=True)
                    continue
                if not await self.sweep():
                    if not self._lane_tasks:
                        return
        async with asyncio.timeout(timeout):
            await settle()

    async def stop(self, grace: float = 10.0) -> None:
        """Let the sweep in hand end, finish the sends in flight (up to `grace` s), hand back
        the rest."""
        self.stopping.set()
        self.wake.set()
        await finish([self._runner], grace)
        self._runner = None
        tasks = list(self._lane_tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await finish([self._marks.task], grace)  # what was sent is marked before we go
        left = sorted(self._queued | self._unreleased)
        self._queued.clear()
        self._unreleased.clear()
        with contextlib.suppress(*STORE_ERRORS):
            await self._release(left)
