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


def suggestion(name: str, commands: Sequence[Command], ctx: Context) -> str | None:
    """The caller's command closest to a mistyped one."""
    names = [c.name for c in available(commands, ctx)]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return close[0] if close else None
