"""The core: one entry point that turns an `Incoming` into replies, inside one transaction.

The dispatcher is the single error boundary. A `UserError` rolls the transaction back and the
person reads its sentence; the store failing mid-way leaves an inbox item unhandled, to be
retried; anything else is logged with its traceback and the person gets one apology.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from handlers import forms
from handlers.clock import Clock, SystemClock
from handlers.context import Context, CoreConfig
from handlers.forms import Form
from handlers.home import dashboard
from handlers.onboarding import pending_request
from handlers.routing import Command, Handler, listed, refusal, suggestion
from handlers.types import MAX_TEXT, STORE_OUTAGE, Incoming, Outgoing, Route, UserError
from messages import Renderer
from storage.db import Database
from storage.models import Conversation, Identity, InboxItem, Person
from storage.outbox import add_replies, resume_waiting

log = logging.getLogger(__name__)

# Turns an incoming message's replies into routes (which chat, what extras): the adapter's.
Planner = Callable[[Incoming, list[Outgoing]], Sequence[Route]]

# The store failing (down, locked, unreachable), as opposed to a bug in a query.
# How fresh an account's `last_seen_at` is kept (which platform a person uses now).
SEEN_EVERY = timedelta(minutes=1)

STORE_ERRORS = (OperationalError, InterfaceError, PoolTimeout, ConnectionError, OSError)

# The statements every message runs, built once: building a statement and its cache key
# anew each time was a good part of the time a message took (profiled, 2026-12-06).
# The account, its person and their roles in one statement (a person has a role or three:
# a join, not a second round trip); their other accounts only when a handler asks for them
# (`awaitable_attrs.identities`).
_ACCOUNT = (select(Identity)
            .where(Identity.platform == bindparam("account_platform"),
                   Identity.user_id == bindparam("account_user"))
            .options(joinedload(Identity.person).joinedload(Person.roles),
                     joinedload(Identity.person).lazyload(Person.identities)))
_inbox: Any = InboxItem.__table__
_CLAIM = (update(_inbox)
          .where(_inbox.c.id == bindparam("claim_id"), _inbox.c.handled_at.is_(None))
          .values(handled_at=bindparam("claim_at", type_=_inbox.c.handled_at.type),
                  attempts=_inbox.c.attempts + 1))


class Core:
    """The bot's whole behaviour, for every platform."""

    def __init__(
        self,
        db: Database,
        commands: Sequence[Command],
        forms_by_name: Mapping[str, Form],
        *,
        clock: Clock | None = None,
        renderer: Renderer | None = None,
        config: CoreConfig | None = None,
        free_text: Handler | None = None,
    ) -> None:
        self.db = db
        self.commands = {c.name: c for c in commands}
        self.command_list = list(commands)
        self.forms = dict(forms_by_name)
        self.clock = clock or SystemClock()
        self.renderer = renderer or Renderer()
        self.config = config or CoreConfig()
        self.free_text = free_text
        self.outbox_listeners: list[Callable[[], None]] = []

    # -- the one entry point --------------------------------------------------------------
    async def handle(self, inc: Incoming, inbox_id: int | None = None, *,
                     plan: Planner | None = None) -> list[Outgoing]:
        """Act on one incoming message and return the replies.

        With `inbox_id` (a message kept in the inbox), the item is marked handled and its
        replies written to the outbox, routed by `plan`, in the transaction of the effect;
        an item already handled gives no replies. Without it, nothing is written for the
        replies: the caller shows them (tests, benchmarks).
        """
        written: list[int] = []
        try:
            async with self.db.transaction() as session:
                if inbox_id is not None and not await self._claim(session, inbox_id):
                    return []
                ctx = await self._context(session, inc)
                try:
                    replies = self._finish(ctx, await self._dispatch(ctx))
                except UserError as err:
                    err.context.setdefault("tz", self._timezone(ctx))
                    raise
                written = list(ctx.outbox_written)
                if inbox_id is not None:
                    routes = self._routes(inc, replies, plan)
                    if routes and inc.private:
                        menu = await self._menu_change(ctx)
                        if menu is not None:  # the adapter sets it with the last reply
                            routes[-1][2]["commands"] = menu
                    written += await add_replies(session, inc.platform, inbox_id, routes,
                                                 self.clock.now())
        except UserError as err:
            replies = [Outgoing(err.key, dict(err.context))]
        except STORE_ERRORS as exc:
            log.warning("store unavailable while handling a %s message: %s", inc.platform,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return [Outgoing(STORE_OUTAGE)]
        except Exception:
            log.exception("unexpected error while handling a %s message", inc.platform)
            replies = [Outgoing("errors.internal")]
        else:
            if written:
                self._wake_outbox()
            return replies
        if inbox_id is not None:
            try:
                async with self.db.transaction() as session:
                    if not await self._claim(session, inbox_id):
                        return []
                    await add_replies(session, inc.platform, inbox_id,
                                      self._routes(inc, replies, plan), self.clock.now())
            except STORE_ERRORS:
                return [Outgoing(STORE_OUTAGE)]
            self._wake_outbox()
        return replies

    async def answer(self, inc: Incoming, inbox_id: int, replies: list[Outgoing], *,
                     plan: Planner | None = None) -> bool:
        """Mark an inbox item handled with these replies, without acting on it (a message
        refused before the core, e.g. a file too large); False if it was already handled."""
        async with self.db.transaction() as session:
            if not await self._claim(session, inbox_id):
                return False
            await add_replies(session, inc.platform, inbox_id,
                              self._routes(inc, replies, plan), self.clock.now())
        self._wake_outbox()
        return True

    @staticmethod
    def _routes(inc: Incoming, replies: list[Outgoing], plan: Planner | None
                ) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
        routes = list(plan(inc, replies)) if plan is not None else [
            Route(inc.chat_id, r) for r in replies]
        return [(r.chat_id, r.message.to_dict(), r.extras, r.lane) for r in routes]

    async def _context(self, session: AsyncSession, inc: Incoming, *,
                       seen: bool = True) -> Context:
        identity = (await session.execute(
            _ACCOUNT, {"account_platform": inc.platform, "account_user": inc.user_id}
        )).unique().scalar_one_or_none()
        person = identity.person if identity is not None else None
        now = self.clock.now()
        if identity is not None and seen:
            if identity.last_seen_at is None or abs(now - identity.last_seen_at) > SEEN_EVERY:
                identity.last_seen_at = now  # not rewritten for each of a burst of messages
            if identity.unreachable_since is not None:  # they wrote: reachable again
                identity.unreachable_since, identity.unreachable_reason = None, ""
            if inc.private and inc.chat_id and identity.chat_id != inc.chat_id:
                identity.chat_id = inc.chat_id
        return Context(session=session, clock=self.clock, renderer=self.renderer,
                       config=self.config, incoming=inc, identity=identity, person=person,
                       commands=self.command_list, forms=self.forms)

    async def _dispatch(self, ctx: Context) -> list[Outgoing]:
        inc = ctx.incoming
        if len(inc.text) > MAX_TEXT:
            raise UserError("errors.too_long", limit=MAX_TEXT, length=len(inc.text))
        if inc.values is not None:
            form = self.forms.get(inc.value or "")
            if form is None:
                raise UserError("forms.none_open")
            return await forms.submit_all(ctx, form, inc.values)
        conv = await forms.current(ctx)
        replies = await self._route(ctx, conv)
        if conv is not None and conv.message_ref:
            after = await forms.current(ctx)
            if after is None or after.id != conv.id:  # the form was submitted, cancelled or replaced
                replies = [replace(r, closes_form=True, form_message=conv.message_ref)
                           for r in replies]
        return replies

    async def _route(self, ctx: Context, conv: Conversation | None) -> list[Outgoing]:
        inc = ctx.incoming
        if inc.action == "cancel":
            if conv is not None and inc.form_version not in (None, conv.version):
                return [Outgoing("forms.stale", private=True)]
            return await forms.cancel_command(inc, ctx)
        if inc.command in (forms.CONTINUE, forms.DROP) and not inc.action:
            return await self._switch(ctx, conv, inc.command)
        if conv is not None and inc.command in ("back", "skip"):
            inc = replace(inc, action=inc.command, text="")
            ctx.incoming = inc
        if inc.action in ("answer", "back", "skip") or (conv and inc.command is None):
            if conv is None:
                return [Outgoing("forms.none_open")]
            return await forms.proceed(ctx, self.forms[conv.form], conv)
        if inc.command is None:
            if self.free_text is not None and inc.text.strip():
                return await self.free_text(inc, ctx)
            if ctx.person is None:
                return [Outgoing("errors.not_registered", {"command": ""})]
            return [Outgoing("errors.free_text")]
        if conv is None:
            return await self._run_command(ctx, inc.command)
        try:
            async with ctx.session.begin_nested():  # undone if it would replace the open form
                replies = await self._run_command(ctx, inc.command)
        except forms.FormSwitch as switch:
            await ctx.session.refresh(conv)
            return [await forms.ask_switch(ctx, conv, switch.form)]
        if not any(r.step for r in replies):
            still = await forms.current(ctx)
            if still is not None:  # show the open question again: there may be none above
                replies.append(await forms.resume(ctx, self.forms[still.form], still))
        return replies

    async def _switch(self, ctx: Context, conv: Conversation | None, choice: str) -> list[Outgoing]:
        """The answer to "continue the open form, or drop it and start the new one?"."""
        if conv is None:
            return [Outgoing("forms.none_open")]
        form = self.forms[conv.form]
        if choice == forms.CONTINUE:
            return [await forms.resume(ctx, form, conv)]
        waiting = await forms.take_switch(ctx, conv)
        if waiting is None:  # an old Drop button: the form has moved on since; drop nothing
            return [Outgoing("forms.stale", private=True), await forms.resume(ctx, form, conv)]
        ctx.incoming = replace(ctx.incoming, text=waiting)
        dropped = Outgoing("forms.cancelled", {"title": ctx.label(form.title)})
        return [dropped, *await self._run_command(ctx, ctx.incoming.command or "")]

    async def _run_command(self, ctx: Context, name: str) -> list[Outgoing]:
        command = self.commands.get(name)
        if command is None:
            return [Outgoing("errors.unknown_command",
                             {"command": name,
                              "suggestion": suggestion(name, self.command_list, ctx) or ""})]
        refused = refusal(command, ctx)
        if refused is not None and refused.key == "errors.not_registered":
            waiting = await pending_request(ctx)  # then the answer is: it is with them
            if waiting is not None:
                refused = replace(refused, context={**refused.context, "pending": waiting.id,
                                                    "member": waiting.member_name})
        if refused is not None:
            return [refused]
        replies = await command.run(ctx.incoming, ctx)
        if command.personal:
            replies = [replace(r, private=True) for r in replies]
        return replies

    def _timezone(self, ctx: Context) -> str:
        return ctx.person.timezone if ctx.person else self.config.timezone

    def _finish(self, ctx: Context, replies: list[Outgoing]) -> list[Outgoing]:
        """Give each reply the reader's time zone and locale, for the adapter's rendering."""
        tz = self._timezone(ctx)
        return [replace(r, context={"tz": tz, "locale": ctx.locale, **r.context})
                for r in replies]

    # -- the durable inbox ----------------------------------------------------------------
    async def _claim(self, session: AsyncSession, inbox_id: int) -> bool:
        """Mark the item handled, in the transaction of its effect; False if it already was."""
        result = await session.execute(_CLAIM, {"claim_id": inbox_id,
                                                "claim_at": self.clock.now()})
        return bool(getattr(result, "rowcount", 0))

    # -- small services for adapters ------------------------------------------------------
    async def home(self, platform: str, user_id: str) -> Outgoing:
        """The dashboard of the person behind an account (Slack's App Home)."""
        inc = Incoming(platform=platform, user_id=user_id, chat_id="")
        async with self.db.reading() as session:
            ctx = await self._context(session, inc, seen=False)
            return self._finish(ctx, [await dashboard(ctx)])[0]

    async def form_in_progress(self, platform: str, user_id: str) -> Outgoing | None:
        """The question of the form an account left open, shown again (a new console session)."""
        inc = Incoming(platform=platform, user_id=user_id, chat_id="")
        async with self.db.transaction() as session:
            ctx = await self._context(session, inc)
            conv = await forms.current(ctx)
            if conv is None or conv.form not in self.forms:
                return None
            return self._finish(ctx, [await forms.resume(ctx, self.forms[conv.form], conv)])[0]

    async def account_of_chat(self, platform: str, chat_id: str) -> str | None:
        """The account (platform user id) whose private chat is `chat_id`, if known."""
        async with self.db.reading() as session:
            return await session.scalar(
                select(Identity.user_id).where(Identity.platform == platform,
                                               Identity.chat_id == chat_id).limit(1))

    async def commands_for(self, platform: str, user_id: str) -> list[tuple[str, str]]:
        """`(command, one-line description)` for each command the account may use."""
        inc = Incoming(platform=platform, user_id=user_id, chat_id="")
        async with self.db.reading() as session:
            ctx = await self._context(session, inc, seen=False)
            return [(name, text) for name, text in self._menu(ctx)]

    def _menu(self, ctx: Context) -> list[list[str]]:
        return [[c.name, ctx.label(c.help)] for c in listed(self.command_list, ctx)]

    async def _menu_change(self, ctx: Context) -> list[list[str]] | None:
        """The caller's command menu when it is not the one their account was last given
        (the account keeps its fingerprint), else None; the new one counts as given."""
        if ctx.identity is None:  # a stranger; unless this very message bound the account
            ctx = await self._context(ctx.session, ctx.incoming, seen=False)
            if ctx.identity is None:
                return None
        menu = self._menu(ctx)
        key = hashlib.sha256(json.dumps(menu).encode()).hexdigest()[:32]
        if ctx.identity.menu_key == key:
            return None
        ctx.identity.menu_key = key
        return menu

    async def forget_menu(self, platform: str, user_id: str) -> None:
        """The platform refused an account's menu: set it again after their next message."""
        async with self.db.transaction() as session:
            await session.execute(update(Identity).where(Identity.platform == platform,
                                                         Identity.user_id == user_id)
                                  .values(menu_key=""))

    async def remember_form_message(self, platform: str, user_id: str, ref: str) -> None:
        """Note the platform message that shows someone's current form step."""
        async with self.db.transaction() as session:
            await session.execute(
                update(Conversation)
                .where(Conversation.platform == platform, Conversation.user_id == user_id)
                .values(message_ref=ref)
            )

    async def resume_outbox(self, platform: str, user_id: str) -> None:
        """Make messages waiting for this account's person due now (they just became reachable)."""
        async with self.db.transaction() as session:
            await resume_waiting(session, platform, user_id, self.clock.now())

    async def console_identity(self, email: str) -> Person | None:
        """Bind the local console to the person with `email` (the console is trusted)."""
        async with self.db.transaction() as session:
            person = await session.scalar(select(Person).where(Person.email == email.lower()))
            if person is None:
                return None
            identity = await session.scalar(
                select(Identity).where(Identity.platform == "console",
                                       Identity.user_id == person.email)
            )
            if identity is None:
                session.add(Identity(person_id=person.id, platform="console",
                                     user_id=person.email, chat_id=person.email,
                                     display_name=person.name, created_at=self.clock.now()))
            return person

    def _wake_outbox(self) -> None:
        for listener in self.outbox_listeners:
            listener()
