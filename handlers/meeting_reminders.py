"""What the reminders and the digest say of meetings (issue 12 wiring).

- A confirmed participant's reminder a week and a day before a meeting: when, the venue or the
  link, and the calendar invitation, built by the meetings module's own `calendar_file` (same
  UID and SEQUENCE as the invitation they already have, so calendars update in place).
- The digest's "meetings" section: registrations against capacity for each upcoming meeting,
  in two queries whatever the number of meetings and registrations.

Importing this module (handlers/__init__.py does) plugs both in, and with them the meeting and
edition obligations of storage/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import storage.edition_deadlines  # noqa: F401  (registers the edition obligation)
from handlers.clock import FrozenClock
from handlers.context import Context, CoreConfig
from handlers.digest import EXTRA_SECTIONS
from handlers.meetings import calendar_file, view
from handlers.reminders import REMINDER_MESSAGES, Candidate, reminder_message
from handlers.types import Incoming, Outgoing
from messages import Renderer
from storage.meeting_deadlines import confirmed_people  # noqa: F401  (registers meetings)
from storage.models import (
    DeadlineKind,
    Meeting,
    MeetingStatus,
    Registration,
    RegistrationStatus,
)


def _context(session: AsyncSession, candidate: Candidate, renderer: Renderer) -> Context:
    """The recipient's view, as the meetings module builds its messages from one."""
    return Context(session=session, clock=FrozenClock(candidate.send_at), renderer=renderer,
                   config=CoreConfig(), incoming=Incoming("scheduler", "", ""),
                   person=candidate.person)


async def meeting_reminder(session: AsyncSession, candidate: Candidate,
                           renderer: Renderer) -> Outgoing:
    """The reminder before a meeting, with its calendar file (the generic one if it is gone)."""
    meeting = await session.get(Meeting, candidate.deadline.ref_id)
    person = candidate.person
    regs = list(await session.scalars(
        select(Registration).where(
            Registration.meeting_id == candidate.deadline.ref_id,
            Registration.status == RegistrationStatus.CONFIRMED,
            (Registration.person_id == person.id) | (Registration.registered_by == person.id))
        .order_by(Registration.person_id != person.id, Registration.id)))
    if meeting is None or not regs:
        return reminder_message(candidate, renderer)
    reg = regs[0]
    ctx = _context(session, candidate, renderer)
    days_left = (meeting.starts_at - candidate.send_at).days
    return Outgoing("obligations.meeting_reminder", {
        **view(ctx, meeting, reg), "attendee": reg.name, "email": reg.email,
        "for_other": reg.person_id != person.id, "days_left": max(days_left, 0),
    }, file=calendar_file(ctx, meeting, reg), private=True)


async def meetings_section(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    """Registrations against capacity for each meeting still to come, soonest first."""
    meetings = list(await session.execute(
        select(Meeting.id, Meeting.title, Meeting.starts_at, Meeting.capacity,
               Meeting.registration_closes_at)
        .where(Meeting.status == MeetingStatus.SCHEDULED, Meeting.ends_at > now)
        .order_by(Meeting.starts_at, Meeting.id)))
    counts: dict[tuple[int, str], int] = {}
    if meetings:
        rows = await session.execute(
            select(Registration.meeting_id, Registration.status, func.count())
            .where(Registration.meeting_id.in_([m[0] for m in meetings]))
            .group_by(Registration.meeting_id, Registration.status))
        counts = {(int(m), str(s)): int(n) for m, s, n in rows}
    return [{"id": i, "title": t, "starts": s, "capacity": cap, "closes": c,
             "open": c > now,
             "confirmed": counts.get((i, RegistrationStatus.CONFIRMED), 0),
             "waitlisted": counts.get((i, RegistrationStatus.WAITLISTED), 0),
             "pending": counts.get((i, RegistrationStatus.PENDING), 0)}
            for i, t, s, cap, c in meetings]


REMINDER_MESSAGES[DeadlineKind.MEETING_REMINDER] = meeting_reminder
EXTRA_SECTIONS["meetings"] = meetings_section
