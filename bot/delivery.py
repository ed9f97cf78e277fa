"""The outbox: messages for people, written with the change that caused them, sent once.

Any number of instances may sweep the outbox. Each sweep claims due items with one conditional
UPDATE (an item claimed by another instance and not yet expired is skipped), sends them with no
transaction open, then marks each sent. A failed send is retried later with a growing pause; an
item whose person has no reachable account waits until they link one. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.orm import selectinload

from handlers.clock import Clock
from handlers.types import Outgoing
from storage.db import Database
from storage.models import Identity, OutboxItem

log = logging.getLogger(__name__)

CLAIM_FOR = timedelta(minutes=2)
MAX_BACKOFF = timedelta(hours=1)


class Sender(Protocol):
    """What the outbox needs of an adapter."""

    platform: str

    def reaches(self, chat_id: str) -> bool:
        """Whether this running adapter can deliver to `chat_id`."""
        ...

    async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
        """Deliver one message; raise if it did not go."""
        ...


class Undeliverable(Exception):
    """No running adapter reaches the person (yet)."""


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=5 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


class Outbox:
    """Sweeps due outbox items and hands them to the adapters."""

    def __init__(self, db: Database, clock: Clock, senders: Mapping[str, Sender]) -> None:
        self.db = db
        self.clock = clock
        self.senders = dict(senders)
        self.instance = uuid.uuid4().hex[:12]
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()

    async def _claim(self, limit: int) -> tuple[str, list[OutboxItem]]:
        token = f"{self.instance}:{uuid.uuid4().hex[:12]}"
        now = self.clock.now()
        async with self.db.transaction() as session:
            due = (
                select(OutboxItem.id)
                .where(OutboxItem.sent_at.is_(None), OutboxItem.not_before <= now,
                       or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until < now))
                .order_by(OutboxItem.not_before, OutboxItem.id)
                .limit(limit)
            )
            ids = list(await session.scalars(due))
            if not ids:
                return token, []
            await session.execute(
                update(OutboxItem)
                .where(OutboxItem.id.in_(ids), OutboxItem.sent_at.is_(None),
                       or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until < now))
                .values(claimed_by=token, claimed_until=now + CLAIM_FOR)
            )
            items = list(await session.scalars(
                select(OutboxItem).where(OutboxItem.claimed_by == token).order_by(OutboxItem.id)
            ))
        return token, items

    async def _address(self, item: OutboxItem) -> tuple[Sender, str, str, str]:
        """Which adapter and chat reach the item's recipient, with their locale and time zone."""
        if item.person_id is None:
            sender = self.senders.get(item.platform or "")
            if sender is None or not item.chat_id or not sender.reaches(item.chat_id):
                raise Undeliverable(f"no running {item.platform} adapter")
            return sender, item.chat_id, "en", "UTC"
        async with self.db.transaction() as session:
            identities = list(await session.scalars(
                select(Identity).where(Identity.person_id == item.person_id)
                .options(selectinload(Identity.person))
            ))
        reachable = [
            i for i in identities
            if i.platform in self.senders and i.chat_id and self.senders[i.platform].reaches(i.chat_id)
        ]
        if not reachable:
            raise Undeliverable("the person has no reachable account")
        # A platform account beats the console; the one used last wins.
        best = max(reachable, key=lambda i: (i.platform != "console",
                                             i.last_seen_at or i.created_at))
        person = best.person
        return self.senders[best.platform], best.chat_id, person.locale, person.timezone

    async def deliver_due(self, limit: int = 50) -> int:
        """Send what is due now; returns how many went."""
        token, items = await self._claim(limit)
        sent = 0
        for n, item in enumerate(items):
            if self.stopping.is_set():  # shutting down: hand the rest back at once
                await self._release([i.id for i in items[n:]], token)
                break
            if not await self._extend(item.id, token):
                continue  # our claim lapsed (a slow batch) and another instance has it
            try:
                sender, chat_id, locale, tz = await self._address(item)
                await self._send_holding_claim(
                    item.id, token,
                    sender.send(chat_id, Outgoing.from_dict(item.message), locale=locale, tz=tz))
            except Exception as exc:  # any failure: keep the item, retry later
                attempts = item.attempts + 1
                reason = type(exc).__name__ + (f": {exc}" if isinstance(exc, Undeliverable) else "")
                log.warning("outbox item %s not delivered (attempt %s): %s", item.id, attempts,
                            reason)
                async with self.db.transaction() as session:
                    await session.execute(
                        update(OutboxItem).where(OutboxItem.id == item.id,
                                                 OutboxItem.claimed_by == token)
                        .values(attempts=attempts, claimed_by=None, claimed_until=None,
                                not_before=self.clock.now() + backoff(attempts),
                                last_error=reason[:500])
                    )
                continue
            async with self.db.transaction() as session:
                await session.execute(
                    update(OutboxItem).where(OutboxItem.id == item.id,
                                             OutboxItem.claimed_by == token)
                    .values(sent_at=self.clock.now(), sent_via=sender.platform,
                            claimed_until=None)
                )
            sent += 1
        return sent

    async def _send_holding_claim(self, item_id: int, token: str,
                                  sending: Coroutine[Any, Any, None]) -> None:
        """Await a send, renewing the claim meanwhile: a send waiting out rate limits can
        outlast the claim, and another instance must not take the item in the meantime."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(CLAIM_FOR.total_seconds() / 3)
                await self._extend(item_id, token)

        keeper = asyncio.create_task(renew())
        try:
            await sending
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _release(self, ids: list[int], token: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxItem).where(OutboxItem.id.in_(ids), OutboxItem.claimed_by == token,
                                         OutboxItem.sent_at.is_(None))
                .values(claimed_by=None, claimed_until=None)
            )

    async def _extend(self, item_id: int, token: str) -> bool:
        """Renew our claim on one item just before sending it; False if it is not ours now."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            result = await session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item_id, OutboxItem.claimed_by == token,
                       OutboxItem.sent_at.is_(None))
                .values(claimed_until=now + CLAIM_FOR)
            )
        return bool(getattr(result, "rowcount", 0))

    def poke(self) -> None:
        """Ask the running loop to sweep now (something was just queued)."""
        self.wake.set()

    async def run(self, every: float = 5.0) -> None:
        """Sweep until stopped: at once when poked, otherwise every `every` seconds."""
        while not self.stopping.is_set():
            try:
                while await self.deliver_due() and not self.stopping.is_set():
                    pass
            except Exception:
                log.exception("outbox sweep failed; retrying")
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=every)
            except TimeoutError:
                pass
            self.wake.clear()

    def stop(self) -> None:
        """Finish the item being sent, hand back the rest, and leave `run`."""
        self.stopping.set()
        self.wake.set()
