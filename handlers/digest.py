"""The secretariat's digest: what waits for them, who is missing, what falls due.

Computed with a fixed number of SQL statements whatever the number of members (each section
is one query; grouping happens here). Sent weekly by the scheduler, once whichever instance
fires first (a `job_run` row per week), or on demand with /digest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.context import Context
from handlers.reminders import queue_outgoing
from handlers.types import Incoming, OutFile, Outgoing
from messages import Renderer
from storage.deadlines import OBLIGATIONS, claim_run
from storage.models import (
    ActionPoint,
    Chair,
    Deadline,
    DeadlineKind,
    Identity,
    Member,
    MembershipRequest,
    NationalUpdate,
    OutboxItem,
    Person,
    Reminder,
    RoleName,
    UpdateStatus,
)

UPCOMING = timedelta(days=14)
FAILED_AFTER = 3  # outbox attempts after which a message counts as undeliverable
# Which deadline the "not submitted" section follows: the nearest open one of these kinds
# (an edition's submission deadline once editions exist; a custom deadline until then).
COLLECTION_KINDS = (DeadlineKind.EDITION_SUBMISSION, DeadlineKind.CUSTOM)

# More sections (meetings: registrations against capacity) plug in here: each returns its
# context under its name, and the digest templates show it.
Section = Callable[[AsyncSession, datetime], Awaitable[Any]]
EXTRA_SECTIONS: dict[str, Section] = {}


def _age(now: datetime, then: datetime) -> int:
    return max((now - then).days, 0)


async def _awaiting(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(NationalUpdate.id, NationalUpdate.title, NationalUpdate.submitted_at, Member.name)
        .join(Member, Member.id == NationalUpdate.member_id)
        .where(NationalUpdate.status == UpdateStatus.SUBMITTED)
        .order_by(NationalUpdate.submitted_at, NationalUpdate.id))
    return [{"id": i, "title": t, "member": m, "age": _age(now, s)} for i, t, s, m in rows]


async def _collection(session: AsyncSession, now: datetime) -> dict[str, Any] | None:
    """The members that have not done the current collection deadline, by region."""
    deadline = await session.scalar(
        select(Deadline).where(Deadline.kind.in_(COLLECTION_KINDS),
                               Deadline.cancelled_at.is_(None), Deadline.due_at > now)
        .order_by(Deadline.kind != DeadlineKind.EDITION_SUBMISSION, Deadline.due_at)
        .limit(1))
    if deadline is None:
        return None
    obligation = OBLIGATIONS.get(deadline.kind)
    if obligation is None or obligation.done_members is None:
        return None
    aud = deadline.audience
    members = list(await session.execute(select(Member.id, Member.name, Member.region)))
    chairs = {y: m for y, m in await session.execute(
        select(Chair.year, Chair.member_id).where(Chair.year.between(now.year - 1,
                                                                     now.year + 1)))}
    wanted: set[int] = set(aud.get("members", ()))
    if set(aud.get("roles", ())) & {RoleName.FOCAL_POINT, RoleName.ALTERNATE}:
        wanted |= {m for m, _, _ in members}
    if aud.get("troika"):
        wanted |= set(chairs.values())
    if aud.get("chair") and now.year in chairs:
        wanted.add(chairs[now.year])
    done = (await obligation.done_members(session, [deadline])).get(deadline.id, set())
    regions: dict[str, list[str]] = defaultdict(list)
    for member_id, name, region in members:
        if member_id in wanted and member_id not in done:
            regions[region].append(name)
    return {
        "title": deadline.title, "due": deadline.due_at,
        "done": len(wanted & done), "expected": len(wanted),
        "regions": [{"region": r, "count": len(n), "members": sorted(n)}
                    for r, n in sorted(regions.items())],
    }


async def _upcoming(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    rows = await session.scalars(
        select(Deadline).where(Deadline.cancelled_at.is_(None), Deadline.due_at > now,
                               Deadline.due_at <= now + UPCOMING)
        .order_by(Deadline.due_at, Deadline.id))
    return [{"id": d.id, "title": d.title, "due": d.due_at, "kind": d.kind,
             "days": _age(d.due_at, now)} for d in rows]


async def _overdue(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    rows = await session.scalars(
        select(ActionPoint).where(ActionPoint.status == "open", ActionPoint.due_at < now)
        .order_by(ActionPoint.due_at, ActionPoint.id))
    return [{"id": a.id, "text": a.text, "owner": owner_label(a), "due": a.due_at,
             "late": -((a.due_at - now) // timedelta(days=1)) if a.due_at else 0}
            for a in rows]  # days late, any part of a day counting as one


async def _requests(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(MembershipRequest.id, MembershipRequest.name, MembershipRequest.created_at,
               Member.name, MembershipRequest.new_member)
        .outerjoin(Member, Member.id == MembershipRequest.member_id)  # a new member has none
        .where(MembershipRequest.status == "pending")
        .order_by(MembershipRequest.created_at, MembershipRequest.id))
    return [{"id": i, "name": n, "member": m or new, "new": m is None, "age": _age(now, c)}
            for i, n, c, m, new in rows]


async def _undeliverable(session: AsyncSession, now: datetime) -> dict[str, Any]:
    failed = await session.execute(
        select(Person.name, func.count(OutboxItem.id), func.max(OutboxItem.last_error))
        .join(Person, Person.id == OutboxItem.person_id)
        .where(or_(OutboxItem.status == "failed",
                   (OutboxItem.status == "pending") & (OutboxItem.attempts >= FAILED_AFTER)))
        .group_by(Person.name).order_by(Person.name))
    blocked = await session.execute(  # accounts a platform refused for good (blocked, gone)
        select(Person.name, Identity.platform, Identity.unreachable_since,
               Identity.unreachable_reason)
        .join(Person, Person.id == Identity.person_id)
        .where(Identity.unreachable_since.is_not(None))
        .order_by(Person.name, Identity.platform))
    unreachable = await session.execute(
        select(Person.name, func.count(Reminder.id))
        .join(Person, Person.id == Reminder.person_id)
        .where(Reminder.reason == "no_account", Reminder.created_at >= now - timedelta(days=7))
        .group_by(Person.name).order_by(Person.name))
    return {
        "failed": [{"name": n, "count": c, "error": (e or "").split(":", 1)[0]}
                   for n, c, e in failed],
        "unreachable": [{"name": n, "count": c} for n, c in unreachable],
        "blocked": [{"name": n, "platform": p, "since": t, "reason": r}
                    for n, p, t, r in blocked],
    }


async def build_digest(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """The digest's context: every section, each one query or a few, never one per member."""
    context: dict[str, Any] = {
        "at": now,
        "awaiting": await _awaiting(session, now),
        "collection": await _collection(session, now),
        "upcoming": await _upcoming(session, now),
        "overdue": await _overdue(session, now),
        "requests": await _requests(session, now),
        "undeliverable": await _undeliverable(session, now),
    }
    for name, section in EXTRA_SECTIONS.items():
        context[name] = await section(session, now)
    return context


def owner_label(a: ActionPoint) -> str:
    if a.owner == "member" and a.owner_member is not None:
        return a.owner_member.name
    return {"secretariat": "the secretariat", "troika": "the troika", "chair": "the chair",
            "focal_points": "focal points"}.get(a.owner, a.owner)


def digest_messages(context: dict[str, Any], renderer: Renderer, period: str,
                    tz: str) -> list[Outgoing]:
    """The digest to read in chat, and the same as an e-mail-safe HTML file."""
    page = renderer.render("digest.email", "en", "html", tz=tz, **context)
    return [
        Outgoing("digest.weekly", context, private=True),
        Outgoing("digest.file", {"period": period},
                 file=OutFile(f"digest-{period}.html", "text/html",
                              page.encode("utf-8")), private=True),
    ]


async def queue_digest(session: AsyncSession, renderer: Renderer, *, at: datetime,
                       period: str, by: str) -> int:
    """Queue the weekly digest for every secretariat officer, once per period whoever runs
    it; returns the messages queued (0 when another instance already has)."""
    if not await claim_run(session, "digest", period, by=by, now=at):
        return 0
    context = await build_digest(session, at)
    people = list(await session.execute(
        select(Person.id, Person.timezone).where(Person.roles.any(role=RoleName.SECRETARIAT))
        .order_by(Person.id)))
    items = []
    for pid, tz in people:
        chat, file = digest_messages(context, renderer, period, tz)
        items += [(pid, f"digest:{period}:{pid}", chat), (pid, f"digest-file:{period}:{pid}", file)]
    return await queue_outgoing(session, items, at)


async def digest(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Show the secretariat's digest now, with its HTML file."""
    context = await build_digest(ctx.session, ctx.now)
    tz = ctx.person.timezone if ctx.person else ctx.config.timezone
    return digest_messages(context, ctx.renderer, f"{ctx.now:%Y-%m-%d}", tz)
