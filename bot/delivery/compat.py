"""The outbox's former one-shot API, kept for callers written against it (`Outbox(db, clock,
senders).deliver_due()`): the same one path underneath, for a process that sweeps by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.delivery.errors import DeliveryFailure, Parts, TemporaryFailure
from bot.delivery.liveness import Liveness
from bot.delivery.sender import Channel, Sender
from handlers.clock import Clock
from handlers.types import Outgoing
from storage.db import Database


class _SendOnly:
    """An object with the old `send(chat_id, message, locale=, tz=)` as a sender channel."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.reads_back = False  # `send()` has no parts to count

    def reaches(self, chat_id: str) -> bool:
        return bool(self.inner.reaches(chat_id))

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None:
        try:
            await self.inner.send(chat_id, message, locale=locale, tz=tz)
        except DeliveryFailure:
            raise
        except Exception as exc:
            raise TemporaryFailure(type(exc).__name__) from exc


class Outbox:
    """Send what is due now, by hand (scripts, tests): `await Outbox(...).deliver_due()`."""

    def __init__(self, db: Database, clock: Clock, senders: Mapping[str, Any]) -> None:
        self.liveness = Liveness(db, clock)
        channels: dict[str, Channel] = {
            name: s if hasattr(s, "deliver") else _SendOnly(s) for name, s in senders.items()}
        self.sender = Sender(db, clock, self.liveness, channels)

    async def deliver_due(self, limit: int = 50) -> int:
        """Send what is due now; returns how many rows were taken in hand."""
        if not self.liveness.registered:
            await self.liveness.register()  # no heartbeat task: each call renews it
        else:
            await self.liveness.beat_once()
        return await self.sender.flush()

    async def close(self) -> None:
        await self.sender.stop(grace=1.0)
        await self.liveness.stop()
