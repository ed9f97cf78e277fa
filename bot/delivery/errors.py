"""What an adapter raises when one message did not go, so the sender knows what to do next;
and `Parts`, what it tells the sender while one message goes out as several.

    DeliveryFailure
     ├── TemporaryFailure(reason, retry_after=None)  network, 5xx, 429: tried again, later
     └── PermanentFailure(reason)                    blocked, chat gone, invalid payload:
                                                     recorded, never tried again on that chat
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


class DeliveryFailure(Exception):
    """A message was not delivered; `reason` is safe to store and log (no secret in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:300]


class TemporaryFailure(DeliveryFailure):
    """Worth trying again: after `retry_after` seconds when the platform said so."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(DeliveryFailure):
    """No retry can cure it (the person blocked the bot, the chat does not exist)."""


@dataclass
class Parts:
    """One message that the platform takes as several (a Telegram text over 4,096 characters,
    a Slack reply over 50 blocks): `sent` parts already went, so a resend after a failure or a
    crash starts after them; the adapter calls `went(n)` once its first `n` parts are out, and
    the sender records it on the outbox row.

    `row` names the outbox row, for a platform that can carry it with each message (Slack's
    message metadata). `unsure`: a send of the row on this platform was begun before and
    never recorded as done (the process was killed, the answer timed out), so some of its
    parts may be out although `sent` does not count them; an adapter that can read the
    conversation back counts them first and sets `unsure` to False."""

    sent: int = 0
    record: Callable[[int], Awaitable[None]] | None = None
    row: int | None = None
    unsure: bool = False

    async def went(self, n: int) -> None:
        self.sent = n
        if self.record is not None:
            await self.record(n)
