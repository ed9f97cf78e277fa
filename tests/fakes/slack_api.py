"""A fake Slack Web API for end-to-end tests, plus helpers to sign inbound requests.

``FakeSlackAPI`` is a real aiohttp server on ``127.0.0.1`` (random port) that answers
``/api/{method}`` the way Slack does, so the real ``slack_sdk.web.async_client.AsyncWebClient``
and a real ``slack_bolt.async_app.AsyncApp`` run unmodified against it::

    async with FakeSlackAPI() as fake:
        client = AsyncWebClient(token=fake.token, base_url=f"{fake.url}/api/")
        await client.chat_postMessage(channel="C1", text="hi")
        assert fake.calls_to("chat.postMessage")[0].params["text"] == "hi"

``signed_headers``, ``slash_command_body`` and ``event_body`` build requests that Slack would
send to the bot, signed the way bolt's request verification expects.

Rate limits are off by default; ``FakeSlackAPI(limits=SlackLimits())`` enforces the published
ones (/work/shared/PLATFORM-LIMITS.md §2): each method of ``SlackLimits.tiers`` its tier's calls a
minute (per workspace, with some burst), chat.postMessage one message a second per channel
(short bursts allowed) under a workspace-wide cap. A call past them is answered like Slack
answers it, HTTP 429 with ``Retry-After: N`` and ``{"ok": false, "error": "ratelimited"}``, and
counted in ``FakeSlackAPI.throttled``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from tests.fakes.limits import TokenBucket
from tests.fakes.validate import slack_error

Json = dict[str, Any]

TEAM_ID = "T1"
BOT_USER_ID = "UBOT"
BOT_ID = "B1"


# Calls a minute of each tier (the published floor: "1+", "20+", "50+", "100+").
TIER_1, TIER_2, TIER_3, TIER_4 = 1.0, 20.0, 50.0, 100.0
# The methods this bot uses, by tier (PLATFORM-LIMITS.md §2, from java-slack-sdk's table).
METHOD_TIERS: Mapping[str, float] = {
    "users.list": TIER_2, "users.lookupByEmail": TIER_3, "users.info": TIER_4,
    "conversations.open": TIER_3, "conversations.history": TIER_3, "chat.update": TIER_3,
    "chat.postEphemeral": TIER_4, "views.open": TIER_4, "views.update": TIER_4,
    "views.push": TIER_4, "views.publish": TIER_4, "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
}


@dataclass(frozen=True)
class SlackLimits:
    """The rate limits the fake enforces when given them, each a token bucket. A tier's bucket
    holds `burst_seconds` of its quota (at least one call): Slack tolerates "occasional
    bursts" without saying how many. chat.postMessage is Slack's special tier: one a second
    per channel with short bursts, and a workspace-wide limit Slack only calls "several
    hundred messages per minute" (300 here, PLATFORM-LIMITS.md's working assumption).
    `clock` (seconds, monotonic) can be frozen in tests."""

    tiers: Mapping[str, float] = field(default_factory=lambda: dict(METHOD_TIERS))
    burst_seconds: float = 10.0
    post_per_channel: float = 1.0  # chat.postMessage a second, one channel
    post_channel_burst: float = 3.0
    post_per_minute: float = 300.0  # chat.postMessage, the whole workspace
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def burst(self, per_minute: float) -> float:
        """How many calls of a `per_minute` quota may go at once."""
        return max(1.0, round(per_minute * self.burst_seconds / 60))


@dataclass
class Call:
    """One request the fake received: the API method, its parameters and the HTTP status."""

    method: str
    params: Json
    status: int = 200
    at: float = field(default_factory=time.monotonic, compare=False)  # answered at (monotonic)


@dataclass
class _Failure:
    status: int
    retry_after: int
    times: int


@dataclass
class FakeSlackAPI:
    """Fake Slack Web API server; see the module docstring for usage.

    Requests must carry ``token`` (``app_token`` for apps.connections.open), else the answer
    is ``invalid_auth``. ``responses[method]`` overrides the canned answer of a method;
    methods without one answer ``{"ok": true}``. Every request is appended to ``calls``. Blocks
    and views are first checked as Slack checks them (``tests/fakes/validate.py``): an invalid
    one is answered ``invalid_blocks`` / ``invalid_arguments``.
    """

    token: str = "xoxb-test"
    app_token: str = "xapp-test"
    socket_url: str | None = None
    responses: dict[str, Json] = field(default_factory=dict)
    limits: SlackLimits | None = None  # None: no rate limits
    calls: list[Call] = field(default_factory=list, init=False)
    throttled: int = field(default=0, init=False)  # calls answered 429 by the rate limits
    uploads: dict[str, Json] = field(default_factory=dict, init=False)
    users: dict[str, Json] = field(default_factory=dict, init=False)
    url: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.socket_received: list[Json] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._failures: dict[str, _Failure] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        # What each conversation holds, oldest first: the messages posted to it (a DM under
        # its "D…" id, whether posted to the user's id or to that), for conversations.history.
        self.conversations: dict[str, list[Json]] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 and set ``url``."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Shut the server down."""
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlackAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- test controls ----------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        *,
        real_name: str = "Test User",
        email: str | None = None,
        tz: str = "America/Santiago",
    ) -> Json:
        """Register a user for users.info and users.lookupByEmail; return its user object."""
        user = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": real_name.lower().replace(" ", "."),
            "real_name": real_name,
            "tz": tz,
            "is_bot": False,
            "deleted": False,
            "profile": {"real_name": real_name, "display_name": real_name, "email": email},
        }
        self.users[user_id] = user
        return user

    def fail_next(
        self, method: str, status: int = 429, retry_after: int = 1, times: int = 1
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP ``status`` (429: ratelimited)."""
        self._failures[method] = _Failure(status, retry_after, times)

    def calls_to(self, method: str) -> list[Call]:
        """Return the recorded calls of one API method, oldest first."""
        return [call for call in self.calls if call.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until ``method`` was called ``count`` times; return those calls."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self.calls_to(method)) >= count), timeout
                )
            except TimeoutError:
                seen = [call.method for call in self.calls]
                raise TimeoutError(
                    f"{method} called {len(self.calls_to(method))}/{count} times in {timeout}s; "
                    f"recorded: {seen}"
                ) from None
        return self.calls_to(method)

    # -- delivery faults (issue 9) -------------------------------------------------------------

    def refuse_next(self, method: str, error: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        refusals = self.__dict__.setdefault("_refusals", {})
        refusals.setdefault(method, []).extend([error] * times)

    def hang_next(self, method: str) -> None:
        """Make the next call of ``method`` hang until :meth:`release_hangs` (then fail 502)."""
        self.__dict__.setdefault("_hangs", set()).add(method)
        self.__dict__.setdefault("hanging", asyncio.Event())

    def hold_answers(self, method: str, after: int = 0, times: int | None = None) -> None:
        """Carry out the calls of ``method`` past the first ``after`` (``times`` of them, or
        all) but hold their answers until :meth:`release_hangs`: what a bot killed or timed
        out then never learns went out. Each one held is counted in ``held``."""
        self.__dict__.setdefault("_holds", {})[method] = (after, times)
        if self.__dict__.setdefault("hanging", asyncio.Event()).is_set():
            self.__dict__["hanging"] = asyncio.Event()  # released before: hold anew

    def release_hangs(self) -> None:
        self.__dict__.get("_hangs", set()).clear()
        self.__dict__.get("_holds", {}).clear()
        if "hanging" in self.__dict__:
            self.__dict__["hanging"].set()

    async def _maybe_hang(self, method: str) -> bool:
        hangs = self.__dict__.get("_hangs", set())
        if method not in hangs:
            return False
        hangs.discard(method)
        self.__dict__["hung"] = self.__dict__.get("hung", 0) + 1
        await self.__dict__["hanging"].wait()
        return True

    def _refusal(self, method: str) -> str | None:
        queued = self.__dict__.get("_refusals", {}).get(method)
        return queued.pop(0) if queued else None

    # -- Socket Mode --------------------------------------------------------------------------

    def use_socket_mode(self) -> str:
        """Make apps.connections.open hand out this server's WebSocket; return its URL."""
        self.socket_url = self.url.replace("http://", "ws://") + "/socket"
        return self.socket_url

    async def socket_send(self, envelope: Json) -> None:
        """Send an envelope (``slash_commands``, ``events_api``, ``interactive``) to the bot."""
        for ws in self._sockets:
            if not ws.closed:
                await ws.send_json(envelope)

    async def wait_for_socket_ack(self, envelope_id: str, count: int = 1,
                                  timeout: float = 5.0) -> list[Json]:
        """Wait until the bot acknowledged ``envelope_id`` ``count`` times; return the acks."""

        def acks() -> list[Json]:
            return [m for m in self.socket_received if m.get("envelope_id") == envelope_id]

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(acks()) >= count),
                                       timeout)
            except TimeoutError:
                raise TimeoutError(f"envelope {envelope_id} acknowledged {len(acks())}/{count} "
                                   f"times in {timeout}s") from None
        return acks()

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets),
                            "connection_info": {"app_id": "A1"},
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600}})
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                self.socket_received.append(json.loads(message.data))
                async with self._changed:
                    self._changed.notify_all()
        return ws

    # -- HTTP handlers ----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        if await self._maybe_hang(method):  # released after its client died: never sent
            self.calls.append(Call(method, params, 502))
            return web.json_response({"ok": False, "error": "fatal_error"}, status=502)
        refusal = self._refusal(method)
        if refusal is not None:
            call = Call(method, params, 200)
            self.calls.append(call)
            self.__dict__.setdefault("refused", []).append(call)
            async with self._changed:
                self._changed.notify_all()
            return web.json_response({"ok": False, "error": refusal})
        status, body, headers = self._answer(method, params, request.headers.get("Authorization"))
        self.calls.append(Call(method, params, status))
        async with self._changed:
            self._changed.notify_all()
        hold = self.__dict__.get("_holds", {}).get(method)
        if hold is not None and status == 200 and self._held_now(method, *hold):
            self.__dict__["held"] = self.__dict__.get("held", 0) + 1
            await self.__dict__["hanging"].wait()
        return web.json_response(body, status=status, headers=headers)

    def _held_now(self, method: str, after: int, times: int | None) -> bool:
        """Whether the call of `method` just carried out is one whose answer is held."""
        n = len([c for c in self.calls_to(method) if c.status == 200])
        return n > after and (times is None or n <= after + times)

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self.uploads:
            return web.Response(status=404, text="unknown upload")
        self.uploads[file_id]["content"] = await request.read()
        return web.Response(text=f"OK - {len(self.uploads[file_id]['content'])}")

    def _answer(
        self, method: str, params: Json, authorization: str | None
    ) -> tuple[int, Json, dict[str, str]]:
        failure = self._failures.get(method)
        if failure is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[method]
            if failure.status == 429:
                headers = {"Retry-After": str(failure.retry_after)}
                return 429, {"ok": False, "error": "ratelimited"}, headers
            return failure.status, {"ok": False, "error": "fatal_error"}, {}
        token = (authorization or "").removeprefix("Bearer ") or params.get("token")
        expected = self.app_token if method == "apps.connections.open" else self.token
        if token != expected:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if (wait := self._rate_check(method, params)) > 0:
            self.throttled += 1
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            return 429, {"ok": False, "error": "ratelimited"}, headers
        if (refusal := slack_error(method, params)) is not None:
            return 200, refusal, {}
        if method in self.responses:
            return 200, self.responses[method], {}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        body: Json = handler(params) if handler else {"ok": True}
        return 200, body, {}

    def _rate_check(self, method: str, params: Json) -> float:
        """Take the call's tokens and return 0, or return the seconds until it may go."""
        limits = self.limits
        if limits is None:
            return 0.0
        now = limits.clock()
        if method == "chat.postMessage":
            buckets = [self._bucket(("workspace", method), limits.post_per_minute / 60,
                                    limits.burst(limits.post_per_minute), now),
                       self._bucket((str(params.get("channel")), method),
                                    limits.post_per_channel, limits.post_channel_burst, now)]
        elif method in limits.tiers:
            per_minute = limits.tiers[method]
            buckets = [self._bucket(("workspace", method), per_minute / 60,
                                    limits.burst(per_minute), now)]
        else:
            return 0.0
        wait = max(bucket.wait(now) for bucket in buckets)
        if wait == 0:
            for bucket in buckets:
                bucket.take()
        return wait

    def _bucket(self, key: tuple[str, str], rate: float, burst: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        return bucket

    # -- Web API methods --------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):07d}"

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ids) * 100:06d}"

    def _auth_test(self, params: Json) -> Json:
        return {
            "ok": True,
            "url": "https://focal-points.slack.com/",
            "team": "Focal Points",
            "user": "fpbot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        }

    def _chat_postMessage(self, params: Json) -> Json:
        ts = self._next_ts()
        message = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": _decoded(params.get("blocks", [])),
        }
        if params.get("metadata"):
            message["metadata"] = _decoded(params["metadata"])
        channel = _conversation(str(params.get("channel")))
        self.conversations.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def post_by_user(self, channel: str, user: str, text: str) -> None:
        """A message a person wrote in a conversation (for its history)."""
        self.conversations.setdefault(_conversation(channel), []).append(
            {"type": "message", "user": user, "ts": self._next_ts(), "text": text})

    def messages_to(self, channel: str) -> list[Json]:
        """The bot's messages in a conversation (a user's id names their DM), oldest first."""
        return [m for m in self.conversations.get(_conversation(channel), [])
                if m.get("bot_id") == BOT_ID]

    def _conversations_history(self, params: Json) -> Json:
        """Newest first, `limit` a page (Slack's default 100, at most 999), paged by an opaque
        `next_cursor`; metadata only with `include_all_metadata` (as Slack, which otherwise
        gives its event_type alone)."""
        channel = str(params.get("channel", ""))
        if channel[:1] not in ("C", "D", "G"):
            return {"ok": False, "error": "channel_not_found"}
        messages = list(reversed(self.conversations.get(channel, [])))
        limit = min(int(params.get("limit") or 100), 999)
        start = int(params.get("cursor") or 0)
        page = messages[start:start + limit]
        full = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        if not full:
            page = [{**m, "metadata": {"event_type": m["metadata"]["event_type"]}}
                    if "metadata" in m else m for m in page]
        more = start + limit < len(messages)
        return {"ok": True, "messages": page, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _chat_update(self, params: Json) -> Json:
        text = params.get("text", "")
        return {
            "ok": True,
            "channel": params.get("channel"),
            "ts": params.get("ts"),
            "text": text,
            "message": {"text": text, "user": BOT_USER_ID},
        }

    def _chat_postEphemeral(self, params: Json) -> Json:
        return {"ok": True, "message_ts": self._next_ts()}

    def _views_open(self, params: Json, view_id: str | None = None) -> Json:
        view = {
            **_decoded(params.get("view", {})),
            "id": view_id or self._next_id("V"),
            "team_id": TEAM_ID,
            "app_id": "A1",
            "bot_id": BOT_ID,
            "hash": self._next_ts(),
        }
        return {"ok": True, "view": view}

    def _views_update(self, params: Json) -> Json:
        return self._views_open(params, view_id=params.get("view_id"))

    _views_push = _views_open
    _views_publish = _views_open

    def _conversations_open(self, params: Json) -> Json:
        if "channel" in params:
            return {"ok": True, "channel": {"id": params["channel"]}}
        users = str(params.get("users", "")).split(",")
        return {"ok": True, "channel": {"id": "D" + users[0], "is_im": len(users) == 1}}

    def _users_info(self, params: Json) -> Json:
        user = self.users.get(str(params.get("user")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _users_lookupByEmail(self, params: Json) -> Json:
        email = params.get("email")
        found = [u for u in self.users.values() if u["profile"]["email"] == email]
        if not found:
            return {"ok": False, "error": "users_not_found"}
        return {"ok": True, "user": found[0]}

    def _files_getUploadURLExternal(self, params: Json) -> Json:
        file_id = self._next_id("F")
        self.uploads[file_id] = {
            "filename": params.get("filename"),
            "title": None,
            "content": b"",
            "channel_id": None,
        }
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, params: Json) -> Json:
        files = []
        for item in _decoded(params.get("files", [])):
            upload = self.uploads.get(item["id"])
            if upload is None:
                return {"ok": False, "error": "file_not_found"}
            upload["title"] = item.get("title") or upload["filename"]
            upload["channel_id"] = params.get("channel_id")
            files.append(
                {
                    "id": item["id"],
                    "name": upload["filename"],
                    "title": upload["title"],
                    "size": len(upload["content"]),
                }
            )
        return {"ok": True, "files": files}

    def _apps_connections_open(self, params: Json) -> Json:
        if self.socket_url is None:
            return {"ok": False, "error": "socket_url_not_set"}
        return {"ok": True, "url": self.socket_url}


async def _read_params(request: web.Request) -> Json:
    """Merge query-string, JSON and form parameters of a Web API request."""
    params: Json = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.can_read_body:
        form = await request.post()
        params.update(
            {k: v.file.read() if isinstance(v, web.FileField) else v for k, v in form.items()}
        )
    return params


def _conversation(channel: str) -> str:
    """The conversation a message to `channel` lands in: a user's id stands for their DM with
    the bot (the "D…" id conversations.open gives)."""
    return "D" + channel if channel[:1] in ("U", "W") else channel


def _decoded(value: Any) -> Any:
    """Decode a JSON-encoded form field (blocks, view, files); pass other values through."""
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


# -- inbound requests (Slack -> bot) ---------------------------------------------------------


def signed_headers(
    secret: str,
    body: str,
    timestamp: int | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, str]:
    """Return the headers Slack sends with ``body``, signed with the signing ``secret``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body) or ""
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": content_type,
    }


def slash_command_body(
    command: str = "/fp",
    text: str = "help",
    user_id: str = "U1",
    channel_id: str = "D1",
    team_id: str = TEAM_ID,
    trigger_id: str = "1.2.3",
) -> str:
    """Return the form-encoded body of a slash command invocation."""
    return urlencode(
        {
            "token": "verification-token",
            "team_id": team_id,
            "team_domain": "focal-points",
            "channel_id": channel_id,
            "channel_name": "directmessage",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A1",
            "response_url": "https://hooks.slack.invalid/commands/1",
            "trigger_id": trigger_id,
        }
    )


def event_body(event: Json, event_id: str = "Ev1", team_id: str = TEAM_ID) -> str:
    """Return the JSON body of an Events API ``event_callback`` wrapping ``event``."""
    return json.dumps(
        {
            "token": "verification-token",
            "team_id": team_id,
            "api_app_id": "A1",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "user_id": BOT_USER_ID, "is_bot": True}],
        }
    )


def interaction_body(payload: Json) -> str:
    """Return the form-encoded body of an interactivity request (block_actions, view_submission)."""
    return urlencode({"payload": json.dumps(payload)})
