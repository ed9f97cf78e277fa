"""Commands, who may use them, and the one place where that is checked."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from handlers.context import Context
from handlers.types import Incoming, Outgoing

Handler = Callable[[Incoming, Context], Awaitable[list[Outgoing]]]


class Access(enum.IntEnum):
    """Who may use a command; each level includes the ones above it."""

    ANYONE = 0  # even someone the bot does not know yet
    REGISTERED = 1  # any person of the Network
    SECRETARIAT = 2  # the secretariat and admins


@dataclass(frozen=True)
class Command:
    """A command of the bot: its name, its use case, who may use it and its help line."""

    name: str
    run: Handler
    access: Access
    help: str  # message key of the one-line description
    usage: str = ""  # arguments shown in /help, e.g. "[code]"
    personal: bool = False  # its replies carry personal data: never answered in a group
    # The arguments the secretariat sees in /help when they have more than others (the
    # parts only the secretariat may use are not shown to others).
    staff_usage: str = ""
    # Listed (in /help and the command menus) only to people the bot does not know yet.
    for_strangers: bool = False

    def usage_for(self, ctx: Context) -> str:
        """The arguments `ctx`'s person may give, as /help shows them."""
        if self.staff_usage and level(ctx) >= Access.SECRETARIAT:
            return self.staff_usage
        return self.usage


def level(ctx: Context) -> Access:
    if ctx.person is None:
        return Access.ANYONE
    return Access.SECRETARIAT if ctx.is_secretariat else Access.REGISTERED


def refusal(command: Command, ctx: Context) -> Outgoing | None:
    """Why the caller may not use `command`, or None when they may."""
    caller = level(ctx)
    if caller >= command.access:
        return None
    if caller == Access.ANYONE:
        return Outgoing("errors.not_registered", {"command": command.name})
    return Outgoing("errors.secretariat_only", {"command": command.name})


def available(commands: Sequence[Command], ctx: Context) -> list[Command]:
    """The commands the caller may use, in the order they are registered."""
    caller = level(ctx)
    return [c for c in commands if c.access <= caller]


def listed(commands: Sequence[Command], ctx: Context) -> list[Command]:
    """The commands /help and the command menus show the caller: those they may use and
    need (a command for joining is not listed to someone who has joined)."""
    return [c for c in available(commands, ctx)
            if not (c.for_strangers and ctx.person is not None)]


def suggestion(name: str, commands: Sequence[Command], ctx: Context) -> str | None:
    """The caller's command closest to a mistyped one."""
    names = [c.name for c in available(commands, ctx)]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return close[0] if close else None
