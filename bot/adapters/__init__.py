"""Platform adapters: each translates one platform to and from the core, nothing more.

An adapter is also the sender's channel to its platform. `configured()` builds the adapters
whose tokens are set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.routing import BaseRoute

from bot.delivery.errors import Parts
from handlers.types import Incoming, Outgoing, Route

if TYPE_CHECKING:
    from bot.app import BotApp


class AdapterSetupError(RuntimeError):
    """An adapter cannot start (a missing secret, a rejected token); the message names no secret."""


class PlatformAdapter(Protocol):
    """What `fpbot run` and `fpbot serve` need of a platform adapter.

    An adapter only translates. Inbound, it turns each platform request into an `Incoming`
    and its inbox key and hands them to `app.inbound.receive()` *before* acknowledging the
    platform. Outbound, `deliver()` sends one message to one chat, raising
    `bot.delivery.TemporaryFailure` or `PermanentFailure`. Everything else (handling once,
    retries, backoff, failure records, the drain at start) is shared code in `bot/delivery/`.
    """

    platform: str
    # Whether `deliver()` can find what of an outbox row is in a conversation already
    # (`parts.row`, `parts.unsure`): Slack, by each message's metadata; not the Bot API.
    reads_back: bool

    def reaches(self, chat_id: str) -> bool:
        """Whether this adapter can deliver to `chat_id` (the sender asks)."""
        ...

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None:
        """Send one message to one chat; raise TemporaryFailure / PermanentFailure. A message
        the platform takes as several skips the `parts.sent` already out, and reports each
        further one with `parts.went(n)`."""
        ...

    def plan(self, inc: Incoming, replies: list[Outgoing],
             hints: Mapping[str, Any]) -> Sequence[Route]:
        """Where each reply to `inc` goes, with what `deliver()` will need (`hints` are what
        the adapter kept with the request)."""
        ...

    async def prepare(self, inc: Incoming) -> Incoming:
        """Fill in what the platform knows of the sender before the core handles `inc`."""
        ...

    async def start(self, *, webhook: bool) -> None:
        """Connect; receive by polling / Socket Mode, or (webhook=True) through `routes()`."""
        ...

    async def stop_receiving(self) -> None:
        """Stop taking requests (the sender may still use the connection)."""
        ...

    async def stop(self) -> None:
        """Close connections."""
        ...

    def routes(self) -> list[BaseRoute]:
        """The HTTP endpoints this adapter serves under `fpbot serve`."""
        ...


MAX_BODY = 1_000_000  # bytes: a request body over this is refused before it is read


async def read_capped(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None once it proves longer than `limit` (never read whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # what Starlette's request.body() returns from now on
    return body


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
