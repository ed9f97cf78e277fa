"""The way in, shared by every adapter: keep, then acknowledge, then handle once.

An adapter turns a platform request into an `Incoming` plus its inbox key and calls
`receive()` before it acknowledges the platform; `receive()` writes the item to the inbox
within a short timeout (a locked store must not hold Slack's 3-second ack). Items are then
handled in lanes, one per person (their messages keep their order; others are not kept
waiting): the core marks the item handled and writes its replies to the outbox in one
transaction, and the sender takes it from there. Handling takes turns (`turns.Turns`): a few
at once, and while requests are arriving one per `RECEIPTS_PER_TURN` answered, so that a burst
of webhooks is answered as soon as each is kept, not after the handling of the ones before it.

An item claimed by an instance that died is taken over by `drain()`, which runs at start and
every few seconds. A store outage while handling gets the person one apology (sent directly:
the store cannot keep it) and the item is retried with a growing pause while the process lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import select, update

from bot.delivery.batches import GroupCommit
from bot.delivery.errors import DeliveryFailure, Parts
from bot.delivery.liveness import Liveness
from bot.delivery.stopping import finish
from bot.delivery.turns import Turns
from handlers.dispatch import STORE_ERRORS, Core
from handlers.types import MAX_TEXT, STORE_OUTAGE, Incoming, Outgoing, Route, is_store_outage
from storage.models import InboxItem, Instance
from storage.upsert import insert_ignore

log = logging.getLogger(__name__)

RECEIPT_TIMEOUT = 1.5  # seconds a receipt may take before the platform is answered anyway
LATE_RECEIPT_FOR = 60.0  # seconds a slow receipt is retried in the background
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
DRAIN_EVERY = 2.0
# Per person: a burst of this many messages, then one every RATE_PERIOD seconds.
RATE_BURST = 60
RATE_PERIOD = 0.5
HANDLING_SLOTS = 8  # items handled at once (one while requests are arriving: `Turns`)
RECEIPTS_PER_TURN = 16  # while requests arrive, a handling turn per this many answered


class StoreRefused(ConnectionError):
    """The store under the bot is not the one it opened (replaced, deleted): no writes."""


class ReceiptDelayed(TimeoutError):
    """The store did not take a request within the receipt timeout. The platform must be
    answered anyway; the write goes on in the background (kept and handled if it lands)."""


class Receiver(Protocol):
    """What the inbound path needs of an adapter (besides sending, see `sender.Channel`)."""

    platform: str

    def plan(self, inc: Incoming, replies: list[Outgoing],
             hints: Mapping[str, Any]) -> Sequence[Route]: ...

    async def prepare(self, inc: Incoming) -> Incoming: ...

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None: ...


RECEIPT_BATCH = 200  # requests written in one transaction at most
SEEN = -1  # a receipt's result: the inbox has that request already


def _seen(receipt: asyncio.Future[int | None]) -> bool:
    """Whether a written receipt found its request in the inbox already."""
    return not receipt.cancelled() and receipt.exception() is None and receipt.result() == SEEN


@dataclass(frozen=True)
class _Receipt:
    platform: str
    key: str
    payload: dict[str, Any]


@dataclass
class _Job:
    platform: str
    inbox_id: int
    inc: Incoming
    hints: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    apologised: bool = False


@dataclass
class _Bucket:
    tokens: float
    at: float
    told: bool = False


class Inbound:
    """Receipt, handling and the drain, for every adapter."""

    def __init__(self, core: Core, liveness: Liveness, *,
                 receipt_timeout: float = RECEIPT_TIMEOUT, retry_first: float = RETRY_FIRST,
                 drain_every: float = DRAIN_EVERY, rate: tuple[int, float] | None = (
                     RATE_BURST, RATE_PERIOD)) -> None:
        self.core = core
        self.db = core.db
        self.clock = core.clock
        self.liveness = liveness
        self.receipt_timeout = receipt_timeout
        self.retry_first = retry_first
        self.drain_every = drain_every
        self.rate = rate
        self.receivers: dict[str, Receiver] = {}
        self.turns = Turns(HANDLING_SLOTS, RECEIPTS_PER_TURN)
        self._lanes: dict[tuple[str, str], asyncio.Queue[_Job]] = {}
        self._lane_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._in_hand: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._late: set[asyncio.Task[None]] = set()
        self._receipts = GroupCommit(self._write_receipts, name="inbox-receipts",
                                     limit=RECEIPT_BATCH)
        self._runner: asyncio.Task[object] | None = None
        self.refusing = False  # the store was replaced under us: take nothing in

    # -- receipt ------------------------------------------------------------------------
    async def receive(self, platform: str, key: str, inc: Incoming,
                      hints: Mapping[str, Any] | None = None, *,
                      timeout: float | None = None, handle: bool = True) -> int | None:
        """Keep a request before it is acknowledged, and start handling it (unless `handle`
        is False: the caller handles it with `handle_now`); None when it was seen before (a
        redelivery: acknowledge it, do nothing). Raises on a store failure or after `timeout`
        seconds: the platform must then not be told it arrived.

        A text over the core's limit is kept cut short, with its "too long" answer: a huge
        payload is never stored whole."""
        if self.refusing:
            raise StoreRefused("the database was replaced under the bot")
        hints = dict(hints or {})
        if len(inc.text) > MAX_TEXT:
            hints["refuse"] = Outgoing("errors.too_long",
                                       {"limit": MAX_TEXT, "length": len(inc.text)}).to_dict()
            inc = replace(inc, text=inc.text[:200])
        payload = {"incoming": inc.to_dict(), "hints": hints}
        receipt = self._receipts.submit(_Receipt(platform, key, payload))
        wait = timeout or self.receipt_timeout
        give_up = time.monotonic() + wait
        with self.turns.arrival():  # handling yields to answering until this is answered
            done, _ = await asyncio.wait({receipt}, timeout=wait)
            if done and _seen(receipt):  # a redelivery: still to handle, or taken over?
                receipt = asyncio.ensure_future(self._kept(platform, key, SEEN))
                done, _ = await asyncio.wait({receipt},
                                             timeout=max(give_up - time.monotonic(), 0.001))
        if not done:  # the store is slow: keep trying while we live, answer the platform now
            task = asyncio.create_task(self._keep_late(receipt, platform, key, payload, handle))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            raise ReceiptDelayed(f"the store did not take a {platform} request in time")
        inbox_id = receipt.result()
        if inbox_id is not None and handle:
            self.submit(platform, inbox_id, inc, hints)
        return inbox_id

    async def _keep_late(self, receipt: asyncio.Future[int | None], platform: str, key: str,
                         payload: dict[str, Any], handle: bool) -> None:
        """Finish keeping a request whose receipt was slow (retrying the write for a while);
        once kept it is handled like any other."""
        deadline = time.monotonic() + LATE_RECEIPT_FOR
        inbox_id: int | None = None
        keeping: asyncio.Future[int | None] = receipt
        while True:
            try:
                inbox_id = await self._kept(platform, key, await keeping)
                break
            except STORE_ERRORS as exc:
                if time.monotonic() >= deadline or self._stopping.is_set():
                    log.error("a %s request could not be kept (%s): the person was asked to "
                              "send it again", platform, type(exc).__name__)
                    return
                await asyncio.sleep(0.5)
                keeping = self._receipts.submit(_Receipt(platform, key, payload))
        if inbox_id is not None:
            log.info("a slow %s receipt was kept in the end (inbox item %s)", platform, inbox_id)
            self.submit(platform, inbox_id, Incoming.from_dict(payload["incoming"]),
                        payload["hints"])

    async def _kept(self, platform: str, key: str, inbox_id: int | None) -> int | None:
        """What the receipt of a request (`_write_receipts`) comes to: its inbox id, or None
        when it was seen before (and is handled, or in someone's hands)."""
        if inbox_id == SEEN:  # in the inbox already: handled, or still in someone's hands
            return await self._seen_before(platform, key)
        return inbox_id

    async def _write_receipts(self, batch: Sequence[_Receipt]) -> list[int | None]:
        """Insert a batch of requests in one transaction: each one's id, SEEN for one the
        inbox has already, None for the second of the same request in one burst. Requests
        arriving together are written together (`GroupCommit`): one transaction for a burst,
        not one each; nothing is acknowledged before its own row is in."""
        first: dict[tuple[str, str], _Receipt] = {}
        for r in batch:
            first.setdefault((r.platform, r.key), r)
        now, me = self.clock.now(), self.liveness.id
        async with self.db.transaction(urgent=True) as session:  # the platform waits
            written = await insert_ignore(session, InboxItem, [
                {"platform": r.platform, "key": r.key, "payload": r.payload,
                 "received_at": now, "attempts": 0, "claimed_by": me}
                for r in first.values()], returning=("id", "platform", "key"))
        ids = {(platform, key): inbox_id for inbox_id, platform, key in written}
        return [ids.get((r.platform, r.key), SEEN) if first[(r.platform, r.key)] is r
                else None for r in batch]

    async def _seen_before(self, platform: str, key: str) -> int | None:
        """A request the inbox has: None when handled or in hand; else it is taken over."""
        async with self.db.reading() as session:
            existing = (await session.execute(
                select(InboxItem.id, InboxItem.handled_at)
                .where(InboxItem.platform == platform, InboxItem.key == key))).first()
        if existing is None or existing.handled_at is not None:
            return None
        return None if existing.id in self._in_hand else await self._take_over(existing.id)

    async def _take_over(self, inbox_id: int) -> int | None:
        """Claim an unhandled item unless a live instance (other than us) holds it."""
        me = self.liveness.id
        async with self.db.transaction() as session:
            result = await session.execute(
                update(InboxItem)
                .where(InboxItem.id == inbox_id, InboxItem.handled_at.is_(None),
                       InboxItem.claimed_by.is_(None) | (InboxItem.claimed_by == me)
                       | InboxItem.claimed_by.not_in(select(Instance.id)))
                .values(claimed_by=me))
        return inbox_id if getattr(result, "rowcount", 0) else None

    # -- handling -----------------------------------------------------------------------
    def submit(self, platform: str, inbox_id: int, inc: Incoming,
               hints: Mapping[str, Any] | None = None) -> None:
        """Handle a kept item in its person's lane (unless it is in hand already)."""
        if inbox_id in self._in_hand or self._stopping.is_set():
            return
        self._in_hand.add(inbox_id)
        self._idle.clear()
        job = _Job(platform, inbox_id, inc, dict(hints or {}))
        key = (platform, inc.user_id or f"item:{inbox_id}")
        queue = self._lanes.get(key)
        if queue is None:
            queue = self._lanes[key] = asyncio.Queue()
            self._lane_tasks[key] = asyncio.create_task(self._run_lane(key, queue),
                                                        name=f"inbox-{platform}")
        queue.put_nowait(job)

    async def _process_logged(self, job: _Job) -> bool:
        """`_process`, with a bug logged and the item kept for another try, not a dead lane."""
        try:
            return await self._process(job)
        except Exception:
            log.exception("inbox item %s could not be handled; it is kept and retried",
                          job.inbox_id)
            return False

    async def _run_lane(self, key: tuple[str, str], queue: asyncio.Queue[_Job]) -> None:
        try:
            while not queue.empty():
                job = queue.get_nowait()
                while not await self._process_logged(job):
                    job.attempt += 1
                    pause = min(self.retry_first * 2 ** (job.attempt - 1), RETRY_MAX)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):  # not wait_for: see storage/db.py
                            await self._stopping.wait()
                    if self._stopping.is_set():
                        self._done(job.inbox_id)
                        while not queue.empty():  # kept in the inbox for the next start
                            self._done(queue.get_nowait().inbox_id)
                        return
                self._done(job.inbox_id)
        finally:
            self._lanes.pop(key, None)
            self._lane_tasks.pop(key, None)
            if not self._lanes:
                self._idle.set()

    def _done(self, inbox_id: int) -> None:
        self._in_hand.discard(inbox_id)

    def _flooding(self, job: _Job) -> bool:
        """A person over the rate limit (a burst, then one message a period)."""
        if self.rate is None:
            return False
        burst, period = self.rate
        now = time.monotonic()
        key = (job.platform, job.inc.user_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) / period)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            bucket.told = False
            return False
        return True

    async def _process(self, job: _Job) -> bool:
        """Handle one item; False when it must be tried again later (the store is down)."""
        receiver = self.receivers.get(job.platform)
        if receiver is None:
            return True  # that adapter stopped: the item stays for whoever runs it
        hints = job.hints

        def plan(inc: Incoming, replies: list[Outgoing]) -> Sequence[Route]:
            return receiver.plan(inc, replies, hints)

        try:
            answer: list[Outgoing] | None = None
            if self._flooding(job):
                bucket = self._buckets[(job.platform, job.inc.user_id)]
                told, bucket.told = bucket.told, True
                answer = [] if told else [Outgoing("delivery.slow_down")]
            elif refusal := hints.get("refuse"):
                answer = [Outgoing.from_dict(refusal)]
            if answer is not None:
                async with self.turns.turn():
                    await self.core.answer(job.inc, job.inbox_id, answer, plan=plan)
                return True
            inc = await receiver.prepare(job.inc)  # a file download: network, not a turn
            async with self.turns.turn():
                replies = await self.core.handle(inc, job.inbox_id, plan=plan)
        except STORE_ERRORS as exc:
            log.warning("inbox item %s: store unavailable (%s); trying again later",
                        job.inbox_id, type(exc).__name__)
            replies = [Outgoing(STORE_OUTAGE)]
        if is_store_outage(replies):
            if not job.apologised:
                job.apologised = True
                with contextlib.suppress(DeliveryFailure, Exception):
                    await receiver.deliver(job.inc.chat_id, Outgoing(STORE_OUTAGE),
                                           locale=job.inc.locale or "en", tz="UTC", extras={})
            return False
        return True

    async def handle_now(self, platform: str, inbox_id: int, inc: Incoming,
                         hints: Mapping[str, Any]) -> list[Outgoing]:
        """Handle an item inside the request (a Slack modal, whose ack may carry errors)."""
        receiver = self.receivers[platform]
        self._in_hand.add(inbox_id)
        try:
            inc = await receiver.prepare(inc)
            return await self.core.handle(
                inc, inbox_id, plan=lambda i, r: receiver.plan(i, r, hints))
        finally:
            self._in_hand.discard(inbox_id)

    # -- take-overs and retries ---------------------------------------------------------
    async def drain(self) -> int:
        """Handle what is kept but unhandled and not held by a live instance; returns how many."""
        if not self.receivers or not self.liveness.fresh():
            return 0
        me = self.liveness.id
        async with self.db.transaction() as session:
            free = (InboxItem.claimed_by.is_(None) | (InboxItem.claimed_by == me)
                    | InboxItem.claimed_by.not_in(select(Instance.id)))
            ids = [i for i in await session.scalars(
                select(InboxItem.id).where(InboxItem.platform.in_(list(self.receivers)),
                                           InboxItem.handled_at.is_(None), free)
                .order_by(InboxItem.id).limit(1000)) if i not in self._in_hand]
            if not ids:
                return 0
            await session.execute(update(InboxItem).where(InboxItem.id.in_(ids), free)
                                  .values(claimed_by=me))
            items = list(await session.scalars(
                select(InboxItem).where(InboxItem.id.in_(ids), InboxItem.claimed_by == me)
                .order_by(InboxItem.id)))
        for item in items:
            try:
                inc = Incoming.from_dict(item.payload["incoming"])
            except (KeyError, TypeError, ValueError):
                log.error("inbox item %s is not readable; left alone", item.id)
                continue
            self.submit(item.platform, item.id, inc, item.payload.get("hints") or {})
        return len(items)

    async def run(self) -> None:
        """Drain now and every few seconds, until stopped."""
        self._runner = asyncio.current_task()
        while not self._stopping.is_set():
            try:
                n = await self.drain()
                if n:
                    log.info("taking up %d request(s) not yet handled", n)
            except STORE_ERRORS as exc:
                log.warning("inbox drain: store unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("inbox drain failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.drain_every):
                    await self._stopping.wait()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def idle(self) -> bool:
        return not self._lane_tasks

    async def wait_idle(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking work, finish what is in hand (briefly); the rest stays in the inbox."""
        self._stopping.set()
        await finish([self._runner, self._receipts.task], grace)
        self._runner = None
        tasks = [*self._lane_tasks.values(), *self._late]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._in_hand.clear()
        self._idle.set()

    def restart(self) -> None:
        self._stopping.clear()
