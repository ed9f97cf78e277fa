"""Slack: the core behind one slash command, modals, the App Home and direct messages.

Built on slack-bolt's `AsyncApp`. A request from Slack becomes one `Incoming` (the pure
`to_incoming` below); each `Outgoing` becomes Web API calls. No business logic lives here.

Two ways in, one app:

- HTTP (`fpbot serve`): `routes()` serves POST /slack/events through Bolt's Starlette adapter.
  Bolt checks every request's X-Slack-Signature with SLACK_SIGNING_SECRET and refuses one
  stamped more than 5 minutes away (401, nothing processed).
- Socket Mode (`fpbot run` with SLACK_APP_TOKEN): a WebSocket to Slack; no public URL needed.

Every request that reaches the core first goes to the durable inbox (the shared
`bot.delivery.Inbound.receive`, with a short timeout) before it is acknowledged, under a key
that makes it act once: an event's `event_id`, else a SHA-256 of the raw body (slash commands
and interactions carry a unique trigger_id, so only Slack retrying or someone replaying a
captured request repeats a body). A repeat is acknowledged and not acted on again. Handling and
sending the replies are shared code; `deliver()` raises `TemporaryFailure` /
`PermanentFailure` (channel_not_found, not_in_channel, account_inactive, invalid_blocks...).

Who is who: a Slack account is `"<team_id>/<user_id>"` (immutable ids; two workspaces cannot
collide); its chat is the user id, which Slack turns into the DM with the bot. Replies always
go to that DM, so nothing personal is ever posted in a shared channel.

Slash command text arrives as `/fp whoami` and reaches the core as `/whoami`; the core's
messages name commands as `/whoami`, which the adapter shows as `/fp whoami`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.adapters import MAX_BODY, AdapterSetupError, read_capped
from bot.adapters import slack_blocks as kit
from bot.adapters.rendering import message_text
from bot.adapters.slack_home import HomeRefresh, Whose
from bot.adapters.slack_pacing import SlackPacing
from bot.delivery.errors import Parts, PermanentFailure, TemporaryFailure
from handlers.dispatch import STORE_ERRORS
from handlers.types import Attachment, FormView, Incoming, OutFile, Outgoing
from handlers.types import Route as RouteTo

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.app import BotApp

log = logging.getLogger(__name__)

PLATFORM = "slack"
SLASH_COMMAND = "/fp"  # as in slack-manifest.yml; any slash command of the app is accepted
EVENTS_PATH = "/slack/events"
SLACK_ID = re.compile(r"[UWDCG][A-Z0-9]+")
RATE_LIMIT_RETRIES = 10
STOP_GRACE = 10.0
RECEIPT_TIMEOUT = 1.5  # seconds the inbox may take: Slack wants its ack within 3
SUBMISSION_WAIT = 2.0  # seconds a modal submission may be handled before its ack


# -- pure translation: Slack payloads to `Incoming` ----------------------------------------

def account(team_id: str, user_id: str) -> str:
    """The core's user id of a Slack account: immutable team id and user id."""
    return f"{team_id}/{user_id}"


def slack_user(account_id: str) -> str:
    """The Slack user id inside an account id."""
    return account_id.rpartition("/")[2]


def unescape(text: str) -> str:
    """Undo Slack's escaping of `& < >` in text it delivers, giving what the person typed."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _team(body: Mapping[str, Any]) -> str:
    team = body.get("team")
    if isinstance(team, Mapping) and team.get("id"):
        return str(team["id"])
    user = body.get("user")
    if isinstance(user, Mapping) and user.get("team_id"):
        return str(user["team_id"])
    return str(body.get("team_id") or body.get("enterprise_id") or "")


def _incoming(team: str, user: str, **fields: Any) -> Incoming:
    return Incoming(platform=PLATFORM, user_id=account(team, user), chat_id=user,
                    private=True, **fields)


def command_to_incoming(command: Mapping[str, Any]) -> Incoming:
    """`/fp requests approve 3` -> `/requests approve 3`; `/fp` alone -> `/help`."""
    text = unescape(str(command.get("text") or "")).strip().lstrip("/")
    return _incoming(str(command["team_id"]), str(command["user_id"]),
                     text="/" + text if text else "/help")


def message_to_incoming(body: Mapping[str, Any]) -> Incoming | None:
    """A person's own message (and files) in their DM with the bot; None for anything else.

    A file stays on Slack: the core gets its id, name, size and type only.
    """
    event = body.get("event") or {}
    if (event.get("type") != "message" or event.get("channel_type") != "im"
            or event.get("subtype") not in (None, "file_share")
            or event.get("bot_id") or not event.get("user")):
        return None
    files = tuple(Attachment(str(f["id"]), str(f.get("name") or f["id"]), int(f.get("size") or 0),
                             str(f.get("mimetype") or "application/octet-stream"))
                  for f in event.get("files") or () if f.get("id"))
    return _incoming(_team(body), str(event["user"]), text=unescape(str(event.get("text") or "")),
                     attachments=files)


def action_to_incoming(body: Mapping[str, Any]) -> Incoming | None:
    """A button, select or date picker of one of the bot's messages."""
    actions = body.get("actions") or []
    if not actions:
        return None
    action = actions[0]
    action_id = str(action.get("action_id", ""))
    team, user = _team(body), str(body["user"]["id"])
    if action_id.startswith("cmd:"):
        return _incoming(team, user, text=str(action.get("value", "")))
    if not action_id.startswith("form:"):
        return None
    block = str(action.get("block_id", "")).split(":")
    version = int(block[1]) if len(block) > 1 and block[1].isdigit() else None
    verb = action_id.split(":")[1]
    if verb in ("back", "skip", "cancel"):
        return _incoming(team, user, action=verb, form_version=version)
    return _incoming(team, user, action="answer", value=kit.action_value(action),
                     form_version=version)


def submission_to_incoming(body: Mapping[str, Any]) -> Incoming:
    """A whole modal form, submitted."""
    view = body["view"]
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        meta = {}
    return _incoming(_team(body), str(body["user"]["id"]),
                     values=kit.submitted_values(view),
                     value=str(view.get("callback_id", "")).removeprefix("form:"),
                     form_version=meta.get("v"))


# Each message of an outbox row carries the row and its part in its metadata, so that a row
# taken over after a crash can be looked for in the conversation before it goes again.
OUTBOX_EVENT = "fpbot_outbox_message"
HISTORY_PAGE = 100  # messages a conversations.history call reads (newest first)...
HISTORY_PAGES = 3  # ...and pages read, at most, looking for an unsure row

# Errors that no retry can cure: resending would only repeat what already went out.
PERMANENT_ERRORS = frozenset({
    "missing_scope", "channel_not_found", "invalid_blocks", "account_inactive",
    "not_in_channel", "is_archived", "user_not_found", "msg_too_long", "no_text",
    "invalid_auth", "not_authed", "cannot_dm_bot",
})


@contextlib.contextmanager
def _delivery_errors() -> Iterator[None]:
    """Web API errors as the sender's two kinds of failure."""
    try:
        yield
    except SlackApiError as exc:
        error = str(exc.response.get("error", "")) or f"HTTP {exc.response.status_code}"
        if error in PERMANENT_ERRORS:
            raise PermanentFailure(error) from None
        retry = None
        if exc.response.status_code == 429:
            with contextlib.suppress(TypeError, ValueError):
                retry = float((exc.response.headers or {}).get("Retry-After", 1))
        raise TemporaryFailure(error, retry) from None
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise TemporaryFailure(type(exc).__name__) from None


def to_incoming(body: Mapping[str, Any]) -> Incoming | None:
    """What a Slack request asks of the core; None when it asks nothing of it."""
    if body.get("command"):
        return command_to_incoming(body)
    kind = body.get("type")
    if kind == "event_callback":
        return message_to_incoming(body)
    if kind == "block_actions":
        return action_to_incoming(body)
    view = body.get("view") or {}
    if not str(view.get("callback_id", "")).startswith("form:"):
        return None
    if kind == "view_submission":
        return submission_to_incoming(body)
    if kind == "view_closed":
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            meta = {}
        return _incoming(_team(body), str(body["user"]["id"]), action="cancel",
                         form_version=meta.get("v"))
    return None


def inbox_key(body: Mapping[str, Any], raw_body: str) -> str:
    """The key under which a request acts once."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"ev:{body['event_id']}"
    # Socket Mode hands Bolt the parsed payload only: hash a canonical dump of it instead.
    raw = raw_body or json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "rq:" + hashlib.sha256(raw.encode()).hexdigest()


def signature_ok(secret: str, body: bytes, timestamp: str, signature: str) -> bool:
    """Slack's request signature (and its 5-minute window), checked on the raw body."""
    if not timestamp.isdigit() or not signature:
        return False
    return SignatureVerifier(secret).is_valid(body=body.decode("utf-8", "replace"),
                                              timestamp=timestamp, signature=signature)


# -- the Web API client ---------------------------------------------------------------------

class RetryAfterHandler(AsyncRetryHandler):
    """On 429, wait out Retry-After (plus a little jitter) and try again; nothing is dropped."""

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None,
                               error: Exception | None = None) -> bool:
        return response is not None and response.status_code == 429

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        wait = 1.0
        for name, values in (response.headers if response else {}).items():
            if name.lower() == "retry-after" and values:
                with contextlib.suppress(ValueError):
                    wait = float(values[0])
        log.warning("Slack rate limit on %s: retrying in %.0f s", request.url.rsplit("/", 1)[-1],
                    wait)
        await asyncio.sleep(wait + random.uniform(0, 0.1 * max(wait, 1)))
        state.next_attempt_requested = True
        state.increment_current_attempt()


def configure_client(client: AsyncWebClient, base_url: str) -> AsyncWebClient:
    """Point Bolt's Web API client at SLACK_API_URL; ride out rate limits and dropped connections.

    Bolt's own client is configured rather than a new one passed in: given a client, Bolt
    warns at every start that the SLACK_BOT_TOKEN it finds in the environment is unused.
    """
    client.base_url = base_url if base_url.endswith("/") else base_url + "/"
    client.retry_handlers = [AsyncConnectionErrorRetryHandler(max_retry_count=2),
                             RetryAfterHandler(max_retry_count=RATE_LIMIT_RETRIES)]
    return client


# -- the adapter ----------------------------------------------------------------------------

Listener = Callable[..., Awaitable[None]]


def tracked(listener: Listener) -> Listener:
    """Count a listener's work as in hand until it ends, so `stop()` can wait for it."""

    @functools.wraps(listener)
    async def run(self: SlackAdapter, *args: Any, **kwargs: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.busy.add(task)
        try:
            await listener(self, *args, **kwargs)
        finally:
            if task is not None:
                self.busy.discard(task)

    return run


class SlackAdapter:
    """Slack for the core, through Bolt: HTTP events or Socket Mode in, Web API calls out."""

    platform = PLATFORM
    reads_back = True  # each message names its outbox row in its metadata

    def __init__(self, app: BotApp) -> None:
        self.app = app
        self.settings = app.settings
        self.core = app.core
        self.renderer = app.renderer
        self.bolt = AsyncApp(
            token=str(self.settings.slack_bot_token),
            signing_secret=str(self.settings.slack_signing_secret),
            process_before_response=False,
            raise_error_for_unhandled_request=False,
        )
        self.client = configure_client(self.bolt.client, self.settings.slack_api_url)
        # Bolt logs a refused request's body at INFO: personal data. `routes()` logs the refusal.
        logging.getLogger("slack_bolt.RequestVerification").setLevel(logging.WARNING)
        self.handler = AsyncSlackRequestHandler(self.bolt)
        self.socket: AsyncSocketModeHandler | None = None
        self.busy: set[asyncio.Task[Any]] = set()
        self.receipt_timeout = RECEIPT_TIMEOUT
        self.names: dict[str, tuple[str, str | None]] = {}
        self.dm_channels: dict[str, str] = {}
        self.homes = HomeRefresh(self._publish_home)
        self.pacing = SlackPacing()
        names = "|".join(sorted((re.escape(n) for n in self.core.commands), key=len, reverse=True))
        self._commands = re.compile(rf"(?<![\w/.:-])/({names})\b") if names else None
        self._register()

    def _register(self) -> None:
        """Every way Slack can reach the bot, in one place."""
        self.bolt.use(self._keep_in_inbox)
        self.bolt.command(re.compile(r"^/"))(self._on_command)
        self.bolt.event("message")(self._on_message)
        self.bolt.event("app_home_opened")(self._on_home_opened)
        self.bolt.action(re.compile(r"^(cmd|form):"))(self._on_action)
        self.bolt.view_submission(re.compile(r"^form:"))(self._on_submission)
        self.bolt.view_closed(re.compile(r"^form:"))(self._on_closed)

    # -- PlatformAdapter ------------------------------------------------------------------
    def reaches(self, chat_id: str) -> bool:
        return bool(SLACK_ID.fullmatch(chat_id))

    async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
        """Deliver one message to a Slack user's DM (or a channel); see `deliver`."""
        await self.deliver(chat_id, message, locale=locale, tz=tz, extras={})

    async def deliver(self, chat_id: str, message: Outgoing, *, locale: str, tz: str,
                      extras: Mapping[str, Any], parts: Parts | None = None) -> None:
        """Send one message to one chat; raise TemporaryFailure or PermanentFailure.

        A form with a fresh `trigger` opens as a modal; a reply that ends an exchange
        (`home`), or any notice, refreshes the person's App Home: queued, after the message
        is out, so that `views.publish` never holds back a send or its mark (`HomeRefresh`).
        """
        out = replace(message, context={"tz": tz, **message.context})
        locale = locale if locale in self.renderer.locales else self.renderer.default_locale
        with _delivery_errors():
            trigger = extras.get("trigger")
            if not (out.form is not None and trigger
                    and await self._open_modal(str(trigger), out.form, locale)):
                await self._post(chat_id, out, locale, parts or Parts())
        home = extras.get("home")
        if home:
            self.homes.want(("account", str(home)))
        elif home is None and not extras:  # a notice: something of theirs changed
            self.homes.want(("chat", chat_id))

    def plan(self, inc: Incoming, replies: list[Outgoing],
             hints: Mapping[str, Any]) -> list[RouteTo]:
        """Every reply goes to the person's DM; a form opens as a modal (one trigger opens one
        modal); a modal's field errors are shown on the modal by its ack, not sent."""
        trigger = hints.get("trigger")
        lane = f"{PLATFORM}:{inc.chat_id}"
        routes: list[RouteTo] = []
        for out in replies:
            if hints.get("modal") and out.errors and not hints.get("acked"):
                continue  # shown on the modal by its ack
            extras: dict[str, Any] = {"home": None}
            if out.form is not None and trigger:
                extras["trigger"], trigger = trigger, None
            routes.append(RouteTo(inc.chat_id, out, extras, lane))
        if routes:
            routes[-1].extras["home"] = inc.user_id
        return routes

    async def prepare(self, inc: Incoming) -> Incoming:
        """Learn the person's name and language from Slack (once per process)."""
        return self._named(await self._look_up(inc))

    async def start(self, *, webhook: bool) -> None:
        if webhook:
            if not self.settings.slack_signing_secret:
                raise AdapterSetupError("Slack over HTTP needs SLACK_SIGNING_SECRET: every request "
                                   "must be signed, or anyone could speak as anyone")
        elif self.settings.slack_app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            token = str(self.settings.slack_app_token)
            try:  # a wrong app token fails here, loudly, instead of retrying forever
                opened = await self.client.apps_connections_open(app_token=token)
            except SlackApiError as exc:
                raise AdapterSetupError("Slack Socket Mode could not connect "
                                   f"(apps.connections.open: {exc.response.get('error')}); "
                                   "check SLACK_APP_TOKEN (xapp-, connections:write)") from None
            self.socket = AsyncSocketModeHandler(self.bolt, app_token=token)
            self.socket.client.wss_uri = str(opened["url"])
            await self.socket.connect_async()  # type: ignore[no-untyped-call]
        else:
            log.warning("Slack cannot receive under `fpbot run` without SLACK_APP_TOKEN "
                        "(Socket Mode): set it, or run `fpbot serve` for HTTP events. "
                        "Slack messages are still sent.")

    async def stop_receiving(self) -> None:
        if self.socket is not None:
            await self.socket.close_async()  # type: ignore[no-untyped-call]
            self.socket = None
        pending = [t for t in self.busy if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=STOP_GRACE)

    async def stop(self) -> None:
        await self.stop_receiving()
        await self.homes.close()

    def routes(self) -> list[BaseRoute]:
        async def slack_events(request: Request) -> Response:
            if not self.settings.slack_signing_secret:
                return Response(status_code=503)
            body = await read_capped(request, MAX_BODY)
            if body is None:
                return Response(status_code=413)
            signed = signature_ok(str(self.settings.slack_signing_secret), body,
                                  request.headers.get("x-slack-request-timestamp", ""),
                                  request.headers.get("x-slack-signature", ""))
            response = await self.handler.handle(request) if signed else Response(
                status_code=401, content='{"error": "invalid request"}')
            if response.status_code == 401:  # checked before the body is even parsed
                log.warning("Slack request refused: missing, wrong or stale signature (from %s)",
                            request.client.host if request.client else "?")
            return response

        return [Route(EVENTS_PATH, slack_events, methods=["POST"])]

    # -- inbound: the inbox middleware, then one listener per kind of request ----------------
    async def _keep_in_inbox(self, request: AsyncBoltRequest, body: dict[str, Any],
                             context: dict[str, Any], next: Any) -> BoltResponse | None:
        """Keep what asks something of the core before it is acknowledged; ack repeats only.

        The receipt has its own short timeout: when the store cannot take the request in time
        Slack still gets its ack within 3 s, and the person is told plainly to send it again.
        """
        inc = to_incoming(body)
        if inc is None:
            await next()
            return None
        key = inbox_key(body, request.raw_body)
        modal = body.get("type") == "view_submission"
        hints = {"trigger": body.get("trigger_id"), "modal": modal}
        try:
            inbox_id = await self.app.inbound.receive(PLATFORM, key, inc, hints,
                                                      timeout=self.receipt_timeout,
                                                      handle=not modal)
        except (*STORE_ERRORS, TimeoutError) as exc:
            log.warning("Slack request %s not taken (store: %s); the person is asked to send "
                        "it again", key[:19], type(exc).__name__)
            return await self._not_taken(body, inc)
        if inbox_id is None:
            retry = request.headers.get("x-slack-retry-num", [""])[0]
            log.info("Slack request %s already answered%s: acknowledged, not acted on again",
                     key[:19], f" (retry {retry})" if retry else "")
            return BoltResponse(status=200, body="")
        context["fp_incoming"] = inc
        context["fp_inbox"] = inbox_id
        context["fp_hints"] = hints
        await next()
        return None

    async def _not_taken(self, body: Mapping[str, Any], inc: Incoming) -> BoltResponse:
        """Acknowledge a request the store could not keep, and say so (never a 500)."""
        text = self._render("delivery.not_taken", inc)
        if body.get("command"):  # the ack's body is shown to the person
            return BoltResponse(status=200, body=text)
        task = asyncio.create_task(self._tell(inc.chat_id, text))
        self.busy.add(task)
        task.add_done_callback(self.busy.discard)
        if body.get("type") == "view_submission":
            return BoltResponse(status=200, body=json.dumps({"response_action": "clear"}),
                                headers={"content-type": ["application/json"]})
        return BoltResponse(status=200, body="")

    async def _tell(self, channel: str, text: str) -> None:
        try:
            async with self.pacing.call("chat.postMessage", channel):
                await self.client.chat_postMessage(channel=channel, text=kit.fallback(text),
                                                   blocks=kit.message_blocks(text)[0])
        except Exception as exc:
            log.warning("could not tell a Slack user to send again: %s", type(exc).__name__)

    @tracked
    async def _on_command(self, ack: Any, command: dict[str, Any], context: dict[str, Any]) -> None:
        """`/fp ...`: acknowledge at once; the answer follows in the DM."""
        inc: Incoming = context["fp_incoming"]
        in_dm = str(command.get("channel_id", "")).startswith("D")
        await ack("" if in_dm else self._render("slack.replied_in_dm", inc))

    @tracked
    async def _on_message(self, context: dict[str, Any]) -> None:
        """A person wrote in their DM with the bot (kept and handled by the middleware)."""

    @tracked
    async def _on_action(self, ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
        """A button: acknowledge, take the buttons off the message (the choice is handled)."""
        await ack()
        if "fp_incoming" in context:
            await self._mark_chosen(body, context["fp_incoming"])

    @tracked
    async def _on_submission(self, ack: Any, body: dict[str, Any],
                             context: dict[str, Any]) -> None:
        """A modal submitted: wrong fields come back on the modal, the rest goes to the DM.

        Handled inside the request so that the ack can carry the field errors; if the store
        is too slow for Slack's 3 s, the modal is acknowledged and the answer follows."""
        inc: Incoming = context["fp_incoming"]
        handling = asyncio.ensure_future(self.app.inbound.handle_now(
            PLATFORM, context["fp_inbox"], inc, context["fp_hints"]))
        try:
            async with asyncio.timeout(SUBMISSION_WAIT):  # not wait_for: see storage/db.py
                replies = await asyncio.shield(handling)
        except TimeoutError:
            context["fp_hints"]["acked"] = True  # too late for the modal: errors go to the DM
            await ack()
            await handling
            return
        refused = next((r for r in replies if r.errors), None)
        if refused is not None:
            blocks = [str(b.get("block_id")) for b in body["view"].get("blocks", [])]
            errors = kit.field_errors(
                {name: self._commands_for_slack(text) for name, text in refused.errors.items()},
                blocks)
            await ack(response_action="errors", errors=errors)
            return
        await ack()

    @tracked
    async def _on_closed(self, ack: Any, context: dict[str, Any]) -> None:
        """A modal closed without submitting: the form is dropped (by the core)."""
        await ack()

    @tracked
    async def _on_home_opened(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """Someone opened the bot's Home tab: show their dashboard."""
        if event.get("tab", "home") == "home" and event.get("user"):
            await self._publish_home(("account", account(_team(body), str(event["user"]))))

    # -- outbound: Web API calls ------------------------------------------------------------
    async def _post(self, channel: str, out: Outgoing, locale: str, parts: Parts) -> None:
        """Post one reply (several messages past 50 blocks, the ones `parts` says are out
        skipped), then its file. Each message of an outbox row names the row and its part in
        its metadata; a row that may be out already (`parts.unsure`) is first looked for."""
        text = self._text(out, locale)
        messages = kit.message_blocks(text, choices=out.choices, step=out.step,
                                      labels=self._labels(locale))
        # Whose row, in which store, cut into how many messages: a message of another
        # deployment's row of the same number, or of the row cut otherwise, is not taken for
        # one of these parts (the row then goes whole: sent twice rather than lost).
        key = {"store": self.app.store_uid, "row": parts.row, "of": len(messages)}
        if parts.unsure and parts.row is not None:
            parts.sent = max(parts.sent, await self._parts_out(channel, key))
            parts.unsure = False
        for n, blocks in enumerate(messages):
            if n < parts.sent:
                continue
            metadata = (None if parts.row is None else
                        {"event_type": OUTBOX_EVENT, "event_payload": {**key, "part": n}})
            async with self.pacing.call("chat.postMessage", channel):
                await self.client.chat_postMessage(
                    channel=channel, text=kit.fallback(text), blocks=blocks,
                    unfurl_links=False, unfurl_media=False, metadata=metadata)
            if n < len(messages) - 1 or out.file is not None:
                await parts.went(n + 1)
        if out.file is not None:
            await self._upload(channel, out.file)

    async def _parts_out(self, channel: str, key: Mapping[str, Any]) -> int:
        """How many messages of the outbox row `key` names are in the conversation already:
        sent by a process that ended before it could record them. The newest of them is the
        last part sent (a row's parts go in order). When the history cannot be read (an
        install without the `im:history` scope, say), 0: the row goes again, at-least-once."""
        if channel[:1] in ("U", "W"):
            channel = await self._dm_channel(channel)
        cursor = None
        try:
            for _ in range(HISTORY_PAGES):
                async with self.pacing.call("conversations.history"):
                    page = await self.client.conversations_history(
                        channel=channel, limit=HISTORY_PAGE, include_all_metadata=True,
                        cursor=cursor)
                for message in page.get("messages") or []:
                    meta = message.get("metadata") or {}
                    payload = meta.get("event_payload") or {}
                    if meta.get("event_type") == OUTBOX_EVENT and all(
                            payload.get(k) == v for k, v in key.items()):
                        return int(payload.get("part", 0)) + 1
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        except SlackApiError as exc:
            if exc.response.status_code == 429 or exc.response.status_code >= 500:
                raise  # tried again later, still unsure
            log.warning("outbox row %s: conversation history not readable (%s); sent again "
                        "if it went before", key["row"], exc.response.get("error"))
        return 0

    async def _upload(self, channel: str, file: OutFile) -> None:
        if channel[:1] in ("U", "W"):
            channel = await self._dm_channel(channel)
        async with self.pacing.call("files.getUploadURLExternal"), \
                self.pacing.call("files.completeUploadExternal"):
            await self.client.files_upload_v2(channel=channel, content=file.content,
                                              filename=file.name, title=file.name)

    async def _dm_channel(self, user: str) -> str:
        if user not in self.dm_channels:
            async with self.pacing.call("conversations.open"):
                opened = await self.client.conversations_open(users=user)
            self.dm_channels[user] = str(opened["channel"]["id"])
        return self.dm_channels[user]

    async def _open_modal(self, trigger_id: str, form: FormView, locale: str) -> bool:
        try:
            async with self.pacing.call("views.open"):
                await self.client.views_open(trigger_id=trigger_id,
                                             view=kit.modal(form, self._labels(locale)))
        except SlackApiError as exc:
            log.warning("views.open failed (%s): asking form %s step by step instead",
                        exc.response.get("error"), form.form)
            return False
        return True

    async def _mark_chosen(self, body: Mapping[str, Any], inc: Incoming) -> None:
        """Replace a pressed message's buttons by what was chosen, so nothing is pressed twice."""
        message, channel = body.get("message"), (body.get("channel") or {}).get("id")
        if not message or not channel:
            return
        action = (body.get("actions") or [{}])[0]
        label = ((action.get("text") or {}).get("text") or (action.get("selected_option") or {})
                 .get("text", {}).get("text") or action.get("selected_date") or "")
        note = self._render("slack.chosen", inc, label=label)
        try:
            async with self.pacing.call("chat.update"):
                await self.client.chat_update(
                    channel=channel, ts=message["ts"], text=message.get("text", ""),
                    blocks=kit.without_controls(message.get("blocks") or [], note))
        except SlackApiError as exc:
            log.warning("chat.update of a pressed message failed: %s", exc.response.get("error"))

    async def _publish_home(self, whose: Whose) -> None:
        """Refresh someone's App Home with their dashboard: `("account", id)`, or a notice's
        `("chat", channel)`, whose account the store knows."""
        kind, key = whose
        try:
            account_id = key if kind == "account" else await self.core.account_of_chat(
                PLATFORM, key)
            if not account_id:
                return
            out = await self.core.home(PLATFORM, account_id)
            locale = self.renderer.default_locale
            view = kit.home_view(self._text(out, locale), out.choices)
            async with self.pacing.call("views.publish"):
                await self.client.views_publish(user_id=slack_user(account_id), view=view)
        except Exception as exc:
            log.warning("App Home of a Slack user not refreshed: %s", type(exc).__name__)

    # -- people ------------------------------------------------------------------------------
    async def _look_up(self, inc: Incoming) -> Incoming:
        """Learn a user's name and language once (users.info), for the core's records."""
        user = slack_user(inc.user_id)
        if user not in self.names:
            name, locale = "", None
            try:
                async with self.pacing.call("users.info"):
                    info = (await self.client.users_info(user=user,
                                                         include_locale=True))["user"]
                profile = info.get("profile") or {}
                name = profile.get("real_name") or info.get("real_name") or info.get("name") or ""
                locale = (info.get("locale") or "").split("-")[0] or None
            except SlackApiError as exc:
                log.info("users.info failed for a Slack user: %s", exc.response.get("error"))
            self.names[user] = (str(name), locale)
        return inc

    def _named(self, inc: Incoming) -> Incoming:
        name, locale = self.names.get(slack_user(inc.user_id), ("", None))
        return replace(inc, display_name=inc.display_name or name, locale=inc.locale or locale)

    # -- text --------------------------------------------------------------------------------
    def _locale(self, inc: Incoming) -> str:
        return inc.locale or self.renderer.default_locale

    def _render(self, key: str, inc: Incoming, **context: Any) -> str:
        return self.renderer.render(key, self._locale(inc), "mrkdwn", **context)

    def _text(self, out: Outgoing, locale: str) -> str:
        return self._commands_for_slack(message_text(self.renderer, out, locale, "mrkdwn"))

    def _commands_for_slack(self, text: str) -> str:
        """`/whoami` as Slack users type it: `/fp whoami`."""
        if self._commands is None:
            return text
        return self._commands.sub(rf"{SLASH_COMMAND} \1", text)

    def _labels(self, locale: str) -> dict[str, str]:
        render = self.renderer.render
        return {"back": render("forms.back", locale), "skip": render("forms.skip", locale),
                "cancel": render("forms.cancel", locale),
                "choose": render("slack.choose", locale)}
