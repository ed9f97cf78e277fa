"""A person's dashboard (Slack's App Home): who they are, what waits for them, what they can do."""

from __future__ import annotations

from sqlalchemy import func, select

from handlers.context import Context
from handlers.deadlines import deadline_items
from handlers.meetings import dashboard_part
from handlers.network import troika
from handlers.routing import listed
from handlers.types import Outgoing
from storage.models import MembershipRequest, NationalUpdate, UpdateStatus


async def dashboard(ctx: Context) -> Outgoing:
    """Build the caller's dashboard; strangers get the way in."""
    commands = [{"name": c.name, "usage": c.usage_for(ctx), "text": ctx.label(c.help)}
                for c in listed(ctx.commands, ctx)]
    if ctx.person is None:
        return Outgoing("home.stranger", {"commands": commands})
    own = {m.id for m in ctx.own_members()}
    seats = [s for s in await troika(ctx.session, ctx.now.year) if s.member.id in own]
    pending = to_review = 0
    if ctx.is_secretariat:
        pending = await ctx.session.scalar(
            select(func.count()).select_from(MembershipRequest)
            .where(MembershipRequest.status == "pending")
        ) or 0
        to_review = await ctx.session.scalar(
            select(func.count()).select_from(NationalUpdate)
            .where(NationalUpdate.status == UpdateStatus.SUBMITTED)
        ) or 0
    recent = list(await ctx.session.scalars(
        select(NationalUpdate).where(NationalUpdate.author_id == ctx.person.id)
        .order_by(NationalUpdate.submitted_at.desc(), NationalUpdate.id.desc()).limit(5)
    ))
    meetings, register_buttons = await dashboard_part(ctx)
    return Outgoing(
        "home.dashboard",
        {
            "name": ctx.person.name,
            "members": [m.name for m in ctx.own_members()],
            "secretariat": ctx.is_secretariat,
            "pending_requests": pending,
            "to_review": to_review,
            "updates": [{"id": u.id, "title": u.title, "member": u.source,
                         "status": ctx.label(f"updates.status_{u.status}")} for u in recent],
            "troika": [{"member": s.member.name, "position": s.position, "year": s.year}
                       for s in seats],
            "year": ctx.now.year,
            "deadlines": (await deadline_items(ctx))[:5],
            "commands": commands,
            "meetings": meetings,
        },
        choices=tuple(register_buttons),
        private=True,
    )
