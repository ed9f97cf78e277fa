"""Platform adapters: each translates one platform to and from the core, nothing more.

An adapter is also the outbox's sender for its platform. `configured()` builds the adapters
whose tokens are set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from starlette.routing import BaseRoute

from handlers.types import Outgoing

if TYPE_CHECKING:
    from bot.app import BotApp


class AdapterSetupError(RuntimeError):
    """An adapter cannot start (a missing secret, a rejected token); the message names no secret."""


class PlatformAdapter(Protocol):
    """What `fpbot run` and `fpbot serve` need of a platform adapter."""

    platform: str

    def reaches(self, chat_id: str) -> bool:
        """Whether this adapter can deliver to `chat_id` (the outbox asks)."""
        ...

    async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
        """Deliver one message queued in the outbox; raise if it did not go."""
        ...

    async def start(self, *, webhook: bool) -> None:
        """Connect; receive by polling / Socket Mode, or (webhook=True) through `routes()`.

        Starting also drains the durable inbox: updates received but not answered before
        a crash are handled now.
        """
        ...

    async def stop(self) -> None:
        """Stop receiving, finish what is in hand, close connections."""
        ...

    def routes(self) -> list[BaseRoute]:
        """The HTTP endpoints this adapter serves under `fpbot serve`."""
        ...


def configured(app: BotApp) -> list[PlatformAdapter]:
    """The adapters whose platform tokens are set."""
    adapters: list[PlatformAdapter] = []
    if app.settings.telegram_token:
        from bot.adapters.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(app))
    if app.settings.slack_bot_token:
        from bot.adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(app))
    return adapters
