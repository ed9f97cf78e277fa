"""In-process fake of the Telegram Bot API for end-to-end tests.

Serves ``/bot{token}/{method}`` and ``GET /file/bot{token}/{file_path}`` on 127.0.0.1 with
Telegram's JSON envelope, so a real python-telegram-bot ``Application``/``Bot`` runs unmodified::

    async with FakeBotAPI() as fake:
        app = (ApplicationBuilder().token(fake.token).base_url(f"{fake.url}/bot")
               .base_file_url(f"{fake.url}/file/bot").build())
        ...
        fake.push_update(fake.message_update(42, "/start"))
        [call] = await fake.wait_for("sendMessage")
        assert call.params == {"chat_id": 42, "text": "hi"}

Parameter decoding: PTB posts form fields as strings (JSON for non-strings), so every value is
JSON-decoded when possible ("42" -> 42, reply_markup -> dict) except free-text/opaque keys in
``VERBATIM_KEYS`` (``text="42"`` stays ``"42"``). Text is echoed verbatim, but first checked
as the Bot API checks it (``tests/fakes/validate.py``): a payload Telegram would refuse is
answered with its 400 ("Bad Request: can't parse entities: ...").

Flood limits are off by default; ``FakeBotAPI(token, limits=TelegramLimits())`` enforces the
published ones (about 30 messages a second overall, about one a second in one chat with short
bursts, 20 a minute in a group: /work/shared/PLATFORM-LIMITS.md §1) as token buckets. A message
past them is answered like Telegram answers it, HTTP 429 ``{"ok": false, "error_code": 429,
"description": "Too Many Requests: retry after N", "parameters": {"retry_after": N}}``, and
counted in :attr:`FakeBotAPI.throttled`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import mimetypes
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

from tests.fakes.limits import TokenBucket
from tests.fakes.validate import telegram_error

JSONDict = dict[str, Any]
BOT_USER: JSONDict = {"id": 999, "is_bot": True, "first_name": "Focal Points Bot",
                      "username": "fpbot_test_bot"}
VERBATIM_KEYS = frozenset({
    "text", "caption", "title", "description", "short_description", "question", "explanation",
    "name", "query", "url", "secret_token", "file_id", "callback_query_id", "inline_query_id",
    "business_connection_id", "custom_emoji_id", "payload", "start_parameter", "emoji"})


# Methods that send a message, and so count against the flood limits (sendChatAction does not).
MESSAGE_METHODS = frozenset({"forwardmessage", "forwardmessages", "copymessage", "copymessages"})


def _is_message(method: str) -> bool:
    name = method.lower()
    return (name.startswith("send") and name != "sendchataction") or name in MESSAGE_METHODS


@dataclass(frozen=True)
class TelegramLimits:
    """The flood limits the fake enforces when given them, each a token bucket: `burst`
    messages at once, then `rate` a second (exact limits are undocumented; these are the
    published "about" figures, PLATFORM-LIMITS.md §1). `clock` (seconds, monotonic) can be
    frozen in tests."""

    per_second: float = 30.0  # overall: "up to 30 messages per second"
    burst: float = 30.0
    chat_per_second: float = 1.0  # one private chat: "avoid more than one message per second"
    chat_burst: float = 3.0  # "short bursts are tolerated"
    group_per_minute: float = 20.0  # one group: "no more than 20 messages per minute"
    group_burst: float = 20.0
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


@dataclass
class Call:
    """One request received by the fake, recorded when answered (failed ones included)."""

    method: str
    params: JSONDict
    status: int = 200
    result: Any = None  # the "result" sent back (None for failures)
    at: float = field(default_factory=time.monotonic, compare=False)  # answered at (monotonic)


class ApiError(Exception):
    """An error answer: ``{"ok": false, "error_code": status, "description": ...}``."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after

    def body(self) -> JSONDict:
        """The JSON body Telegram would send."""
        body: JSONDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _decode(key: str, value: Any) -> Any:
    """JSON-decode a string form value unless the key is free text or the result is a string."""
    if not isinstance(value, str) or key in VERBATIM_KEYS:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return value if decoded is None or isinstance(decoded, str) else decoded


async def _read_params(request: web.Request) -> JSONDict:
    """Merge query string and form-urlencoded/multipart/JSON body into one decoded dict."""
    raw: JSONDict = dict(request.query)
    if request.content_type == "application/json":
        raw.update(await request.json() if request.can_read_body else {})
    elif request.can_read_body:
        for key, value in (await request.post()).items():
            raw[key] = ({"filename": value.filename, "content": value.file.read()}
                        if isinstance(value, web.FileField) else value)
    params = {key: _decode(key, value) for key, value in raw.items()}
    for key, value in params.items():  # resolve "attach://<part>" references to uploaded parts
        if isinstance(value, str) and value.startswith("attach://"):
            params[key] = params.get(value.removeprefix("attach://"), value)
    return params


class FakeBotAPI:
    """A fake Bot API server; see the module docstring. Use ``async with`` or start()/stop()."""

    def __init__(self, token: str = "123:abc", limits: TelegramLimits | None = None) -> None:
        self.token = token
        self.url = ""
        self.calls: list[Call] = []
        self.limits = limits  # None: no flood limits
        self.throttled = 0  # messages answered 429 by the flood limits
        self._buckets: dict[Any, TokenBucket] = {}
        self.confirmed_offset = 0  # highest offset a getUpdates call has confirmed
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.messages: dict[tuple[Any, int], JSONDict] = {}  # (chat_id, message_id) -> Message
        self._updates: list[JSONDict] = []
        self._files: dict[str, JSONDict] = {}
        self._chats: dict[Any, JSONDict] = {}
        self._commands: dict[str, Any] = {}
        self._failures: dict[str, list[ApiError | None]] = {}  # None: this call goes through
        self._stalls: list[float] = []
        self._next_update_id = 1
        self._message_ids = itertools.count(1)
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._poll_generation = 0
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Callable[[str, JSONDict], Awaitable[Any]]] = {
            "getme": self._get_me, "getupdates": self._get_updates,
            "setwebhook": self._set_webhook, "deletewebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info, "getfile": self._get_file,
            "setmycommands": self._commands_op, "deletemycommands": self._commands_op,
            "getmycommands": self._commands_op, "editmessagetext": self._edit_message,
            "editmessagecaption": self._edit_message, "editmessagereplymarkup": self._edit_message}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on a random free port of 127.0.0.1 and set :attr:`url`."""
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        app.router.add_get("/file/bot{token}/{path:.+}", self._serve_file)
        self._closing = False
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Answer pending long-polls with ``[]`` and shut the server down."""
        self._closing = True
        self._wake()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- test helpers ----------------------------------------------------------------------
    def push_update(self, update: JSONDict) -> JSONDict:
        """Queue an update for getUpdates (update_id auto-assigned if missing); returns it."""
        update = {"update_id": self._next_update_id, **update}
        self._next_update_id = max(self._next_update_id, update["update_id"] + 1)
        self._updates.append(update)
        self._wake()
        return update

    def pending_updates(self) -> list[JSONDict]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self._updates)

    def add_file(self, file_id: str, content: bytes, file_name: str | None = None,
                 mime_type: str | None = None) -> JSONDict:
        """Register a downloadable file; returns a Document-shaped dict (for message_update)."""
        n = next(self._ids)
        meta: JSONDict = {"file_id": file_id, "file_unique_id": f"u{n}", "file_size": len(content)}
        if file_name:
            meta["file_name"] = file_name
        meta["mime_type"] = (mime_type or mimetypes.guess_type(file_name or "")[0]
                             or "application/octet-stream")
        self._files[file_id] = {**meta, "file_path": f"documents/file_{n}", "content": content}
        return meta

    def message_update(self, chat_id: int, text: str | None, user_id: int | None = None,
                       first_name: str = "Alice", chat_type: str = "private",
                       username: str | None = None, document: JSONDict | None = None,
                       photo: list[JSONDict] | None = None) -> JSONDict:
        """Build (not push) a ``message`` update; text becomes the caption if media is given."""
        user = self._user(chat_id, user_id, first_name, username)
        chat: JSONDict = {"id": chat_id, "type": chat_type}
        chat.update({"first_name": first_name, **({"username": username} if username else {})}
                    if chat_type == "private" else {"title": f"Chat {chat_id}"})
        self._chats[chat_id] = chat
        msg: JSONDict = {"message_id": next(self._message_ids), "date": int(time.time()),
                         "chat": chat, "from": user}
        if document is not None:
            msg["document"] = {"file_unique_id": f"u{next(self._ids)}", **document}
        if photo is not None:
            msg["photo"] = [{"file_unique_id": f"u{next(self._ids)}", "width": 90, "height": 90,
                             **size} for size in photo]
        key = "caption" if document is not None or photo is not None else "text"
        if text:
            msg[key] = text
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0]
                msg["caption_entities" if key == "caption" else "entities"] = [
                    {"type": "bot_command", "offset": 0, "length": len(command)}]
        return {"message": msg}

    def callback_update(self, chat_id: int, data: str, message_id: int,
                        user_id: int | None = None) -> JSONDict:
        """Build (not push) a ``callback_query`` update on a (preferably bot-sent) message."""
        message = self.messages.get((chat_id, message_id)) or {
            "message_id": message_id, "date": int(time.time()), "chat": self._chat(chat_id),
            "from": BOT_USER, "text": "(message)"}
        return {"callback_query": {"id": f"cbq-{next(self._ids)}", "data": data,
                                   "from": self._user(chat_id, user_id, "Alice", None),
                                   "chat_instance": f"ci-{chat_id}", "message": message}}

    def calls_to(self, method: str) -> list[Call]:
        """Recorded calls to ``method`` (case-insensitive), any status."""
        return [call for call in self.calls if call.method.lower() == method.lower()]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Poll until ``count`` calls to ``method`` are recorded; returns all of them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(calls := self.calls_to(method)) < count:
            if asyncio.get_running_loop().time() >= deadline:
                seen = [c.method if c.status == 200 else f"{c.method}[{c.status}]"
                        for c in self.calls]
                raise TimeoutError(f"expected {count} {method} call(s) within {timeout}s, got "
                                   f"{len(calls)}; recorded: {', '.join(seen) or 'none'}")
            await asyncio.sleep(0.01)
        return calls

    def fail_next(self, method: str, status: int = 429, retry_after: int = 1, times: int = 1,
                  description: str | None = None, after: int = 0) -> None:
        """Make the next ``times`` calls to ``method`` fail with HTTP ``status`` (once
        ``after`` more calls have gone through)."""
        flood = status == HTTPStatus.TOO_MANY_REQUESTS
        default = f"Too Many Requests: retry after {retry_after}" if flood else None
        error = ApiError(status, description or default or HTTPStatus(status).phrase,
                         retry_after if flood else None)
        self._failures.setdefault(method.lower(), []).extend([None] * after + [error] * times)

    def clear_failures(self) -> None:
        """Forget the failures queued by :meth:`fail_next` that have not happened yet."""
        self._failures.clear()

    # ---- delivery faults (issue 9) ---------------------------------------------------------
    def hang_next(self, method: str, times: int = 1, after: int = 0) -> None:
        """Make the next ``times`` calls to ``method`` hang until :meth:`release_hangs` (once
        ``after`` more calls have gone through)."""
        hangs = self.__dict__.setdefault("_hangs", {})
        hangs[method.lower()] = hangs.get(method.lower(), 0) + times
        self.__dict__.setdefault("_hang_after", {})[method.lower()] = after
        self.__dict__.setdefault("hanging", asyncio.Event())

    def release_hangs(self) -> None:
        """Let every hanging call go on (and no further call hang)."""
        self.__dict__.get("_hangs", {}).clear()
        if "hanging" in self.__dict__:
            self.__dict__["released"] = True
            self.__dict__["hanging"].set()

    def stall_next_message(self, seconds: float) -> None:
        """Before it counts the next message, the server's whole process stops for `seconds`
        (a garbage collection, a machine busy elsewhere): the event loop it shares with the
        client stops with it, and every request under way arrives after it."""
        self._stalls.append(seconds)

    async def _maybe_hang(self, method: str) -> None:
        hangs = self.__dict__.get("_hangs", {})
        after = self.__dict__.get("_hang_after", {})
        if hangs.get(method.lower()) and after.get(method.lower()):
            after[method.lower()] -= 1
            return
        if hangs.get(method.lower()):
            hangs[method.lower()] -= 1
            self.__dict__["hung"] = self.__dict__.get("hung", 0) + 1
            await self.__dict__["hanging"].wait()
            # Released after its client gave up (or died): the message never went out.
            raise ApiError(502, "Bad Gateway")

    # ---- HTTP plumbing ---------------------------------------------------------------------
    def _wake(self) -> None:
        """Wake every waiting long-poll (each waits on the event current when it slept)."""
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    async def _dispatch(self, request: web.Request) -> web.Response:
        method, params = request.match_info["method"], await _read_params(request)
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            if self._stalls and _is_message(method):
                time.sleep(self._stalls.pop(0))  # a stalled process, not a wait: nothing runs
            self._flood_check(method, params)
            await self._maybe_hang(method)
            if (failures := self._failures.get(method.lower())) and \
                    (failure := failures.pop(0)) is not None:
                raise failure
            if (refusal := telegram_error(method, params)) is not None:
                raise ApiError(400, refusal)
            result = await self._handlers.get(method.lower(), self._default)(method, params)
        except ApiError as err:
            self.calls.append(Call(method, params, err.status))
            return web.json_response(err.body(), status=err.status)
        self.calls.append(Call(method, params, 200, result))
        return web.json_response({"ok": True, "result": result})

    def _flood_check(self, method: str, params: JSONDict) -> None:
        """Take a message's tokens (overall, and its chat's), or refuse it with a 429."""
        limits = self.limits
        if limits is None or not _is_message(method):
            return
        now = limits.clock()
        buckets = [self._bucket("overall", limits.per_second, limits.burst, now)]
        chat = params.get("chat_id")
        if isinstance(chat, int) and chat > 0:
            buckets.append(self._bucket(chat, limits.chat_per_second, limits.chat_burst, now))
        elif chat is not None:  # a group, supergroup or channel
            buckets.append(self._bucket(chat, limits.group_per_minute / 60, limits.group_burst,
                                        now))
        wait = max(bucket.wait(now) for bucket in buckets)
        if wait > 0:
            self.throttled += 1
            retry_after = max(1, math.ceil(wait))
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        for bucket in buckets:
            bucket.take()

    def _bucket(self, key: Any, rate: float, burst: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        return bucket

    async def _serve_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
        for file in self._files.values():
            if file["file_path"] == request.match_info["path"]:
                return web.Response(body=file["content"], content_type=file["mime_type"])
        return web.json_response(ApiError(404, "Not Found").body(), status=404)

    # ---- Bot API methods -------------------------------------------------------------------
    async def _get_me(self, method: str, params: JSONDict) -> JSONDict:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    async def _get_updates(self, method: str, params: JSONDict) -> list[JSONDict]:
        """Long-poll like Telegram: confirm offset, then wait up to ``timeout`` for updates."""
        offset = int(params.get("offset", 0))
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self.confirmed_offset = max(self.confirmed_offset, offset)
        elif offset < 0:  # keep only the last -offset updates
            self._updates = self._updates[offset:]
        limit = min(max(int(params.get("limit", 100)), 1), 100)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(params.get("timeout", 0))
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake()  # a newer getUpdates terminates an older one with 409, like Telegram
        while True:
            if self.webhook_url:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                               "active; use deleteWebhook to delete the webhook first")
            if generation != self._poll_generation:
                raise ApiError(409, "Conflict: terminated by other getUpdates request; make "
                               "sure that only one bot instance is running")
            remaining = deadline - loop.time()
            if self._updates or self._closing or remaining <= 0:
                return self._updates[:limit]
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                pass

    async def _set_webhook(self, method: str, params: JSONDict) -> bool:
        """setWebhook / deleteWebhook, both honouring drop_pending_updates."""
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook_url = params.get("url", "") if method.lower() == "setwebhook" else ""
        self.webhook_secret = params.get("secret_token") if self.webhook_url else None
        self._wake()
        return True

    async def _get_webhook_info(self, method: str, params: JSONDict) -> JSONDict:
        return {"url": self.webhook_url, "has_custom_certificate": False,
                "pending_update_count": len(self._updates)}

    async def _get_file(self, method: str, params: JSONDict) -> JSONDict:
        file = self._files.get(str(params.get("file_id")))
        if file is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        return {k: v for k, v in file.items() if k not in ("content", "file_name", "mime_type")}

    async def _commands_op(self, method: str, params: JSONDict) -> Any:
        key = json.dumps([params.get("scope") or {"type": "default"},
                          params.get("language_code") or ""], sort_keys=True)
        if method.lower() == "setmycommands":
            self._commands[key] = params.get("commands", [])
        elif method.lower() == "deletemycommands":
            self._commands.pop(key, None)
        else:
            return self._commands.get(key, [])
        return True

    async def _edit_message(self, method: str, params: JSONDict) -> JSONDict | bool:
        """editMessageText/Caption/ReplyMarkup: True for inline messages, else the Message."""
        if "inline_message_id" in params:
            return True
        chat_id, message_id = params.get("chat_id"), int(params.get("message_id", 0))
        old = self.messages.get((chat_id, message_id)) or {
            "message_id": message_id, "date": int(time.time()), "chat": self._chat(chat_id),
            "from": BOT_USER}
        new = {k: v for k, v in old.items() if k != "reply_markup"}
        for key in ("text", "caption", "reply_markup"):
            if key in params:
                new[key] = params[key]
        if (chat_id, message_id) in self.messages and {**new, "edit_date": 0} == {
                **old, "edit_date": 0}:
            raise ApiError(400, "Bad Request: message is not modified: specified new message "
                           "content and reply markup are exactly the same")
        self.messages[(chat_id, message_id)] = {**new, "edit_date": int(time.time())}
        return self.messages[(chat_id, message_id)]

    async def _default(self, method: str, params: JSONDict) -> JSONDict | bool:
        """send* (except sendChatAction) -> a bot Message; anything else -> True."""
        if not method.lower().startswith("send") or method.lower() == "sendchataction":
            return True
        if "chat_id" not in params:
            raise ApiError(400, "Bad Request: chat_id is empty")
        if method.lower() == "sendmessage" and not params.get("text"):
            raise ApiError(400, "Bad Request: message text is empty")
        msg: JSONDict = {"message_id": next(self._message_ids), "date": int(time.time()),
                         "chat": self._chat(params["chat_id"]), "from": BOT_USER}
        for key in ("text", "entities", "caption", "caption_entities"):
            if key in params:
                msg[key] = params[key]
        if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in params[
                "reply_markup"]:  # Telegram only echoes inline keyboards
            msg["reply_markup"] = params["reply_markup"]
        if method.lower() == "senddocument":
            msg["document"] = self._file_meta(params.get("document"))
        self.messages[(params["chat_id"], msg["message_id"])] = msg
        return msg

    # ---- internals -------------------------------------------------------------------------
    def _file_meta(self, value: Any) -> JSONDict:
        """Document metadata for an upload ({"filename", "content"}) or a file_id/URL string."""
        if isinstance(value, dict) and "content" in value:
            return self.add_file(f"file-{next(self._ids)}", value["content"], value["filename"])
        known = self._files.get(str(value))
        if known is not None:
            return {k: v for k, v in known.items() if k not in ("content", "file_path")}
        return {"file_id": str(value), "file_unique_id": f"u{next(self._ids)}"}

    def _chat(self, chat_id: Any) -> JSONDict:
        """The Chat object for ``chat_id`` (as seen in built updates, else inferred)."""
        if chat_id in self._chats:
            return self._chats[chat_id]
        if isinstance(chat_id, str):  # "@channelusername"
            return {"id": -1001000000000, "type": "channel", "username": chat_id.lstrip("@")}
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Alice"}
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}

    @staticmethod
    def _user(chat_id: int, user_id: int | None, first_name: str,
              username: str | None) -> JSONDict:
        """A human User; user_id defaults to chat_id in private chats, else 1000."""
        uid = user_id if user_id is not None else (chat_id if chat_id > 0 else 1000)
        user: JSONDict = {"id": uid, "is_bot": False, "first_name": first_name}
        return {**user, "username": username} if username else user
