"""What an adapter raises when one message did not go, so the sender knows what to do next.

    DeliveryFailure
     ├── TemporaryFailure(reason, retry_after=None)  network, 5xx, 429: tried again, later
     └── PermanentFailure(reason)                    blocked, chat gone, invalid payload:
                                                     recorded, never tried again on that chat
"""

from __future__ import annotations


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
