"""Telegram: python-telegram-bot under the core, by long polling (`fpbot run`) or webhook (`fpbot serve`).

The adapter only translates: a Bot API update becomes one `Incoming`, each `Outgoing` becomes
Bot API calls made through PTB's `Bot` (HTML parse mode, inline keyboards, documents).

Receiving: every update becomes an `Incoming` and is kept in the store's inbox (the shared
`bot.delivery.Inbound`) *before* Telegram hears it arrived: before the next getUpdates moves
the offset past it, before the webhook answers 200. Handling, the replies (outbox rows, sent by
the shared sender through `deliver()`), retries and take-overs after a crash are shared code;
this module only translates. `deliver()` raises `TemporaryFailure` (network, 5xx, 429 with its
retry_after) or `PermanentFailure` (403 blocked, 400 chat not found).

The Bot API URL carries the bot token, and httpx and PTB log it; while the adapter runs, a
filter on those loggers masks the token and the webhook secret, and no error raised here shows
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import (
    ChatType,
    FileSizeLimit,
    InlineKeyboardButtonLimit,
    MessageLimit,
    ParseMode,
)
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, BaseRateLimiter

from bot.adapters import AdapterSetupError, read_capped
from bot.adapters.pacing import Pace
from bot.adapters.rendering import message_text
from bot.delivery.errors import Parts, PermanentFailure, TemporaryFailure
from bot.delivery.stopping import finish
from bot.logs import RedactSecrets
from handlers.dispatch import STORE_ERRORS
from handlers.types import (
    Attachment,
    Choice,
    FormStep,
    Incoming,
    Outgoing,
)
from handlers.types import Route as RouteTo
from messages import escape_html

if TYPE_CHECKING:
    from bot.app import BotApp
    from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "telegram"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
ALLOWED_UPDATES = ("message", "callback_query")

TEXT_LIMIT = MessageLimit.MAX_TEXT_LENGTH  # 4096
CAPTION_LIMIT = MessageLimit.CAPTION_LENGTH  # 1024
CALLBACK_LIMIT = InlineKeyboardButtonLimit.MAX_CALLBACK_DATA  # 64 bytes
DOWNLOAD_LIMIT = FileSizeLimit.FILESIZE_DOWNLOAD  # 20 MB through the Bot API
MB = 1_000_000
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)

# Telegram: about 30 messages a second overall, 20 a minute in a group, and no more than about
# one a second in one chat, short bursts tolerated. The lag between letting a request go and
# its arrival is `Pace`'s business; each burst is still a fifth (at least one message) less
# than Telegram's, since its figures are only "about".
OVERALL_RATE = 30.0  # messages a second
OVERALL_BURST = 24
GROUP_RATE = 20 / 60  # messages a second in one group...
GROUP_BURST = 16  # ...after a burst
CHAT_BURST = 2  # one a second, after a burst of 2
CHAT_PERIOD = 2.0
MAX_RETRIES = 5  # RetryAfter retries; AIORateLimiter's default (0) gives up on the first 429
POLL_TIMEOUT = 30.0  # seconds a getUpdates long-poll may wait
RETRY_FIRST = 1.0  # seconds before an update whose replies did not go is tried again
RETRY_MAX = 300.0
STOP_GRACE = 10.0  # seconds stop() waits for updates in hand

# Callback data: "t|<command line>" for a command button; for a form step's buttons the form's
# version, so that a button of an earlier question is recognised as such.
CMD = "t"
ANSWER = "v"  # v|<version>|<choice value>
ANSWER_NUMBER = "n"  # n|<version>|<choice number>, when the value does not fit in 64 bytes
FORM_CONTROLS = {"b": "back", "x": "cancel", "s": "skip"}
FORM_KINDS = frozenset({ANSWER, ANSWER_NUMBER, *FORM_CONTROLS})


# -- rate limits ----------------------------------------------------------------------------
class ChatPacedRateLimiter(AIORateLimiter):
    """AIORateLimiter's retries of a 429, each attempt paced by `Pace`: overall, per group, and
    per private chat (which AIORateLimiter does not pace)."""

    def __init__(self, *, chat_max_rate: float = CHAT_BURST, chat_time_period: float = CHAT_PERIOD,
                 overall: tuple[float, float] = (OVERALL_BURST, OVERALL_RATE),
                 group: tuple[float, float] = (GROUP_BURST, GROUP_RATE),
                 max_retries: int = MAX_RETRIES) -> None:
        super().__init__(overall_max_rate=0, group_max_rate=0, max_retries=max_retries)
        self._overall = Pace(*overall)
        self._group_pace = group
        self._chat_pace = ((chat_max_rate, chat_max_rate / chat_time_period)
                           if chat_max_rate and chat_time_period else None)
        self._chats: dict[int | str, Pace] = {}

    def _pace_of(self, chat_id: int | str, burst: float, rate: float) -> Pace:
        if len(self._chats) > 1024:  # forget chats a whole burst could go to again
            for key, pace in list(self._chats.items()):
                if key != chat_id and pace.rested():
                    del self._chats[key]
        if chat_id not in self._chats:
            self._chats[chat_id] = Pace(burst, rate)
        return self._chats[chat_id]

    def _paces(self, data: dict[str, Any]) -> list[Pace]:
        """The paces a request to `data["chat_id"]` waits for: its chat's, then the overall."""
        chat_id = data.get("chat_id")
        if chat_id is None:
            return []
        with contextlib.suppress(TypeError, ValueError):
            chat_id = int(chat_id)
        if isinstance(chat_id, int) and chat_id > 0:
            chat = self._pace_of(chat_id, *self._chat_pace) if self._chat_pace else None
        elif isinstance(chat_id, int | str):  # a group or a channel (@name)
            chat = self._pace_of(chat_id, *self._group_pace)
        else:
            chat = None
        return [chat, self._overall] if chat else [self._overall]

    async def process_request(self, callback: Any, args: Any, kwargs: dict[str, Any],
                              endpoint: str, data: dict[str, Any],
                              rate_limit_args: int | None) -> Any:
        """Pace each attempt of the request (AIORateLimiter retries it after a 429)."""
        paces = self._paces(data)

        async def paced(*call_args: Any, **call_kwargs: Any) -> Any:
            async with contextlib.AsyncExitStack() as held:
                for pace in paces:
                    await held.enter_async_context(pace)
                return await callback(*call_args, **call_kwargs)

        return await super().process_request(paced, args, kwargs, endpoint, data,
                                              rate_limit_args)


def rate_limiter(*, chat_rate: tuple[float, float] | None = (CHAT_BURST, CHAT_PERIOD),
                 max_retries: int = MAX_RETRIES) -> ChatPacedRateLimiter:
    """30 messages/s overall, 20/min per group, `chat_rate` (burst, period) per private chat;
    429s retried."""
    burst, period = chat_rate or (0, 0)
    return ChatPacedRateLimiter(chat_max_rate=burst, chat_time_period=period,
                                max_retries=max_retries)


def retry_after_seconds(exc: RetryAfter) -> float:
    """How long Telegram asked to wait (PTB 22 warns when the value is read as an int)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def file_url(api_url: str) -> str:
    """The file download base for a Bot API base URL (`…/bot` -> `…/file/bot`)."""
    base = api_url.rstrip("/")
    if base.endswith("/bot"):
        return base[: -len("/bot")] + "/file/bot"
    return base + "/file/bot"


# -- Telegram -> core -----------------------------------------------------------------------
def _locale(language_code: str | None) -> str | None:
    return language_code.split("-")[0].lower() if language_code else None


def addressed_to_bot(text: str, bot_username: str) -> bool:
    """Whether a group message is a command for this bot (`/cmd` or `/cmd@thisbot`)."""
    if not text.startswith("/") or len(text) < 2:
        return False
    head = text.split(maxsplit=1)[0]
    _, at, target = head.partition("@")
    return not at or target.casefold() == bot_username.casefold()


def attachments_of(message: Message) -> tuple[Attachment, ...]:
    """The document or photo of a message (the largest size of a photo), as the core sees it."""
    if message.document is not None:
        doc = message.document
        return (Attachment(doc.file_id, doc.file_name or f"document-{doc.file_unique_id}",
                           doc.file_size or 0, doc.mime_type or "application/octet-stream"),)
    if message.photo:
        photo = max(message.photo, key=lambda p: (p.file_size or 0, p.width * p.height))
        return (Attachment(photo.file_id, f"photo-{photo.file_unique_id}.jpg",
                           photo.file_size or 0, "image/jpeg"),)
    return ()


def update_to_incoming(update: Update, bot_username: str) -> Incoming | None:
    """The core's view of an update; None for what the bot leaves alone."""
    if update.callback_query is not None:
        return _callback_to_incoming(update.callback_query)
    message = update.message
    if message is None or message.from_user is None or message.from_user.is_bot:
        return None
    user, chat = message.from_user, message.chat
    private = chat.type == ChatType.PRIVATE
    text = (message.text or message.caption or "").strip()
    if not private and not addressed_to_bot(text, bot_username):
        return None  # in a group: only commands meant for this bot
    return Incoming(platform=PLATFORM, user_id=str(user.id), chat_id=str(chat.id), text=text,
                    private=private, display_name=user.full_name,
                    attachments=attachments_of(message), locale=_locale(user.language_code))


def _callback_to_incoming(query: CallbackQuery) -> Incoming | None:
    user = query.from_user
    chat = query.message.chat if query.message is not None else None
    base: dict[str, Any] = {
        "platform": PLATFORM, "user_id": str(user.id),
        "chat_id": str(chat.id if chat is not None else user.id),
        "private": chat is None or chat.type == ChatType.PRIVATE,
        "display_name": user.full_name, "locale": _locale(user.language_code)}
    kind, _, rest = (query.data or "").partition("|")
    if kind == CMD and rest.startswith("/"):
        return Incoming(**base, text=rest)
    if kind not in FORM_KINDS:
        return None
    version, _, value = rest.partition("|")
    if not version.isdigit():
        return None
    if kind in (ANSWER, ANSWER_NUMBER):
        return Incoming(**base, action="answer", value=value, form_version=int(version))
    return Incoming(**base, action=FORM_CONTROLS[kind], form_version=int(version))


# -- core -> Telegram -----------------------------------------------------------------------
def _data(*parts: object) -> str:
    data = "|".join(str(p) for p in parts)
    if len(data.encode()) > CALLBACK_LIMIT:
        raise ValueError(f"callback data of {len(data.encode())} bytes exceeds Telegram's "
                         f"{CALLBACK_LIMIT}: {data[:80]!r}")
    return data


def _answer_data(step: FormStep, number: int, choice: Choice) -> str:
    try:
        return _data(ANSWER, step.version, choice.value)
    except ValueError:
        return _data(ANSWER_NUMBER, step.version, number)


def keyboard(out: Outgoing, labels: dict[str, str]) -> InlineKeyboardMarkup | None:
    """Buttons for a reply: a form step's choices and controls, or command buttons.

    `labels` names the form controls: "back", "skip", "cancel".
    """
    step = out.step
    if step is not None:
        rows = [[InlineKeyboardButton(c.label, callback_data=_answer_data(step, n, c))]
                for n, c in enumerate(out.choices, 1)]
        controls = []
        if step.can_go_back:
            controls.append(InlineKeyboardButton(labels["back"], callback_data=_data("b", step.version)))
        if not step.field.required:
            controls.append(InlineKeyboardButton(labels["skip"], callback_data=_data("s", step.version)))
        controls.append(InlineKeyboardButton(labels["cancel"], callback_data=_data("x", step.version)))
        return InlineKeyboardMarkup([*rows, controls])
    if not out.choices:
        return None
    buttons = [InlineKeyboardButton(c.label, callback_data=_data(CMD, c.value)) for c in out.choices]
    return InlineKeyboardMarkup([buttons[i:i + 2] for i in range(0, len(buttons), 2)])


def text_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


_TAG = re.compile(r"<(/?)([a-zA-Z-]+)[^>]*>")


def _balanced(chunk: str) -> bool:
    stack: list[str] = []
    for closing, name in _TAG.findall(chunk):
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


def _pack(lines: Sequence[str], limit: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for line in lines:
        candidate = f"{current}\n{line}" if current else line
        if current and text_length(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current or not chunks:
        chunks.append(current)
    return chunks


def _hard_split(plain_line: str, limit: int) -> list[str]:
    """Escaped pieces of one plain line, each within `limit` once escaped."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for ch in plain_line:
        escaped = escape_html(ch)
        n = text_length(escaped)
        if size + n > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(escaped)
        size += n
    pieces.append("".join(current))
    return pieces


def split_message(html_text: str, plain_text: str | Callable[[], str],
                  limit: int = TEXT_LIMIT) -> list[str]:
    """HTML chunks of at most `limit`, cut at line ends; never inside a tag or an entity.

    When a single line is too long, or a tag spans a cut, the message is sent as escaped plain
    text instead, with over-long lines cut hard. `plain_text` may be a function: it is then
    rendered only for that case (most messages fit in one).
    """
    if text_length(html_text) <= limit and _balanced(html_text):
        return [html_text]
    chunks = _pack(html_text.split("\n"), limit)
    if all(text_length(c) <= limit and _balanced(c) for c in chunks):
        return chunks
    if callable(plain_text):
        plain_text = plain_text()
    lines: list[str] = []
    for line in plain_text.split("\n"):
        lines.extend(_hard_split(line, limit) if text_length(escape_html(line)) > limit
                     else [escape_html(line)])
    return _pack(lines, limit)


# -- the adapter ----------------------------------------------------------------------------
MAX_BODY = 1_000_000  # bytes: a webhook body over this is refused before it is read
RECEIPT_TIMEOUT = 10.0  # seconds a receipt may take (Telegram waits; a refusal is redelivered)


class TelegramSetupError(AdapterSetupError):
    """The adapter cannot start; the message names no secret."""


def _chat_target(chat_id: str) -> int | str:
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id


@contextlib.contextmanager
def _delivery_errors() -> Iterator[None]:
    """Bot API errors as the sender's two kinds of failure."""
    try:
        yield
    except RetryAfter as exc:
        raise TemporaryFailure("429 Too Many Requests", retry_after_seconds(exc)) from None
    except Forbidden as exc:
        raise PermanentFailure(f"403 {exc.message}") from None
    except BadRequest as exc:  # chat not found, user deactivated, unparsable text: no cure
        raise PermanentFailure(f"400 {exc.message}") from None
    except InvalidToken:
        raise TemporaryFailure("the bot token was rejected") from None
    except TelegramError as exc:  # network, timeouts, 5xx
        raise TemporaryFailure(f"{type(exc).__name__}: {exc.message}") from None


class TelegramAdapter:
    """Talks to Telegram for the core."""

    platform = PLATFORM
    reads_back = False  # the Bot API cannot read a chat back

    def __init__(self, app: BotApp, *, limiter: BaseRateLimiter[Any] | None = None,
                 poll_timeout: float = POLL_TIMEOUT, retry_first: float = RETRY_FIRST) -> None:
        self.app = app
        self.core = app.core
        self.renderer = app.renderer
        self.settings = app.settings
        self.limiter = limiter or rate_limiter()
        self.poll_timeout = poll_timeout
        self.retry_first = retry_first
        self.stop_grace = STOP_GRACE
        self.application: Application | None = None  # type: ignore[type-arg]
        self.bot_username = ""
        self.offset = 0  # next getUpdates offset: everything below it is in the inbox
        self._accepting = False
        self._poller: asyncio.Task[None] | None = None
        self._storing = False  # the poller is keeping a batch in the inbox: not to be cancelled
        self._acks: set[asyncio.Task[None]] = set()
        self._redactor = RedactSecrets(self.settings.secrets)
        self._guarded: list[logging.Logger] = []

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def bot(self) -> Bot:
        if self.application is None:
            raise RuntimeError("the Telegram adapter is not started")
        bot: Bot = self.application.bot
        return bot

    @property
    def polls(self) -> str:
        """What only one process may do at a time: poll this bot token."""
        return "telegram:" + hashlib.sha256(str(self.settings.telegram_token).encode()).hexdigest()[:16]

    async def start(self, *, webhook: bool) -> None:
        """Connect (getMe), set the default menu, then poll or await webhooks."""
        if webhook and not self.settings.telegram_webhook_secret:
            raise TelegramSetupError("TELEGRAM_WEBHOOK_SECRET must be set to receive Telegram "
                                     "webhooks (1-256 characters: A-Z a-z 0-9 _ -)")
        if not webhook and not await self.app.liveness.claim_polling(self.polls):
            raise TelegramSetupError("another instance polls this bot; use `fpbot serve` with "
                                     "webhooks for several instances")
        self._guard_logs()
        application = build_application(self.settings, self.limiter)
        try:
            await application.initialize()
        except TelegramError as exc:
            await application.bot.shutdown()  # close the HTTP clients initialize() opened
            self._unguard_logs()
            if isinstance(exc, InvalidToken):
                raise TelegramSetupError("Telegram rejected TELEGRAM_TOKEN (getMe failed); "
                                         "check the token from @BotFather") from None
            raise TelegramSetupError(f"cannot reach the Telegram Bot API at "
                                     f"{self.settings.telegram_api_url}: "
                                     f"{self._redactor.redact(str(exc))}") from None
        self.application = application
        try:
            await application.start()
            self.bot_username = self.bot.username
            await self._set_default_menu()
            if not webhook:
                try:
                    await self.bot.delete_webhook(drop_pending_updates=False)
                except TelegramError as exc:
                    log.warning("deleteWebhook failed (%s); polling may meet a Conflict",
                                type(exc).__name__)
            self._accepting = True
        except BaseException:
            await self.stop()
            raise
        if not webhook:
            self._poller = asyncio.create_task(self._poll(), name="telegram-poll")

    async def stop_receiving(self) -> None:
        """Stop polling (telling Telegram what the inbox holds) and refuse webhooks.

        A poller waiting on Telegram is cancelled (nothing is lost: what it has not stored is
        not confirmed); one keeping a batch in the inbox finishes it first (see
        bot/delivery/stopping.py)."""
        self._accepting = False
        if self._poller is not None:
            if not self._storing:
                self._poller.cancel()
            await finish([self._poller], self.stop_grace)
            self._poller = None
            await self._confirm_offset()

    async def stop(self) -> None:
        """Stop receiving and close the connections."""
        await self.stop_receiving()
        if self._acks:
            await asyncio.wait(list(self._acks), timeout=2)
        if self.application is not None:
            with contextlib.suppress(Exception):
                await self.application.stop()
            with contextlib.suppress(Exception):
                await self.application.shutdown()
            self.application = None
        self._unguard_logs()

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until everything received is handled and its replies sent (tests)."""
        await self.app.wait_idle(timeout)

    def routes(self) -> list[BaseRoute]:
        return [Route(WEBHOOK_PATH, self._on_webhook, methods=["POST"])]

    def reaches(self, chat_id: str) -> bool:
        return bool(chat_id)

    async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
        """Deliver one message to one chat (see `deliver`)."""
        await self.deliver(chat_id, message, locale=locale, tz=tz, extras={})

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None:
        """Send one message to one chat; raise TemporaryFailure or PermanentFailure. A text
        over Telegram's limit goes as several messages, each reported to `parts` (a resend
        starts after those already out)."""
        target = _chat_target(chat_id)
        if message.private and (not isinstance(target, int) or target < 0):
            raise PermanentFailure("a private message cannot go to a group chat")
        out = replace(message, context={"tz": tz, **message.context})
        locale = self._known_locale(locale)
        edit = extras.get("edit")
        user = extras.get("user") or (target if isinstance(target, int) and target > 0 else None)
        with _delivery_errors():
            edited = await self._show(target, out, locale, user_id=user,
                                      edit=int(edit) if edit else None, parts=parts or Parts())
            if edit and not edited:
                await self._strip_keyboard(target, int(edit))
        commands = extras.get("commands")  # the person's menu changed with this reply
        if isinstance(commands, list) and user is not None and str(user).isdigit():
            await self._set_menu(int(user), commands)

    async def download(self, file_id: str) -> bytes:
        """The content of a file someone sent (fetched with getFile only now)."""
        tg_file = await self.bot.get_file(file_id)
        return bytes(await tg_file.download_as_bytearray())

    # -- translation for the shared path --------------------------------------------------
    def translate(self, update: Update) -> tuple[Incoming | None, dict[str, Any]]:
        """The update as the core sees it, plus what its replies need (a pressed message)."""
        inc = update_to_incoming(update, self.bot_username)
        hints: dict[str, Any] = {}
        if inc is None:
            return None, hints
        query = update.callback_query
        if query is not None and isinstance(query.message, Message):
            if (query.data or "").partition("|")[0] in FORM_KINDS:
                hints["pressed"] = query.message.message_id
        too_big = [a for a in inc.attachments if a.size > DOWNLOAD_LIMIT]
        if too_big:
            hints["refuse"] = Outgoing("telegram.file_too_large",
                                       {"name": too_big[0].name,
                                        "size": round(too_big[0].size / MB, 1),
                                        "limit": DOWNLOAD_LIMIT // MB}).to_dict()
        return inc, hints

    def plan(self, inc: Incoming, replies: list[Outgoing],
             hints: Mapping[str, Any]) -> list[RouteTo]:
        """Where each reply goes: personal ones from a group to the private chat (the group
        is told, or told to press Start if that chat refuses); the first reply in the chat
        of a pressed form button replaces that message."""
        lane = f"{PLATFORM}:{inc.chat_id}"
        pressed = hints.get("pressed")
        routes: list[RouteTo] = []
        moved = False
        for out in replies:
            target = inc.chat_id
            if out.private and not inc.private:
                target, moved = inc.user_id, True
            extras: dict[str, Any] = {"user": inc.user_id}
            if pressed is not None:
                if target == inc.chat_id:
                    extras["edit"] = pressed
                pressed = None
            routes.append(RouteTo(target, out, extras, lane))
        if moved:
            routes.append(RouteTo(inc.chat_id,
                                  Outgoing("telegram.answered_privately",
                                           {"bot": self.bot_username}),
                                  {"if_refused": "telegram.cannot_write_privately"}, lane))
        return routes

    async def prepare(self, inc: Incoming) -> Incoming:
        return inc

    # -- receiving ------------------------------------------------------------------------
    async def _keep(self, update: Update, *, timeout: float = RECEIPT_TIMEOUT) -> None:
        """Keep one update in the inbox (raises when the store cannot), then stop the
        button's spinner."""
        inc, hints = self.translate(update)
        if inc is not None:
            if await self.app.inbound.receive(PLATFORM, str(update.update_id), inc, hints,
                                              timeout=timeout) is None:
                return  # a redelivery
        if update.callback_query is not None:
            task = asyncio.create_task(self._answer_query(update.callback_query,
                                                          expired=inc is None))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _poll(self) -> None:
        """Long-poll getUpdates; the offset moves past a batch only once all of it is stored."""
        pause = 0.0
        while self._accepting:
            if pause:
                await asyncio.sleep(pause)
            try:
                updates = await self.bot.get_updates(
                    offset=self.offset or None, timeout=timedelta(seconds=self.poll_timeout),
                    allowed_updates=list(ALLOWED_UPDATES))
            except InvalidToken:
                log.error("Telegram rejected the bot token; polling stopped")
                return
            except RetryAfter as exc:
                pause = retry_after_seconds(exc) + 0.1  # getUpdates bypasses the rate limiter
                log.warning("getUpdates rate limited; waiting %.1f s", pause)
                continue
            except TelegramError as exc:
                pause = min(max(pause * 2, self.retry_first), 30.0)
                log.warning("getUpdates failed (%s: %s); retrying in %.1f s", type(exc).__name__,
                            self._redactor.redact(str(exc)), pause)
                continue
            except Exception:
                pause = min(max(pause * 2, self.retry_first), 30.0)
                log.exception("getUpdates failed; retrying in %.1f s", pause)
                continue
            self._storing = True
            try:
                for update in updates:
                    await self._keep(update)
                    self.offset = update.update_id + 1
            except Exception as exc:
                pause = min(max(pause * 2, self.retry_first), 30.0)
                if isinstance(exc, (*STORE_ERRORS, TimeoutError)):
                    log.warning("store unavailable (%s): update(s) left unconfirmed at "
                                "Telegram", type(exc).__name__)
                else:
                    log.exception("updates not stored; left unconfirmed at Telegram")
                continue
            finally:
                self._storing = False
            pause = 0.0

    async def _confirm_offset(self) -> None:
        """Tell Telegram which updates are in the inbox, so they are not sent again."""
        if not self.offset or self.application is None:
            return
        with contextlib.suppress(TelegramError, asyncio.TimeoutError):
            async with asyncio.timeout(5):
                await self.bot.get_updates(offset=self.offset, timeout=0, limit=1,
                                           allowed_updates=list(ALLOWED_UPDATES))

    async def _on_webhook(self, request: Request) -> Response:
        """Store the update, then answer 200; a forged secret gets 403, a body over 1 MB 413,
        a down store 503 (Telegram delivers it again)."""
        secret = self.settings.telegram_webhook_secret
        given = request.headers.get(SECRET_HEADER, "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            return Response(status_code=403)
        if not self._accepting:
            return Response(status_code=503)
        body = await read_capped(request, MAX_BODY)
        if body is None:
            return Response(status_code=413)
        try:
            payload = json.loads(body)
        except ValueError:
            return Response(status_code=400)
        if not isinstance(payload, dict) or not isinstance(payload.get("update_id"), int):
            return Response(status_code=400)
        try:
            update = Update.de_json(payload, self.bot)
        except Exception:
            return Response(status_code=400)
        try:
            await self._keep(update, timeout=5.0)
        except (*STORE_ERRORS, TimeoutError) as exc:
            log.warning("store unavailable (%s): webhook update %s refused for redelivery",
                        type(exc).__name__, payload["update_id"])
            return Response(status_code=503)
        return Response(status_code=200)

    async def _answer_query(self, query: CallbackQuery, *, expired: bool) -> None:
        """Stop the button's spinner (a query older than a few minutes can no longer be)."""
        text = None
        if expired:
            text = self.renderer.render("telegram.button_expired",
                                        self._known_locale(_locale(query.from_user.language_code)),
                                        "plain")
        try:
            await query.answer(text=text)
        except TelegramError as exc:
            log.debug("answerCallbackQuery failed: %s", type(exc).__name__)

    def _known_locale(self, locale: str | None) -> str:
        return locale if locale in self.renderer.locales else self.renderer.default_locale

    async def _show(self, chat_id: int | str, out: Outgoing, locale: str, *,
                    user_id: int | str | None, edit: int | None = None,
                    parts: Parts | None = None) -> bool:
        """Show one reply; True when it replaced message `edit`. Form steps are remembered."""
        msg_id, edited = await self._post(chat_id, out, locale, edit, parts or Parts())
        closed = out.form_message
        if closed.isdigit() and closed != str(msg_id):  # the form's last question: no buttons
            await self._strip_keyboard(chat_id, int(closed))
        step = out.step
        if step is not None and user_id is not None:
            old = step.message_ref
            if old and old != str(msg_id) and old.isdigit():
                await self._strip_keyboard(chat_id, int(old))
            if str(msg_id) != old:
                try:
                    await self.core.remember_form_message(PLATFORM, str(user_id), str(msg_id))
                except STORE_ERRORS as exc:  # the next step is then sent, not edited in
                    log.warning("form message not remembered: %s", type(exc).__name__)
        return edited

    async def _post(self, chat_id: int | str, out: Outgoing, locale: str,
                    edit: int | None, parts: Parts) -> tuple[int, bool]:
        """Send (or edit into `edit`) one reply; the id of its last message, and whether edited.
        The chunks of a long text that `parts` says are out already are not sent again."""
        html_text = message_text(self.renderer, out, locale, "html")
        markup = keyboard(out, self._control_labels(locale))
        if out.file is not None:
            document = InputFile(out.file.content, filename=out.file.name)
            caption: str | None = html_text
            if text_length(html_text) > CAPTION_LIMIT:
                plain = message_text(self.renderer, out, locale, "plain")
                for n, chunk in enumerate(split_message(html_text, plain)):
                    if n < parts.sent:
                        continue
                    await self.bot.send_message(
                        chat_id, chunk, parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW)
                    await parts.went(n + 1)
                caption = None
            sent = await self.bot.send_document(
                chat_id, document, caption=caption, parse_mode=ParseMode.HTML,
                reply_markup=markup)
            return sent.message_id, False
        chunks = split_message(html_text,
                               lambda: message_text(self.renderer, out, locale, "plain"))
        last, edited = 0, edit is not None and parts.sent > 0
        for n, chunk in enumerate(chunks):
            if n < parts.sent:  # out before a failure or a crash
                continue
            buttons = markup if n == len(chunks) - 1 else None
            if n == 0 and edit is not None:
                try:
                    await self.bot.edit_message_text(
                        chunk, chat_id=chat_id, message_id=edit, parse_mode=ParseMode.HTML,
                        reply_markup=buttons, link_preview_options=NO_PREVIEW)
                    last, edited = edit, True
                    if n < len(chunks) - 1:
                        await parts.went(n + 1)
                    continue
                except BadRequest as exc:
                    if "not modified" in str(exc).lower():
                        last, edited = edit, True
                        if n < len(chunks) - 1:
                            await parts.went(n + 1)
                        continue
                    log.debug("could not edit message %s (%s); sending a new one", edit, exc)
            sent = await self.bot.send_message(
                chat_id, chunk, parse_mode=ParseMode.HTML, reply_markup=buttons,
                link_preview_options=NO_PREVIEW)
            last = sent.message_id
            if n < len(chunks) - 1:  # the last part is the whole message's own send
                await parts.went(n + 1)
        return last, edited

    async def _strip_keyboard(self, chat_id: int | str, message_id: int) -> None:
        """Take the buttons off a message that no longer asks anything."""
        try:
            await self.bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id)
        except BadRequest:
            pass  # already without buttons, or too old to edit

    def _control_labels(self, locale: str) -> dict[str, str]:
        return {name: self.renderer.render(f"forms.{name}", locale, "plain")
                for name in ("back", "skip", "cancel")}

    # -- the commands menu ----------------------------------------------------------------
    async def _set_default_menu(self) -> None:
        """Strangers see the commands anyone may use."""
        try:
            commands = await self.core.commands_for(PLATFORM, "")
            await self.bot.set_my_commands(
                [BotCommand(name, text[:256]) for name, text in commands],
                scope=BotCommandScopeDefault())
        except (*STORE_ERRORS, TelegramError) as exc:
            log.warning("default commands menu not set: %s", type(exc).__name__)

    async def _set_menu(self, user_id: int, commands: list[list[str]]) -> None:
        """Show a person, in their private chat, the commands of their role. The core sends
        a menu only when the person's set of commands changed (their account remembers the
        one it was given); one Telegram refused is set again after their next message."""
        try:
            await self.bot.set_my_commands(
                [BotCommand(name, text[:256]) for name, text in commands],
                scope=BotCommandScopeChat(user_id))
        except TelegramError as exc:
            log.warning("commands menu of a chat not set: %s", type(exc).__name__)
            with contextlib.suppress(*STORE_ERRORS):
                await self.core.forget_menu(PLATFORM, str(user_id))

    # -- logs -----------------------------------------------------------------------------
    def _guard_logs(self) -> None:
        """Mask the token on every logger that may print the Bot API URL."""
        names = [n for n in logging.root.manager.loggerDict
                 if n.split(".")[0] in ("telegram", "httpx", "httpcore")]
        for name in sorted({*names, "httpx", "telegram", "telegram.Bot", "telegram.ext.ExtBot",
                            __name__}):
            logger = logging.getLogger(name)
            logger.addFilter(self._redactor)
            self._guarded.append(logger)

    def _unguard_logs(self) -> None:
        for logger in self._guarded:
            logger.removeFilter(self._redactor)
        self._guarded.clear()


def build_application(settings: Settings, limiter: BaseRateLimiter | None = None) -> Application:  # type: ignore[type-arg]
    """A PTB Application for the Bot API at TELEGRAM_API_URL: no Updater, no JobQueue."""
    return (ApplicationBuilder()
            .token(str(settings.telegram_token))
            .base_url(settings.telegram_api_url)
            .base_file_url(file_url(settings.telegram_api_url))
            .updater(None)
            .job_queue(None)
            .rate_limiter(limiter or rate_limiter())
            .build())


def webhook_url(url: str) -> str:
    """The full webhook address: a bare site (`https://bot.example.org`) gets the adapter's path."""
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path=WEBHOOK_PATH)
    return urlunsplit(parts)


async def set_webhook(app: BotApp, url: str) -> str:
    """`fpbot telegram set-webhook URL`: point Telegram at this bot's `fpbot serve`."""
    settings = app.settings
    secret = str(settings.telegram_webhook_secret)
    if not settings.telegram_token:
        raise ValueError("TELEGRAM_TOKEN is not set")
    if not SECRET_SHAPE.match(secret):
        raise ValueError("TELEGRAM_WEBHOOK_SECRET must be set: 1-256 characters of A-Z a-z 0-9 _ -")
    full = webhook_url(url)
    redactor = RedactSecrets(settings.secrets)
    loggers = [logging.getLogger(n) for n in ("httpx", "telegram.Bot", "telegram.ext.ExtBot")]
    for logger in loggers:
        logger.addFilter(redactor)
    try:
        async with Bot(str(settings.telegram_token), base_url=settings.telegram_api_url,
                       base_file_url=file_url(settings.telegram_api_url)) as bot:
            await bot.set_webhook(full, secret_token=secret,
                                  allowed_updates=list(ALLOWED_UPDATES))
    except InvalidToken:
        raise ValueError("Telegram rejected TELEGRAM_TOKEN") from None
    except TelegramError as exc:
        raise ValueError(f"Telegram refused the webhook: {redactor.redact(str(exc))}") from None
    finally:
        for logger in loggers:
            logger.removeFilter(redactor)
    return full
