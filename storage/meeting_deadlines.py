"""A meeting's two reminded dates (issue 12 wiring).

- Registration closing (`MEETING_REGISTRATION`, due `registration_closes_at`), for the meeting's
  eligible roles. A person owes it while they hold no registration (confirmed, waitlisted or
  pending approval). A member owes it while nobody of its delegation holds one: no active
  registration made for the member, and none of its focal points or alternates registered.
  Offsets that would fall before registration opens are left out.
- The meeting itself (`MEETING_REMINDER`, due `starts_at`, offsets 7d and 1d), for the people
  who hear about each confirmed registration (the attendee, or whoever registered them). It is
  re-synced whenever confirmations change, and a person owes it while one of those
  registrations is still confirmed.

`sync_meeting` keeps both in step with the meeting: call it after a meeting is created,
edited or cancelled, and after any registration changes status.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from messages import Renderer
from storage import meetings as store
from storage.deadlines import (
    DEFAULT_OFFSETS,
    audience,
    cancel_deadline,
    offset_delta,
    register_obligation,
    sync_deadline,
)
from storage.models import (
    ACTIVE_REGISTRATION,
    MEMBER_ROLES,
    Deadline,
    DeadlineKind,
    Meeting,
    MeetingStatus,
    Registration,
    RegistrationStatus,
    Role,
)

MEETING_OFFSETS = ("7d", "1d")
TEXT = Renderer()  # titles and asks are stored on the deadline, in the default locale


def _say(key: str, **context: object) -> str:
    return TEXT.render(f"obligations.{key}", "en", "plain", **context)


async def confirmed_people(session: AsyncSession, meeting_id: int) -> list[int]:
    """Who hears about each confirmed registration: the attendee, or who registered them."""
    rows = await session.execute(
        select(Registration.person_id, Registration.registered_by)
        .where(Registration.meeting_id == meeting_id,
               Registration.status == RegistrationStatus.CONFIRMED))
    return sorted({who for p, b in rows if (who := p or b) is not None})


async def sync_meeting(session: AsyncSession, meeting: Meeting, now: datetime) -> None:
    """Both deadlines of a meeting follow it; a cancelled meeting has none any more."""
    if meeting.status == MeetingStatus.CANCELLED:
        await cancel_deadline(session, DeadlineKind.MEETING_REGISTRATION, meeting.id, now)
        await cancel_deadline(session, DeadlineKind.MEETING_REMINDER, meeting.id, now)
        return
    context = {"title": meeting.title, "id": meeting.id,
               "delegation_limit": meeting.delegation_limit}
    closes, opens = meeting.registration_closes_at, meeting.registration_opens_at
    await sync_deadline(
        session, DeadlineKind.MEETING_REGISTRATION, meeting.id, closes,
        _say("registration_title", **context)[:200],
        audience(roles=list(meeting.eligible_roles)), now=now,
        offsets=[o for o in DEFAULT_OFFSETS if closes - offset_delta(o) >= opens],
        asks=_say("registration_asks", **context), created_by=meeting.created_by,
        is_demo=meeting.is_demo)
    await sync_deadline(
        session, DeadlineKind.MEETING_REMINDER, meeting.id, meeting.starts_at,
        _say("meeting_title", **context)[:200],
        audience(persons=await confirmed_people(session, meeting.id)), now=now,
        offsets=list(MEETING_OFFSETS), asks=_say("meeting_asks", **context),
        created_by=meeting.created_by, is_demo=meeting.is_demo)


async def sync_demo_meetings(session: AsyncSession, now: datetime) -> None:
    """The deadlines of the demo meetings still to come (`fpbot demo`); safe to run again."""
    for meeting in await store.upcoming(session, now):
        await sync_meeting(session, meeting, now)


async def _scheduled(session: AsyncSession, meeting_id: int | None) -> bool:
    status = await session.scalar(select(Meeting.status).where(Meeting.id == meeting_id))
    return status == MeetingStatus.SCHEDULED


async def _registration_owes(session: AsyncSession, deadline: Deadline, member_id: int | None,
                             person_id: int | None) -> bool:
    if deadline.ref_id is None or not await _scheduled(session, deadline.ref_id):
        return False
    if person_id is not None:
        return await store.owes_registration(session, deadline.ref_id, person_id)
    if member_id is None:
        return False
    delegation = select(Role.person_id).where(Role.member_id == member_id,
                                              Role.role.in_(list(MEMBER_ROLES)))
    held = await session.scalar(
        select(Registration.id).where(
            Registration.meeting_id == deadline.ref_id,
            Registration.status.in_(list(ACTIVE_REGISTRATION)),
            or_(Registration.member_id == member_id, Registration.person_id.in_(delegation)))
        .limit(1))
    return held is None


async def _registration_owing(session: AsyncSession, deadline: Deadline,
                              member_ids: Collection[int], person_ids: Collection[int]
                              ) -> tuple[set[int], set[int]]:
    """`_registration_owes` for a whole audience: the meeting's active registrations and the
    delegations they belong to, read once."""
    if deadline.ref_id is None or not await _scheduled(session, deadline.ref_id):
        return set(), set()
    held = (await session.execute(
        select(Registration.member_id, Registration.person_id)
        .where(Registration.meeting_id == deadline.ref_id,
               Registration.status.in_(list(ACTIVE_REGISTRATION))))).all()
    by_member = {m for m, _ in held if m is not None}
    registered = {p for _, p in held if p is not None}
    if member_ids and registered:
        by_member |= set(await session.scalars(
            select(Role.member_id).where(Role.person_id.in_(registered),
                                         Role.role.in_(list(MEMBER_ROLES)),
                                         Role.member_id.is_not(None))))
    return set(member_ids) - by_member, set(person_ids) - registered


async def _registration_done(session: AsyncSession,
                             deadlines: Sequence[Deadline]) -> dict[int, set[int]]:
    """The members with somebody registered for each meeting, in one query."""
    found: dict[int, set[int]] = {d.id: set() for d in deadlines}
    by_meeting = {d.ref_id: d.id for d in deadlines if d.ref_id is not None}
    rows = await session.execute(
        select(Registration.meeting_id, Registration.member_id).distinct()
        .where(Registration.meeting_id.in_(list(by_meeting)),
               Registration.status.in_(list(ACTIVE_REGISTRATION)),
               Registration.member_id.is_not(None)))
    for meeting_id, member_id in rows:
        if member_id is not None:
            found[by_meeting[meeting_id]].add(member_id)
    return found


async def _reminder_owes(session: AsyncSession, deadline: Deadline, member_id: int | None,
                         person_id: int | None) -> bool:
    """Still confirmed: one of the registrations they hear about is confirmed."""
    if person_id is None or deadline.ref_id is None \
            or not await _scheduled(session, deadline.ref_id):
        return False
    held = await session.scalar(
        select(Registration.id).where(
            Registration.meeting_id == deadline.ref_id,
            Registration.status == RegistrationStatus.CONFIRMED,
            or_(Registration.person_id == person_id,
                (Registration.person_id.is_(None)) & (Registration.registered_by == person_id)))
        .limit(1))
    return held is not None


async def _reminder_owing(session: AsyncSession, deadline: Deadline, member_ids: Collection[int],
                          person_ids: Collection[int]) -> tuple[set[int], set[int]]:
    """`_reminder_owes` for a whole audience: the confirmed registrations, read once."""
    if deadline.ref_id is None or not await _scheduled(session, deadline.ref_id):
        return set(), set()
    rows = await session.execute(
        select(Registration.person_id, Registration.registered_by)
        .where(Registration.meeting_id == deadline.ref_id,
               Registration.status == RegistrationStatus.CONFIRMED))
    hearing = {person if person is not None else by for person, by in rows}
    return set(), set(person_ids) & hearing


register_obligation(DeadlineKind.MEETING_REGISTRATION, _registration_owes, _registration_done,
                    _registration_owing)
register_obligation(DeadlineKind.MEETING_REMINDER, _reminder_owes, owing=_reminder_owing)
