"""A person's dashboard (Slack's App Home): who they are, what waits for them, what they can do."""

from __future__ import annotations

from sqlalchemy import func, select

from handlers.context import Context
from handlers.network import troika
from handlers.routing import available
from handlers.types import Outgoing
from storage.models import MembershipRequest


async def dashboard(ctx: Context) -> Outgoing:
    """Build the caller's dashboard; strangers get the way in."""
    commands = [{"name": c.name, "usage": c.usage, "text": ctx.label(c.help)}
                for c in available(ctx.commands, ctx)]
    if ctx.person is None:
        return Outgoing("home.stranger", {"commands": commands})
    own = {m.id for m in ctx.own_members()}
    seats = [s for s in await troika(ctx.session, ctx.now.year) if s.member.id in own]
    pending = 0
    if ctx.is_secretariat:
        pending = await ctx.session.scalar(
            select(func.count()).select_from(MembershipRequest)
            .where(MembershipRequest.status == "pending")
        ) or 0
    return Outgoing(
        "home.dashboard",
        {
            "name": ctx.person.name,
            "members": [m.name for m in ctx.own_members()],
            "secretariat": ctx.is_secretariat,
            "pending_requests": pending,
            "troika": [{"member": s.member.name, "position": s.position, "year": s.year}
                       for s in seats],
            "year": ctx.now.year,
            "commands": commands,
        },
        private=True,
    )
