"""The Network itself: its members, its chairs and the troika, who someone is, and help."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.context import Context
from handlers.routing import Command, listed
from handlers.types import Incoming, Outgoing, UserError
from storage.models import Chair, Member, MemberName, fold_name


@dataclass(frozen=True)
class TroikaSeat:
    year: int
    member: Member
    position: str  # "previous", "incumbent" or "next"
    demo: bool = False  # a demo chair (fpbot demo), not a real one


async def find_member(session: AsyncSession, text: str) -> Member | None:
    """The member someone means: by code, name or alias, ignoring case, dashes and spacing."""
    wanted = fold_name(text)
    if not wanted:
        return None
    return await session.scalar(
        select(Member).join(MemberName, MemberName.member_id == Member.id)
        .where(MemberName.name == wanted).order_by(Member.id).limit(1))


async def close_member(session: AsyncSession, text: str) -> Member | None:
    """The member a mistyped name most likely means ("Chlie": Chile), by its name, code or
    aliases; None when nothing is close."""
    wanted = fold_name(text)
    if not wanted:
        return None
    names: dict[str, Member] = {}
    for member in await session.scalars(select(Member).order_by(Member.name)):
        for n in (member.name, member.code, *member.aliases.split(";")):
            if n and fold_name(n) not in names:
                names[fold_name(n)] = member
    close = difflib.get_close_matches(wanted, list(names), n=1, cutoff=0.75)
    return names[close[0]] if close else None


async def resolve_member(ctx: Context, value: str, _answers: dict[str, Any]) -> str:
    """Form validator: turn what was typed into a member code, or say it is unknown."""
    member = await find_member(ctx.session, value)
    if member is None:
        raise UserError("forms.unknown_member", text=value)
    return member.code


async def member_by_code(session: AsyncSession, code: str) -> Member:
    member = await session.scalar(select(Member).where(Member.code == code))
    if member is None:
        raise UserError("forms.unknown_member", text=code)
    return member


async def troika(session: AsyncSession, year: int) -> list[TroikaSeat]:
    """The troika of `year`: the chairs of the year before, the year itself and the year after."""
    chairs = {
        c.year: c
        for c in await session.scalars(select(Chair).where(Chair.year.between(year - 1, year + 1)))
    }
    positions = {year - 1: "previous", year: "incumbent", year + 1: "next"}
    return [TroikaSeat(y, chairs[y].member, positions[y], chairs[y].is_demo)
            for y in sorted(chairs)]


async def show_troika(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Show this year's troika (or another year's: /troika 2018)."""
    year = ctx.now.year
    if msg.args:
        if not msg.args.isdigit() or not 1900 < int(msg.args) < 3000:
            raise UserError("troika.bad_year", text=msg.args)
        year = int(msg.args)
    seats = await troika(ctx.session, year)
    last = await ctx.session.scalar(select(func.max(Chair.year)))
    return [
        Outgoing(
            "troika.show",
            {
                "year": year,
                "seats": [
                    {"year": s.year, "member": s.member.name, "position": s.position,
                     "demo": s.demo}
                    for s in seats
                ],
                "last_year": last,
            },
        )
    ]


async def whoami(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Tell the caller who the bot takes them for: name, roles, linked accounts, troika seats."""
    person = ctx.person
    assert person is not None
    seats = await troika(ctx.session, ctx.now.year)
    own = {m.id for m in ctx.own_members()}
    return [
        Outgoing(
            "network.whoami",
            {
                "name": person.name,
                "email": person.email,
                "title": person.title,
                "ministry": person.ministry,
                "roles": [
                    {"role": r.role, "member": r.member.name if r.member else ""}
                    for r in sorted(ctx.roles, key=lambda r: (r.role, r.member_id or 0))
                ],
                "accounts": [
                    {"platform": i.platform, "name": i.display_name or i.user_id}
                    for i in sorted(await person.awaitable_attrs.identities, key=lambda i: i.platform)
                ],
                "troika": [
                    {"member": s.member.name, "position": s.position, "year": s.year,
                     "demo": s.demo}
                    for s in seats
                    if s.member.id in own
                ],
                "year": ctx.now.year,
            },
            private=True,
        )
    ]


async def help(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List the commands the caller may use, each with its one line."""
    return [help_for(ctx.commands, ctx)]


def help_for(commands: Sequence[Command], ctx: Context) -> Outgoing:
    return Outgoing(
        "network.help",
        {
            "registered": ctx.person is not None,
            "name": ctx.person.name if ctx.person else "",
            "commands": [
                {"name": c.name, "usage": c.usage_for(ctx), "text": ctx.label(c.help)}
                for c in listed(commands, ctx)
            ],
        },
    )
